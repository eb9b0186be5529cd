package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"vpool/nfsd"
)

// Config is the whole of vpool's settings; etc/vpool.yaml documents every
// key with its default. Sizes accept units: 4096, "64KiB", "64MiB", "8GiB".
type Config struct {
	Name        string            `mapstructure:"name"`
	DataDir     string            `mapstructure:"data_dir"`
	Mountpoint  string            `mapstructure:"mountpoint"`
	FS          FSConfig          `mapstructure:"fs"`
	NFS         NFSConfig         `mapstructure:"nfs"`
	Engine      EngineConfig      `mapstructure:"engine"`
	WriteBuffer WriteBufferConfig `mapstructure:"write_buffer"`
	ReadCache   ReadCacheConfig   `mapstructure:"read_cache"`
	Backend     BackendConfig     `mapstructure:"backend"`
	Log         LogConfig         `mapstructure:"log"`
	Metrics     MetricsConfig     `mapstructure:"metrics"`
	Scrub       ScrubConfig       `mapstructure:"scrub"`
	Snapshots   SnapshotsConfig   `mapstructure:"snapshots"`
	DTL         DTLConfig         `mapstructure:"dtl"`
}

// ScrubConfig is the background scrubber's part.
type ScrubConfig struct {
	Interval  time.Duration `mapstructure:"interval"`  // 0: no background scrub
	Pace      float64       `mapstructure:"pace"`      // share of time a scrub works, (0, 1]
	Threshold float64       `mapstructure:"threshold"` // rewrite SCOs less live than this; 0: never
	Rate      Size          `mapstructure:"rate"`      // bytes per second compaction rewrites at most; 0: no limit
}

type FSConfig struct {
	VDiskSuffixes  []string      `mapstructure:"vdisk_suffixes"`
	BackupInterval time.Duration `mapstructure:"backup_interval"`
}

// NFSConfig is the NFSv3 gateway's part.
type NFSConfig struct {
	Listen        string   `mapstructure:"listen"` // "host" or "host:port"; "off": no gateway
	Portmap       bool     `mapstructure:"portmap"`
	Allow         []string `mapstructure:"allow"`
	RootSquash    bool     `mapstructure:"root_squash"`
	InsecurePorts bool     `mapstructure:"insecure_ports"`
	AnonUID       uint32   `mapstructure:"anon_uid"`
	AnonGID       uint32   `mapstructure:"anon_gid"`
	// Bounds on what clients can make the gateway hold.
	MaxConnections          int           `mapstructure:"max_connections"`
	MaxConnectionsPerClient int           `mapstructure:"max_connections_per_client"`
	IdleTimeout             time.Duration `mapstructure:"idle_timeout"`
	Buffer                  Size          `mapstructure:"buffer"`

	allow []nfsd.Rule // Allow, parsed
	def   nfsd.Rule   // the options of an entry that gives none
}

type MetricsConfig struct {
	Listen string `mapstructure:"listen"`
}

type EngineConfig struct {
	ClusterSize       Size          `mapstructure:"cluster_size"`
	SCOSize           Size          `mapstructure:"sco_size"`
	MaxVDiskSize      Size          `mapstructure:"max_vdisk_size"`
	MapCachePages     int           `mapstructure:"map_cache_pages"`
	MapStoreMemory    Size          `mapstructure:"map_store_memory"`
	UploadConcurrency int           `mapstructure:"upload_concurrency"`
	SealIdle          time.Duration `mapstructure:"seal_idle"`
}

type WriteBufferConfig struct {
	Size Size `mapstructure:"size"`
}

type ReadCacheConfig struct {
	Size Size `mapstructure:"size"`
}

type BackendConfig struct {
	Type   string       `mapstructure:"type"` // local (EC over the ASDs) or s3
	ASDs   []string     `mapstructure:"asds"`
	Preset PresetConfig `mapstructure:"preset"`
	S3     S3Config     `mapstructure:"s3"`
	Repair RepairConfig `mapstructure:"repair"`
	Verify VerifyConfig `mapstructure:"verify"`
}

// RepairConfig paces the local backend's repair and verify passes.
type RepairConfig struct {
	Rate  Size          `mapstructure:"rate"`  // fragment bytes a second a pass writes (repair) or reads (verify); 0: no limit
	After time.Duration `mapstructure:"after"` // an ASD missing or failing this long gets its fragments rebuilt elsewhere; 0: only when asked
}

// VerifyConfig is the periodic verify pass (bit rot).
type VerifyConfig struct {
	Interval time.Duration `mapstructure:"interval"` // 0: none
}

// S3Config is the S3 backend's part (backend.type: s3).
type S3Config struct {
	Endpoint      string        `mapstructure:"endpoint"`
	Bucket        string        `mapstructure:"bucket"`
	Region        string        `mapstructure:"region"`
	AccessKey     string        `mapstructure:"access_key"`
	SecretKeyFile string        `mapstructure:"secret_key_file"`
	SecretKey     string        `mapstructure:"secret_key"` // from VPOOL_BACKEND_S3_SECRET_KEY only, never the file
	Timeout       time.Duration `mapstructure:"timeout"`
	PartSize      Size          `mapstructure:"part_size"`
}

type PresetConfig struct {
	Data         int  `mapstructure:"data"`
	Parity       int  `mapstructure:"parity"`
	FragmentSize Size `mapstructure:"fragment_size"`
}

type LogConfig struct {
	Level string `mapstructure:"level"`
}

// Size is a byte count that reads units.
type Size int64

var sizeRE = regexp.MustCompile(`^\s*([0-9]+)\s*([KMGTP]i?B?|B)?\s*$`)

// ParseSize reads "4096", "64KiB", "64MiB", "8GiB", "64TiB" (K, M, G, T
// and P are powers of 1024 with or without "iB").
func ParseSize(s string) (Size, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (KiB, MiB, GiB, TiB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40, 'P': 50}[firstByte(m[2])]
	if shift > 0 && n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return Size(n << shift), nil
}

func firstByte(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

func (s Size) String() string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if s != 0 && s%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", s>>u.shift, u.name)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

func sizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(Size(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		return ParseSize(d)
	case int:
		return Size(d), nil
	case int64:
		return Size(d), nil
	case float64:
		return Size(int64(d)), nil
	}
	return data, nil
}

// listHook reads a list given as one string (from the environment):
// items are separated by commas or spaces outside parentheses, so that
// VPOOL_NFS_ALLOW="10.0.0.0/8(ro,insecure) 192.168.1.20" is two items.
func listHook(from, to reflect.Type, data any) (any, error) {
	str, ok := data.(string)
	if !ok || to.Kind() != reflect.Slice {
		return data, nil
	}
	items := []string{}
	depth, start := 0, 0
	for i := 0; i <= len(str); i++ {
		switch {
		case i < len(str) && str[i] == '(':
			depth++
		case i < len(str) && str[i] == ')':
			depth--
		case i == len(str) || depth == 0 && (str[i] == ',' || str[i] == ' '):
			if item := strings.TrimSpace(str[start:i]); item != "" {
				items = append(items, item)
			}
			start = i + 1
		}
	}
	return items, nil
}

func defaults(dataDir string) map[string]any {
	return map[string]any{
		"name":                           "vpool",
		"data_dir":                       dataDir,
		"mountpoint":                     "",
		"fs.vdisk_suffixes":              []string{".raw", "-flat.vmdk"},
		"fs.backup_interval":             "5s",
		"scrub.interval":                 "1h",
		"scrub.pace":                     0.25,
		"scrub.threshold":                0.5,
		"scrub.rate":                     "16MiB",
		"snapshots.schedules":            []map[string]any{},
		"nfs.listen":                     "127.0.0.1",
		"nfs.portmap":                    true,
		"nfs.allow":                      []string{},
		"nfs.root_squash":                false,
		"nfs.insecure_ports":             false,
		"nfs.anon_uid":                   65534,
		"nfs.anon_gid":                   65534,
		"nfs.max_connections":            nfsd.DefaultMaxConns,
		"nfs.max_connections_per_client": nfsd.DefaultMaxConnsPerClient,
		"nfs.idle_timeout":               nfsd.DefaultIdleTimeout.String(),
		"nfs.buffer":                     "32MiB",
		"engine.cluster_size":            "4KiB",
		"engine.sco_size":                "64MiB",
		"engine.max_vdisk_size":          "64TiB",
		"engine.map_cache_pages":         16384,
		"engine.map_store_memory":        "64MiB",
		"engine.upload_concurrency":      2,
		"engine.seal_idle":               "60s",
		"write_buffer.size":              "8GiB",
		"read_cache.size":                "1GiB",
		"backend.type":                   "local",
		"backend.asds":                   []string{},
		"backend.s3.endpoint":            "",
		"backend.s3.bucket":              "",
		"backend.s3.region":              "us-east-1",
		"backend.s3.access_key":          "",
		"backend.s3.secret_key_file":     "",
		"backend.s3.secret_key":          "",
		"backend.s3.timeout":             "30s",
		"backend.s3.part_size":           "256MiB",
		"backend.repair.rate":            "32MiB",
		"backend.repair.after":           "10m",
		"backend.verify.interval":        "168h",
		"backend.preset.data":            2,
		"backend.preset.parity":          1,
		"backend.preset.fragment_size":   "4MiB",
		"log.level":                      "info",
		"metrics.listen":                 "",
	}
}

// DefaultDataDir is where serve keeps its state when nothing says otherwise.
const DefaultDataDir = "/var/lib/vpool"

// DefaultMountRoot holds the mountpoints of vPools (/mnt/ovs/<name>).
const DefaultMountRoot = "/mnt/ovs"

var unknownKeyRE = regexp.MustCompile(`'([^']*)' has invalid keys: ([^\s]*)`)

// loadConfig reads the YAML file (if any), then VPOOL_* environment
// variables (VPOOL_ENGINE_SCO_SIZE for engine.sco_size), then the flags
// the caller applies. An unknown key is an error that names it.
func loadConfig(file, dataDirFlag string) (*Config, error) {
	v := viper.New()
	for k, d := range defaults(DefaultDataDir) {
		v.SetDefault(k, d)
	}
	for k, d := range dtlDefaults() {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("VPOOL")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
	}
	if dataDirFlag != "" {
		v.Set("data_dir", dataDirFlag)
	}
	if v.InConfig("backend.s3.secret_key") {
		return nil, fmt.Errorf("config %s: backend.s3.secret_key: a secret never goes in the config file; "+
			"name a file holding it with backend.s3.secret_key_file, or set VPOOL_BACKEND_S3_SECRET_KEY", file)
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		sizeHook, mapstructure.StringToTimeDurationHookFunc(), listHook)))
	if err != nil {
		if m := unknownKeyRE.FindStringSubmatch(err.Error()); m != nil {
			key := strings.Split(m[2], ",")[0]
			// the root is named by its Go type ("main.Config"), a section by its key
			if m[1] != "" && strings.ToLower(m[1]) == m[1] {
				key = m[1] + "." + key
			}
			return nil, fmt.Errorf("config %s: unknown key %s", file, key)
		}
		return nil, fmt.Errorf("config %s: %w", file, firstLine(err))
	}
	if c.DataDir == "" {
		return nil, errors.New("config: data_dir is empty")
	}
	if !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return nil, err
		}
		c.DataDir = abs
	}
	if c.Mountpoint == "" {
		c.Mountpoint = filepath.Join(DefaultMountRoot, c.Name)
	}
	for _, suf := range c.FS.VDiskSuffixes {
		if suf == "" || strings.Contains(suf, "/") {
			return nil, fmt.Errorf("config: fs.vdisk_suffixes: bad suffix %q", suf)
		}
	}
	for i, sc := range c.Snapshots.Schedules {
		if err := sc.check(i); err != nil {
			return nil, err
		}
	}
	if c.Scrub.Threshold < 0 || c.Scrub.Threshold >= 1 {
		return nil, fmt.Errorf("config: scrub.threshold %v: want a live fraction in [0, 1)", c.Scrub.Threshold)
	}
	if c.Scrub.Pace <= 0 || c.Scrub.Pace > 1 {
		return nil, fmt.Errorf("config: scrub.pace %v: want a share of time in (0, 1]", c.Scrub.Pace)
	}
	if c.Scrub.Interval < 0 || c.Scrub.Interval > 0 && c.Scrub.Interval < time.Second {
		return nil, fmt.Errorf("config: scrub.interval %s: want 0 (off) or at least 1s", c.Scrub.Interval)
	}
	if c.FS.BackupInterval < 100*time.Millisecond {
		return nil, fmt.Errorf("config: fs.backup_interval %s is below 100ms", c.FS.BackupInterval)
	}
	if err := c.NFS.check(); err != nil {
		return nil, err
	}
	if err := c.Backend.check(); err != nil {
		return nil, err
	}
	if err := c.DTL.check(c.DataDir); err != nil {
		return nil, err
	}
	if len(c.Backend.ASDs) == 0 && c.Backend.Type == "local" {
		for i := 0; i < c.Backend.Preset.Data+c.Backend.Preset.Parity; i++ {
			c.Backend.ASDs = append(c.Backend.ASDs, filepath.Join(c.DataDir, "asd", strconv.Itoa(i)))
		}
	}
	if err := c.checkRanges(); err != nil {
		return nil, err
	}
	return &c, nil
}

// numRange is the allowed range of one numeric key.
type numRange struct {
	key    string
	val    int64
	lo, hi int64
	show   func(int64) string
}

func showSize(n int64) string     { return Size(n).String() }
func showDuration(n int64) string { return time.Duration(n).String() }
func showInt(n int64) string      { return strconv.FormatInt(n, 10) }

// checkRanges refuses a numeric key outside what the daemon can run with,
// naming the key, its value and the range.
func (c *Config) checkRanges() error {
	for _, r := range []numRange{
		{"engine.cluster_size", int64(c.Engine.ClusterSize), 4 << 10, 64 << 10, showSize},
		{"engine.sco_size", int64(c.Engine.SCOSize), 4 << 20, 128 << 20, showSize},
		{"engine.max_vdisk_size", int64(c.Engine.MaxVDiskSize), 1 << 20, 1 << 52, showSize},
		{"engine.map_cache_pages", int64(c.Engine.MapCachePages), 16, 1 << 24, showInt},
		{"engine.map_store_memory", int64(c.Engine.MapStoreMemory), 1 << 20, 1 << 40, showSize},
		{"engine.upload_concurrency", int64(c.Engine.UploadConcurrency), 1, 64, showInt},
		{"engine.seal_idle", int64(c.Engine.SealIdle), 0, int64(24 * time.Hour), showDuration},
		{"write_buffer.size", int64(c.WriteBuffer.Size), 64 << 20, 1 << 50, showSize},
		{"read_cache.size", int64(c.ReadCache.Size), 1 << 20, 1 << 50, showSize},
		{"backend.preset.data", int64(c.Backend.Preset.Data), 1, 32, showInt},
		{"backend.preset.parity", int64(c.Backend.Preset.Parity), 0, 16, showInt},
		{"backend.preset.fragment_size", int64(c.Backend.Preset.FragmentSize), 4 << 10, 64 << 20, showSize},
		{"backend.s3.timeout", int64(c.Backend.S3.Timeout), int64(time.Second), int64(time.Hour), showDuration},
		{"backend.s3.part_size", int64(c.Backend.S3.PartSize), 5 << 20, 5 << 30, showSize},
		{"backend.repair.rate", int64(c.Backend.Repair.Rate), 0, 1 << 40, showSize},
		{"backend.repair.after", int64(c.Backend.Repair.After), 0, int64(30 * 24 * time.Hour), showDuration},
		{"backend.verify.interval", int64(c.Backend.Verify.Interval), 0, int64(10 * 365 * 24 * time.Hour), showDuration},
		{"scrub.rate", int64(c.Scrub.Rate), 0, 1 << 40, showSize},
		{"nfs.max_connections", int64(c.NFS.MaxConnections), 1, 1 << 16, showInt},
		{"nfs.max_connections_per_client", int64(c.NFS.MaxConnectionsPerClient), 1, int64(max(c.NFS.MaxConnections, 1)), showInt},
		{"nfs.idle_timeout", int64(c.NFS.IdleTimeout), int64(10 * time.Second), int64(24 * time.Hour), showDuration},
		{"nfs.buffer", int64(c.NFS.Buffer), nfsd.MinBuffer, 16 << 30, showSize},
	} {
		if r.val < r.lo || r.val > r.hi {
			return fmt.Errorf("config: %s %s: want %s to %s", r.key, r.show(r.val), r.show(r.lo), r.show(r.hi))
		}
	}
	if cs := c.Engine.ClusterSize; cs&(cs-1) != 0 {
		return fmt.Errorf("config: engine.cluster_size %s: want a power of two", cs)
	}
	if c.Engine.SCOSize%c.Engine.ClusterSize != 0 {
		return fmt.Errorf("config: engine.sco_size %s is not a multiple of engine.cluster_size %s", c.Engine.SCOSize, c.Engine.ClusterSize)
	}
	return nil
}

// checkPaths refuses a mountpoint that is the data dir, inside it or
// holds it (or an ASD): the daemon would write its own files through its
// own mount and hang.
func (c *Config) checkPaths() error {
	mp, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return fmt.Errorf("config: mountpoint %s: %w", c.Mountpoint, err)
	}
	within := func(a, b string) bool { // a is b or below it
		rel, err := filepath.Rel(b, a)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
	}
	for _, d := range append([]string{c.DataDir}, c.Backend.ASDs...) {
		d, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		if within(mp, d) || within(d, mp) {
			return fmt.Errorf("config: mountpoint %s and %s overlap: the daemon would write its own files through its own mount; "+
				"put the mountpoint outside the data dir and the ASDs", mp, d)
		}
	}
	return nil
}

// Enabled reports whether the gateway runs.
func (n *NFSConfig) Enabled() bool { return n.Listen != "off" && n.Listen != "" }

func (n *NFSConfig) check() error {
	if n.Enabled() {
		if _, _, err := nfsd.SplitListen(n.Listen); err != nil {
			return fmt.Errorf("config: nfs.listen: %w", err)
		}
	}
	if n.AnonUID == 0 || n.AnonGID == 0 {
		return errors.New("config: nfs.anon_uid and nfs.anon_gid must be above 0 (squashing to root squashes nothing)")
	}
	n.def = nfsd.Rule{RootSquash: n.RootSquash, Insecure: n.InsecurePorts, AnonUID: n.AnonUID, AnonGID: n.AnonGID}
	n.allow = nil
	for _, a := range n.Allow {
		r, err := nfsd.ParseRule(a, n.def)
		if err != nil {
			return fmt.Errorf("config: nfs.allow: %w", err)
		}
		n.allow = append(n.allow, r)
	}
	return nil
}

func firstLine(err error) error {
	s := err.Error()
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.Join(strings.Fields(s), " ")
	return errors.New(s)
}

func envDataDir() string {
	if d := os.Getenv("VPOOL_DATA_DIR"); d != "" {
		return d
	}
	return ""
}
