package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "vpool.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleConfigMatchesDefaults(t *testing.T) {
	fromFile, err := loadConfig("../../etc/vpool.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	builtIn, err := loadConfig("", "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromFile, builtIn) {
		t.Fatalf("etc/vpool.yaml and the built-in defaults differ:\n%+v\n%+v", fromFile, builtIn)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"nmae: x\n", "unknown key nmae"},
		{"engine:\n  sco_sise: 1\n", "unknown key engine.sco_sise"},
		{"read_cache:\n  size: lots\n", `read_cache.size' size "lots"`},
		{"write_buffer:\n  size: 1MiB\n", "write_buffer.size 1MiB: want 64MiB to"},
		{"engine:\n  map_store_memory: 4KiB\n", "engine.map_store_memory 4KiB: want 1MiB to"},
		{"engine:\n  upload_concurrency: -1\n", "engine.upload_concurrency -1: want 1 to 64"},
		{"engine:\n  map_cache_pages: 0\n", "engine.map_cache_pages 0: want 16 to"},
		{"engine:\n  seal_idle: -1s\n", "engine.seal_idle -1s: want 0s to 24h0m0s"},
		{"engine:\n  cluster_size: 12KiB\n", "engine.cluster_size 12KiB: want a power of two"},
		{"engine:\n  sco_size: 1GiB\n", "engine.sco_size 1GiB: want 4MiB to 128MiB"},
		{"backend:\n  preset:\n    data: 0\n", "backend.preset.data 0: want 1 to 32"},
		{"read_cache:\n  size: 0\n", "read_cache.size 0: want 1MiB to"},
		{"nfs:\n  allow: [10.0.0.0/33]\n", `nfs.allow: "10.0.0.0/33" is neither`},
		{"nfs:\n  listen: \"127.0.0.1:99999\"\n", "nfs.listen: nfs: listen address \"127.0.0.1:99999\": bad port"},
		{"nfs:\n  portmap: maybe\n", "portmap"},
		{"nfs:\n  allow: [\"10.0.0.0/8(rw,sync)\"]\n", `nfs.allow: "10.0.0.0/8(rw,sync)": unknown option "sync"`},
		{"nfs:\n  anon_uid: 0\n", "nfs.anon_uid and nfs.anon_gid must be above 0"},
		{"backend:\n  type: ceph\n", `backend.type "ceph": want local or s3`},
		{"backend:\n  type: s3\n", "backend.s3.endpoint is empty"},
		{"backend:\n  type: s3\n  s3:\n    endpoint: http://127.0.0.1:7070\n    bucket: b\n    access_key: a\n", "no S3 secret key"},
		{"backend:\n  type: s3\n  s3:\n    endpoint: x\n    bucket: b\n    access_key: a\n    secret_key: hunter2\n", "a secret never goes in the config file"},
		{"backend:\n  type: s3\n  s3:\n    endpoint: x\n    bucket: b\n    access_key: a\n    secret_key_file: /nonexistent\n", "backend.s3.secret_key_file: open /nonexistent"},
		{"backend:\n  s3:\n    timeout: 0s\n", "backend.s3.timeout 0s: want 1s to 1h0m0s"},
	} {
		_, err := loadConfig(writeFile(t, tc.yaml), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// nfs.allow entries take exports(5) options over the nfs.* defaults, in
// the file and in VPOOL_NFS_ALLOW (items split outside parentheses).
func TestNFSAllowRules(t *testing.T) {
	c, err := loadConfig(writeFile(t, "nfs:\n  root_squash: true\n  anon_uid: 500\n  allow: [10.0.0.0/8, \"192.168.1.0/24(ro,no_root_squash,insecure)\"]\n"), "/x")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8(rw,root_squash,no_all_squash,secure,anonuid=500,anongid=65534)",
		"192.168.1.0/24(ro,no_root_squash,no_all_squash,insecure,anonuid=500,anongid=65534)"}
	if len(c.NFS.allow) != 2 || c.NFS.allow[0].String() != want[0] || c.NFS.allow[1].String() != want[1] {
		t.Fatalf("rules %v, want %v", c.NFS.allow, want)
	}
	t.Setenv("VPOOL_NFS_ALLOW", "10.0.0.0/8(ro,insecure), ::1 127.0.0.1(all_squash)")
	c, err = loadConfig("", "/x")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.NFS.allow) != 3 || !c.NFS.allow[0].ReadOnly || !c.NFS.allow[0].Insecure || !c.NFS.allow[2].AllSquash {
		t.Fatalf("rules from the environment: %v", c.NFS.allow)
	}
}

func TestEnvAndFlagsOverride(t *testing.T) {
	t.Setenv("VPOOL_ENGINE_SCO_SIZE", "32MiB")
	t.Setenv("VPOOL_NAME", "fromenv")
	t.Setenv("VPOOL_METRICS_LISTEN", "127.0.0.1:9184")
	c, err := loadConfig(writeFile(t, "name: fromfile\ndata_dir: /x\n"), "/flag")
	if err != nil {
		t.Fatal(err)
	}
	if c.Engine.SCOSize != 32<<20 || c.Name != "fromenv" || c.DataDir != "/flag" || c.Metrics.Listen != "127.0.0.1:9184" {
		t.Fatalf("got sco %d name %q dir %q", c.Engine.SCOSize, c.Name, c.DataDir)
	}
	if len(c.Backend.ASDs) != 3 || c.Backend.ASDs[2] != "/flag/asd/2" {
		t.Fatalf("default ASDs %v", c.Backend.ASDs)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"4096": 4096, "64KiB": 64 << 10, "64MiB": 64 << 20, "8GiB": 8 << 30, "64TiB": 64 << 40, "4K": 4096} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%s = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1.5GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A mountpoint that is the data dir, lies inside it or holds it (or an
// ASD) is refused: the daemon would write its files through its own mount.
func TestMountpointOverlappingTheDataDirIsRefused(t *testing.T) {
	for _, tc := range []struct {
		mp string
		ok bool
	}{{"/var/lib/vpool", false}, {"/var/lib/vpool/mnt", false}, {"/var/lib", false}, {"/", false},
		{"/mnt/ovs/vpool", true}, {"/var/lib/vpool-mnt", true}} {
		c, err := loadConfig("", "/var/lib/vpool")
		if err != nil {
			t.Fatal(err)
		}
		c.Mountpoint = tc.mp
		if err := c.checkPaths(); (err == nil) != tc.ok {
			t.Errorf("mountpoint %s: %v", tc.mp, err)
		}
	}
	c, _ := loadConfig(writeFile(t, "backend:\n  asds: [/srv/asd0, /mnt/ovs/vpool/asd1]\n"), "/var/lib/vpool")
	if err := c.checkPaths(); err == nil || !strings.Contains(err.Error(), "/mnt/ovs/vpool/asd1") {
		t.Errorf("an ASD inside the mountpoint: %v", err)
	}
}

// The S3 secret comes from a file or the environment, and the ASD
// defaults are the local backend's only.
func TestS3Secret(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("hunter2\n"), 0o600)
	yaml := "backend:\n  type: s3\n  s3:\n    endpoint: http://127.0.0.1:7070\n    bucket: b\n    access_key: a\n"
	c, err := loadConfig(writeFile(t, yaml+"    secret_key_file: "+secret+"\n"), "")
	if err != nil || c.Backend.S3.SecretKey != "hunter2" || len(c.Backend.ASDs) != 0 {
		t.Fatalf("from a file: %v, %+v", err, c.Backend)
	}
	t.Setenv("VPOOL_BACKEND_S3_SECRET_KEY", "from-env")
	if c, err := loadConfig(writeFile(t, yaml), ""); err != nil || c.Backend.S3.SecretKey != "from-env" {
		t.Fatalf("from the environment: %v", err)
	}
	if _, err := loadConfig(writeFile(t, yaml+"    secret_key_file: "+secret+"\n"), ""); err == nil || strings.Contains(err.Error(), "from-env") {
		t.Fatalf("both a file and the environment: %v", err)
	}
}
