package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"vpool/volume"
)

// Catalog is the vPool's catalog, which the namespace keeps its records
// in (metastore.Catalog implements it). The namespace stages each change
// (atomic, kept through a process crash) and syncs where the NFS or FUSE
// contract makes a change durable (SyncMeta).
type Catalog interface {
	volume.Catalog
	Stage(ops []volume.MetaOp) error
	Sync() error
}

// Backend is where namespace backups go: the engine's backend.
type Backend = volume.Backend

// Config is the namespace's part of a vPool's settings.
type Config struct {
	Name           string        // vPool name: prefix of its backend objects
	VDiskSuffixes  []string      // regular files with one of these name suffixes are vDisks
	BackupInterval time.Duration // how often a changed namespace is backed up; 0: 5 s
	// Capacity reports the backend's usable bytes (df); nil: unknown.
	Capacity func(ctx context.Context) (totalBytes, freeBytes int64, err error)
	Log      *slog.Logger
}

// DefaultVDiskSuffixes are the file names that become vDisks.
var DefaultVDiskSuffixes = []string{".raw", "-flat.vmdk"}

// Namespace is one vPool's tree: directories, files, and vDisk files,
// stored in the metadata store and backed up to the backend.
type Namespace struct {
	cfg       Config
	pool      *volume.Pool
	meta      Catalog
	backend   Backend
	log       *slog.Logger
	files     *volume.VDisk // the file store: regular files' data in 1 MiB chunks
	chunks    uint64        // chunks the file store holds
	journal   *volume.VDisk // the namespace journal (journal.go); nil before it exists
	dataLocks [64]sync.RWMutex

	kernel atomic.Pointer[Mount] // the FUSE mount, whose kernel caches a change may need to drop

	changes  atomic.Uint64 // namespace commits so far
	synced   atomic.Uint64 // changes known durable (meta Sync)
	backedUp atomic.Uint64 // changes in the newest backup
	syncMu   sync.Mutex    // one metadata sync at a time

	mu struct {
		sync.Mutex
		sb    superblock
		open  map[uint64]*openInode
		attrs map[uint64]Attr // inode records read or written lately
		// free mirrors the free file-store chunks ('n f'), highest
		// first, once loaded: taking the first free key from the
		// catalog would skip every key taken before (tombstones), a
		// cost that grows with the files written.
		free       []uint64
		freeLoaded bool
	}
	// The journal's head (guarded by mu): the newest record and where the
	// next one goes; and its ring base: the first record a restore from
	// the newest backup on the backend needs.
	jseq, ringSeq uint64
	joff, ringOff int64
	journalFullAt time.Time
	backupMu      sync.Mutex // one backup at a time
	stop          chan struct{}
	wg            sync.WaitGroup
}

// openInode is the state of an inode with open handles.
type openInode struct {
	refs    int          // guarded by Namespace.mu
	writers int          // handles open for writing; guarded by Namespace.mu
	mtime   atomic.Int64 // vDisks: newest write, not yet stored (0: none)
}

// Caller is who asks: new inodes belong to them.
type Caller struct{ Uid, Gid uint32 }

// Open opens the namespace of a vPool whose engine is open: from the
// metadata store; from the newest backup when the store has none (local
// flash lost); or a new empty tree. vDisks that no entry names are put in
// /lost+found, never dropped.
func Open(ctx context.Context, cfg Config, pool *volume.Pool, meta Catalog, backend Backend) (*Namespace, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.BackupInterval == 0 {
		cfg.BackupInterval = 5 * time.Second
	}
	if len(cfg.VDiskSuffixes) == 0 {
		cfg.VDiskSuffixes = DefaultVDiskSuffixes
	}
	n := &Namespace{cfg: cfg, pool: pool, meta: meta, backend: backend, log: cfg.Log, stop: make(chan struct{})}
	n.mu.open = map[uint64]*openInode{}
	n.mu.attrs = map[uint64]Attr{}
	b, _, ok, err := meta.Get(key(kindSuper))
	if err != nil {
		return nil, fmt.Errorf("fs: read superblock: %w", err)
	}
	restored := false
	if ok {
		if n.mu.sb, err = decodeSuperblock(b); err != nil {
			return nil, err
		}
	} else if restored, err = n.restore(ctx); err != nil {
		return nil, err
	} else if !restored {
		if err := n.format(ctx); err != nil {
			return nil, err
		}
	}
	if err := n.upgrade(); err != nil {
		return nil, err
	}
	newJournal := n.mu.sb.Journal == 0
	if newJournal {
		// a new namespace, or one made before the journal (or restored
		// from a backup of one): the journal starts now
		if err := n.createJournal(ctx); err != nil {
			return nil, err
		}
		n.mu.Lock()
		err = n.commit([]volume.MetaOp{{Key: key(kindSuper), Value: n.mu.sb.encode()}})
		n.mu.Unlock()
		if err != nil {
			return nil, err
		}
	} else if err := n.openJournal(ctx, restored); err != nil {
		return nil, err
	}
	if restored {
		if err := n.meta.Stage([]volume.MetaOp{{Key: key(kindSuper), Value: n.mu.sb.encode()}}); err != nil {
			return nil, err
		}
	}
	if n.files, err = pool.VDisk(n.mu.sb.FileStore); err != nil {
		return nil, fmt.Errorf("fs: the file store vDisk %s: %w", volume.FormatID(n.mu.sb.FileStore), err)
	}
	n.chunks = uint64(n.files.Size()) >> chunkShift
	if restored {
		if err := n.afterRestore(ctx); err != nil {
			return nil, err
		}
	}
	if err := n.freeOrphans(ctx); err != nil {
		return nil, err
	}
	if err := n.adoptLost(ctx); err != nil {
		return nil, err
	}
	// A journal's first backup now: a restore finds the journal through
	// the superblock of a backup.
	if newJournal {
		if err := n.Backup(ctx); err != nil {
			n.log.Warn("fs: first namespace backup failed; changes are protected from the next one on", "err", err)
		}
	}
	// One backup after every start: a restored tree under its new epoch,
	// and changes a stop could not back up (the backend away) are not
	// lost when it answers again.
	n.changes.Add(1)
	n.wg.Add(1)
	go n.backupLoop()
	return n, nil
}

// format creates an empty tree and its file store.
func (n *Namespace) format(ctx context.Context) error {
	fsd, err := n.pool.Create(ctx, n.pool.MaxVDiskSize())
	if err != nil {
		return fmt.Errorf("fs: create the file store: %w", err)
	}
	now := nowNanos()
	root := Attr{Ino: RootIno, Gen: 1, Parent: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2,
		Atime: now, Mtime: now, Ctime: now}
	n.mu.sb = superblock{NextIno: RootIno + 1, Epoch: 1, FileStore: fsd.ID(), ID: newID(), Features: featDirOrder}
	n.log.Info("fs: new namespace", "vpool", n.cfg.Name, "file_store", volume.FormatID(fsd.ID()))
	return n.commit([]volume.MetaOp{{Key: key(kindInode, RootIno), Value: root.encode()},
		{Key: key(kindSuper), Value: n.mu.sb.encode()}})
}

// AbandonForTesting stops the namespace's background work and closes
// nothing (no backup, no stored mtimes): a kill -9, for the tests of
// other packages.
func (n *Namespace) AbandonForTesting() {
	close(n.stop)
	n.wg.Wait()
}

// Close stores pending attributes and backs the namespace up one last
// time (bounded by ctx). The engine stays open: the caller closes it.
func (n *Namespace) Close(ctx context.Context) error {
	close(n.stop)
	n.wg.Wait()
	n.mu.Lock()
	var inos []uint64
	for ino := range n.mu.open {
		inos = append(inos, ino)
	}
	n.mu.Unlock()
	for _, ino := range inos {
		n.storeMtime(ino)
	}
	if n.changes.Load() != n.backedUp.Load() {
		// The catalog holds every change; a backup that cannot be made
		// now (the backend away) is made at the next start.
		if err := n.Backup(ctx); err != nil {
			n.log.Warn("fs: namespace backup at close failed; the next start makes it", "err", err)
		}
	}
	return n.meta.Sync()
}

// BackedUp reports whether the newest backup on the backend holds every
// change of the namespace.
func (n *Namespace) BackedUp() bool { return n.changes.Load() == n.backedUp.Load() }

// commit applies ops atomically and counts the change.
// Inode records are cached (attrCacheSize of them): every NFS call reads
// one or two. Every change of an inode record goes through commit, under
// mu, which updates the cache in the same step.
const attrCacheSize = 32 << 10

func (n *Namespace) commit(ops []volume.MetaOp) error {
	if err := n.journalLocked(ops); err != nil {
		return err
	}
	if n.journal != nil {
		ops = append(ops[:len(ops):len(ops)], n.headOpLocked())
	}
	if err := n.meta.Stage(ops); err != nil {
		for _, op := range ops { // not known which part landed
			if op.Key[1] == kindInode {
				delete(n.mu.attrs, beUint64(op.Key[2:]))
			}
		}
		return fmt.Errorf("fs: %w", err)
	}
	for _, op := range ops {
		if op.Key[1] != kindInode {
			continue
		}
		ino := beUint64(op.Key[2:])
		if a, err := decodeAttr(op.Value); op.Value != nil && err == nil {
			n.cacheAttrLocked(ino, a)
		} else {
			delete(n.mu.attrs, ino)
		}
	}
	n.changes.Add(1)
	return nil
}

func (n *Namespace) cacheAttrLocked(ino uint64, a Attr) {
	if _, ok := n.mu.attrs[ino]; !ok && len(n.mu.attrs) >= attrCacheSize {
		for k := range n.mu.attrs { // drop one at random
			delete(n.mu.attrs, k)
			break
		}
	}
	n.mu.attrs[ino] = a
}

// SyncMeta makes every namespace change so far durable.
func (n *Namespace) SyncMeta() error {
	c := n.changes.Load()
	if n.synced.Load() >= c {
		return nil
	}
	// Group commit: callers queue here while one syncs, and a sync
	// covers every change made before it started.
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	if n.synced.Load() >= c {
		return nil
	}
	upto := n.changes.Load()
	if err := n.meta.Sync(); err != nil {
		return err
	}
	// The journal holds the same changes for a restore elsewhere: with a
	// DTL, flushed, they survive the loss of this host. (Without one, the
	// catalog just synced is what survives here.)
	if n.journal != nil && n.journal.DTL() != nil {
		if err := n.journal.Flush(context.Background()); err != nil {
			return err
		}
	}
	n.synced.Store(upto)
	return nil
}

func (n *Namespace) isVDiskName(name string) bool {
	for _, s := range n.cfg.VDiskSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) {
			return true
		}
	}
	return false
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	case len(name) > 255:
		return fmt.Errorf("%w: %.40q... (%d bytes)", ErrNameTooLong, name, len(name))
	}
	return nil
}

// attrLocked reads an inode record.
func (n *Namespace) attrLocked(ino uint64) (Attr, error) {
	if a, ok := n.mu.attrs[ino]; ok {
		return a, nil
	}
	b, _, ok, err := n.meta.Get(key(kindInode, ino))
	if err != nil {
		return Attr{}, fmt.Errorf("fs: read inode %d: %w", ino, err)
	}
	if !ok {
		return Attr{}, fmt.Errorf("%w: inode %d", ErrStale, ino)
	}
	a, err := decodeAttr(b)
	if err == nil {
		n.cacheAttrLocked(ino, a)
	}
	return a, err
}

func (n *Namespace) dirLocked(ino uint64) (Attr, error) {
	a, err := n.attrLocked(ino)
	if err == nil && !a.IsDir() {
		err = fmt.Errorf("%w: inode %d", ErrNotDir, ino)
	}
	return a, err
}

// childLocked returns directory parent and the inode its entry name
// names.
func (n *Namespace) childLocked(parent uint64, name string) (d, a Attr, err error) {
	if d, err = n.dirLocked(parent); err != nil {
		return d, a, err
	}
	ino, _, err := n.entryLocked(parent, name)
	if err != nil {
		return d, a, err
	}
	a, err = n.attrLocked(ino)
	return d, a, err
}

// entryLocked looks a name up in a directory.
func (n *Namespace) entryLocked(parent uint64, name string) (ino uint64, mode uint32, err error) {
	b, _, ok, err := n.meta.Get(entryKey(parent, name))
	if err != nil {
		return 0, 0, fmt.Errorf("fs: read entry %q: %w", name, err)
	}
	if !ok {
		return 0, 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return decodeEntry(b)
}

// fill completes an attribute set with what is not stored: a vDisk's size
// and allocation, and an open vDisk's newest mtime.
func (n *Namespace) fill(a *Attr) {
	switch {
	case a.IsVDisk():
		if v, err := n.pool.VDisk(a.VDisk); err == nil {
			a.Size = v.Size()
			a.Blocks = v.Allocated() / 512
		}
		n.mu.Lock()
		if oi := n.mu.open[a.Ino]; oi != nil {
			if m := oi.mtime.Load(); m > a.Mtime {
				a.Mtime, a.Ctime = m, max(a.Ctime, m)
			}
		}
		n.mu.Unlock()
	case a.IsRegular():
		a.Blocks = (a.Size + 4095) / 4096 * 8 // chunks are thin: about the written size
	case a.IsDir():
		a.Size, a.Blocks = 4096, 8
	default:
		a.Size = int64(len(a.Target))
	}
}

// GetAttr returns an inode's attributes.
func (n *Namespace) GetAttr(ctx context.Context, ino uint64) (Attr, error) {
	if isSnapIno(ino) {
		return n.snapAttr(ino)
	}
	n.mu.Lock()
	a, err := n.attrLocked(ino)
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	n.fill(&a)
	return a, nil
}

// Lookup finds name in directory parent.
func (n *Namespace) Lookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	switch {
	case isSnapIno(parent):
		return n.snapLookup(ctx, parent, name)
	case parent == RootIno && name == SnapshotsDir:
		return n.snapAttr(mirrorIno(RootIno))
	}
	if name == "." {
		return n.GetAttr(ctx, parent)
	}
	n.mu.Lock()
	var ino uint64
	d, err := n.dirLocked(parent)
	if err == nil {
		if name == ".." {
			ino = d.Parent
		} else if err = checkName(name); err == nil {
			ino, _, err = n.entryLocked(parent, name)
		}
	}
	var a Attr
	if err == nil {
		a, err = n.attrLocked(ino)
	}
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	n.fill(&a)
	return a, nil
}

// NewNode describes an inode to create.
type NewNode struct {
	Mode      uint32 // type and permission bits (umask already applied)
	Rdev      uint32
	Target    string // symlinks
	Exclusive bool   // regular files: fail with ErrExist if name exists
	// Atime and Mtime, when either is set, replace the creation time in
	// those two (NFS exclusive create keeps its verifier there).
	Atime, Mtime int64
	Caller
}

// Create makes name in parent: a file (a vDisk when the name has a vDisk
// suffix), directory, symlink or special file. A regular file that exists
// is returned as it is unless nn.Exclusive; created reports which.
func (n *Namespace) Create(ctx context.Context, parent uint64, name string, nn NewNode) (a Attr, created bool, err error) {
	if err := checkName(name); err != nil {
		return Attr{}, false, err
	}
	if err := writableEntry(parent, name); err != nil {
		return Attr{}, false, err
	}
	typ := nn.Mode & syscall.S_IFMT
	if typ == 0 {
		typ = syscall.S_IFREG
		nn.Mode |= typ
	}
	if typ == syscall.S_IFLNK && (nn.Target == "" || len(nn.Target) > 4095) {
		return Attr{}, false, fmt.Errorf("%w: symlink target of %d bytes", ErrInvalid, len(nn.Target))
	}
	var vdisk *volume.VDisk
	for {
		n.mu.Lock()
		a, created, err = n.createLocked(parent, name, nn, vdisk)
		n.mu.Unlock()
		if !errors.Is(err, errNeedVDisk) {
			break
		}
		// Create the vDisk without the lock; if the name is taken by the
		// time it is ready, it is deleted again.
		if vdisk, err = n.pool.Create(ctx, 0); err != nil {
			return Attr{}, false, err
		}
	}
	if vdisk != nil && (err != nil || !created) {
		if derr := n.pool.Delete(ctx, vdisk.ID()); derr != nil {
			n.log.Warn("fs: drop unused vDisk", "vdisk", volume.FormatID(vdisk.ID()), "err", derr)
		}
	}
	if err != nil {
		return Attr{}, false, err
	}
	n.fill(&a)
	return a, created, nil
}

var errNeedVDisk = errors.New("fs: need a vDisk")

func (n *Namespace) createLocked(parent uint64, name string, nn NewNode, vdisk *volume.VDisk) (Attr, bool, error) {
	d, err := n.dirLocked(parent)
	if err != nil {
		return Attr{}, false, err
	}
	if ino, _, err := n.entryLocked(parent, name); err == nil {
		a, err := n.attrLocked(ino)
		switch {
		case err != nil:
			return Attr{}, false, err
		case nn.Exclusive || nn.Mode&syscall.S_IFMT != syscall.S_IFREG:
			return Attr{}, false, fmt.Errorf("%w: %q", ErrExist, name)
		case a.IsDir():
			return Attr{}, false, fmt.Errorf("%w: %q", ErrIsDir, name)
		}
		return a, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Attr{}, false, err
	}
	isDir := nn.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if nn.Mode&syscall.S_IFMT == syscall.S_IFREG && n.isVDiskName(name) && vdisk == nil {
		return Attr{}, false, errNeedVDisk
	}
	now := nowNanos()
	sb := n.mu.sb
	a := Attr{Ino: sb.NextIno, Gen: sb.Epoch, Parent: parent, Mode: nn.Mode, Uid: nn.Uid, Gid: nn.Gid,
		Nlink: 1, Rdev: nn.Rdev, Atime: now, Mtime: now, Ctime: now, Target: nn.Target}
	if nn.Atime != 0 || nn.Mtime != 0 {
		a.Atime, a.Mtime = nn.Atime, nn.Mtime
	}
	if vdisk != nil {
		a.VDisk = vdisk.ID()
	}
	if isDir {
		a.Nlink = 2
		d.Nlink++
	}
	if d.Mode&syscall.S_ISGID != 0 { // BSD group semantics, as local filesystems do
		a.Gid = d.Gid
		if isDir {
			a.Mode |= syscall.S_ISGID
		}
	}
	d.Mtime, d.Ctime = now, now
	sb.NextIno++
	ops, err := n.setEntry([]volume.MetaOp{
		{Key: key(kindInode, a.Ino), Value: a.encode()},
		{Key: key(kindInode, parent), Value: d.encode()},
		{Key: key(kindSuper), Value: sb.encode()},
	}, parent, name, a.Ino, a.Mode, true)
	if err == nil {
		err = n.commit(ops)
	}
	if err != nil {
		return Attr{}, false, err
	}
	n.mu.sb = sb
	return a, true, nil
}

// Readlink returns a symlink's target.
func (n *Namespace) Readlink(ctx context.Context, ino uint64) (string, error) {
	a, err := n.GetAttr(ctx, ino)
	if err != nil {
		return "", err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", fmt.Errorf("%w: inode %d", ErrNotLink, ino)
	}
	return a.Target, nil
}

// SetAttrIn says what SetAttr changes: only the fields whose flag is set.
type SetAttrIn struct {
	SetMode, SetUid, SetGid, SetSize, SetAtime, SetMtime bool
	Mode, Uid, Gid                                       uint32
	Size                                                 int64
	Atime, Mtime                                         int64 // ns; -1: now
}

// SetAttr changes attributes; a size change truncates or extends the file
// (a vDisk is resized).
func (n *Namespace) SetAttr(ctx context.Context, ino uint64, in SetAttrIn) (Attr, error) {
	if isSnapIno(ino) {
		return Attr{}, ErrReadOnly
	}
	if in.SetSize {
		if in.Size < 0 {
			return Attr{}, fmt.Errorf("%w: size %d", ErrInvalid, in.Size)
		}
		a, err := n.GetAttr(ctx, ino)
		if err != nil {
			return Attr{}, err
		}
		if err := n.resize(ctx, a, in.Size); err != nil {
			return Attr{}, err
		}
	}
	n.mu.Lock()
	a, err := n.attrLocked(ino)
	if err != nil {
		n.mu.Unlock()
		return Attr{}, err
	}
	now := nowNanos()
	if in.SetMode {
		a.Mode = a.Mode&syscall.S_IFMT | in.Mode&^syscall.S_IFMT
	}
	if in.SetUid {
		a.Uid = in.Uid
	}
	if in.SetGid {
		a.Gid = in.Gid
	}
	if (in.SetUid || in.SetGid) && a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		a.Mode &^= syscall.S_ISUID | syscall.S_ISGID
	}
	if in.SetAtime {
		a.Atime = nowIf(in.Atime, now)
	}
	if in.SetMtime {
		a.Mtime = nowIf(in.Mtime, now)
		n.dropPendingMtimeLocked(ino)
	} else if in.SetSize {
		a.Mtime = now
	}
	a.Ctime = now
	err = n.commit([]volume.MetaOp{{Key: key(kindInode, ino), Value: a.encode()}})
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	n.fill(&a)
	return a, nil
}

func nowIf(t, now int64) int64 {
	if t == -1 {
		return now
	}
	return t
}

// resize changes a file's size.
func (n *Namespace) resize(ctx context.Context, a Attr, size int64) error {
	switch {
	case a.IsDir():
		return fmt.Errorf("%w: inode %d", ErrIsDir, a.Ino)
	case a.IsVDisk():
		v, err := n.pool.VDisk(a.VDisk)
		if err != nil {
			return err
		}
		return v.Resize(ctx, size)
	case a.IsRegular():
		return n.resizeFile(ctx, a.Ino, size)
	}
	return fmt.Errorf("%w: size of a special file", ErrInvalid)
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // type bits only
}

// upgrade brings a namespace written by an older vpool up to date: it
// gets an id and the inode-order entries.
func (n *Namespace) upgrade() error {
	sb := n.mu.sb
	if sb.ID != 0 && sb.Features&featDirOrder != 0 {
		return nil
	}
	var ops []volume.MetaOp
	if sb.Features&featDirOrder == 0 {
		prefix := []byte{keyPrefix, kindEntry}
		var derr error
		err := n.meta.Scan(prefix, nil, func(k, v []byte) bool {
			ino, mode, err := decodeEntry(v)
			if err != nil || len(k) < 10 {
				derr = fmt.Errorf("%w: entry key %q", ErrCorrupt, k)
				return false
			}
			ops = append(ops, volume.MetaOp{Key: key(kindDirOrder, beUint64(k[2:10]), ino),
				Value: append([]byte{typeByte(mode)}, k[10:]...)})
			return true
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return fmt.Errorf("fs: upgrade: %w", err)
		}
	}
	if sb.ID == 0 {
		sb.ID = newID()
	}
	sb.Features |= featDirOrder
	if err := n.commit(append(ops, volume.MetaOp{Key: key(kindSuper), Value: sb.encode()})); err != nil {
		return fmt.Errorf("fs: upgrade: %w", err)
	}
	n.log.Info("fs: namespace upgraded", "entries", len(ops))
	n.mu.sb = sb
	return nil
}

// ID is the vPool's namespace id: fixed for its life, kept across
// restores from the backend.
func (n *Namespace) ID() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.sb.ID
}

// StatFS is the vPool's capacity and use, from the backend.
type StatFS struct {
	TotalBytes, FreeBytes int64
	Inodes                uint64
}

// StatFS reports the backend's real capacity.
func (n *Namespace) StatFS(ctx context.Context) (StatFS, error) {
	st := StatFS{TotalBytes: 1 << 50, FreeBytes: 1 << 50}
	if n.cfg.Capacity != nil {
		t, f, err := n.cfg.Capacity(ctx)
		if err != nil {
			return StatFS{}, err
		}
		st.TotalBytes, st.FreeBytes = t, f
	}
	n.mu.Lock()
	st.Inodes = n.mu.sb.NextIno
	n.mu.Unlock()
	return st, nil
}

// MaxFileSize is the largest file the vPool holds (a vDisk's limit).
func (n *Namespace) MaxFileSize() int64 { return n.pool.MaxVDiskSize() }

// JournalID is the id of the namespace journal's vDisk (0: none yet).
func (n *Namespace) JournalID() uint64 {
	if n.journal == nil {
		return 0
	}
	return n.journal.ID()
}

// FileStoreID is the id of the vDisk holding regular files' data.
func (n *Namespace) FileStoreID() uint64 { return n.files.ID() }
