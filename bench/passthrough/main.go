// Command passthrough is the baseline of bench/fuse.sh: a plain go-fuse
// loopback filesystem over a directory, mounted with vpool's own FUSE
// options (fs.FUSEOptions: async DIO, 1 MiB writes, no xattrs, kernel
// passthrough off) and opening files with direct I/O and parallel direct
// writes, as vpool opens vDisks. The backing files are opened without
// O_DIRECT, as vpool writes its SCOs through the page cache.
//
//	passthrough <backing dir> <mountpoint>
//
// It runs until SIGINT or SIGTERM, then unmounts.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"vpool/fs"
)

type node struct{ gofs.LoopbackNode }

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_DIRECT)
	return fh, ff | fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, errno
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: passthrough <backing dir> <mountpoint>")
		os.Exit(2)
	}
	root := &gofs.LoopbackRoot{Path: os.Args[1]}
	root.NewNode = func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
		return &node{gofs.LoopbackNode{RootData: r}}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(os.Args[1], &st); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root.Dev = uint64(st.Dev)
	root.RootNode = root.NewNode(root, nil, "", &st)
	opts := fs.FUSEOptions("passthrough", false, slog.New(slog.DiscardHandler))
	server, err := gofs.Mount(os.Args[2], root.RootNode, &gofs.Options{MountOptions: *opts})
	if err != nil {
		fmt.Fprintln(os.Stderr, "passthrough: mount:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	server.Unmount()
}
