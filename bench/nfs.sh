#!/usr/bin/env bash
# NFS gateway (issue: the NFSv3 gateway): vpool's gateway against
# nfs-ganesha (Debian's nfs-ganesha + nfs-ganesha-vfs: a VFS export of a
# directory on the same disk), in one run, repeated, medians printed.
#   bench/nfs.sh [repeats]         (RUNTIME=seconds per fio run, default 10;
#                                   VPOOL_BENCH_BIN=path: that vpool build)
# Measured, each from inside the server's network namespace:
#   qemu-img bench -d 16 -s 4k, read and write, over nfs://
#   fio 4 KiB random read and write at iodepth 16 through qemu-nbd over
#     nfs:// (fio's nbd engine; Debian's fio has no NFS engine)
#   nfs-cp of 1 GiB into the export and out of it (local side in /dev/shm)
# Each server runs in a network namespace with only loopback (ganesha
# needs rpcbind, which listens on every interface, and `rpcbind -h
# 127.0.0.1` crashes here), so both get ports 111 and 2049 to themselves.
# Scratch space: /var/tmp/vpool-nfsbench-<pid>, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-3}
runtime=${RUNTIME:-10}
need=()
for p in nfs-ganesha nfs-ganesha-vfs rpcbind fio qemu-utils qemu-block-extra libnfs-utils iproute2; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ((${#need[@]})); then
	echo "installing ${need[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scratch=/var/tmp/vpool-nfsbench-$$
mkdir -p "$scratch"/{bin,vpool,vpool-mnt,ganesha}
if [[ -n ${VPOOL_BENCH_BIN:-} ]]; then # a given build, to compare two
	cp "$VPOOL_BENCH_BIN" "$scratch/bin/vpool"
else
	go build -o "$scratch/bin/vpool" ./cmd/vpool
fi

warm_memory

nsv=vpool-nfsbench-v-$$ nsg=vpool-nfsbench-g-$$
pids=()
cleanup() {
	stop_pids
	unmount_lazy "$scratch/vpool-mnt"
	ip netns delete "$nsv" 2>/dev/null || true
	ip netns delete "$nsg" 2>/dev/null || true
	rm -rf "$scratch" /dev/shm/vpool-nfsbench-$$
}
trap cleanup EXIT
for ns in "$nsv" "$nsg"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
inns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }

# Servers start through nsenter itself (it execs them), so that $! is
# the server's pid.
nsenter --net="/run/netns/$nsv" -- "$scratch/bin/vpool" serve --data-dir "$scratch/vpool" --mountpoint "$scratch/vpool-mnt" >"$scratch/vpool.log" 2>&1 &
pids+=($!); vpool_pid=$!

cat >"$scratch/ganesha.conf" <<CONF
NFS_CORE_PARAM { Protocols = 3; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1; Path = $scratch/ganesha; Pseudo = /ganesha; Access_Type = RW; Squash = No_Root_Squash;
	Protocols = 3; Transports = TCP; SecType = sys;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
CONF
nsenter --net="/run/netns/$nsg" -- rpcbind -f -w >"$scratch/rpcbind.log" 2>&1 &
pids+=($!)
sleep 0.5
nsenter --net="/run/netns/$nsg" -- ganesha.nfsd -F -f "$scratch/ganesha.conf" -L "$scratch/ganesha.log" -p "$scratch/ganesha.pid" >/dev/null 2>&1 &
pids+=($!); ganesha_pid=$!

declare -A ns=([vpool]=$nsv [ganesha]=$nsg)
declare -A url=([vpool]=nfs://127.0.0.1/vpool [ganesha]=nfs://127.0.0.1$scratch/ganesha)
declare -A pid=([vpool]=$vpool_pid [ganesha]=$ganesha_pid)
for t in vpool ganesha; do
	for i in $(seq 100); do inns "${ns[$t]}" nfs-ls "${url[$t]}" >/dev/null 2>&1 && break; sleep 0.2; done
	inns "${ns[$t]}" nfs-ls "${url[$t]}" >/dev/null || { echo "bench: $t does not serve NFS"; cat "$scratch"/*.log; exit 1; }
	inns "${ns[$t]}" qemu-img create -f raw "${url[$t]}/bench.raw" 4G >/dev/null
done
# The client's side of nfs-cp lives in memory (/dev/shm), so that the
# local disk's writeback does not add its noise to the servers' figures.
shm=/dev/shm/vpool-nfsbench-$$
mkdir -p "$shm"
dd if=/dev/urandom of="$shm/1g.bin" bs=1M count=1024 status=none



results=$scratch/results
: >"$results"
qcount=200000
# measure TARGET TEST KIND COMMAND...: runs the command in the target's
# namespace; records ops/s (KIND qemu, fio) or MiB/s (KIND copy) and the
# server's CPU microseconds per op (per MiB for copies).
measure() {
	local target=$1 test=$2 kind=$3; shift 3
	local c0 t0 c1 t1 out v total
	c0=$(cpu_ticks "${pid[$target]}"); t0=$(date +%s.%N)
	out=$(inns "${ns[$target]}" "$@" 2>&1) || { echo "$out"; exit 1; }
	c1=$(cpu_ticks "${pid[$target]}"); t1=$(date +%s.%N)
	case $kind in
	qemu) v=$(awk -v c="$qcount" '/Run completed in/{printf "%.0f", c/$4}' <<<"$out") ;;
	fio) v=$(sed -n 's/.*IOPS=\([0-9.]*\)\(k\?\).*/\1 \2/p' <<<"$out" | head -1 | awk '{printf "%.0f", $2=="k" ? $1*1000 : $1}') ;;
	copy) v=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 1024/(b-a)}') ;;
	esac
	total=$(awk -v o="$v" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", o*(b-a)}')
	local us; us=$(awk -v c="$((c1 - c0))" -v n="$total" 'BEGIN{printf "%.1f", n ? c*1e4/n : 0}')
	echo "$target $test $v $us" >>"$results"
	printf '  %-8s %-15s %8.0f %-5s  server CPU %7.1f µs/%s\n' "$target" "$test" "$v" \
		"$([[ $kind == copy ]] && echo MiB/s || echo ops/s)" "$us" "$([[ $kind == copy ]] && echo MiB || echo op)"
}

# fio through qemu-nbd: qemu-nbd (in the namespace) opens nfs:// and
# serves it on a unix socket.
nbd_fio() {
	local target=$1 rw=$2 sock=$scratch/nbd-$1.sock
	rm -f "$sock"
	nsenter --net="/run/netns/${ns[$target]}" -- qemu-nbd -f raw --cache=none --socket="$sock" --persistent "${url[$target]}/bench.raw" &
	local nbd=$!
	for i in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
	local c0; c0=$(cpu_ticks "$nbd")
	measure "$target" "fio-$rw-4k" fio fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$rw" --bs=4k \
		--iodepth=16 --runtime="$runtime" --time_based --size=4G
	# the client's CPU per op too: a server can cost its client work
	awk -v c="$(($(cpu_ticks "$nbd") - c0))" -v t="$target" -v rw="$rw" '$1==t && $2=="fio-"rw"-4k" {v=$3} END {printf "  %-8s %-15s          qemu-nbd CPU %7.1f µs/op\n", t, "fio-"rw"-4k", c*1e4/(v*'"$runtime"')}' "$results"
	kill "$nbd"
	wait "$nbd" 2>/dev/null || true
}

for r in $(seq "$n"); do
	echo "run $r"
	for target in ganesha vpool; do
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		measure "$target" qemu-img-write qemu qemu-img bench -f raw -d 16 -w -c $qcount -s 4096 "${url[$target]}/bench.raw"
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		measure "$target" qemu-img-read qemu qemu-img bench -f raw -d 16 -c $qcount -s 4096 "${url[$target]}/bench.raw"
		nbd_fio "$target" randwrite
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		nbd_fio "$target" randread
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		measure "$target" nfs-cp-in copy nfs-cp "$shm/1g.bin" "${url[$target]}/copy-$r.iso"
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		rm -f "$shm/out.bin"
		measure "$target" nfs-cp-out copy nfs-cp "${url[$target]}/copy-$r.iso" "$shm/out.bin"
		cmp -s "$shm/1g.bin" "$shm/out.bin" || { echo "bench: $target: the copy out differs"; exit 1; }
		rm -f "$scratch/$([[ $target == vpool ]] && echo vpool-mnt || echo ganesha)/copy-$r.iso"
	done
done

echo
printf '%-16s %12s %12s %7s %14s %14s\n' test ganesha vpool ratio "ganesha CPU" "vpool CPU"
for test in qemu-img-write qemu-img-read fio-randwrite-4k fio-randread-4k nfs-cp-in nfs-cp-out; do
	g=$(awk -v t=$test '$1=="ganesha" && $2==t {print $3}' "$results" | median)
	v=$(awk -v t=$test '$1=="vpool" && $2==t {print $3}' "$results" | median)
	gc=$(awk -v t=$test '$1=="ganesha" && $2==t {print $4}' "$results" | median)
	vc=$(awk -v t=$test '$1=="vpool" && $2==t {print $4}' "$results" | median)
	printf '%-16s %12.0f %12.0f %7.2f %14.1f %14.1f\n' "$test" "$g" "$v" "$(awk -v a="$v" -v b="$g" 'BEGIN{print a/b}')" "$gc" "$vc"
done
echo "(ops/s for qemu-img and fio, MiB/s for nfs-cp; CPU in µs per op or per MiB)"
