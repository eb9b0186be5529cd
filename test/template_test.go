package test

import (
	"os"
	"strings"
	"testing"
	"time"

	"vpool/nfsd"
)

// `vpool template set` makes a vDisk read-only for good: writes and
// truncates fail with EROFS through FUSE and NFS3ERR_ROFS over NFS, reads
// go on, and it stays so across a restart. A path that is not a vDisk is
// a clear error.
func TestTemplateSet(t *testing.T) {
	d := startDaemon(t)
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", d.path("base.raw"), "64M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x7e 0 1M", d.path("base.raw"))
	out := run(t, 30*time.Second, vpoolBin, "template", "set", d.path("base.raw"), "--data-dir", d.dataDir)
	if !strings.Contains(out, "is a template") {
		t.Fatalf("template set: %s", out)
	}
	if err := os.WriteFile(d.path("notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ path, want string }{{"notes.txt", "not a vDisk"}, {"missing.raw", "no such file"}} {
		out, err := runErr(30*time.Second, "", vpoolBin, "template", "set", bad.path, "--data-dir", d.dataDir)
		if err == nil || !strings.Contains(out, bad.want) {
			t.Fatalf("template set %s: %v\n%s", bad.path, err, out)
		}
	}
	check := func(when string) {
		t.Helper()
		out, _ := runErr(time.Minute, "", "qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", d.path("base.raw"))
		if !strings.Contains(out, "Read-only file system") {
			t.Fatalf("%s: write to a template through FUSE:\n%s", when, out)
		}
		if out, err := runErr(time.Minute, "", "truncate", "-s", "128M", d.path("base.raw")); err == nil || !strings.Contains(out, "Read-only file system") {
			t.Fatalf("%s: truncate of a template: %v\n%s", when, err, out)
		}
		run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x7e 0 1M", d.path("base.raw"))
		c, root := d.nfsClient(0, 0)
		fh, _, err := c.Lookup(root, "base.raw")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Write(fh, 0, []byte("x"), nfsd.FileSync); err != nfsd.Status(30) {
			t.Fatalf("%s: NFS write to a template: %v, want NFS3ERR_ROFS", when, err)
		}
		if st := d.status(); !strings.Contains(strings.Join(templates(st), ","), "/base.raw") {
			t.Fatalf("%s: status does not show the template: %v", when, st["vdisks"])
		}
	}
	check("at once")
	d.restart()
	check("after a restart")
}

func templates(st map[string]any) []string {
	var out []string
	vs, _ := st["vdisks"].([]any)
	for _, v := range vs {
		if m, _ := v.(map[string]any); m != nil && m["template"] == true {
			out = append(out, m["path"].(string))
		}
	}
	return out
}
