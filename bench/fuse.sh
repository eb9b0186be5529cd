#!/usr/bin/env bash
# FUSE data path (issue: the vPool daemon): vpool against a plain go-fuse
# passthrough filesystem (bench/passthrough: vpool's own mount options,
# direct I/O and parallel direct writes, kernel passthrough off) over the
# same disk, in one run, repeated; prints every run and the medians.
#   bench/fuse.sh [repeats]          (RUNTIME=seconds per fio run, default 8)
#   PROFILE=randread-4k bench/fuse.sh 1  (also a CPU profile of vpool during that test,
#                                     printed and kept in /tmp/vpool-<test>.{prof,bin})
#   ASDS=shm bench/fuse.sh           (vpool's 3 ASDs in /dev/shm, standing in for capacity
#                                     disks other than the flash device, as in production;
#                                     default: on the same disk as everything else)
# Scratch space: /var/tmp/vpool-bench-<pid>, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-3}
runtime=${RUNTIME:-8}
scratch=/var/tmp/vpool-bench-$$
mkdir -p "$scratch"/{bin,vpool,vpool-mnt,pt,pt-mnt}
go build -o "$scratch/bin/vpool" ./cmd/vpool
go build -o "$scratch/bin/passthrough" ./bench/passthrough

warm_memory

pids=()
cleanup() {
	stop_pids
	unmount_lazy "$scratch/vpool-mnt" "$scratch/pt-mnt"
	rm -rf "$scratch" /dev/shm/vpool-bench-$$
}
trap cleanup EXIT

asds=""
if [[ ${ASDS:-disk} == shm ]]; then
	mkdir -p /dev/shm/vpool-bench-$$
	asds=/dev/shm/vpool-bench-$$/0,/dev/shm/vpool-bench-$$/1,/dev/shm/vpool-bench-$$/2
fi
VPOOL_BACKEND_ASDS=$asds VPOOL_WRITE_BUFFER_SIZE=8GiB "$scratch/bin/vpool" serve --data-dir "$scratch/vpool" --mountpoint "$scratch/vpool-mnt" \
	>"$scratch/vpool.log" 2>&1 &
pids+=($!); vpool_pid=$!
"$scratch/bin/passthrough" "$scratch/pt" "$scratch/pt-mnt" >"$scratch/pt.log" 2>&1 &
pids+=($!); pt_pid=$!
wait_mounted "$scratch/vpool-mnt" "$scratch/pt-mnt"
for t in vpool pt; do truncate -s 4G "$scratch/$t-mnt/bench.raw"; done



results=$scratch/results
: >"$results"
# measure TARGET TEST IOPS-COMMAND...: runs the command, records ops/s
# and the daemon's CPU microseconds per op.
measure() {
	local target=$1 test=$2; shift 2
	local pid=$pt_pid; [[ $target == vpool ]] && pid=$vpool_pid
	local c0 t0 c1 t1 out ops prof=
	if [[ $target == vpool && $test == "${PROFILE:-}" && $r == 1 ]]; then
		curl -s --unix-socket "$scratch/vpool/vpool.sock" "http://vpool/debug/pprof/profile?seconds=$((runtime - 2))" \
			>"$scratch/cpu.prof" &
		prof=$!
	fi
	c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
	out=$("$@" 2>&1) || { echo "$out"; exit 1; }
	c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
	if [[ -n $prof ]]; then
		wait "$prof"
		cp "$scratch/cpu.prof" "/tmp/vpool-$test.prof"; cp "$scratch/bin/vpool" "/tmp/vpool-$test.bin"
		go tool pprof -top -nodecount=30 "$scratch/bin/vpool" "$scratch/cpu.prof" 2>/dev/null | sed 's/^/    /'
	fi
	ops=$(parse_ops "$test" "$out")
	local total; total=$(awk -v o="$ops" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", o*(b-a)}')
	local us; us=$(awk -v c="$((c1 - c0))" -v n="$total" 'BEGIN{printf "%.1f", n ? c*1e4/n : 0}')
	echo "$target $test $ops $us" >>"$results"
	printf '  %-6s %-16s %8.0f ops/s  daemon CPU %5.1f µs/op\n' "$target" "$test" "$ops" "$us"
}

parse_ops() {
	case $1 in
	qemu-*) # "Run completed in 3.123 seconds." with -c count
		awk -v c="$qcount" '/Run completed in/{printf "%.0f", c/$4}' <<<"$2" ;;
	*)      # fio: IOPS=45.0k or IOPS=1234
		sed -n 's/.*IOPS=\([0-9.]*\)\(k\?\).*/\1 \2/p' <<<"$2" | head -1 | awk '{printf "%.0f", $2=="k" ? $1*1000 : $1}' ;;
	esac
}

fio_run() { fio --name=b --filename="$1" --direct=1 --ioengine=libaio --iodepth=16 --size=1G "${@:2}"; }
qcount=200000

for r in $(seq "$n"); do
	echo "run $r"
	for target in pt vpool; do
		f=$scratch/$target-mnt/bench.raw
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		# 2 GiB of new data, durable at the end (fsync): a time-based run
		# would rewrite the same range, which the baseline absorbs in the
		# page cache and vpool, being log-structured, appends.
		measure $target seqwrite-1M fio_run "$f" --rw=write --bs=1M --size=2G --end_fsync=1
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		measure $target randwrite-4k fio_run "$f" --rw=randwrite --bs=4k --runtime="$runtime" --time_based
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		# The issue's figure is a read from the write buffer or the read
		# cache: one sequential pass first brings clusters whose SCO left
		# the write buffer into the read cache (and the baseline's file into
		# the page cache).
		fio_run "$f" --rw=read --bs=1M >/dev/null
		measure $target randread-4k fio_run "$f" --rw=randread --bs=4k --runtime="$runtime" --time_based
		measure $target qemu-img-write qemu-img bench -f raw -t none -i native -d 16 -w -c $qcount -s 4096 "$f"
		quiesce "$scratch/bin/vpool" "$scratch/vpool"
		measure $target qemu-img-read qemu-img bench -f raw -t none -i native -d 16 -c $qcount -s 4096 "$f"
	done
done

echo
printf '%-16s %12s %12s %7s %14s %14s\n' test passthrough vpool ratio "pt µs/op" "vpool µs/op"
for test in seqwrite-1M randwrite-4k randread-4k qemu-img-write qemu-img-read; do
	pt=$(awk -v t=$test '$1=="pt" && $2==t {print $3}' "$results" | median)
	vp=$(awk -v t=$test '$1=="vpool" && $2==t {print $3}' "$results" | median)
	ptc=$(awk -v t=$test '$1=="pt" && $2==t {print $4}' "$results" | median)
	vpc=$(awk -v t=$test '$1=="vpool" && $2==t {print $4}' "$results" | median)
	printf '%-16s %12.0f %12.0f %7.2f %14.1f %14.1f\n' "$test" "$pt" "$vp" "$(awk -v a="$vp" -v b="$pt" 'BEGIN{print a/b}')" "$ptc" "$vpc"
done
