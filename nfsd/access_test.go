package nfsd

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
)

func TestParseRule(t *testing.T) {
	def := Rule{RootSquash: true, AnonUID: 500}
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"10.0.0.0/8", "10.0.0.0/8(rw,root_squash,no_all_squash,secure,anonuid=500,anongid=65534)"},
		{"192.168.1.20", "192.168.1.20/32(rw,root_squash,no_all_squash,secure,anonuid=500,anongid=65534)"},
		{"10.1.2.3/8(ro, no_root_squash,insecure)", "10.0.0.0/8(ro,no_root_squash,no_all_squash,insecure,anonuid=500,anongid=65534)"},
		{"::1(all_squash,anonuid=1001,anongid=1002)", "::1/128(rw,root_squash,all_squash,secure,anonuid=1001,anongid=1002)"},
		{"::ffff:10.0.0.1(rw,secure)", "10.0.0.1/32(rw,root_squash,no_all_squash,secure,anonuid=500,anongid=65534)"},
	} {
		r, err := ParseRule(tc.in, def)
		if err != nil || r.String() != tc.want {
			t.Errorf("ParseRule(%q) = %v, %v; want %s", tc.in, r, err, tc.want)
		}
	}
	for _, bad := range []string{"", "host.example", "10.0.0.0/8(ro", "10.0.0.0/8(sync)", "10.0.0.0/8(anonuid=x)",
		"10.0.0.0/8(anonuid=0)", "10.0.0.0/33"} {
		if r, err := ParseRule(bad, def); err == nil {
			t.Errorf("ParseRule(%q) = %v, want an error", bad, r)
		}
	}
}

func TestSquash(t *testing.T) {
	for _, tc := range []struct {
		rule Rule
		in   cred
		want cred
	}{
		{Rule{}, cred{uid: 0, gid: 0, gids: []uint32{0, 5}, sys: true}, cred{uid: 0, gid: 0, gids: []uint32{0, 5}, sys: true}},
		{Rule{RootSquash: true}, cred{uid: 0, gid: 0, gids: []uint32{0, 5}, sys: true}, cred{uid: nobody, gid: nobody, gids: []uint32{5}, sys: true}},
		{Rule{RootSquash: true}, cred{uid: 1000, gid: 0, sys: true}, cred{uid: 1000, gid: nobody, sys: true}},
		{Rule{AllSquash: true, AnonUID: 7, AnonGID: 8}, cred{uid: 1000, gid: 1000, gids: []uint32{3}, sys: true}, cred{uid: 7, gid: 8, sys: true}},
		{Rule{}, cred{uid: nobody, gid: nobody}, cred{uid: nobody, gid: nobody}}, // AUTH_NONE
		{Rule{AnonUID: 9, AnonGID: 9, ReadOnly: true}, cred{}, cred{uid: 9, gid: 9, ro: true}},
	} {
		c := tc.in
		c.gids = append([]uint32(nil), tc.in.gids...)
		tc.rule.squash(&c)
		if c.uid != tc.want.uid || c.gid != tc.want.gid || c.ro != tc.want.ro || len(c.gids) != len(tc.want.gids) {
			t.Errorf("%v squashes %+v to %+v, want %+v", tc.rule, tc.in, c, tc.want)
		}
	}
}

// The most specific network decides; an address in none is refused.
func TestRuleFor(t *testing.T) {
	s := &Server{rules: []Rule{
		{Net: netip.MustParsePrefix("10.0.0.0/8"), RootSquash: true},
		{Net: netip.MustParsePrefix("10.1.0.0/16"), ReadOnly: true},
		{Net: netip.MustParsePrefix("10.1.0.0/16")},
	}}
	p, ok := s.ruleFor(&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 800})
	if !ok || !p.rule.ReadOnly || !p.secure || !p.trusted() {
		t.Fatalf("10.1.2.3:800: %+v %v", p, ok)
	}
	p, ok = s.ruleFor(&net.TCPAddr{IP: net.ParseIP("10.2.0.1"), Port: 40000})
	if !ok || !p.rule.RootSquash || p.secure || p.trusted() {
		t.Fatalf("10.2.0.1:40000: %+v %v", p, ok)
	}
	if _, ok := s.ruleFor(&net.TCPAddr{IP: net.ParseIP("192.168.0.1"), Port: 800}); ok {
		t.Fatal("192.168.0.1 is allowed")
	}
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a privileged source port (scripts/test.sh runs as root)")
	}
}

// NFS and MNT calls from a port >= 1024 are refused with AUTH_TOOWEAK
// unless the rule is insecure; the portmapper and MOUNT's NULL answer.
func TestUnprivilegedPortRefused(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{})
	root := e.srv.handle(1, 1)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn, 0, 0)
	defer c.Close()
	var ae AuthError
	if _, err := c.Mount("/vp"); !errors.As(err, &ae) || ae != authTooWeak {
		t.Fatalf("MNT from an unprivileged port: %v, want AUTH_TOOWEAK", err)
	}
	if _, err := c.GetAttr(root); !errors.As(err, &ae) || ae != authTooWeak {
		t.Fatalf("GETATTR from an unprivileged port: %v, want AUTH_TOOWEAK", err)
	}
	if _, err := c.rpc(progMount, 3, 0, nil); err != nil {
		t.Fatalf("MOUNT NULL: %v", err)
	}
	e.client(0, 0) // a privileged port is served

	e.restart(Config{Default: Rule{Insecure: true}})
	conn, err = net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c = NewClient(conn, 0, 0)
	defer c.Close()
	if _, err := c.Mount("/vp"); err != nil {
		t.Fatalf("MNT from an unprivileged port with insecure: %v", err)
	}
}

// A caller claiming another uid gets that uid's rights and no more; root
// squash and all squash map to the anonymous user; a read-only rule
// refuses every change and ACCESS grants no modify right.
func TestIdentities(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{})
	rc, root := e.client(0, 0)
	secret, _ := must2(t)(rc.Create(root, "secret", Guarded, 0o600, [8]byte{}))
	if _, _, err := rc.Write(secret, 0, []byte("root's"), FileSync); err != nil {
		t.Fatal(err)
	}
	open, _ := must2(t)(rc.Create(root, "open", Guarded, 0o666, [8]byte{}))
	pub, _ := must2(t)(rc.Mkdir(root, "pub", 0o777))
	uc, _ := e.client(1000, 1000)
	if _, _, err := uc.Read(secret, 0, 6); err == nil {
		t.Fatal("uid 1000 read root's 0600 file")
	} else {
		wantStatus(t, err, nfs3ErrAccess, "read of root's 0600 file by uid 1000")
	}

	e.restart(Config{Default: Rule{RootSquash: true, AnonUID: 4000, AnonGID: 4000}})
	sc, sroot := e.client(0, 0)
	if _, _, err := sc.Read(secret, 0, 6); err == nil {
		t.Fatal("squashed root read root's 0600 file")
	}
	_, _, err := sc.Create(sroot, "by-squashed", Guarded, 0o666, [8]byte{}) // root's dir is 0755
	wantStatus(t, err, nfs3ErrAccess, "create by squashed root in root's 0755 directory")
	if _, a, err := sc.Create(pub, "by-squashed", Guarded, 0o666, [8]byte{}); err != nil || a.Uid != 4000 || a.Gid != 4000 {
		t.Fatalf("a file created by squashed root: %+v %v, want uid and gid 4000", a, err)
	}
	if _, _, err := sc.Write(open, 0, []byte("x"), FileSync); err != nil { // 0666: anyone may
		t.Fatalf("squashed root's write of a 0666 file: %v", err)
	}
	if a, err := sc.GetAttr(open); err != nil || a.Uid != 0 {
		t.Fatalf("open file: %+v %v", a, err)
	}

	e.restart(Config{Default: Rule{AllSquash: true, AnonUID: 4000, AnonGID: 4000}})
	ac, _ := e.client(1000, 1000)
	if _, _, err := ac.Read(secret, 0, 1); err == nil {
		t.Fatal("all_squash: read of root's 0600 file")
	}
	_, a, err := ac.Create(pub, "f", Guarded, 0o644, [8]byte{})
	if err != nil || a.Uid != 4000 || a.Gid != 4000 {
		t.Fatalf("a file created under all_squash: %+v %v, want uid and gid 4000", a, err)
	}

	e.restart(Config{Default: Rule{ReadOnly: true}})
	oc, oroot := e.client(0, 0)
	if _, _, err := oc.Write(open, 0, []byte("y"), FileSync); err == nil {
		t.Fatal("write on a read-only export")
	} else {
		wantStatus(t, err, nfs3ErrROFS, "write on a read-only export")
	}
	_, _, err = oc.Create(oroot, "new", Guarded, 0o644, [8]byte{})
	wantStatus(t, err, nfs3ErrROFS, "create on a read-only export")
	wantStatus(t, oc.Rename(oroot, "open", oroot, "moved"), nfs3ErrROFS, "rename on a read-only export")
	wantStatus(t, oc.Remove(oroot, "open"), nfs3ErrROFS, "remove on a read-only export")
	if got, err := oc.Access(open, access3Read|access3Modify|access3Extend); err != nil || got != access3Read {
		t.Fatalf("ACCESS on a read-only export: %#x %v, want read only", got, err)
	}
	if data, _, err := oc.Read(open, 0, 1); err != nil || string(data) != "x" {
		t.Fatalf("read on a read-only export: %q %v", data, err)
	}
}
