// Command vpool is the vpool daemon and its command-line interface.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"vpool/dtl"
	"vpool/flashcache"
	"vpool/fs"
	"vpool/metastore"
	"vpool/nfsd"
	"vpool/vfs"
	"vpool/volume"
	"vpool/volume/holder"
)

var version = "dev"

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "vpool: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}

// daemonProcs raises GOMAXPROCS for a daemon. Its goroutines block in
// system calls the netpoller cannot take (FUSE device reads, pwrite and
// fsync of flash files), and each holds a P until the runtime's monitor
// takes it back; with as many Ps as CPUs, runnable goroutines (a write's
// reply, a DTL Ack's waiters) wait meanwhile while CPUs idle. On this
// project's 2-vCPU machine, 16 Ps gave 4 KiB random writes through FUSE
// 1.15x in DTL mode none and 1.45x in sync mode (bench/dtl.sh). A
// GOMAXPROCS in the environment wins.
func daemonProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		n := runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(max(n, min(8*n, 16)))
	}
}

type globalFlags struct {
	config  string
	dataDir string
}

func rootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "vpool",
		Short:         "vpool: storage for virtual machines",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.config, "config", "", "YAML configuration file (see etc/vpool.yaml)")
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", envDataDir(), "data directory (default "+DefaultDataDir+", env VPOOL_DATA_DIR)")
	root.AddCommand(serveCmd(g), statusCmd(g), templateCmd(g), snapshotCmd(g), cloneCmd(g), scrubCmd(g), backendCmd(g), dtlCmd(g), vdiskCmd(g), versionCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "vpool", version) },
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("config: log.level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// engine is an open vPool engine with everything under it.
type engine struct {
	ns    *fs.Namespace // nil until the namespace is open
	pool  *volume.Pool
	meta  *metastore.Badger
	cat   *metastore.Catalog
	cache *flashcache.ReadCache
	wb    *flashcache.WriteBuffer
	be    *backendStore
	// holder is this daemon's hold on the backend; the engine writes
	// through holder.Guard(be)
	holder *holder.Holder
	dtl    *dtl.Replicator // nil: no DTL peers
	dtlSrv *dtl.Server     // nil: this host serves no DTLs
}

func openEngine(ctx context.Context, c *Config, takeover bool, onFenced func(string), log *slog.Logger) (*engine, error) {
	flash := filepath.Join(c.DataDir, "flash")
	if err := os.MkdirAll(flash, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	probe := filepath.Join(c.DataDir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", c.DataDir, err)
	}
	os.Remove(probe)
	if err := checkFlashSize(flash, int64(c.WriteBuffer.Size), int64(c.ReadCache.Size)); err != nil {
		return nil, err
	}
	be, err := openBackend(ctx, c, log)
	if err != nil {
		return nil, err
	}
	hold, err := claimBackend(ctx, c, be, takeover, log)
	if err != nil {
		return nil, err
	}
	guarded := hold.Guard(be)
	repl, err := newDTLClient(c, hold.Epoch(), onFenced, log)
	if err != nil {
		return nil, err
	}
	meta, cat, err := openStores(c.DataDir, int64(c.Engine.MapStoreMemory), log)
	if err != nil {
		repl.Close()
		return nil, err
	}
	closeStores := func() {
		repl.Close()
		meta.Close()
		cat.Close()
	}
	fs := vfs.OS{}
	wb, err := flashcache.NewWriteBuffer(fs, flash, int64(c.WriteBuffer.Size))
	if err != nil {
		closeStores()
		return nil, err
	}
	cache, err := flashcache.OpenReadCache(fs, filepath.Join(flash, "readcache"), int64(c.ReadCache.Size), int64(c.Engine.ClusterSize))
	if err != nil {
		closeStores()
		return nil, err
	}
	pool, err := volume.Open(ctx, volume.Config{
		Name: c.Name, Dir: flash, ClusterSize: int64(c.Engine.ClusterSize), SCOSize: int64(c.Engine.SCOSize),
		MaxVDiskSize: int64(c.Engine.MaxVDiskSize), MapCachePages: c.Engine.MapCachePages,
		UploadConcurrency: c.Engine.UploadConcurrency, SealIdle: c.Engine.SealIdle, Log: log,
	}, volume.Deps{FS: fs, Backend: guarded, Catalog: cat, Meta: meta, WriteBuffer: wb, ReadCache: cache, Replicator: repl.AsVolume()})
	if err != nil {
		cache.Close()
		closeStores()
		return nil, err
	}
	// From now on new SCOs and backend fragments leave the metadata
	// stores their room (recovery above may use it: a full disk at start
	// must not make every vDisk damaged).
	wb.SetReserve(metastore.SpaceReserve)
	be.setReserve(metastore.SpaceReserve)
	return &engine{pool: pool, meta: meta, cat: cat, cache: cache, wb: wb, be: be, holder: hold, dtl: repl}, nil
}

// openStores opens the block-map store (<data>/meta) and the catalog
// (<data>/catalog), moving the catalog's records out of the block-map
// store of a data dir made before the two were split.
func openStores(dataDir string, mapStoreMemory int64, log *slog.Logger) (*metastore.Badger, *metastore.Catalog, error) {
	meta, err := metastore.OpenBadger(filepath.Join(dataDir, "meta"), mapStoreMemory, log)
	if err != nil {
		return nil, nil, err
	}
	cat, err := metastore.OpenCatalog(filepath.Join(dataDir, "catalog"), log)
	if err != nil {
		meta.Close()
		return nil, nil, err
	}
	moved, err := metastore.MigrateToCatalog(meta, cat, append(slices.Clone(volume.CatalogPrefixes), fs.CatalogPrefixes...))
	if err != nil {
		meta.Close()
		cat.Close()
		return nil, nil, err
	}
	if moved > 0 {
		log.Info("metastore: moved vDisk records, upload state and the namespace into the catalog", "keys", moved)
	}
	return meta, cat, nil
}

// capacity is what files can use on the backend: its raw space scaled by
// the preset's k/(k+m).
func (e *engine) capacity(ctx context.Context) (total, free int64, err error) {
	u, err := e.be.usage(ctx)
	if err != nil {
		return 0, 0, err
	}
	return int64(float64(u.TotalBytes) * u.DataFraction), int64(float64(u.FreeBytes) * u.DataFraction), nil
}

func (e *engine) close(ctx context.Context) error {
	var err error
	if e.ns != nil {
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a last backup if it is quick; the next start resumes
		err = e.ns.Close(nctx)
		cancel()
	}
	if perr := e.pool.Close(ctx); err == nil {
		err = perr
	}
	e.dtl.Close()
	e.dtlSrv.Close()
	e.cache.Close()
	if merr := e.meta.Close(); err == nil {
		err = merr
	}
	if cerr := e.cat.Close(); err == nil {
		err = cerr
	}
	return err
}

func serveCmd(g *globalFlags) *cobra.Command {
	var mountpoint, nfsListen string
	var takeover bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the vPool daemon in the foreground",
		Long: "serve opens (or creates) the vPool in the data directory, mounts its tree (default /mnt/ovs/<name>),\n" +
			"exports it over NFSv3 as /<name> (default on 127.0.0.1, with a portmapper on port 111),\n" +
			"serves the control socket (vpool status, /metrics), and runs until SIGINT or SIGTERM, when it\n" +
			"flushes, unmounts and exits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(g.config, g.dataDir)
			if err != nil {
				return err
			}
			if mountpoint != "" {
				c.Mountpoint = mountpoint
			}
			if err := c.checkPaths(); err != nil {
				return err
			}
			if nfsListen != "" {
				c.NFS.Listen = nfsListen
				if err := c.NFS.check(); err != nil {
					return err
				}
			}
			log, err := newLogger(c.Log.Level)
			if err != nil {
				return err
			}
			daemonProcs()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDaemon(ctx, c, takeover, log, nil)
		},
	}
	cmd.Flags().StringVar(&mountpoint, "mountpoint", "", "where to mount the vPool (default /mnt/ovs/<name>)")
	cmd.Flags().BoolVar(&takeover, "takeover", false, "take the backend over from the daemon that holds it (only when that daemon is gone for good: "+
		"it is fenced and stops, and what it had not uploaded is lost)")
	cmd.Flags().StringVar(&nfsListen, "nfs-listen", "", `address of the NFSv3 gateway, "host" or "host:port" (default 127.0.0.1, port 2049); "off" turns it off`)
	return cmd
}

// ownDataDir creates the data dir, or takes away what an existing one
// gives other users: it holds every vDisk's data.
func ownDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		if err := os.Chmod(dir, m&0o700); err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		log.Info("vpool: data dir made private to root: it holds every vDisk's data", "dir", dir, "was", fmt.Sprintf("%#o", m), "now", fmt.Sprintf("%#o", m&0o700))
	}
	return nil
}

// runDaemon runs the daemon until ctx ends, or until another daemon takes
// its backend over; ready (if not nil) is closed once it serves.
func runDaemon(ctx context.Context, c *Config, takeover bool, log *slog.Logger, ready chan<- struct{}) error {
	// Every file the daemon makes for itself (stores, SCOs, sockets) is
	// its own: the namespace's files are records, whose modes come from
	// each request, not from this umask.
	syscall.Umask(0o077)
	if err := ownDataDir(c.DataDir, log); err != nil {
		return err
	}
	l, err := listenControl(c.DataDir)
	if err != nil {
		return err
	}
	if err := fs.PrepareMountpoint(c.Mountpoint, log); err != nil {
		l.Close()
		return err
	}
	fenced := make(chan error, 2)
	dtlSrv, err := startDTLServer(c, log)
	if err != nil {
		l.Close()
		return err
	}
	e, err := openEngine(ctx, c, takeover, func(reason string) {
		select {
		case fenced <- fmt.Errorf("%w: %s", dtl.ErrFenced, reason):
		default:
		}
	}, log)
	if err != nil {
		l.Close()
		dtlSrv.Close()
		return err
	}
	e.dtlSrv = dtlSrv
	ns, err := fs.Open(ctx, fs.Config{Name: c.Name, VDiskSuffixes: c.FS.VDiskSuffixes, BackupInterval: c.FS.BackupInterval,
		Log: log, Capacity: e.capacity}, e.pool, e.cat, e.holder.Guard(e.be))
	if err != nil {
		l.Close()
		e.close(context.Background())
		return err
	}
	e.ns = ns
	mnt, err := fs.MountNamespace(ns, c.Mountpoint, fs.MountOptions{})
	if err != nil {
		l.Close()
		e.close(context.Background())
		return err
	}
	gw, err := startGateway(c, ns, mnt, log)
	if err != nil {
		l.Close()
		mnt.Unmount()
		e.close(context.Background())
		return err
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	cs := &controlServer{c: c, e: e, nfs: gw, started: time.Now(), log: log, recountCh: make(chan struct{}, 1)}
	if err := cs.serve(srvCtx, l, c.Metrics.Listen); err != nil {
		l.Close()
		stopServing(gw, mnt, log)
		e.close(context.Background())
		return err
	}
	cs.startBackground(srvCtx)
	go watchHolder(srvCtx, e.holder, log, fenced)
	if h := e.be.healer; h != nil {
		h.Gate, h.After = e.holder.Claimed, c.Backend.Repair.After
		go h.Run(srvCtx, c.Backend.Verify.Interval)
	}
	log.Info("vpool: serving", "vpool", c.Name, "mountpoint", mnt.Dir(), "data_dir", c.DataDir, "vdisks", len(e.pool.List())-2, // not the file store and the namespace journal
		"backend", e.be.kind, "epoch", e.holder.Epoch(), "control", socketPath(c.DataDir), "metrics", c.Metrics.Listen)
	if ready != nil {
		close(ready)
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("vpool: stopping: unmounting, flushing and closing")
	case runErr = <-fenced:
		log.Error("vpool: stopping: another daemon took the backend over; this one writes nothing more", "err", runErr)
	}
	stopSrv()
	uerr := stopServing(gw, mnt, log)
	cerr := e.close(context.Background())
	releaseBackend(e, cerr, log)
	if err := errors.Join(runErr, cerr, uerr); err != nil {
		return err
	}
	log.Info("vpool: stopped")
	return nil
}

// startGateway starts the NFS gateway if the config asks for it.
func startGateway(c *Config, ns *fs.Namespace, mnt *fs.Mount, log *slog.Logger) (*nfsd.Server, error) {
	if !c.NFS.Enabled() {
		return nil, nil
	}
	port := 0
	if c.NFS.Portmap {
		port = 111
	}
	gw := nfsd.New(nfsd.Config{Listen: c.NFS.Listen, PortmapPort: port, Allow: c.NFS.allow,
		Default: c.NFS.def, MaxConns: c.NFS.MaxConnections, MaxConnsPerClient: c.NFS.MaxConnectionsPerClient,
		IdleTimeout: c.NFS.IdleTimeout, Buffer: int64(c.NFS.Buffer), Export: "/" + c.Name, Notify: mnt, Log: log}, ns)
	if err := gw.Start(); err != nil {
		return nil, err
	}
	return gw, nil
}

// stopServing closes the gateway (if any) and unmounts the tree.
func stopServing(gw *nfsd.Server, mnt *fs.Mount, log *slog.Logger) error {
	if gw != nil {
		gctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := gw.Close(gctx); err != nil {
			log.Warn("nfs: stop", "err", err)
		}
		cancel()
	}
	return mnt.Unmount()
}

func statusCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show what the running daemon is doing, per vDisk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := g.dataDir
			if dir == "" {
				dir = DefaultDataDir
			}
			st, err := getStatus(dir)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// checkFlashSize refuses a write buffer and read cache that the flash
// filesystem could never hold.
func checkFlashSize(dir string, writeBuffer, readCache int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	total := int64(st.Blocks) * st.Bsize
	if writeBuffer+readCache > total {
		return fmt.Errorf("config: write_buffer.size %s + read_cache.size %s do not fit the flash filesystem of %s (%s): lower them",
			Size(writeBuffer), Size(readCache), dir, Size(total))
	}
	return nil
}
