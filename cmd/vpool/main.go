// Command vpool is the vpool daemon and its command-line interface.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

var version = "dev"

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "vpool: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
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
	root.AddCommand(serveCmd(g), versionCmd())
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
	pool  *volume.Pool
	meta  *metastore.Badger
	cache *flashcache.ReadCache
	ec    *objstore.EC
}

func openEngine(ctx context.Context, c *Config, log *slog.Logger) (*engine, error) {
	flash := filepath.Join(c.DataDir, "flash")
	if err := os.MkdirAll(flash, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	probe := filepath.Join(c.DataDir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", c.DataDir, err)
	}
	os.Remove(probe)
	ec, err := objstore.OpenEC(c.Backend.ASDs, objstore.Preset{Data: c.Backend.Preset.Data,
		Parity: c.Backend.Preset.Parity, FragmentSize: int64(c.Backend.Preset.FragmentSize)}, log)
	if err != nil {
		return nil, err
	}
	meta, err := metastore.OpenBadger(filepath.Join(c.DataDir, "meta"), log)
	if err != nil {
		return nil, err
	}
	fs := vfs.OS{}
	wb, err := flashcache.NewWriteBuffer(fs, flash, int64(c.WriteBuffer.Size))
	if err != nil {
		meta.Close()
		return nil, err
	}
	cache, err := flashcache.OpenReadCache(fs, filepath.Join(flash, "readcache"), int64(c.ReadCache.Size), int64(c.Engine.ClusterSize))
	if err != nil {
		meta.Close()
		return nil, err
	}
	pool, err := volume.Open(ctx, volume.Config{
		Name: c.Name, Dir: flash, ClusterSize: int64(c.Engine.ClusterSize), SCOSize: int64(c.Engine.SCOSize),
		MaxVDiskSize: int64(c.Engine.MaxVDiskSize), MapCachePages: c.Engine.MapCachePages,
		UploadConcurrency: c.Engine.UploadConcurrency, SealIdle: c.Engine.SealIdle, Log: log,
	}, volume.Deps{FS: fs, Backend: ec, Meta: meta, WriteBuffer: wb, ReadCache: cache})
	if err != nil {
		cache.Close()
		meta.Close()
		return nil, err
	}
	return &engine{pool: pool, meta: meta, cache: cache, ec: ec}, nil
}

func (e *engine) close(ctx context.Context) error {
	err := e.pool.Close(ctx)
	e.cache.Close()
	if merr := e.meta.Close(); err == nil {
		err = merr
	}
	return err
}

func serveCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "run the vPool daemon in the foreground",
		Long: "serve opens (or creates) the vPool in the data directory and runs until SIGINT or SIGTERM.\n" +
			"The FUSE mount and the NFS export are added by the FUSE and NFS issues; today serve runs the engine.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(g.config, g.dataDir)
			if err != nil {
				return err
			}
			log, err := newLogger(c.Log.Level)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			e, err := openEngine(ctx, c, log)
			if err != nil {
				return err
			}
			log.Info("vpool: engine open", "vpool", c.Name, "data_dir", c.DataDir, "vdisks", len(e.pool.List()),
				"asds", len(c.Backend.ASDs), "preset", fmt.Sprintf("%d+%d", c.Backend.Preset.Data, c.Backend.Preset.Parity))
			<-ctx.Done()
			log.Info("vpool: stopping: flushing and closing")
			return e.close(context.Background())
		},
	}
}
