// Package s3test runs a real S3 server for tests: versitygw over a
// directory (its posix backend), on a loopback port, killed by PID when the
// test ends. scripts/install-deps.sh installs it.
package s3test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Credentials of the servers this package starts.
const (
	AccessKey = "vpooltest"
	SecretKey = "vpooltest-secret-key"
)

// Server is one versitygw process.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Addr     string // 127.0.0.1:PORT
	Dir      string // the directory it serves: one subdirectory per bucket
	cmd      *exec.Cmd
	log      string
	netns    string
	dial     func(addr string) (net.Conn, error)
}

// Binary finds versitygw.
func Binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/local/bin/versitygw", filepath.Join(os.Getenv("HOME"), "go/bin/versitygw")} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found: scripts/install-deps.sh installs it")
}

// Start runs a server over a new directory until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, "", nil)
}

// StartIn is Start in the network namespace netns (a path such as
// /run/netns/NAME), on 127.0.0.1:7070 there; dial reaches into it to see
// the server listen.
func StartIn(t testing.TB, netns string, dial func(addr string) (net.Conn, error)) *Server {
	t.Helper()
	if dial == nil {
		dial = func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
	}
	s := &Server{Dir: filepath.Join(t.TempDir(), "s3"), netns: netns, dial: dial}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.log = filepath.Join(filepath.Dir(s.Dir), "versitygw.log")
	addr := ""
	if netns != "" {
		addr = "127.0.0.1:7070" // the namespace's own loopback
	}
	s.start(t, addr)
	t.Cleanup(s.Stop)
	return s
}

// start runs the server on addr ("": a free port).
func (s *Server) start(t testing.TB, addr string) {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		a := addr
		if a == "" {
			a = freePort(t)
		}
		logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{bin, "--port", a, "--access", AccessKey, "--secret", SecretKey, "--quiet", "posix", s.Dir}
		if s.netns != "" {
			args = append([]string{"nsenter", "--net=" + s.netns, "--"}, args...) // nsenter execs: the PID is the server's
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("start versitygw: %v", err)
		}
		logf.Close()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if s.waitListening(a, exited) {
			s.cmd, s.Addr, s.Endpoint = cmd, a, "http://"+a
			go func() { <-exited }() // reaped when killed
			return
		}
		b, _ := os.ReadFile(s.log)
		if addr != "" || attempt == 3 {
			t.Fatalf("versitygw did not start on %s:\n%s", a, b)
		}
	}
}

// waitListening waits until addr accepts connections, or the process
// exits (its port was taken).
func (s *Server) waitListening(addr string, exited <-chan error) bool {
	for i := 0; i < 3000; i++ { // 30 s: a start, not a measurement
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := s.dial(addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Stop kills the server (by PID).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGCONT) // a paused server dies too
		s.cmd.Process.Kill()
		s.cmd = nil
	}
}

// Restart starts the server again on the same port, over the same
// directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t, s.Addr)
}

// Pause stops the server's process (SIGSTOP): connections hang, as to a
// server that stopped answering. Resume continues it.
func (s *Server) Pause() { s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }
