package nfsd

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
