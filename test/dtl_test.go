package test

import (
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
	p.cmd = exec.Command("nsenter", "--net="+p.d.netnsPath(), "--", vpoolBin, "dtl", "serve", "--data-dir", p.d.dataDir)
	p.cmd.Env = append(os.Environ(), "VPOOL_DTL_LISTEN="+p.listen)
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
			// off the backend, held by local flash and the DTL alone.
			env := []string{"VPOOL_ENGINE_SEAL_IDLE=0s", "VPOOL_FS_BACKUP_INTERVAL=1s"}
			b := newDaemon(t, "", "")
			a := newDaemon(t, yaml, "", env...)
			c := newDaemon(t, yaml, "", env...)
			joinNetns(t, b, a, c)
			dtlB := startDTLProc(t, b, "0.0.0.0:7411")
			a.start()
			img := a.path("vm.raw")
			run(t, time.Minute, "truncate", "-s", "256M", img)
			a.restart() // a clean stop backs the namespace up: the backend names vm.raw
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
			if !strings.Contains(c.log(), "read back the DTL") {
				t.Fatalf("no read-back in the log:\n%s", c.log())
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
