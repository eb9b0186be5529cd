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
		{"write_buffer:\n  size: 1MiB\n", "write_buffer.size 1MiB is below 64MiB"},
		{"engine:\n  map_store_memory: 4KiB\n", "engine.map_store_memory 4KiB is below 1MiB"},
		{"nfs:\n  allow: [10.0.0.0/33]\n", `nfs.allow: "10.0.0.0/33" is neither`},
		{"nfs:\n  listen: \"127.0.0.1:99999\"\n", "nfs.listen: nfs: listen address \"127.0.0.1:99999\": bad port"},
		{"nfs:\n  portmap: maybe\n", "portmap"},
	} {
		_, err := loadConfig(writeFile(t, tc.yaml), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestEnvAndFlagsOverride(t *testing.T) {
	t.Setenv("VPOOL_ENGINE_SCO_SIZE", "32MiB")
	t.Setenv("VPOOL_NAME", "fromenv")
	c, err := loadConfig(writeFile(t, "name: fromfile\ndata_dir: /x\n"), "/flag")
	if err != nil {
		t.Fatal(err)
	}
	if c.Engine.SCOSize != 32<<20 || c.Name != "fromenv" || c.DataDir != "/flag" {
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
