// Package test holds vpool's end-to-end tests: they build the real
// binary, run `vpool serve` on a private data dir and mountpoint, and drive
// it with real clients (qemu-img, qemu-io, fio, mkfs.ext4 and e2fsck on a
// loop device). They need root, /dev/fuse and the packages that
// scripts/install-deps.sh installs. Every test stops what it started, by
// PID, and unmounts and detaches what it mounted, even when it fails.
package test
