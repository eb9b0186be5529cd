package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var vpoolBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test: the end-to-end tests need root (FUSE mounts, loop devices); run ./scripts/test.sh as root")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "vpool-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dropStaleNetns()
	vpoolBin = filepath.Join(dir, "vpool")
	build := exec.Command("go", "build", "-o", vpoolBin, "../cmd/vpool")
	if bin := os.Getenv("VPOOL_E2E_BIN"); bin != "" { // an older build, to see a test fail without a fix
		vpoolBin, build = bin, exec.Command("true")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "test: build vpool:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dropStaleNetns deletes the network namespaces of daemons whose state
// directory is gone (a test run killed before its cleanup).
func dropStaleNetns() {
	names, _ := filepath.Glob("/run/netns/vpool-e2e-*")
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/var/tmp", filepath.Base(n))); os.IsNotExist(err) {
			exec.Command("ip", "netns", "delete", filepath.Base(n)).Run()
		}
	}
}

// daemon is one `vpool serve` process with its own data dir and mountpoint.
type daemon struct {
	t       *testing.T
	root    string // data dir, mountpoint and logs live under it
	dataDir string
	mnt     string
	env     []string
	cmd     *exec.Cmd
	done    chan error
	logPath string
	starts  int
	netns   string   // the daemon's network namespace: its own loopback, ports 111 and 2049
	nfsUp   int      // the start whose NFS gateway answered
	config  string   // a --config file, or ""
	args    []string // more arguments of serve (--takeover)
}

// startDaemon runs `vpool serve` and waits until the tree is mounted.
// env adds VPOOL_* settings.
func startDaemon(t *testing.T, env ...string) *daemon {
	t.Helper()
	return startDaemonConfig(t, "", env...)
}

// startDaemonConfig is startDaemon with a config file holding yaml.
func startDaemonConfig(t *testing.T, yaml string, env ...string) *daemon {
	t.Helper()
	return startDaemonOn(t, yaml, "", env...)
}

// startDaemonOn is startDaemonConfig with the data dir on a tmpfs of
// dataSize (mount's size=, "" for none): a small filesystem to fill.
func startDaemonOn(t *testing.T, yaml, dataSize string, env ...string) *daemon {
	t.Helper()
	d := newDaemon(t, yaml, dataSize, env...)
	d.start()
	return d
}

// newDaemon is startDaemonOn without the start: its network namespace is
// there, for servers it needs (an S3 server) to start in first.
func newDaemon(t *testing.T, yaml, dataSize string, env ...string) *daemon {
	t.Helper()
	root, err := os.MkdirTemp("/var/tmp", "vpool-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if dataSize != "" {
		data := filepath.Join(root, "data")
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+dataSize+",mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
			os.RemoveAll(root)
			t.Fatalf("mount tmpfs: %v\n%s", err, out)
		}
		t.Cleanup(func() { // after the daemon's cleanup (registered below)
			syscall.Unmount(data, syscall.MNT_DETACH)
			if !t.Failed() {
				os.RemoveAll(root)
			}
		})
	}
	d := &daemon{t: t, root: root, dataDir: filepath.Join(root, "data"), mnt: filepath.Join(root, "mnt"),
		env:   append([]string{"VPOOL_WRITE_BUFFER_SIZE=2GiB", "VPOOL_READ_CACHE_SIZE=128MiB"}, env...),
		netns: filepath.Base(root)}
	if yaml != "" {
		d.config = filepath.Join(root, "vpool.yaml")
		if err := os.WriteFile(d.config, []byte(yaml), 0o644); err != nil {
			os.RemoveAll(root)
			t.Fatal(err)
		}
	}
	// Each daemon gets a network namespace with only loopback, kept
	// across its restarts, so that the NFS gateway's fixed ports never
	// meet another daemon's or the host's.
	if out, err := exec.Command("ip", "netns", "add", d.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	if out, err := exec.Command("ip", "-n", d.netns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		exec.Command("ip", "netns", "delete", d.netns).Run()
		t.Fatalf("ip link set lo up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		d.cleanup()
		exec.Command("ip", "netns", "delete", d.netns).Run()
		if !t.Failed() {
			os.RemoveAll(root)
		} else {
			t.Logf("daemon state kept in %s", root)
		}
	})
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.starts++
	d.logPath = filepath.Join(d.root, fmt.Sprintf("daemon.%d.log", d.starts))
	logf, err := os.Create(d.logPath)
	if err != nil {
		d.t.Fatal(err)
	}
	args := []string{"--net=" + d.netnsPath(), "--", vpoolBin, "serve", "--data-dir", d.dataDir, "--mountpoint", d.mnt}
	if d.config != "" {
		args = append(args, "--config", d.config)
	}
	args = append(args, d.args...)
	d.cmd = exec.Command("nsenter", args...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	logf.Close()
	d.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(d.cmd, d.done)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.cmd = nil
			d.t.Fatalf("vpool serve exited at start: %v\n%s", err, d.log())
		default:
		}
		// Mounted by this start: a stale mount a killed daemon left may
		// still answer the kernel until the new daemon detaches it.
		if isMounted(d.mnt) && strings.Contains(d.log(), "vpool: serving") {
			if _, err := os.ReadDir(d.mnt); err == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("vpool serve did not mount %s in 60 s\n%s", d.mnt, d.log())
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// stop sends SIGTERM and expects a clean exit with the tree unmounted.
func (d *daemon) stop() {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.cmd = nil
		if err != nil {
			d.t.Fatalf("vpool serve exited with %v on SIGTERM\n%s", err, d.log())
		}
	case <-time.After(90 * time.Second):
		d.kill()
		d.t.Fatalf("vpool serve did not stop within 90 s of SIGTERM\n%s", d.log())
	}
	if isMounted(d.mnt) {
		d.t.Fatalf("%s still mounted after a clean stop", d.mnt)
	}
}

// kill is kill -9: the mount is left stale, as a crash leaves it.
func (d *daemon) kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	<-d.done
	d.cmd = nil
}

func (d *daemon) restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

func (d *daemon) cleanup() {
	if d.cmd != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
		d.cmd = nil
	}
	if isMounted(d.mnt) {
		syscall.Unmount(d.mnt, syscall.MNT_DETACH)
	}
}

func (d *daemon) path(name string) string { return filepath.Join(d.mnt, name) }

func (d *daemon) netnsPath() string { return "/run/netns/" + d.netns }

// inNetns is the command line that runs name in the daemon's network
// namespace (NFS clients).
func (d *daemon) inNetns(name string, args ...string) (string, []string) {
	return "nsenter", append([]string{"--net=" + d.netnsPath(), "--", name}, args...)
}

// status runs `vpool status --json` against the daemon.
func (d *daemon) status() map[string]any {
	d.t.Helper()
	out := run(d.t, 30*time.Second, vpoolBin, "status", "--json", "--data-dir", d.dataDir)
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		d.t.Fatalf("status: %v\n%s", err, out)
	}
	return st
}

func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// run runs a command with a time limit and returns its combined output;
// a failure or a timeout fails the test with the output.
func run(t *testing.T, limit time.Duration, name string, args ...string) string {
	t.Helper()
	return runIn(t, "", limit, name, args...)
}

func runIn(t *testing.T, dir string, limit time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(limit, dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(limit time.Duration, dir, name string, args ...string) (string, error) {
	return runEnv(limit, dir, nil, name, args...)
}

// runEnv runs a command in dir with env added to this process's, within
// limit, and returns its combined output.
func runEnv(limit time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s", limit)
	}
	return string(out), err
}

// loop attaches a loop device to file; it is detached when the test ends.
func loop(t *testing.T, file string) string {
	t.Helper()
	dev := strings.TrimSpace(run(t, 30*time.Second, "losetup", "--direct-io=on", "-f", "--show", file))
	t.Cleanup(func() { runErr(30*time.Second, "", "losetup", "-d", dev) })
	return dev
}

// mount mounts dev at dir; it is unmounted when the test ends.
func mount(t *testing.T, dev, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, 60*time.Second, "mount", dev, dir)
	t.Cleanup(func() {
		if isMounted(dir) {
			runErr(60*time.Second, "", "umount", dir)
		}
	})
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
