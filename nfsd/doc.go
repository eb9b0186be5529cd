// Package nfsd exports a vPool's namespace over NFS version 3 (RFC 1813)
// on TCP, with the MOUNT v3 protocol and a portmapper (version 2), so that
// VMware ESXi mounts the vPool as a datastore and qemu's nfs:// driver
// (libnfs) opens vDisks on it. It talks to the namespace (fs) and, through
// it, the engine directly: a change through FUSE or NFS is visible on the
// other side at once.
//
// # Transport
//
// ONC RPC (RFC 5531) over TCP with record marking; a record may come in
// many fragments and is limited to 1 MiB + 64 KiB (a 1 MiB WRITE); longer
// records, and anything that is not an RPC call, close the connection
// after the calls already read are answered. Calls on one connection are
// processed concurrently (64 per connection) and replies go out as they
// are ready, matched by XID: ESXi sends a datastore's whole traffic over
// one connection. UDP is served for the portmapper and MOUNT only. When
// another portmapper (rpcbind) holds port 111, MOUNT and
// NFS are registered with it (SET from a privileged port) and
// unregistered at close.
//
// # What clients can make the gateway hold
//
// Memory is bounded whatever clients send (limits.go): connections (1024
// in all, 256 per client address, each with a 32 KiB read buffer and a
// goroutine); and the bytes of calls and replies in flight beyond an
// allowance of 8 KiB per call, which come out of one budget (nfs.buffer,
// 32 MiB) of which one connection holds at most a quarter. A call takes
// its bytes before its record is read (so a 1 MiB WRITE is charged when
// its header arrives), a READ or READDIR before its reply is built, and
// gives them back when its reply is written. A connection that cannot
// have more is not read: TCP pushes back on the client. A client that
// stops reading replies is dropped when a write has waited 60 s; one
// whose call does not arrive whole within 30 s is dropped. At a
// connection limit the connection idle longest (no call in flight) is
// closed for the new one, and a connection with no call in flight that
// sends nothing for nfs.idle_timeout (6 min) is closed. Read-ahead holds
// at most 32 buffers of its own. Measured with the attacks of
// TestNFSResourceBounds (1100 idle connections, 1000 senders stalled in
// 1 MiB calls, one connection pipelining 1 MiB READs without reading the
// replies), the daemon's peak RSS grew by 122 MiB (Go's collector lets
// the heap reach about twice what is live); the test fails above 256 MiB.
//
// # Who may do what
//
// Credentials are AUTH_SYS, trusted as sent (AUTH_NONE is the anonymous
// user), so the protection is knfsd's: each client address is matched
// against the rules (nfs.allow, exports(5) options; the most specific
// network wins) at accept, or per datagram. NFS and MNT calls from a
// source port >= 1024 get AUTH_TOOWEAK unless the rule is insecure: only
// root can send from below 1024; such a connection may send records of
// 8 KiB at most (the portmapper's calls), so it holds next to nothing. A rule may squash root (uid and gid 0,
// and group 0 in the supplementary list) or every user to its anonymous
// uid and gid, and may make the export read-only (every change is
// NFS3ERR_ROFS, ACCESS grants no modify right). Permissions are checked
// here as POSIX does, for the squashed identity, with the owner override
// of Linux's server (the owner may always read and write its file).
//
// # File handles
//
// 28 bytes: version, the namespace id (fs.Namespace.ID, kept across
// restarts and restores), the inode number and its generation (the
// vPool's epoch when the inode was made). Inode numbers are never reused,
// and a restore from the backend starts a new epoch, so a handle is valid
// for as long as its inode lives, across daemon restarts, and stale
// (NFS3ERR_STALE) after. fileid is the inode number; fsid the namespace
// id.
//
// # Writes
//
// UNSTABLE writes are acknowledged once in the write buffer (they survive
// the daemon's kill -9, not a power loss); FILE_SYNC and DATA_SYNC writes
// and COMMIT flush the file (the engine's Flush) and sync the metadata
// store when the namespace changed. The write verifier is random per
// start, so after a restart clients resend what they had not committed.
// Namespace changes (CREATE, MKDIR, REMOVE, RENAME, SETATTR, ...) are
// synced before the reply, group-committed across concurrent calls.
// Exclusive CREATE keeps the verifier in atime and mtime (seconds), as
// Linux's server does.
//
// # Open files
//
// NFS has no open or close: a file is opened at its first READ, WRITE or
// COMMIT and released after 10 s without calls. A file removed while held
// stays readable through its handles until then, as an open file does
// locally; its space is freed at the release.
//
// # Read-ahead
//
// A client that reads a file one large READ at a time (libnfs's nfs-cp)
// waits for each reply before asking for the next range. When a READ of
// 64 KiB or more starts where the file's last READ ended and no other
// READ of the file is in flight, the next range of the same size is read
// (and its checksums checked) on another goroutine while the reply goes
// out; at most 32 such buffers are held in all. The next READ takes that
// data only if the file's change count (fs.File.Changes: writes, unmaps,
// resizes and rollbacks of its vDisk, or of the file store for a regular
// file) is what it was before the read, and the size still gives the
// same count; else it reads again. So an acknowledged write through NFS
// or FUSE is never answered with older data. `vpool status` and /metrics
// count the bytes taken from read-ahead and the bytes no READ took.
//
// # Directories
//
// READDIR and READDIRPLUS list "." and ".." (cookies 1 and 2) and then the
// entries in inode order (fs.Namespace.ReadDirOrder); an entry's cookie is
// its inode number + 2, so a listing resumes after any entry even while
// entries are added and removed. The names one inode has in a directory
// (hard links) share its cookie and go in one reply. The cookie verifier
// is the namespace id.
//
// # Not served
//
// NFSv2 and NFSv4, NFS over UDP, NLM (ESXi locks with .lck files; Linux
// clients mount with -o nolock), the sticky bit's rule on removal, and
// Linux's protected_hardlinks rule (LINK needs write access to the
// directory only, as POSIX says).
package nfsd
