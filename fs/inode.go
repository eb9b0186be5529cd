package fs

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"vpool/volume"
)

// Metadata keys (all under the prefix 'n', beside the engine's own):
//
//	n s                       -> superblock
//	n i <ino:8>               -> inode record (Attr, then a symlink's target)
//	n d <parent:8> <name>     -> entry: <ino:8> <type:1>
//	n c <ino:8> <chunk:8>     -> file-store chunk of a regular file: <fchunk:8>
//	n f <fchunk:8>            -> free file-store chunk
//	n q <fchunk:8>            -> freed chunk, reusable after the next backup
//	n o <ino:8>               -> orphan: unlinked while open, freed at release
//	n x <parent:8> <ino:8>    -> the same entries in inode order: <type:1> <names, NUL-separated>
//	                             (NFS READDIR cookies resume on it)
//
// Integers are big-endian so that keys sort numerically.
const (
	keyPrefix      = 'n'
	kindSuper      = 's'
	kindInode      = 'i'
	kindEntry      = 'd'
	kindChunk      = 'c'
	kindFree       = 'f'
	kindQuarantine = 'q'
	kindOrphan     = 'o'
	kindDirOrder   = 'x'
	kindJournal    = 'j' // the namespace journal's head (journal.go)
)

// CatalogPrefixes are the first key bytes of the namespace's records in
// the catalog (for moving them out of a store of an older layout).
var CatalogPrefixes = [][]byte{{keyPrefix}}

func key(kind byte, ids ...uint64) []byte {
	k := make([]byte, 2, 2+8*len(ids))
	k[0], k[1] = keyPrefix, kind
	for _, id := range ids {
		k = binary.BigEndian.AppendUint64(k, id)
	}
	return k
}

func entryKey(parent uint64, name string) []byte { return append(key(kindEntry, parent), name...) }

// setEntry and delEntry add the ops that make or drop parent/name -> ino:
// the name key and its inode-order twin, always changed together. The
// twin holds every name ino has in parent (hard links), so both read what
// the ops so far, or else the catalog, leave there; unless only says that
// ino has no other name (a new inode, a directory, a file of one link),
// which keeps creates and unlinks free of that read.
func (n *Namespace) setEntry(ops []volume.MetaOp, parent uint64, name string, ino uint64, mode uint32, only bool) ([]volume.MetaOp, error) {
	names := []string{name}
	if !only {
		_, have, err := n.orderNames(ops, parent, ino)
		if err != nil {
			return ops, err
		}
		if !slices.Contains(have, name) {
			names = append(have, name)
		} else {
			names = have
		}
	}
	return append(ops, volume.MetaOp{Key: entryKey(parent, name), Value: encodeEntry(ino, mode)},
		volume.MetaOp{Key: key(kindDirOrder, parent, ino), Value: encodeOrder(typeByte(mode), names)}), nil
}

func (n *Namespace) delEntry(ops []volume.MetaOp, parent uint64, name string, ino uint64, only bool) ([]volume.MetaOp, error) {
	var typ byte
	var names []string
	if !only {
		var err error
		if typ, names, err = n.orderNames(ops, parent, ino); err != nil {
			return ops, err
		}
		names = slices.DeleteFunc(names, func(s string) bool { return s == name })
	}
	order := volume.MetaOp{Key: key(kindDirOrder, parent, ino)}
	if len(names) > 0 {
		order.Value = encodeOrder(typ, names)
	}
	return append(ops, volume.MetaOp{Key: entryKey(parent, name)}, order), nil
}

// orderNames reads the inode-order record of ino in parent: as the last
// of ops that sets it leaves it, else as stored.
func (n *Namespace) orderNames(ops []volume.MetaOp, parent, ino uint64) (byte, []string, error) {
	k := key(kindDirOrder, parent, ino)
	for i := len(ops) - 1; i >= 0; i-- {
		if bytes.Equal(ops[i].Key, k) {
			typ, names := decodeOrder(ops[i].Value)
			return typ, names, nil
		}
	}
	v, _, ok, err := n.meta.Get(k)
	if err != nil || !ok {
		return 0, nil, err
	}
	typ, names := decodeOrder(v)
	return typ, names, nil
}

// oneName reports whether a has no name but the one being changed.
func oneName(a *Attr) bool { return a.IsDir() || a.Nlink <= 1 }

// An inode-order record is the type byte and the inode's names in the
// directory, NUL-separated (one name, as before links, has no NUL).
func encodeOrder(typ byte, names []string) []byte {
	return append([]byte{typ}, strings.Join(names, "\x00")...)
}

func decodeOrder(v []byte) (byte, []string) {
	if len(v) < 2 {
		return 0, nil
	}
	return v[0], strings.Split(string(v[1:]), "\x00")
}

// RootIno is the root directory's inode number (FUSE's root node id).
const RootIno = 1

// Attr is one inode's attributes, as stored.
type Attr struct {
	Ino    uint64
	Gen    uint64 // the vPool epoch the inode was created in (NFS handles)
	Parent uint64 // the directory holding it (directories: for "..")
	Mode   uint32 // type and permission bits, as in stat(2)
	Uid    uint32
	Gid    uint32
	Nlink  uint32
	Rdev   uint32
	Size   int64 // vDisks: filled in from the vDisk
	Atime  int64 // ns since the epoch
	Mtime  int64
	Ctime  int64
	VDisk  uint64 // the vDisk holding a vDisk file's data; 0 otherwise
	Target string // a symlink's target

	Blocks int64 // 512-byte blocks allocated: filled in, never stored
}

const attrVersion = 1
const attrSize = 1 + 8*3 + 4*5 + 8*5

// IsDir, IsRegular and IsVDisk classify the inode.
func (a *Attr) IsDir() bool     { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (a *Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (a *Attr) IsVDisk() bool   { return a.VDisk != 0 }

func (a *Attr) encode() []byte {
	b := make([]byte, 0, attrSize+len(a.Target))
	b = append(b, attrVersion)
	b = binary.BigEndian.AppendUint64(b, a.Ino)
	b = binary.BigEndian.AppendUint64(b, a.Gen)
	b = binary.BigEndian.AppendUint64(b, a.Parent)
	for _, v := range []uint32{a.Mode, a.Uid, a.Gid, a.Nlink, a.Rdev} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	for _, v := range []int64{a.Size, a.Atime, a.Mtime, a.Ctime, int64(a.VDisk)} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	return append(b, a.Target...)
}

func decodeAttr(b []byte) (Attr, error) {
	if len(b) < attrSize || b[0] != attrVersion {
		return Attr{}, fmt.Errorf("%w: inode record of %d bytes, version %d", ErrCorrupt, len(b), firstByte(b))
	}
	var a Attr
	p := b[1:]
	u64 := func() uint64 { v := binary.BigEndian.Uint64(p); p = p[8:]; return v }
	u32 := func() uint32 { v := binary.BigEndian.Uint32(p); p = p[4:]; return v }
	a.Ino, a.Gen, a.Parent = u64(), u64(), u64()
	a.Mode, a.Uid, a.Gid, a.Nlink, a.Rdev = u32(), u32(), u32(), u32(), u32()
	a.Size, a.Atime, a.Mtime, a.Ctime, a.VDisk = int64(u64()), int64(u64()), int64(u64()), int64(u64()), u64()
	a.Target = string(p)
	if a.Size < 0 {
		return Attr{}, fmt.Errorf("%w: inode %d has size %d", ErrCorrupt, a.Ino, a.Size)
	}
	return a, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

func typeByte(mode uint32) byte { return byte(mode >> 12) }

func encodeEntry(ino uint64, mode uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, ino)
	return append(b, typeByte(mode))
}

func decodeEntry(b []byte) (ino uint64, mode uint32, err error) {
	if len(b) != 9 {
		return 0, 0, fmt.Errorf("%w: directory entry of %d bytes", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), uint32(b[8]) << 12, nil
}

// superblock is the namespace's counters.
type superblock struct {
	NextIno   uint64 // never reused
	NextChunk uint64 // file-store chunks handed out so far (free ones are reused)
	Epoch     uint64 // +1 on every restore from the backend
	FileStore uint64 // the vDisk holding regular files' data
	BackupGen uint64 // generation of the last namespace backup
	ID        uint64 // the vPool's namespace id: NFS fsid and file handles
	Features  uint64 // featDirOrder: the inode-order entries exist
	// the namespace journal (journal.go): its vDisk, and in a backup the
	// newest change it holds and where the journal's next record starts
	Journal     uint64
	JournalBase uint64
	JournalOff  uint64
}

const featDirOrder = 1 << 0

// The first superblocks had neither ID nor Features (41 bytes); Open
// fills both in.
const sbSizeV1, sbSizeV2, sbSize = 41, 57, 81

func (s superblock) encode() []byte {
	b := []byte{attrVersion}
	for _, v := range []uint64{s.NextIno, s.NextChunk, s.Epoch, s.FileStore, s.BackupGen, s.ID, s.Features, s.Journal, s.JournalBase, s.JournalOff} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeSuperblock(b []byte) (superblock, error) {
	if (len(b) != sbSize && len(b) != sbSizeV2 && len(b) != sbSizeV1) || b[0] != attrVersion {
		return superblock{}, fmt.Errorf("%w: superblock of %d bytes", ErrCorrupt, len(b))
	}
	var s superblock
	p := b[1:]
	for _, v := range []*uint64{&s.NextIno, &s.NextChunk, &s.Epoch, &s.FileStore, &s.BackupGen, &s.ID, &s.Features, &s.Journal, &s.JournalBase, &s.JournalOff} {
		if len(p) == 0 {
			break
		}
		*v = binary.BigEndian.Uint64(p)
		p = p[8:]
	}
	return s, nil
}

// newID is a random non-zero namespace id.
func newID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func nowNanos() int64 { return time.Now().UnixNano() }
