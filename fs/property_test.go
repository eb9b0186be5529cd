package fs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// mnode is the model of one file or directory: a dumb map from path to
// node beside the real namespace.
type mnode struct {
	dir   bool
	vdisk bool
	data  []byte
}

type model map[string]*mnode

func (m model) children(dir string) []string {
	var out []string
	for p := range m {
		if p != "/" && path.Dir(p) == dir {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// links counts the paths of a file (hard links share a node).
func (m model) links(n *mnode) uint32 {
	c := uint32(0)
	for _, x := range m {
		if x == n {
			c++
		}
	}
	return c
}

// parentErr is the errno a path's missing or non-directory parent gives.
func (m model) parentErr(p string) syscall.Errno {
	// walk from the root, as a lookup does
	parts := strings.Split(strings.TrimPrefix(path.Dir(p), "/"), "/")
	cur := ""
	for _, part := range parts {
		if part == "" {
			continue
		}
		cur += "/" + part
		if n := m[cur]; n == nil {
			return syscall.ENOENT
		} else if !n.dir {
			return syscall.ENOTDIR
		}
	}
	return 0
}

// resolve walks the real namespace to a path's parent inode.
func (e *env) resolve(p string) (uint64, string, error) {
	dir := uint64(RootIno)
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for _, part := range parts[:len(parts)-1] {
		a, err := e.ns.Lookup(bg, dir, part)
		if err != nil {
			return 0, "", err
		}
		if !a.IsDir() {
			return 0, "", ErrNotDir
		}
		dir = a.Ino
	}
	return dir, parts[len(parts)-1], nil
}

func (e *env) ino(p string) (Attr, error) {
	d, name, err := e.resolve(p)
	if err != nil {
		return Attr{}, err
	}
	return e.ns.Lookup(bg, d, name)
}

// check compares the whole tree, attributes and data, with the model.
func (e *env) check(m model, step int, op string) {
	e.t.Helper()
	var walk func(dir uint64, p string)
	seen := map[string]bool{"/": true}
	walk = func(dir uint64, p string) {
		var ents []DirEntry
		if err := e.ns.ReadDir(bg, dir, "", func(d DirEntry) bool { ents = append(ents, d); return true }); err != nil {
			e.t.Fatalf("step %d (%s): readdir %s: %v", step, op, p, err)
		}
		byIno := map[DirEntry]bool{}
		last := uint64(0)
		if err := e.ns.ReadDirOrder(bg, dir, 0, func(d DirEntry) bool {
			if d.Ino < last { // an inode's names (hard links) come together
				e.t.Fatalf("step %d (%s): %s: inode order %d after %d", step, op, p, d.Ino, last)
			}
			last, byIno[d] = d.Ino, true
			return true
		}); err != nil {
			e.t.Fatalf("step %d (%s): readdir in inode order %s: %v", step, op, p, err)
		}
		n := len(byIno)
		for _, d := range ents {
			delete(byIno, d)
		}
		if len(byIno) != 0 || n != len(ents) {
			e.t.Fatalf("step %d (%s): %s: inode-order entries differ from the names: extra %v", step, op, p, byIno)
		}
		for _, d := range ents {
			cp := path.Join(p, d.Name)
			seen[cp] = true
			want := m[cp]
			a, err := e.ns.GetAttr(bg, d.Ino)
			if want == nil || err != nil || want.dir != a.IsDir() || want.vdisk != a.IsVDisk() {
				e.t.Fatalf("step %d (%s): %s is %+v (%v); model has %+v", step, op, cp, a, err, want)
			}
			if a.IsDir() {
				walk(d.Ino, cp)
				continue
			}
			if links := m.links(want); a.Nlink != links {
				e.t.Fatalf("step %d (%s): %s has %d links, model %d", step, op, cp, a.Nlink, links)
			}
			if a.Size != int64(len(want.data)) {
				e.t.Fatalf("step %d (%s): %s has size %d, model %d", step, op, cp, a.Size, len(want.data))
			}
			if got := e.read(d.Ino, len(want.data)+10, 0); !bytes.Equal(got, want.data) {
				e.t.Fatalf("step %d (%s): %s data differs (%d bytes read)", step, op, cp, len(got))
			}
		}
	}
	walk(RootIno, "/")
	for p := range m {
		if !seen[p] {
			e.t.Fatalf("step %d (%s): %s missing", step, op, p)
		}
	}
}

func TestNamespaceAgainstModel(t *testing.T) {
	seeds := 4
	if s := os.Getenv("VPOOL_PROP_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runNamespaceModel(t, uint64(seed), 300) })
	}
}

func runNamespaceModel(t *testing.T, seed uint64, steps int) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(seed, 99))
	m := model{"/": {dir: true}}
	names := []string{"a", "b", "c.raw", "d", "e.raw"}
	randPath := func() string {
		p := ""
		for depth := rng.IntN(3) + 1; depth > 0; depth-- {
			p += "/" + names[rng.IntN(len(names))]
		}
		return p
	}
	randData := func() []byte {
		n := rng.IntN(3 << 20)
		if rng.IntN(3) > 0 {
			n = rng.IntN(10000)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(4)) // compressible-ish with zeros
		}
		return b
	}
	expect := func(step int, op string, got error, want syscall.Errno) {
		t.Helper()
		if Errno(got) != want {
			t.Fatalf("step %d: %s: got %v (%d), model says errno %d", step, op, got, Errno(got), want)
		}
	}
	for step := 0; step < steps; step++ {
		p := randPath()
		var op string
		switch r := rng.IntN(100); {
		case r < 20:
			op = "create " + p
			want := m.parentErr(p)
			if want == 0 && m[p] != nil {
				want = syscall.EEXIST
			}
			d, name, err := e.resolve(p)
			if err == nil {
				_, _, err = e.ns.Create(bg, d, name, NewNode{Mode: 0o644, Exclusive: true})
			}
			expect(step, op, err, want)
			if want == 0 {
				m[p] = &mnode{vdisk: strings.HasSuffix(p, ".raw")}
			}
		case r < 32:
			op = "mkdir " + p
			want := m.parentErr(p)
			if want == 0 && m[p] != nil {
				want = syscall.EEXIST
			}
			d, name, err := e.resolve(p)
			if err == nil {
				_, _, err = e.ns.Create(bg, d, name, NewNode{Mode: syscall.S_IFDIR | 0o755})
			}
			expect(step, op, err, want)
			if want == 0 {
				m[p] = &mnode{dir: true}
			}
		case r < 50:
			q := randPath()
			op = "link " + p + " " + q
			src := m[p]
			want := m.parentErr(p)
			if want == 0 && src == nil {
				want = syscall.ENOENT
			}
			if want == 0 {
				want = m.parentErr(q)
			}
			if want == 0 && src.dir {
				want = syscall.EPERM
			} else if want == 0 && m[q] != nil {
				want = syscall.EEXIST
			}
			a, err := e.ino(p)
			var d uint64
			var name string
			if err == nil {
				d, name, err = e.resolve(q)
			}
			if err == nil {
				_, err = e.ns.Link(bg, a.Ino, d, name)
			}
			expect(step, op, err, want)
			if want == 0 {
				m[q] = src
			}
		case r < 55:
			n := m[p]
			if n == nil || n.dir {
				continue
			}
			data, off := randData(), int64(rng.IntN(2<<20))
			op = fmt.Sprintf("write %s %d+%d", p, off, len(data))
			a, err := e.ino(p)
			if err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			e.write(a.Ino, data, off)
			if end := int(off) + len(data); end > len(n.data) {
				n.data = append(n.data, make([]byte, end-len(n.data))...)
			}
			copy(n.data[off:], data)
		case r < 63:
			n := m[p]
			if n == nil || n.dir {
				continue
			}
			size := rng.IntN(len(n.data) + 2<<20)
			op = fmt.Sprintf("truncate %s %d", p, size)
			a, _ := e.ino(p)
			if _, err := e.ns.SetAttr(bg, a.Ino, SetAttrIn{SetSize: true, Size: int64(size)}); err != nil {
				t.Fatalf("step %d: %s: %v", step, op, err)
			}
			if size < len(n.data) {
				n.data = n.data[:size]
			} else {
				n.data = append(n.data, make([]byte, size-len(n.data))...)
			}
		case r < 72:
			op = "unlink " + p
			want := m.parentErr(p)
			if want == 0 && m[p] == nil {
				want = syscall.ENOENT
			} else if want == 0 && m[p].dir {
				want = syscall.EISDIR
			}
			d, name, err := e.resolve(p)
			if err == nil {
				err = e.ns.Unlink(bg, d, name)
			}
			expect(step, op, err, want)
			if want == 0 {
				delete(m, p)
			}
		case r < 78:
			op = "rmdir " + p
			want := m.parentErr(p)
			switch {
			case want != 0:
			case m[p] == nil:
				want = syscall.ENOENT
			case !m[p].dir:
				want = syscall.ENOTDIR
			case len(m.children(p)) > 0:
				want = syscall.ENOTEMPTY
			}
			d, name, err := e.resolve(p)
			if err == nil {
				err = e.ns.Rmdir(bg, d, name)
			}
			expect(step, op, err, want)
			if want == 0 {
				delete(m, p)
			}
		case r < 94:
			q := randPath()
			op = "rename " + p + " " + q
			want := m.parentErr(p)
			src, dst := m[p], m[q]
			switch {
			case want != 0:
			case m.parentErr(q) != 0: // both paths resolve before the entries are looked at
				want = m.parentErr(q)
			case src == nil:
				want = syscall.ENOENT
			case p == q, src == dst: // the same name, or two names of one file: nothing to do
			case strings.HasPrefix(q, p+"/"):
				want = syscall.EINVAL
			case dst != nil && src.dir && !dst.dir:
				want = syscall.ENOTDIR
			case dst != nil && !src.dir && dst.dir:
				want = syscall.EISDIR
			case dst != nil && dst.dir && len(m.children(q)) > 0:
				want = syscall.ENOTEMPTY
			}
			d1, n1, err := e.resolve(p)
			var d2 uint64
			var n2 string
			if err == nil {
				d2, n2, err = e.resolve(q)
			}
			same := src != nil && src == dst
			exchange := want == 0 && src != nil && dst != nil && !src.dir && !dst.dir && !same && rng.IntN(2) == 0
			if err == nil {
				flags := uint32(0)
				if exchange {
					flags, op = RenameExchange, "exchange "+p+" "+q
				}
				err = e.ns.Rename(bg, d1, n1, d2, n2, flags)
			}
			expect(step, op, err, want)
			if exchange {
				m[p], m[q] = dst, src
			} else if want == 0 && p != q && !same {
				moved := model{}
				for k, v := range m {
					if k == p || strings.HasPrefix(k, p+"/") {
						moved[q+strings.TrimPrefix(k, p)] = v
						delete(m, k)
					}
				}
				delete(m, q)
				for k, v := range moved {
					m[k] = v
				}
			}
		case r < 97:
			op = "restart"
			e.restart()
		default:
			op = "kill"
			e.kill()
		}
		if step%10 == 0 || strings.HasPrefix(op, "re") || op == "kill" {
			e.check(m, step, op)
		}
	}
	e.check(m, steps, "end")
	if e.ns.mu.open == nil || len(e.ns.mu.open) != 0 {
		t.Fatalf("handles left open: %d", len(e.ns.mu.open))
	}
}
