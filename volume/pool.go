package volume

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"vpool/flashcache"
	"vpool/vfs"
	"vpool/volume/backend"
)

// Backend is the object store the engine needs (objstore implements it;
// objstore/objstoretest pins the contract).
type Backend = backend.Store

// WriteBuffer is the local-flash SCO store with backpressure
// (flashcache.WriteBuffer implements it).
type WriteBuffer interface {
	Register(owner uint64)
	Unregister(owner uint64)
	Account(owner uint64, n int64)
	Reserve(ctx context.Context, owner uint64, n int64) error
	Release(owner uint64, n int64)
	MarkClean(owner uint64, n int64)
	DropClean(owner uint64, n int64)
	CleanExcess(owner uint64) int64
	OwnerUsed(owner uint64) int64
	Throttling() bool
	Fill() float64
	CreateSCO(owner uint64, seq uint32, sizeBytes int64) (vfs.File, error)
	OpenSCO(owner uint64, seq uint32) (vfs.File, error)
	OpenSCODirect(owner uint64, seq uint32) (vfs.File, error)
	RemoveSCO(owner uint64, seq uint32) error
	// RetireSCO drops an SCO that is on the backend (its file may serve a
	// new SCO).
	RetireSCO(owner uint64, seq uint32) error
	RemoveOwner(owner uint64) error
	ListSCOs(owner uint64) ([]uint32, error)
}

// ReadCache caches backend clusters (flashcache.ReadCache implements it).
type ReadCache interface {
	Get(k flashcache.Key, dst []byte) bool
	Put(k flashcache.Key, data []byte)
	Forget(k flashcache.Key)
}

// Config is the engine's part of a vPool's settings.
type Config struct {
	Name              string        // vPool name: the prefix of its backend objects
	Dir               string        // local flash directory for TLogs
	ClusterSize       int64         // bytes: a power of two, 4 KiB..64 KiB
	SCOSize           int64         // bytes: 4..128 MiB, a multiple of ClusterSize
	MaxVDiskSize      int64         // bytes
	MapCachePages     int           // block-map pages (1 KiB, 64 clusters each) kept in memory per vDisk
	UploadConcurrency int           // SCO uploads at once per vPool
	SealIdle          time.Duration // seal a partly filled SCO after this long without writes; 0: never
	// UploadDefer is how long an SCO's upload may give way to writes (see
	// deferUpload); 0: DefaultUploadDefer, negative: never.
	UploadDefer time.Duration
	Log         *slog.Logger
}

// Defaults for Config fields left zero.
const (
	DefaultClusterSize   = 4 << 10
	DefaultSCOSize       = 64 << 20
	DefaultMaxVDiskSize  = 64 << 40
	DefaultMapCachePages = 16 << 10
)

func checkGeometry(cluster, sco int64) error {
	if cluster < 4<<10 || cluster > 64<<10 || cluster&(cluster-1) != 0 {
		return fmt.Errorf("%w: cluster size %d bytes: want a power of two from 4096 to 65536", ErrBadConfig, cluster)
	}
	if sco < 4<<20 || sco > 128<<20 {
		return fmt.Errorf("%w: SCO size %d bytes: want 4 MiB to 128 MiB", ErrBadConfig, sco)
	}
	if sco%cluster != 0 {
		return fmt.Errorf("%w: SCO size %d bytes is not a multiple of the cluster size %d", ErrBadConfig, sco, cluster)
	}
	return nil
}

func (c *Config) fill() error {
	if c.Name == "" || strings.ContainsAny(c.Name, "/\x00") {
		return fmt.Errorf("%w: vPool name %q", ErrBadConfig, c.Name)
	}
	if c.Dir == "" {
		return fmt.Errorf("%w: no local flash directory", ErrBadConfig)
	}
	if c.ClusterSize == 0 {
		c.ClusterSize = DefaultClusterSize
	}
	if c.SCOSize == 0 {
		c.SCOSize = DefaultSCOSize
	}
	if c.MaxVDiskSize == 0 {
		c.MaxVDiskSize = DefaultMaxVDiskSize
	}
	if c.MapCachePages == 0 {
		c.MapCachePages = DefaultMapCachePages
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = 2
	}
	if c.UploadDefer == 0 {
		c.UploadDefer = DefaultUploadDefer
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if err := checkGeometry(c.ClusterSize, c.SCOSize); err != nil {
		return err
	}
	if c.MaxVDiskSize < c.ClusterSize || c.MaxVDiskSize/c.ClusterSize > 1<<40 {
		return fmt.Errorf("%w: maximum vDisk size %d bytes", ErrBadConfig, c.MaxVDiskSize)
	}
	return nil
}

// Deps are the engine's collaborators.
type Deps struct {
	FS          vfs.FS
	Backend     Backend
	Catalog     Catalog   // vDisk records and upload state: the truth
	Meta        MetaStore // block maps: a cache that TLogs rebuild
	WriteBuffer WriteBuffer
	ReadCache   ReadCache // optional
	// Replicator is the DTL (optional): read back at Open, then one stream
	// per vDisk.
	Replicator Replicator
}

// Pool is the engine of one vPool: its vDisks over a shared backend, write
// buffer, read cache and metadata store.
type Pool struct {
	cfg     Config
	fs      vfs.FS
	backend Backend
	catalog Catalog
	meta    MetaStore
	wb      WriteBuffer
	cache   ReadCache
	repl    Replicator // nil: no DTL
	log     *slog.Logger
	uploads chan struct{} // upload slots
	scrubMu sync.Mutex    // one scrub pass at a time; guards scrubMarks
	// scrubMarks is, per vDisk, what the last scrub pass left waiting.
	scrubMarks map[uint64]scrubMark

	mu struct {
		sync.Mutex
		vdisks  map[uint64]*VDisk
		damaged map[uint64]error // vDisks that Open could not recover, with the cause
		closed  bool
	}
}

// vdiskRecord is a vDisk's settings in the metadata store.
type vdiskRecord struct {
	ClusterSize int64     `json:"cluster_size"`
	SCOSize     int64     `json:"sco_size"`
	InitialSize int64     `json:"initial_size"`
	Created     time.Time `json:"created"`
	Deleting    bool      `json:"deleting,omitempty"`
	Template    bool      `json:"template,omitempty"` // read-only for good (SetTemplate)
	// Epoch is the head's epoch; Snapshots the live snapshots, oldest first.
	Epoch     uint32         `json:"epoch,omitempty"`
	Snapshots []SnapshotInfo `json:"snapshots,omitempty"`
	Dead      []TLogRange    `json:"dead_tlogs,omitempty"`
	// Rollback is set while a rollback rewrites the block map; recovery
	// finishes it.
	Rollback *rollbackState `json:"rollback,omitempty"`
	Parent   *ParentRef     `json:"parent,omitempty"` // clones
	DTL      string         `json:"dtl,omitempty"`    // DTL mode; "": the vPool's default
}

// Open opens a vPool's engine, recovering every vDisk: from local flash
// after a clean stop or a crash, and from the backend alone when local
// flash was lost.
func Open(ctx context.Context, cfg Config, d Deps) (*Pool, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if d.FS == nil || d.Backend == nil || d.Catalog == nil || d.Meta == nil || d.WriteBuffer == nil {
		return nil, fmt.Errorf("%w: missing dependency", ErrBadConfig)
	}
	p := &Pool{cfg: cfg, fs: d.FS, backend: d.Backend, catalog: d.Catalog, meta: d.Meta, wb: d.WriteBuffer, cache: d.ReadCache, repl: d.Replicator,
		log: cfg.Log, uploads: make(chan struct{}, cfg.UploadConcurrency), scrubMarks: map[uint64]scrubMark{}}
	p.mu.vdisks = map[uint64]*VDisk{}
	p.mu.damaged = map[uint64]error{}
	if err := p.fs.MkdirAll(filepath.Join(cfg.Dir, "tlogs"), 0o700); err != nil {
		return nil, fmt.Errorf("volume: local flash directory %s: %w", cfg.Dir, err)
	}
	// The DTL's entries first: what it holds and local flash lacks (a lost
	// host, lost flash, a power loss) becomes local TLog records again.
	if p.repl != nil {
		if err := p.layHeld(ctx); err != nil {
			return nil, fmt.Errorf("volume: vPool %s: read back the DTL: %w", cfg.Name, err)
		}
	}
	ids, err := p.catalogVDisks()
	if err != nil {
		return nil, err
	}
	knownLocally := len(ids) > 0
	if names, err := p.fs.ReadDir(filepath.Join(cfg.Dir, "tlogs")); err == nil {
		for _, n := range names {
			if id, err := parseID(n); err == nil {
				ids[id] = true
			}
		}
	}
	backendIDs, err := p.backendVDisks(ctx)
	if err != nil {
		if !knownLocally {
			return nil, fmt.Errorf("volume: vPool %s: list backend (needed to find vDisks, none known locally): %w", cfg.Name, err)
		}
		p.log.Warn("volume: backend unreachable at open; using local state", "vpool", cfg.Name, "err", err)
	}
	for _, id := range backendIDs {
		ids[id] = true
	}
	sorted := make([]uint64, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sortU64(sorted)
	// Parents before their clones: a clone reads through its parent.
	tried := map[uint64]bool{}
	var recoverOne func(id uint64) error
	recoverOne = func(id uint64) error {
		if tried[id] {
			if p.mu.vdisks[id] == nil {
				return fmt.Errorf("%w: %s", ErrNotFound, FormatID(id))
			}
			return nil
		}
		tried[id] = true
		v, err := p.recoverVDisk(ctx, id, recoverOne)
		if err != nil {
			return fmt.Errorf("vDisk %s: %w", FormatID(id), err)
		}
		if v != nil {
			p.mu.vdisks[id] = v
			v.start()
		}
		return nil
	}
	for _, id := range sorted {
		err := recoverOne(id)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			p.closeAll(ctx)
			return nil, fmt.Errorf("volume: vPool %s: %w", cfg.Name, err)
		}
		// One vDisk that cannot come back does not keep the others from
		// serving: it is damaged, and says why on every access.
		p.mu.damaged[id] = err
		p.log.Error("volume: vDisk damaged: it could not be recovered and will fail every access",
			"vpool", cfg.Name, "vdisk", FormatID(id), "err", err)
	}
	return p, nil
}

// catalogVDisks returns the vDisks the catalog has a record of.
func (p *Pool) catalogVDisks() (map[uint64]bool, error) {
	ids := map[uint64]bool{}
	if err := p.catalog.Scan([]byte{metaKeyVDisk}, nil, func(k, _ []byte) bool {
		if len(k) == 9 {
			ids[binary.BigEndian.Uint64(k[1:])] = true
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("volume: read metadata: %w", err)
	}
	return ids, nil
}

// backendVDisks returns the vDisks that have a manifest on the backend. It
// lists the pool's vDisk prefixes and then each one's manifests, never
// their SCOs and TLogs: opening a pool costs requests in proportion to its
// vDisks, not to its objects.
func (p *Pool) backendVDisks(ctx context.Context) ([]uint64, error) {
	dirs, err := p.backend.ListDirs(ctx, p.cfg.Name+"/")
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, d := range dirs {
		id, err := parseID(strings.TrimSuffix(strings.TrimPrefix(d, p.cfg.Name+"/"), "/"))
		if err != nil {
			continue // not a vDisk's (the namespace's backups)
		}
		mans, err := p.backend.List(ctx, d+"manifest.")
		if err != nil {
			return nil, err
		}
		if len(mans) > 0 {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Damaged returns the vDisks that Open could not recover, with the cause.
func (p *Pool) Damaged() map[uint64]error {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]error, len(p.mu.damaged))
	for id, err := range p.mu.damaged {
		out[id] = err
	}
	return out
}

func sortU64(s []uint64) { sort.Slice(s, func(a, b int) bool { return s[a] < s[b] }) }

func pageIndex(k []byte) uint64 { return binary.BigEndian.Uint64(k[9:]) }

func (p *Pool) newVDisk(id uint64, rec vdiskRecord) (*VDisk, error) {
	v := &VDisk{pool: p, id: id, log: p.log, flushSem: make(chan struct{}, 1), wbSem: make(chan struct{}, 1), cs: rec.ClusterSize, slots: uint32(rec.SCOSize / rec.ClusterSize),
		created: rec.Created, kick: make(chan struct{}, 1), wbKick: make(chan struct{}, 1), done: make(chan struct{})}
	for v.cs>>v.shift > 1 {
		v.shift++
	}
	v.mu.pages = newPageCache(p.cfg.MapCachePages)
	v.mu.segCond = sync.NewCond(&v.mu.RWMutex)
	v.mu.segs = map[uint32]*segment{}
	v.lastWrite.Store(time.Now().UnixNano())
	v.template.Store(rec.Template)
	v.mu.epoch, v.mu.snaps, v.mu.dead = rec.Epoch, rec.Snapshots, rec.Dead
	if rec.Parent != nil {
		pid, err := parseID(rec.Parent.ID)
		var parent *VDisk
		if err == nil {
			parent, err = p.VDisk(pid)
		}
		if err != nil {
			return nil, fmt.Errorf("volume: clone %s: its parent is missing: %w", FormatID(id), err)
		}
		v.parent.Store(&parentRef{v: parent, epoch: rec.Parent.Epoch, alloc: rec.Parent.Allocated})
		v.mu.allocated = rec.Parent.Allocated
	}
	v.mu.manifestStale = rec.Template // the backend may not know yet
	v.dtlMode = rec.DTL
	p.wb.Register(id)
	return v, nil
}

func (v *VDisk) start() {
	v.attachDTL()
	v.bg.Add(2)
	go v.background()
	go v.mapWriter()
}

// Create makes a new thin vDisk of size bytes.
func (p *Pool) Create(ctx context.Context, size int64) (*VDisk, error) {
	if size < 0 || size > p.cfg.MaxVDiskSize {
		return nil, fmt.Errorf("%w: %d bytes (the maximum is %d)", ErrBadSize, size, p.cfg.MaxVDiskSize)
	}
	return p.create(ctx, vdiskRecord{ClusterSize: p.cfg.ClusterSize, SCOSize: p.cfg.SCOSize, InitialSize: size, Created: time.Now().UTC()})
}

func (p *Pool) create(ctx context.Context, rec vdiskRecord) (*VDisk, error) {
	size := rec.InitialSize
	p.mu.Lock()
	closed := p.mu.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	var b [8]byte
	var id uint64
	for id == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		id = binary.LittleEndian.Uint64(b[:])
	}
	rb, _ := json.Marshal(rec)
	// The record first: files without a record or manifest are garbage.
	if err := p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyVDisk, id), Value: rb},
		{Key: metaKey(metaKeyUpload, id), Value: uploadState{}.encode()}}); err != nil {
		return nil, fmt.Errorf("volume: create vDisk: %w", err)
	}
	v, err := p.newVDisk(id, rec)
	if err != nil {
		return nil, err
	}
	if rec.Parent != nil {
		// A clone's manifest first: its TLogs do not name its parent, so
		// with the metadata lost, a clone with TLogs but no manifest would
		// come back as a vDisk of its own. Without TLog 1 and manifest it
		// is a vDisk never completed, removed at the next open.
		err := crashPoint("clone record")
		if err == nil {
			err = v.syncManifest(ctx)
		}
		if err != nil {
			p.wb.Unregister(id)
			p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyVDisk, id)}, {Key: metaKey(metaKeyUpload, id)}})
			return nil, err
		}
	}
	seg, err := v.createSegment(1)
	if err != nil {
		p.wb.Unregister(id)
		p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyVDisk, id)}, {Key: metaKey(metaKeyUpload, id)}})
		return nil, err
	}
	v.mu.cur = seg
	v.mu.segs[1] = seg
	v.size.Store(size)
	finish, err := v.logRecords([]record{{Type: recResize, Cluster: uint64(size)}})
	if err == nil {
		finish()
		err = v.Flush(ctx)
	}
	if err != nil {
		v.closeFiles()
		p.wb.Unregister(id)
		return nil, err
	}
	p.mu.Lock()
	p.mu.vdisks[id] = v
	p.mu.Unlock()
	v.start()
	select { // the first manifest goes out at once
	case v.kick <- struct{}{}:
	default:
	}
	return v, nil
}

// VDisk returns an open vDisk by id.
func (p *Pool) VDisk(id uint64) (*VDisk, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.mu.vdisks[id]
	if v == nil {
		if cause := p.mu.damaged[id]; cause != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, FormatID(id), cause)
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, FormatID(id))
	}
	return v, nil
}

// List returns the ids of all vDisks, ascending.
func (p *Pool) List() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]uint64, 0, len(p.mu.vdisks))
	for id := range p.mu.vdisks {
		ids = append(ids, id)
	}
	sortU64(ids)
	return ids
}

// Delete removes a vDisk and frees its local and backend space. The
// caller ensures no I/O is in flight. A deletion cut short by a crash is
// finished at the next Open.
func (p *Pool) Delete(ctx context.Context, id uint64) error {
	if c := p.clonesOf(id, anyEpoch); len(c) > 0 {
		return &ClonesError{Clones: c}
	}
	p.mu.Lock()
	v := p.mu.vdisks[id]
	delete(p.mu.vdisks, id)
	_, damaged := p.mu.damaged[id]
	delete(p.mu.damaged, id)
	p.mu.Unlock()
	if v == nil && damaged { // what is left of it goes
		p.log.Warn("volume: deleting a damaged vDisk", "vdisk", FormatID(id))
		return p.finishDelete(ctx, id)
	}
	if v == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, FormatID(id))
	}
	v.stop()
	v.closeDTL(true)
	rec := vdiskRecord{ClusterSize: v.cs, SCOSize: int64(v.slots) * v.cs, Created: v.created, Deleting: true}
	rb, _ := json.Marshal(rec)
	if err := p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyVDisk, id), Value: rb}}); err != nil {
		return fmt.Errorf("volume: delete vDisk %s: %w", FormatID(id), err)
	}
	v.mu.Lock()
	up := v.mu.uploadedThrough
	v.mu.Unlock()
	if err := v.writeManifest(ctx, up, true); err != nil {
		p.log.Warn("volume: delete: could not mark the backend manifest", "vdisk", FormatID(id), "err", err)
	}
	v.closeFiles()
	return p.finishDelete(ctx, id)
}

// finishDelete removes everything a deleting vDisk left, backend first
// (manifests last, so that a crash never resurrects half a vDisk), and its
// metadata record last.
func (p *Pool) finishDelete(ctx context.Context, id uint64) error {
	prefix := fmt.Sprintf("%s/%016x/", p.cfg.Name, id)
	names, err := p.backend.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("volume: delete vDisk %s: list backend: %w", FormatID(id), err)
	}
	sort.SliceStable(names, func(a, b int) bool {
		return !strings.Contains(names[a], "/manifest.") && strings.Contains(names[b], "/manifest.")
	})
	for _, n := range names {
		if err := p.backend.Delete(ctx, n); err != nil {
			return fmt.Errorf("volume: delete vDisk %s: %w", FormatID(id), err)
		}
	}
	dir := filepath.Join(p.cfg.Dir, "tlogs", FormatID(id))
	if files, err := p.fs.ReadDir(dir); err == nil {
		for _, f := range files {
			p.fs.Remove(filepath.Join(dir, f))
		}
		p.fs.Remove(dir)
	}
	if seqs, err := p.wb.ListSCOs(id); err == nil {
		for _, s := range seqs {
			p.wb.RemoveSCO(id, s)
		}
	}
	p.wb.RemoveOwner(id)
	p.wb.Unregister(id)
	var ops []MetaOp
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := p.meta.Commit(ops)
		ops = ops[:0]
		return err
	}
	var scanErr error
	for _, kind := range []byte{metaKeyPage, metaKeyVersion} {
		err = errors.Join(err, p.meta.Scan(metaKey(kind, id), nil, func(k, _ []byte) bool {
			ops = append(ops, MetaOp{Key: append([]byte(nil), k...)})
			if len(ops) >= 1000 {
				scanErr = flush()
			}
			return scanErr == nil
		}))
	}
	if err = errors.Join(err, scanErr, flush()); err != nil {
		return fmt.Errorf("volume: delete vDisk %s: metadata: %w", FormatID(id), err)
	}
	// The block map's last keys, then (made durable first) the record: a
	// record without a block map is a deletion to finish, never a vDisk.
	if err := p.meta.Commit([]MetaOp{{Key: metaKey(metaKeyMarker, id)}, {Key: metaKey(metaKeyRecount, id)}}); err != nil {
		return fmt.Errorf("volume: delete vDisk %s: metadata: %w", FormatID(id), err)
	}
	if err := p.meta.Sync(); err != nil {
		return fmt.Errorf("volume: delete vDisk %s: metadata: %w", FormatID(id), err)
	}
	if err := p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyUpload, id)}, {Key: metaKey(metaKeyVDisk, id)}}); err != nil {
		return fmt.Errorf("volume: delete vDisk %s: metadata: %w", FormatID(id), err)
	}
	p.log.Info("volume: vDisk deleted", "vdisk", FormatID(id))
	return nil
}

// Close flushes every vDisk, stores its block map and closes it. Uploads
// not done resume at the next Open.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.mu.closed = true
	p.mu.Unlock()
	return p.closeAll(ctx)
}

func (p *Pool) closeAll(ctx context.Context) error {
	p.mu.Lock()
	vds := make([]*VDisk, 0, len(p.mu.vdisks))
	for _, v := range p.mu.vdisks {
		vds = append(vds, v)
	}
	p.mu.vdisks = map[uint64]*VDisk{}
	p.mu.Unlock()
	var errs []error
	for _, v := range vds {
		v.stop()
		if err := v.Flush(ctx); err != nil {
			errs = append(errs, err)
		} else if err := v.writeBack(ctx); err != nil {
			errs = append(errs, err)
		}
		v.closeDTL(false)
		v.closeFiles()
	}
	return errors.Join(errs...)
}

// AbandonForTesting stops all background work and drops the pool without
// flushing or storing anything: what a kill -9 leaves behind.
func (p *Pool) AbandonForTesting() {
	p.mu.Lock()
	vds := p.mu.vdisks
	p.mu.vdisks = map[uint64]*VDisk{}
	p.mu.closed = true
	p.mu.Unlock()
	for _, v := range vds {
		v.stop()
		v.closeDTL(false)
		v.mu.Lock()
		v.mu.closed = true
		v.mu.Unlock()
	}
}

// stop ends the vDisk's background work.
func (v *VDisk) stop() {
	select {
	case <-v.done:
	default:
		close(v.done)
	}
	v.bg.Wait()
}

func (v *VDisk) closeFiles() {
	v.mu.Lock()
	v.mu.closed = true
	segs := make([]*segment, 0, len(v.mu.segs)+1)
	for _, s := range v.mu.segs {
		segs = append(segs, s)
	}
	if v.mu.spare != nil {
		segs = append(segs, v.mu.spare)
		v.mu.spare = nil
	}
	v.mu.Unlock()
	for _, s := range segs {
		s.closeDirect()
		if s.sco != nil {
			s.sco.Close()
		}
		s.tlog.Close()
	}
}

// Stats is what one vDisk is doing, for status and metrics.
type Stats struct {
	ID               string `json:"id"`
	SizeBytes        int64  `json:"size_bytes"`
	AllocatedBytes   int64  `json:"allocated_bytes"`
	WriteBufferBytes int64  `json:"write_buffer_bytes"` // in SCOs not yet on the backend
	SCOsNotUploaded  int    `json:"scos_not_uploaded"`
	UploadedThrough  uint32 `json:"uploaded_through"`
	Throttling       bool   `json:"throttling"`
	UploadError      string `json:"upload_error,omitempty"`
	Reads            int64  `json:"reads"`
	Writes           int64  `json:"writes"`
	Flushes          int64  `json:"flushes"`
	ReadBytes        int64  `json:"read_bytes"`
	WrittenBytes     int64  `json:"written_bytes"`
	ReadNanos        int64  `json:"read_nanos"` // total latency
	WriteNanos       int64  `json:"write_nanos"`
	CacheHits        int64  `json:"cache_hits"`
	CacheMisses      int64  `json:"cache_misses"`
	BackendReads     int64  `json:"backend_reads"`
	ReadErrors       int64  `json:"read_errors"` // reads that failed (EIO to a client)
	MapPagesCached   int    `json:"map_pages_cached"`
	MapPagesDirty    int    `json:"map_pages_dirty"`
	Template         bool   `json:"template"`
	Snapshots        int    `json:"snapshots"`
	Parent           string `json:"parent,omitempty"` // a clone's parent vDisk
}

// Stats returns the vDisk's counters.
func (v *VDisk) Stats() Stats {
	v.mu.Lock()
	st := Stats{ID: FormatID(v.id), SizeBytes: v.size.Load(), AllocatedBytes: v.mu.allocated * v.cs,
		UploadedThrough: v.mu.uploadedThrough, MapPagesCached: len(v.mu.pages.pages), MapPagesDirty: len(v.mu.pages.dirty),
		Template: v.template.Load(), Snapshots: len(v.mu.snaps)}
	if pr := v.parent.Load(); pr != nil {
		st.Parent = FormatID(pr.v.id)
	}
	for s, seg := range v.mu.segs {
		if s > v.mu.uploadedThrough && seg.sealed {
			st.SCOsNotUploaded++
		}
	}
	if v.mu.uploadErr != nil {
		st.UploadError = v.mu.uploadErr.Error()
	}
	v.mu.Unlock()
	st.WriteBufferBytes = v.pool.wb.OwnerUsed(v.id)
	st.Throttling = v.pool.wb.Throttling()
	st.Reads, st.Writes, st.Flushes = v.stats.reads.Load(), v.stats.writes.Load(), v.stats.flushes.Load()
	st.ReadBytes, st.WrittenBytes = v.stats.readBytes.Load(), v.stats.writtenBytes.Load()
	st.ReadNanos, st.WriteNanos = v.stats.readNanos.Load(), v.stats.writeNanos.Load()
	st.CacheHits, st.CacheMisses, st.BackendReads = v.stats.cacheHits.Load(), v.stats.cacheMiss.Load(), v.stats.backendR.Load()
	st.ReadErrors = v.stats.readErrors.Load()
	return st
}

// WaitUploaded blocks until every SCO sealed so far is on the backend.
func (v *VDisk) WaitUploaded(ctx context.Context) error {
	v.mu.Lock()
	target := v.mu.cur.seq - 1
	v.mu.Unlock()
	for {
		v.mu.Lock()
		done := v.mu.uploadedThrough >= target && v.mu.manifestGen > 0 && !v.mu.manifestStale
		v.mu.Unlock()
		if done {
			return nil
		}
		select {
		case v.kick <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// MaxVDiskSize is the largest size a vDisk of this pool may have.
func (p *Pool) MaxVDiskSize() int64 { return p.cfg.MaxVDiskSize }
