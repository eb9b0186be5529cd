package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// joinNetns joins daemons' network namespaces into one subnet: a bridge
// in hub's namespace (10.77.0.1) and a veth pair to each other daemon
// (10.77.0.2, .3, …). Deleting the namespaces removes it all.
func joinNetns(t *testing.T, hub *daemon, others ...*daemon) {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("-n", hub.netns, "link", "add", "br0", "type", "bridge")
	ip("-n", hub.netns, "addr", "add", "10.77.0.1/24", "dev", "br0")
	ip("-n", hub.netns, "link", "set", "br0", "up")
	for i, o := range others {
		port := fmt.Sprintf("p%d", i)
		ip("-n", o.netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", hub.netns)
		ip("-n", o.netns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", i+2), "dev", "eth0")
		ip("-n", o.netns, "link", "set", "eth0", "up")
		ip("-n", hub.netns, "link", "set", port, "master", "br0")
		ip("-n", hub.netns, "link", "set", port, "up")
	}
}

// dtlProc is `vpool dtl serve` in a daemon's namespace (a host that holds
// DTLs and serves no vPool).
type dtlProc struct {
	t      *testing.T
	d      *daemon
	listen string
	cmd    *exec.Cmd
	done   chan error
	starts int
}

func startDTLProc(t *testing.T, d *daemon, listen string) *dtlProc {
	t.Helper()
	p := &dtlProc{t: t, d: d, listen: listen}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *dtlProc) start() {
	p.t.Helper()
	p.starts++
	logf, err := os.Create(filepath.Join(p.d.root, fmt.Sprintf("dtl.%d.log", p.starts)))
	if err != nil {
		p.t.Fatal(err)
	}
	args := []string{"--net=" + p.d.netnsPath(), "--", vpoolBin, "dtl", "serve", "--data-dir", p.d.dataDir}
	env := append(os.Environ(), "VPOOL_DTL_LISTEN="+p.listen)
	if p.d.config != "" {
		args, env = append(args, "--config", p.d.config), os.Environ()
	}
	p.cmd = exec.Command("nsenter", args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	logf.Close()
	p.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(p.cmd, p.done)
	for i := 0; ; i++ {
		if c, err := p.d.dialNetnsUnprivileged(p.listen); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-p.done:
			p.cmd = nil
			p.t.Fatalf("vpool dtl serve exited at start: %v\n%s", err, p.log())
		default:
		}
		if i > 600 {
			p.t.Fatalf("vpool dtl serve did not listen on %s in a minute\n%s", p.listen, p.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *dtlProc) log() string {
	b, _ := os.ReadFile(filepath.Join(p.d.root, fmt.Sprintf("dtl.%d.log", p.starts)))
	return string(b)
}

// kill is kill -9.
func (p *dtlProc) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// dtlStates returns each vDisk's DTL state by path.
func dtlStates(d *daemon) map[string]string {
	out := map[string]string{}
	for _, v := range d.status()["vdisks"].([]any) {
		m := v.(map[string]any)
		if dt, ok := m["dtl"].(map[string]any); ok {
			p, _ := m["path"].(string)
			out[p], _ = dt["state"].(string)
		}
	}
	return out
}

// waitDTLState waits until the vDisk at path has the DTL state want (a
// hang guard of two minutes, not a timing).
func waitDTLState(t *testing.T, d *daemon, path, want string) {
	t.Helper()
	for i := 0; ; i++ {
		st := dtlStates(d)
		if st[path] == want {
			return
		}
		if i > 1200 {
			t.Fatalf("DTL state of %s: %q after two minutes, want %q; status: %v", path, st[path], want, d.status())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Host A writes with fio through FUSE and is killed with kill -9, its data
// dir deleted; host C, with the same backend and dtl.peers, takes over and
// every acknowledged write (sync) or every write before the final fsync
// (async) verifies, from the backend plus host B's DTL. In sync mode the
// DTL host is also killed -9 and restarted in the middle of the writes:
// the vDisk degrades, catches up, and nothing is lost. Host A, started
// again, is refused.
func TestDTLHostLoss(t *testing.T) {
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			yaml := "backend:\n  asds: [" + strings.Join(asdDirs(t, 3), ", ") + "]\n" +
				"dtl:\n  peers: [10.77.0.1:7411]\n  mode: " + mode + "\n"
			// Seals only when an SCO is full (64 MiB): what fio writes stays
			// off the backend, held by local flash and the DTL alone; and no
			// namespace backup after the start: the files come back from the
			// namespace journal, a vDisk the DTL protects too.
			env := []string{"VPOOL_ENGINE_SEAL_IDLE=0s", "VPOOL_FS_BACKUP_INTERVAL=1h"}
			b := newDaemon(t, "", "")
			a := newDaemon(t, yaml, "", env...)
			c := newDaemon(t, yaml, "", env...)
			joinNetns(t, b, a, c)
			dtlB := startDTLProc(t, b, "0.0.0.0:7411")
			a.start()
			img := a.path("vm.raw")
			run(t, time.Minute, "truncate", "-s", "256M", img)
			vmx := []byte("memsize = \"2048\"\n")
			if err := os.WriteFile(a.path("vm.vmx"), vmx, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, time.Minute, "sync", a.path("vm.vmx")) // fsync: the DTL holds it
			waitDTLState(t, a, "/vm.raw", "ok")

			base := []string{"--name=dtl", "--rw=randwrite", "--bs=4k", "--size=32M", "--direct=1",
				"--ioengine=libaio", "--iodepth=16", "--verify=crc32c", "--randseed=11"}
			args := append(base[:len(base):len(base)], "--filename="+img, "--do_verify=0", "--verify_state_save=1")
			if mode == "async" {
				args = append(args, "--end_fsync=1")
			}
			if mode == "sync" {
				args = append(args, "--rate_iops=1000")
				done := make(chan string, 1)
				go func() {
					out, _ := runErr(5*time.Minute, a.root, "fio", args...)
					done <- out
				}()
				time.Sleep(2 * time.Second)
				dtlB.kill()
				waitDTLState(t, a, "/vm.raw", "degraded")
				dtlB.start()
				waitDTLState(t, a, "/vm.raw", "ok")
				if out := <-done; !strings.Contains(out, "err= 0") {
					t.Fatalf("fio: %s", out)
				}
			} else {
				runIn(t, a.root, 5*time.Minute, "fio", args...)
			}
			waitDTLState(t, a, "/vm.raw", "ok")
			for _, v := range a.status()["vdisks"].([]any) {
				if m := v.(map[string]any); m["path"] == "/vm.raw" && m["write_buffer_bytes"].(float64) == 0 {
					t.Fatal("fio's writes are all on the backend: the restore would not need the DTL")
				}
			}

			a.kill()
			if err := os.RemoveAll(a.dataDir); err != nil {
				t.Fatal(err)
			}
			c.args = []string{"--takeover"}
			c.start()
			if !strings.Contains(c.log(), "read back the DTL") || !strings.Contains(c.log(), "from the journal") {
				t.Fatalf("no read-back of the DTL or no namespace journal replay in the log:\n%s", c.log())
			}
			if b, err := os.ReadFile(c.path("vm.vmx")); err != nil || !bytes.Equal(b, vmx) {
				t.Fatalf("a file written and fsynced before the host loss: %q %v", b, err)
			}
			verify := append(base, "--filename="+c.path("vm.raw"), "--verify_only", "--verify_state_load=1", "--verify_fatal=1")
			out := runIn(t, a.root, 5*time.Minute, "fio", verify...)
			if !strings.Contains(out, "READ:") {
				t.Fatalf("fio verify on the new host: %s", out)
			}
			t.Logf("verified on the new host: %s", grepLine(out, "READ:"))

			if out, err := a.serveOnce(t); err == nil || !strings.Contains(out, "held by another daemon") {
				t.Fatalf("the old host started again: %v\n%s", err, out)
			}
		})
	}
}

// nft runs an nftables command in the daemon's network namespace.
func (d *daemon) nft(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + d.netnsPath(), "--", "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// dropDTL makes d's packets to the DTL vanish (no reset: a dead link).
func (d *daemon) dropDTL(t *testing.T) {
	d.nft(t, "add", "table", "inet", "vpooltest")
	d.nft(t, "add", "chain", "inet", "vpooltest", "out", "{ type filter hook output priority 0 ; }")
	d.nft(t, "add", "rule", "inet", "vpooltest", "out", "ip", "daddr", "10.77.0.1", "tcp", "dport", "7411", "drop")
}

func (d *daemon) undropDTL(t *testing.T) { d.nft(t, "delete", "table", "inet", "vpooltest") }

// dtlWaiting is how many writes and flushes of the vDisk at path wait for
// the DTL.
func dtlWaiting(d *daemon, path string) float64 {
	for _, v := range d.status()["vdisks"].([]any) {
		m := v.(map[string]any)
		if dt, ok := m["dtl"].(map[string]any); ok && m["path"] == path {
			return dt["waiting"].(float64)
		}
	}
	return -1
}

// The link to the DTL is dropped (nftables, no resets): with on_loss
// degrade, sync writes go on once the DTL's reply is overdue and the vDisk
// is degraded until the link is back and it has caught up; with block,
// a write waits for as long as the link is down and completes after.
func TestDTLLinkDropped(t *testing.T) {
	yaml := "backend:\n  asds: [" + strings.Join(asdDirs(t, 3), ", ") + "]\n" +
		"dtl:\n  peers: [10.77.0.1:7411]\n  mode: sync\n"
	b := newDaemon(t, "", "")
	a := newDaemon(t, yaml, "", "VPOOL_ENGINE_SEAL_IDLE=0s")
	joinNetns(t, b, a)
	startDTLProc(t, b, "0.0.0.0:7411")
	a.start()
	img := a.path("vm.raw")
	run(t, time.Minute, "truncate", "-s", "64M", img)
	waitDTLState(t, a, "/vm.raw", "ok")

	a.dropDTL(t)
	run(t, 2*time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x11 0 1M", img)
	waitDTLState(t, a, "/vm.raw", "degraded")
	a.undropDTL(t)
	waitDTLState(t, a, "/vm.raw", "ok")

	a.stop()
	a.env = append(a.env, "VPOOL_DTL_ON_LOSS=block")
	a.start()
	waitDTLState(t, a, "/vm.raw", "ok")
	a.dropDTL(t)
	done := make(chan error, 1)
	go func() {
		_, err := runErr(5*time.Minute, "", "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x22 1M 1M", img)
		done <- err
	}()
	waitDTLState(t, a, "/vm.raw", "blocked")
	for i := 0; dtlWaiting(a, "/vm.raw") < 1; i++ {
		if i > 600 {
			t.Fatal("no write waits for the DTL while its link is down and on_loss is block")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("a sync write completed (%v) with the DTL unreachable and on_loss block", err)
	default:
	}
	a.undropDTL(t)
	if err := <-done; err != nil {
		t.Fatalf("the blocked write after the link came back: %v", err)
	}
	waitDTLState(t, a, "/vm.raw", "ok")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c", "read -P 0x22 1M 1M", img)
}

// makeCA writes a CA and a host certificate signed by it (for 10.77.0.*)
// under dir, with openssl; it returns the dtl.tls YAML naming them.
func makeCA(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(f("ext"), []byte("extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:10.77.0.1,IP:10.77.0.2,IP:10.77.0.3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
		"-subj", "/CN=vpool-test-ca", "-keyout", f("ca.key"), "-out", f("ca.pem"))
	run(t, time.Minute, "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=host",
		"-keyout", f("host.key"), "-out", f("host.csr"))
	run(t, time.Minute, "openssl", "x509", "-req", "-in", f("host.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
		"-CAcreateserial", "-days", "2", "-extfile", f("ext"), "-out", f("host.pem"))
	return fmt.Sprintf("  tls: {ca: %s, cert: %s, key: %s}\n", f("ca.pem"), f("host.pem"), f("host.key"))
}

// DTL traffic over TLS with mutual authentication: a host whose
// certificate another CA signed is refused; one of the vPool's CA gets its
// DTL, and status says TLS.
func TestDTLTLS(t *testing.T) {
	certs := t.TempDir()
	good := makeCA(t, filepath.Join(certs, "good"))
	other := makeCA(t, filepath.Join(certs, "other"))
	asds := "backend:\n  asds: [" + strings.Join(asdDirs(t, 3), ", ") + "]\n"
	b := newDaemon(t, "dtl:\n  listen: 0.0.0.0:7411\n"+good, "")
	a := newDaemon(t, asds+"dtl:\n  peers: [10.77.0.1:7411]\n"+other, "")
	joinNetns(t, b, a)
	p := &dtlProc{t: t, d: b, listen: "10.77.0.1:7411"}
	p.start() // its config file says listen and tls
	t.Cleanup(p.kill)
	a.start()
	run(t, time.Minute, "truncate", "-s", "64M", a.path("vm.raw"))
	for i := 0; !strings.Contains(p.log(), "TLS handshake failed"); i++ {
		if i > 600 {
			t.Fatalf("the DTL server did not refuse a certificate of another CA:\n%s", p.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := dtlStates(a)["/vm.raw"]; st != "degraded" {
		t.Fatalf("with a certificate of another CA: DTL state %q, want degraded", st)
	}
	a.stop()
	if err := os.WriteFile(a.config, []byte(asds+"dtl:\n  peers: [10.77.0.1:7411]\n"+good), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start()
	waitDTLState(t, a, "/vm.raw", "ok")
	if st := a.status(); st["dtl_tls"] != true {
		t.Fatalf("status does not say TLS: %v", st["dtl_tls"])
	}
	out := run(t, time.Minute, vpoolBin, "status", "--data-dir", a.dataDir)
	if !strings.Contains(out, "dtl: peers 10.77.0.1:7411 (TLS)") {
		t.Fatalf("status:\n%s", out)
	}
}
