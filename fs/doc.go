// Package fs is a vPool's namespace — directories, files, symlinks and
// vDisk files — and its FUSE export. The NFS gateway serves the same
// Namespace (never through the FUSE mount).
//
// # What a file is
//
// A regular file whose name ends in a vDisk suffix (".raw", "-flat.vmdk";
// a vPool setting) when it is created is a vDisk: its inode names a
// volume.VDisk, which holds its data and size; I/O goes straight to it
// (FUSE direct I/O, parallel direct writes). It can still be mapped
// (CAP_DIRECT_IO_ALLOW_MMAP): the kernel caches mapped pages, writes
// dirty ones back before a direct write of their range and drops them
// after; a write through any other handle (NFS, later NBD) asks the
// kernel to do the same (File.WriteAt, before and after it), as does a
// rollback. A file keeps its kind when renamed. Every other regular file keeps its data in the file store, one
// internal vDisk per vPool, in 1 MiB chunks handed out on first write (a
// 1 KiB file costs one cluster; freed chunks are discarded, so they take
// no space).
//
// # Records (the vPool's catalog, prefix 'n'; see inode.go)
//
//	n s                     superblock: next inode, next chunk, epoch, file store, backup generation,
//	                        namespace id (NFS fsid and handles), features
//	n i <ino>               inode: attributes, parent, vDisk id, symlink target
//	n d <parent> <name>     directory entry: inode, type
//	n x <parent> <ino>      the same entries in inode order: type, the inode's names there
//	                        (NUL-separated: hard links), for NFS READDIR cookies
//	n c <ino> <chunk>       a regular file's chunk -> file-store chunk
//	n f <fchunk>            free file-store chunk
//	n q <fchunk>            freed chunk, reusable after the next backup
//	n o <ino>               orphan: unlinked while open, freed at the last release
//
// Inode numbers are never reused; the generation of a new inode is the
// vPool's epoch, which grows on every restore from the backend (inode
// numbers handed out after the last backup may then be handed out again).
// NFS file handles are (namespace id, inode, generation). Inode records
// are also cached in memory (write-through: every change of one goes
// through Namespace.commit under the namespace lock). A namespace written
// by an older vpool gets its id and inode-order entries when opened.
//
// # Hard links
//
// A file (not a directory) may have up to MaxLinks names, in one
// directory or several; its inode counts them (Nlink) and keeps the
// directory of its first name as Parent. Unlinking a name drops one; the
// last one makes the inode an orphan, as before. Renaming onto another
// name of the same inode does nothing, as POSIX says.
//
// # Durability order
//
//  1. Create: a vDisk is created (and its first manifest queued) before
//     the entry that names it is committed; a crash in between leaves a
//     vDisk no entry names, which the next Open puts in /lost+found.
//  2. Unlink and rename-over: one commit drops the entry and marks the
//     inode an orphan; the data is freed after it (at once, or at the last
//     release), the inode record last. Open frees orphans a crash left.
//  3. Regular-file writes: data to the file store first, then the size.
//  4. Every change is staged in the catalog (atomic, kept by a process
//     crash); fsync, fsyncdir and each NFS call that changes the
//     namespace sync it (SyncMeta, group-committed) before they return:
//     fsync after the vDisk's (or the file store's) Flush.
//  5. Backup (every fs.backup_interval when changed): one consistent scan
//     of all records, then the file store is sealed and its uploads waited
//     for, then the backup object is put, and only then do the chunks
//     quarantined in the scan become free. So a restore never shows one
//     file's data in another: see backup.go.
//
// # Restore from the backend
//
// When the catalog holds no namespace (local flash lost), Open
// loads the newest readable backup, starts a new epoch, discards the
// file-store chunks the backup does not name, frees orphans, and puts the
// vDisks no entry names (created after the backup) in /lost+found.
//
// # Caller's obligations
//
//  1. Open the volume.Pool first, then Open the Namespace over it; Close
//     the Namespace (which backs it up one last time) before the Pool.
//  2. Release every File that Open returned.
//  3. MountNamespace serves the kernel until Mount.Unmount.
//
// This package imports volume and go-fuse; it must not import objstore,
// flashcache or metastore (their implementations are passed in).
package fs
