// Command passthrough is the baseline of bench/fuse.sh: a plain go-fuse
// loopback filesystem over a directory, mounted with vpool's own FUSE
// options (fs.FUSEOptions: async DIO, 1 MiB writes, no xattrs, kernel
// passthrough off) and opening files with direct I/O and parallel direct
// writes, as vpool opens vDisks. The backing files are opened without
// O_DIRECT, as vpool writes its SCOs through the page cache. With
// -cached (bench/smallfiles.sh), only vDisk names (*.raw) are opened with
// direct I/O, as vpool does; other files go through the page cache.
//
//	passthrough [-cached] <backing dir> <mountpoint>
//
// It runs until SIGINT or SIGTERM, then unmounts.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"vpool/fs"
)

type node struct{ gofs.LoopbackNode }

var cached = flag.Bool("cached", false, "open only *.raw files with direct I/O")

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_DIRECT)
	if *cached && !strings.HasSuffix(n.Path(n.Root()), ".raw") {
		return fh, ff, errno
	}
	return fh, ff | fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, errno
}

func main() {
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: passthrough [-cached] <backing dir> <mountpoint>")
		os.Exit(2)
	}
	backing, mnt := flag.Arg(0), flag.Arg(1)
	root := &gofs.LoopbackRoot{Path: backing}
	root.NewNode = func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
		return &node{gofs.LoopbackNode{RootData: r}}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root.Dev = uint64(st.Dev)
	root.RootNode = root.NewNode(root, nil, "", &st)
	opts := fs.FUSEOptions("passthrough", false, slog.New(slog.DiscardHandler))
	server, err := gofs.Mount(mnt, root.RootNode, &gofs.Options{MountOptions: *opts})
	if err != nil {
		fmt.Fprintln(os.Stderr, "passthrough: mount:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	server.Unmount()
}
