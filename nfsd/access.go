package nfsd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Rule says which clients may use the export and as whom, as an entry
// of Linux's exports(5) does. AUTH_SYS credentials are what the client
// says they are; the protection is in who may send them (Net, and a
// privileged source port unless Insecure) and in squashing.
type Rule struct {
	Net netip.Prefix
	// ReadOnly refuses every change (NFS3ERR_ROFS) and ACCESS never
	// grants modify rights.
	ReadOnly bool
	// RootSquash maps uid 0 and gid 0 to the anonymous uid and gid;
	// AllSquash maps every user.
	RootSquash, AllSquash bool
	// AnonUID and AnonGID are who squashed and AUTH_NONE callers are;
	// 0 means 65534 (nobody): squashing to root would squash nothing.
	AnonUID, AnonGID uint32
	// Insecure serves NFS and MNT calls from source ports >= 1024 (any
	// local user can send from those); else they are refused with
	// AUTH_TOOWEAK, as knfsd's "secure" does.
	Insecure bool
}

// DefaultRule is the rule of a network listed without options: a
// privileged port is required, root is not squashed (ESXi and qemu as
// root need it), the export is writable.
func DefaultRule(net netip.Prefix) Rule { return Rule{Net: net} }

// ParseRule reads "NETWORK" or "NETWORK(option,...)": NETWORK is an
// address or a prefix (10.0.0.0/8, 192.168.1.20, ::1); the options are
// exports(5)'s ro, rw, root_squash, no_root_squash, all_squash,
// no_all_squash, anonuid=N, anongid=N, secure and insecure. Options not
// given come from def.
func ParseRule(s string, def Rule) (Rule, error) {
	s = strings.TrimSpace(s)
	netPart, opts, hasOpts := strings.Cut(s, "(")
	if hasOpts {
		if !strings.HasSuffix(opts, ")") {
			return Rule{}, fmt.Errorf("%q: options must end with ')'", s)
		}
		opts = strings.TrimSuffix(opts, ")")
	}
	netPart = strings.TrimSpace(netPart)
	p, err := netip.ParsePrefix(netPart)
	if err != nil {
		ip, ierr := netip.ParseAddr(netPart)
		if ierr != nil {
			return Rule{}, fmt.Errorf("%q is neither a network (10.0.0.0/8) nor an address", netPart)
		}
		p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
	}
	r := def
	r.Net = p.Masked()
	if !hasOpts {
		return r, nil
	}
	for _, o := range strings.Split(opts, ",") {
		o = strings.TrimSpace(o)
		key, val, hasVal := strings.Cut(o, "=")
		flag := map[string]*bool{"ro": &r.ReadOnly, "root_squash": &r.RootSquash, "all_squash": &r.AllSquash, "insecure": &r.Insecure}
		neg := map[string]*bool{"rw": &r.ReadOnly, "no_root_squash": &r.RootSquash, "no_all_squash": &r.AllSquash, "secure": &r.Insecure}
		switch {
		case o == "":
		case !hasVal && flag[key] != nil:
			*flag[key] = true
		case !hasVal && neg[key] != nil:
			*neg[key] = false
		case hasVal && (key == "anonuid" || key == "anongid"):
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n == 0 {
				return Rule{}, fmt.Errorf("%q: %s must be a number above 0 (squashing to root squashes nothing)", s, key)
			}
			if key == "anonuid" {
				r.AnonUID = uint32(n)
			} else {
				r.AnonGID = uint32(n)
			}
		default:
			return Rule{}, fmt.Errorf("%q: unknown option %q (ro, rw, root_squash, no_root_squash, all_squash, no_all_squash, anonuid=N, anongid=N, secure, insecure)", s, o)
		}
	}
	return r, nil
}

// String is the rule in ParseRule's form, every option spelled out.
func (r Rule) String() string {
	o := []string{"rw", "no_root_squash", "no_all_squash", "secure"}
	if r.ReadOnly {
		o[0] = "ro"
	}
	if r.RootSquash {
		o[1] = "root_squash"
	}
	if r.AllSquash {
		o[2] = "all_squash"
	}
	if r.Insecure {
		o[3] = "insecure"
	}
	uid, gid := r.anon()
	return fmt.Sprintf("%s(%s,anonuid=%d,anongid=%d)", r.Net, strings.Join(o, ","), uid, gid)
}

// anon is who squashed callers become.
func (r *Rule) anon() (uid, gid uint32) {
	uid, gid = r.AnonUID, r.AnonGID
	if uid == 0 {
		uid = nobody
	}
	if gid == 0 {
		gid = nobody
	}
	return uid, gid
}

// squash makes c the identity the rule lets it act as.
func (r *Rule) squash(c *cred) {
	c.ro = r.ReadOnly
	uid, gid := r.anon()
	if !c.sys || r.AllSquash {
		c.uid, c.gid, c.gids = uid, gid, nil
		return
	}
	if !r.RootSquash {
		return
	}
	if c.uid == 0 {
		c.uid = uid
	}
	if c.gid == 0 {
		c.gid = gid
	}
	gids := c.gids[:0:0]
	for _, g := range c.gids {
		if g != 0 {
			gids = append(gids, g)
		}
	}
	c.gids = gids
}

// peer is what the gateway knows of a client: its address and the rule
// it is served under.
type peer struct {
	addr   string
	ip     netip.Addr // of addr, unmapped
	rule   *Rule
	secure bool // the source port is privileged (< 1024)
}

// trusted reports whether the peer's NFS and MNT calls are served.
func (p *peer) trusted() bool { return p.secure || p.rule.Insecure }

// ruleFor finds the rule for a client address: the most specific network
// that holds it (the first listed of equal ones). nil: not allowed.
func (s *Server) ruleFor(addr net.Addr) (*peer, bool) {
	as := addr.String()
	ap, err := netip.ParseAddrPort(as)
	if err != nil {
		return nil, false
	}
	ip := ap.Addr().Unmap()
	var best *Rule
	for i := range s.rules {
		r := &s.rules[i]
		if r.Net.Contains(ip) && (best == nil || r.Net.Bits() > best.Net.Bits()) {
			best = r
		}
	}
	if best == nil {
		return nil, false
	}
	return &peer{addr: as, ip: ip, rule: best, secure: ap.Port() < 1024}, true
}

// rules are the configured ones, or one for every client.
func rulesOf(cfg *Config) []Rule {
	if len(cfg.Allow) > 0 {
		return cfg.Allow
	}
	def := cfg.Default
	v4, v6 := def, def
	v4.Net, v6.Net = netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	return []Rule{v4, v6}
}

// refusedPort answers an NFS or MNT call from an unprivileged port.
func (s *Server) refusedPort(c *call) []byte {
	s.warnLimited("nfs: call from an unprivileged source port refused (AUTH_TOOWEAK): only root can send from ports below 1024; "+
		"allow others with nfs.insecure_ports or the network's insecure option", "client", c.peer.addr)
	return denyAuth(c.xid, authTooWeak)
}

// warnLimited logs at most one warning every 10 s, so that a client
// cannot fill the log; the ones left out are counted in the next.
func (s *Server) warnLimited(msg string, args ...any) {
	s.warnMu.Lock()
	now := time.Now()
	if now.Sub(s.warnLast) < 10*time.Second {
		s.warnSkipped++
		s.warnMu.Unlock()
		return
	}
	skipped := s.warnSkipped
	s.warnLast, s.warnSkipped = now, 0
	s.warnMu.Unlock()
	if skipped > 0 {
		args = append(args, "similar_warnings_left_out", skipped)
	}
	s.log.Warn(msg, args...)
}

// warnState is warnLimited's.
type warnState struct {
	warnMu      sync.Mutex
	warnLast    time.Time
	warnSkipped int
}

// DialPrivileged connects to addr from a privileged source port
// (1023 down to 600), as a root NFS client does; it needs root (or
// CAP_NET_BIND_SERVICE). A port in use is skipped.
func DialPrivileged(addr string, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	local := net.IPv4zero
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		local = net.IPv6zero
	}
	var last error
	for p := 1023; p >= 600; p-- {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: local, Port: p},
			// A port whose earlier connection is in TIME_WAIT serves
			// connections to other addresses.
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				return errors.Join(err, serr)
			}}
		conn, err := d.Dial("tcp", addr)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, err
		}
		last = err
	}
	return nil, fmt.Errorf("no privileged source port free: %w", last)
}
