package fs

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// ErrMountBusy is returned when the mountpoint already holds a live mount.
var ErrMountBusy = errors.New("fs: mountpoint is busy")

// Mount is a live FUSE mount of a namespace.
type Mount struct {
	dir    string
	server *fuse.Server
	fs     *fuseFS
	ns     *Namespace
}

// MountOptions tune the FUSE mount (tests and benchmarks).
type MountOptions struct {
	Debug bool
}

// FUSEOptions are the FUSE settings the data path depends on: without
// CAP_ASYNC_DIO, libaio O_DIRECT runs at queue depth 1; without direct I/O
// and parallel direct writes (set per vDisk at open), writes to one file
// are serialised; with xattrs every write costs a GETXATTR round trip.
// CAP_DIRECT_IO_ALLOW_MMAP lets vDisks (direct I/O) be mapped shared: the
// kernel keeps mapped pages in its cache, writes dirty ones back with
// WRITE before a direct write of the range and invalidates them after.
func FUSEOptions(name string, debug bool, l *slog.Logger) *fuse.MountOptions {
	return &fuse.MountOptions{
		AllowOther:           true,
		Options:              []string{"default_permissions"},
		MaxBackground:        256,
		MaxWrite:             1 << 20,
		DisableXAttrs:        true,
		DisableSplice:        true, // measured: splicing replies costs more CPU than the copy it saves
		FsName:               "vpool:" + name,
		Name:                 "vpool",
		DirectMount:          true,
		Debug:                debug,
		ExtraCapabilities:    fuse.CAP_ASYNC_DIO | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		DisabledCapabilities: fuse.CAP_PASSTHROUGH, // every byte goes through the daemon
		Logger:               log.New(slogWriter{l}, "", 0),
	}
}

// MountNamespace mounts ns at dir (created if missing). A stale mount left
// there by a killed daemon ("transport endpoint is not connected") is
// detached first; a live mount is ErrMountBusy.
func MountNamespace(ns *Namespace, dir string, o MountOptions) (*Mount, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := PrepareMountpoint(dir, ns.log); err != nil {
		return nil, err
	}
	ffs := newFuseFS(ns)
	server, err := fuse.NewServer(ffs, dir, FUSEOptions(ns.cfg.Name, o.Debug, ns.log))
	if err != nil {
		return nil, fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return nil, fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	ns.log.Info("fs: mounted", "mountpoint", dir)
	m := &Mount{dir: dir, server: server, fs: ffs, ns: ns}
	ns.kernel.Store(m)
	return m, nil
}

// PrepareMountpoint makes dir ready for a mount: created if missing, a
// stale mount detached, a live one ErrMountBusy. Call it before opening
// anything, to fail fast.
func PrepareMountpoint(dir string, log *slog.Logger) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := cleanStale(dir, log); err != nil {
		return err
	}
	if err := mkdirAllPublic(dir); err != nil {
		return fmt.Errorf("fs: mountpoint %s: %w", dir, err)
	}
	return nil
}

// mkdirAllPublic creates dir and its missing parents with mode 0755,
// whatever the daemon's umask: other users reach the mount through them.
func mkdirAllPublic(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return syscall.ENOTDIR
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAllPublic(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	return os.Chmod(dir, 0o755)
}

func cleanStale(dir string, log *slog.Logger) error {
	m, mounted := mountAt(dir)
	if !mounted {
		return nil
	}
	// stat may be answered from the kernel's attribute cache; reading the
	// directory needs the daemon.
	_, err := os.ReadDir(dir)
	if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
		log.Warn("fs: detaching a stale mount left by a daemon that died", "mountpoint", dir)
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("fs: stale mount at %s: unmount: %w", dir, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %s already has a %s mount (%s); unmount it or choose another --mountpoint", ErrMountBusy, dir, m.fstype, m.source)
}

// slogWriter sends go-fuse's log lines to slog at debug level (they are
// notes such as splice fallbacks, not errors of ours).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("fs: go-fuse: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

type mountEntry struct{ source, fstype string }

// mountAt reports the mount at dir, from /proc/self/mountinfo.
func mountAt(dir string) (mountEntry, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(s.Text())
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i := 6; i < len(fields)-2; i++ {
			if fields[i] == "-" {
				return mountEntry{fstype: fields[i+1], source: fields[i+2]}, true
			}
		}
		return mountEntry{}, true
	}
	return mountEntry{}, false
}

func unescapeMountinfo(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// Dir is the mountpoint.
func (m *Mount) Dir() string { return m.dir }

// Unmount unmounts; when files are still open it detaches the mount
// (lazy unmount), so that the daemon can stop.
func (m *Mount) Unmount() error {
	m.ns.kernel.CompareAndSwap(m, nil)
	if err := m.server.Unmount(); err != nil {
		m.ns.log.Warn("fs: unmount failed; detaching the mount", "mountpoint", m.dir, "err", err)
		if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("fs: unmount %s: %w", m.dir, err)
		}
		return nil // the server ends when the last open file closes
	}
	m.server.Wait()
	return nil
}

// InvalidateInode tells the kernel that an inode changed outside the
// mount (the NFS gateway): its attributes, and its cached data from off
// for length bytes (length 0: to the end; off < 0: no data). The kernel
// may not know the inode: that is not an error.
func (m *Mount) InvalidateInode(ino uint64, off, length int64) {
	if st := m.server.InodeNotify(ino, off, length); st != fuse.OK && st != fuse.ENOENT {
		m.ns.log.Debug("fs: invalidate inode", "inode", ino, "status", st)
	}
}

// InvalidateVDisk tells the kernel that a vDisk's data changed outside
// the mount, from off for length bytes (0: to the end). vDisks are direct
// I/O: only a mapping caches their pages, and a mapping holds a handle,
// so without one there is nothing to tell.
func (m *Mount) InvalidateVDisk(ino uint64, off, length int64) {
	if m.fs.vdiskOpen(ino) {
		m.InvalidateInode(ino, off, length)
	}
}

// InvalidateEntry tells the kernel that name in directory parent changed
// outside the mount (made, removed or renamed).
func (m *Mount) InvalidateEntry(parent uint64, name string) {
	if st := m.server.EntryNotify(parent, name); st != fuse.OK && st != fuse.ENOENT {
		m.ns.log.Debug("fs: invalidate entry", "parent", parent, "name", name, "status", st)
	}
}
