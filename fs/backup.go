package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"vpool/volume"
)

// A namespace backup is one backend object holding every namespace record
// at one instant:
//
//	"VPNSBK01" | gen:8 | count:8 | count × (uvarint keylen, key, uvarint vallen, value) | crc32c:4
//
// named <vpool>/namespace/backup.<gen:020d>. Order of a backup: (1) read
// all records in one consistent scan; (2) seal the file store and wait for
// its uploads, so that the backend holds every chunk the records name; (3)
// put the object; (4) only then return the chunks quarantined in (1) to the
// free list, and delete backups older than the previous one.

const backupMagic = "VPNSBK01"

func backupPrefix(pool string) string { return pool + "/namespace/backup." }

func backupName(pool string, gen uint64) string {
	return fmt.Sprintf("%s%020d", backupPrefix(pool), gen)
}

type record struct{ k, v []byte }

func encodeBackup(gen uint64, recs []record) []byte {
	var b bytes.Buffer
	b.WriteString(backupMagic)
	b.Write(binary.BigEndian.AppendUint64(nil, gen))
	b.Write(binary.BigEndian.AppendUint64(nil, uint64(len(recs))))
	for _, r := range recs {
		b.Write(binary.AppendUvarint(nil, uint64(len(r.k))))
		b.Write(r.k)
		b.Write(binary.AppendUvarint(nil, uint64(len(r.v))))
		b.Write(r.v)
	}
	out := b.Bytes()
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func decodeBackup(b []byte) (gen uint64, recs []record, err error) {
	if len(b) < len(backupMagic)+20 || string(b[:len(backupMagic)]) != backupMagic {
		return 0, nil, fmt.Errorf("%w: namespace backup header", ErrCorrupt)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return 0, nil, fmt.Errorf("%w: namespace backup checksum", ErrCorrupt)
	}
	p := body[len(backupMagic):]
	gen, count := binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])
	p = p[16:]
	if count > uint64(len(p)) {
		return 0, nil, fmt.Errorf("%w: namespace backup of %d records in %d bytes", ErrCorrupt, count, len(p))
	}
	recs = make([]record, 0, count)
	field := func() ([]byte, bool) {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) {
			return nil, false
		}
		f := p[n : n+int(l)]
		p = p[n+int(l):]
		return f, true
	}
	for i := uint64(0); i < count; i++ {
		k, ok1 := field()
		v, ok2 := field()
		if !ok1 || !ok2 || len(k) < 2 || k[0] != keyPrefix {
			return 0, nil, fmt.Errorf("%w: namespace backup record %d", ErrCorrupt, i)
		}
		recs = append(recs, record{k, v})
	}
	if len(p) != 0 {
		return 0, nil, fmt.Errorf("%w: %d bytes after the namespace backup's records", ErrCorrupt, len(p))
	}
	return gen, recs, nil
}

func (n *Namespace) backupLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.BackupInterval)
	defer t.Stop()
	delay := n.cfg.BackupInterval
	next := time.Now()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.changes.Load() == n.backedUp.Load() || time.Now().Before(next) {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := n.Backup(ctx)
		cancel()
		if err != nil {
			n.log.Warn("fs: namespace backup failed; will retry", "err", err, "retry_in", delay)
			next = time.Now().Add(delay)
			delay = min(2*delay, 5*time.Minute)
		} else {
			delay = n.cfg.BackupInterval
		}
	}
}

// Backup writes the namespace to the backend now.
func (n *Namespace) Backup(ctx context.Context) error {
	n.backupMu.Lock()
	defer n.backupMu.Unlock()
	changes := n.changes.Load()
	var recs []record
	var quarantined []uint64
	n.mu.Lock()
	gen := n.mu.sb.BackupGen + 1 // only Backup changes it, under backupMu
	// The backup holds every change through the journal's newest record
	// (staged before the scan): a restore replays those after it.
	jseq, joff := n.jseq, n.joff
	n.mu.sb.JournalBase, n.mu.sb.JournalOff = jseq, uint64(joff)
	err := n.meta.Stage([]volume.MetaOp{{Key: key(kindSuper), Value: n.mu.sb.encode()}})
	n.mu.Unlock()
	if err != nil {
		return err
	}
	// One scan is one consistent snapshot of the store, so namespace
	// changes go on meanwhile. A change it misses counted after changes
	// was read, so it gets the next backup; a chunk quarantined after it
	// stays quarantined until then.
	err = n.meta.Scan([]byte{keyPrefix}, nil, func(k, v []byte) bool {
		recs = append(recs, record{append([]byte(nil), k...), append([]byte(nil), v...)})
		if k[1] == kindQuarantine {
			quarantined = append(quarantined, beUint64(k[2:]))
		}
		return true
	})
	if err != nil {
		return err
	}
	if err := n.files.Flush(ctx); err != nil {
		return err
	}
	if err := n.files.Seal(); err != nil {
		return err
	}
	if err := n.files.WaitUploaded(ctx); err != nil {
		return err
	}
	obj := encodeBackup(gen, recs)
	if err := n.backend.Put(ctx, backupName(n.cfg.Name, gen), bytes.NewReader(obj), int64(len(obj))); err != nil {
		return fmt.Errorf("fs: namespace backup %d: %w", gen, err)
	}
	n.mu.Lock()
	sb := n.mu.sb
	sb.BackupGen = gen
	ops := []volume.MetaOp{{Key: key(kindSuper), Value: sb.encode()}}
	for _, c := range quarantined {
		ops = append(ops, volume.MetaOp{Key: key(kindQuarantine, c)}, volume.MetaOp{Key: key(kindFree, c), Value: []byte{}})
	}
	err = n.meta.Stage(ops) // not a change worth another backup
	if err == nil {
		n.mu.sb = sb
		n.chunksFreedLocked(quarantined)
		n.ringSeq, n.ringOff = jseq, joff // the backend holds them now: the ring may reuse their room
	} else {
		n.mu.freeLoaded = false
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.backedUp.Store(changes)
	old, err := n.backupGens(ctx)
	if err == nil {
		for _, g := range old {
			if g+1 < gen {
				if err := n.backend.Delete(ctx, backupName(n.cfg.Name, g)); err != nil {
					n.log.Warn("fs: delete old namespace backup", "gen", g, "err", err)
				}
			}
		}
	}
	n.log.Debug("fs: namespace backed up", "gen", gen, "records", len(recs), "bytes", len(obj))
	return nil
}

// backupGens lists the backups on the backend, oldest first.
func (n *Namespace) backupGens(ctx context.Context) ([]uint64, error) {
	names, err := n.backend.List(ctx, backupPrefix(n.cfg.Name))
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, name := range names {
		if g, err := strconv.ParseUint(strings.TrimPrefix(name, backupPrefix(n.cfg.Name)), 10, 64); err == nil {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(a, b int) bool { return gens[a] < gens[b] })
	return gens, nil
}

// restore loads the newest readable backup into the empty metadata store.
func (n *Namespace) restore(ctx context.Context) (bool, error) {
	gens, err := n.backupGens(ctx)
	if err != nil {
		return false, fmt.Errorf("fs: list namespace backups: %w", err)
	}
	for i := len(gens) - 1; i >= 0; i-- {
		name := backupName(n.cfg.Name, gens[i])
		size, err := n.backend.Size(ctx, name)
		var b []byte
		if err == nil {
			b = make([]byte, size)
			err = n.backend.GetRange(ctx, name, b, 0)
		}
		var recs []record
		if err == nil {
			_, recs, err = decodeBackup(b)
		}
		if err != nil {
			n.log.Error("fs: namespace backup unreadable; trying an older one", "backup", name, "err", err)
			continue
		}
		n.log.Info("fs: restoring the namespace from the backend", "backup", name, "records", len(recs))
		var sb superblock
		found := false
		ops := make([]volume.MetaOp, 0, 1024)
		for _, r := range recs {
			if r.k[1] == kindSuper {
				if sb, err = decodeSuperblock(r.v); err != nil {
					return false, err
				}
				found = true
				continue
			}
			ops = append(ops, volume.MetaOp{Key: r.k, Value: r.v})
			if len(ops) == cap(ops) {
				if err := n.meta.Stage(ops); err != nil {
					return false, err
				}
				ops = ops[:0]
			}
		}
		if !found {
			return false, fmt.Errorf("%w: namespace backup %s has no superblock", ErrCorrupt, name)
		}
		// A new epoch: inode numbers handed out after this backup may be
		// handed out again, so handles from before must not match them.
		sb.Epoch++
		sb.BackupGen = gens[len(gens)-1]
		n.mu.sb = sb
		clear(n.mu.attrs)
		ops = append(ops, volume.MetaOp{Key: key(kindSuper), Value: sb.encode()})
		if err := n.meta.Stage(ops); err != nil {
			return false, err
		}
		if err := n.meta.Sync(); err != nil { // the new epoch before any handle of it
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// afterRestore makes chunks the backup does not name read as zeros: free
// ones, quarantined ones and those never handed out (they may hold data
// written after the backup), then frees the quarantined ones.
func (n *Namespace) afterRestore(ctx context.Context) error {
	var free []uint64
	for _, kind := range []byte{kindFree, kindQuarantine} {
		if err := n.meta.Scan(key(kind), nil, func(k, _ []byte) bool {
			free = append(free, beUint64(k[2:]))
			return true
		}); err != nil {
			return err
		}
	}
	for _, c := range free {
		if err := n.files.Discard(ctx, int64(c)<<chunkShift, chunkSize); err != nil {
			return err
		}
	}
	n.mu.Lock()
	next := n.mu.sb.NextChunk
	n.mu.Unlock()
	if tail := n.files.Size() - int64(next)<<chunkShift; tail > 0 {
		if err := n.files.Discard(ctx, int64(next)<<chunkShift, tail); err != nil {
			return err
		}
	}
	var ops []volume.MetaOp
	if err := n.meta.Scan(key(kindQuarantine), nil, func(k, _ []byte) bool {
		c := beUint64(k[2:])
		ops = append(ops, volume.MetaOp{Key: key(kindQuarantine, c)}, volume.MetaOp{Key: key(kindFree, c), Value: []byte{}})
		return true
	}); err != nil {
		return err
	}
	if len(ops) > 0 {
		n.mu.Lock()
		n.mu.freeLoaded = false // read again when next needed
		n.mu.Unlock()
		if err := n.commit(ops); err != nil {
			return err
		}
	}
	return n.files.Flush(ctx)
}

// LostFound is the directory that receives vDisks no entry names.
const LostFound = "lost+found"

// adoptLost puts every vDisk of the pool that no inode names (created after
// the last backup, or before a crash let its entry be stored) into
// /lost+found as <id>.raw.
func (n *Namespace) adoptLost(ctx context.Context) error {
	named := map[uint64]bool{n.files.ID(): true}
	if n.journal != nil {
		named[n.journal.ID()] = true
	}
	if err := n.meta.Scan(key(kindInode), nil, func(_, v []byte) bool {
		if a, err := decodeAttr(v); err == nil && a.VDisk != 0 {
			named[a.VDisk] = true
		}
		return true
	}); err != nil {
		return err
	}
	var lost []uint64
	for _, id := range n.pool.List() {
		if !named[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	dir, err := n.Lookup(ctx, RootIno, LostFound)
	if errors.Is(err, ErrNotFound) {
		dir, _, err = n.Create(ctx, RootIno, LostFound, NewNode{Mode: syscall.S_IFDIR | 0o700})
	}
	if err != nil {
		return fmt.Errorf("fs: /%s: %w", LostFound, err)
	}
	for _, id := range lost {
		name := volume.FormatID(id) + ".raw"
		n.log.Warn("fs: a vDisk no file names; adopted", "vdisk", volume.FormatID(id), "path", "/"+LostFound+"/"+name)
		n.mu.Lock()
		err := n.adoptLocked(dir.Ino, name, id)
		n.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (n *Namespace) adoptLocked(dir uint64, name string, id uint64) error {
	d, err := n.dirLocked(dir)
	if err != nil {
		return err
	}
	now := nowNanos()
	sb := n.mu.sb
	a := Attr{Ino: sb.NextIno, Gen: sb.Epoch, Parent: dir, Mode: syscall.S_IFREG | 0o600, Nlink: 1,
		Atime: now, Mtime: now, Ctime: now, VDisk: id}
	sb.NextIno++
	d.Mtime, d.Ctime = now, now
	ops, err := n.setEntry([]volume.MetaOp{{Key: key(kindInode, a.Ino), Value: a.encode()},
		{Key: key(kindInode, dir), Value: d.encode()}, {Key: key(kindSuper), Value: sb.encode()}},
		dir, name, a.Ino, a.Mode, true)
	if err == nil {
		err = n.commit(ops)
	}
	if err != nil {
		return err
	}
	n.mu.sb = sb
	return nil
}
