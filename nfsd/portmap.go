package nfsd

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// The portmapper (RFC 1833, version 2): clients such as libnfs (qemu's
// nfs:// driver) and ESXi ask it where MOUNT and NFS listen. Versions 3
// and 4 (rpcbind) are answered with PROG_MISMATCH, after which clients
// fall back to version 2.

const (
	ipprotoTCP = 6
	ipprotoUDP = 17
)

type mapping struct{ prog, vers, prot, port uint32 }

func (s *Server) mappings() []mapping {
	p := uint32(s.nfsPort)
	m := []mapping{{progNFS, 3, ipprotoTCP, p}, {progMount, 3, ipprotoTCP, p}, {progMount, 3, ipprotoUDP, p}}
	if pm := uint32(s.cfg.PortmapPort); pm != 0 {
		m = append(m, mapping{progPortmap, 2, ipprotoTCP, pm}, mapping{progPortmap, 2, ipprotoUDP, pm})
	}
	return m
}

func (s *Server) portmap(c *call) []byte {
	if c.vers != 2 {
		return progMismatch(c.xid, 2, 2)
	}
	r := &c.args
	switch c.proc {
	case 0: // NULL
		if r.done() != nil {
			return garbage(c)
		}
		return accepted(c.xid, acceptSuccess, 0).b
	case 1, 2: // SET, UNSET: this portmapper maps only its own services
		r.uint32()
		r.uint32()
		r.uint32()
		r.uint32()
		if r.done() != nil {
			return garbage(c)
		}
		w := accepted(c.xid, acceptSuccess, 4)
		w.bool(false)
		return w.b
	case 3: // GETPORT
		q := mapping{r.uint32(), r.uint32(), r.uint32(), r.uint32()}
		if r.done() != nil {
			return garbage(c)
		}
		port := uint32(0)
		for _, m := range s.mappings() {
			if m.prog == q.prog && m.vers == q.vers && m.prot == q.prot {
				port = m.port
			}
		}
		w := accepted(c.xid, acceptSuccess, 4)
		w.uint32(port)
		return w.b
	case 4: // DUMP
		if r.done() != nil {
			return garbage(c)
		}
		w := accepted(c.xid, acceptSuccess, 128)
		for _, m := range s.mappings() {
			w.bool(true)
			w.uint32(m.prog)
			w.uint32(m.vers)
			w.uint32(m.prot)
			w.uint32(m.port)
		}
		w.bool(false)
		return w.b
	}
	return accepted(c.xid, acceptProcUnavail, 0).b // CALLIT and beyond
}

// registerTimeout bounds a registration with another portmapper, from the
// connect to the last reply.
const registerTimeout = 5 * time.Second

// register sets (or, set false, unsets) the gateway's MOUNT and NFS
// mappings in the portmapper on host's port 111. rpcbind takes SET only
// from a local privileged port, so the call comes from one.
func (s *Server) register(host string, set bool) error {
	conn, err := DialPrivileged(net.JoinHostPort(loopbackOf(host), strconv.Itoa(s.cfg.PortmapPort)), registerTimeout)
	if err != nil {
		return err
	}
	// A portmapper that holds the port but never answers must not hold up
	// the start (or the stop) for long.
	conn.SetDeadline(time.Now().Add(registerTimeout))
	c := NewClient(conn, 0, 0)
	defer c.Close()
	var ms []mapping
	for _, m := range s.mappings() {
		if m.prog != progPortmap {
			ms = append(ms, m)
		}
	}
	call := func(proc uint32, m mapping) (*reader, error) {
		w := &writer{}
		w.uint32(m.prog)
		w.uint32(m.vers)
		w.uint32(m.prot)
		w.uint32(m.port)
		return c.rpc(progPortmap, 2, proc, w.b)
	}
	// UNSET first, all of them (it drops every protocol of a program and
	// version): a mapping left by a daemon that was killed makes SET fail.
	for _, m := range ms {
		if _, err := call(2, m); err != nil {
			return fmt.Errorf("portmapper UNSET: %v", err)
		}
	}
	for _, m := range ms {
		if !set {
			break
		}
		r, err := call(1, m)
		if err != nil {
			return fmt.Errorf("portmapper SET: %v", err)
		}
		if !r.bool() {
			return fmt.Errorf("portmapper refused SET of program %d version %d", m.prog, m.vers)
		}
	}
	return nil
}

// loopbackOf is where to reach a portmapper for a listen host: the host
// itself, or loopback for a wildcard.
func loopbackOf(host string) string {
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return host
}
