#!/usr/bin/env bash
# Small files (issue 19): vpool's FUSE mount against a plain go-fuse
# passthrough (bench/passthrough -cached: vpool's mount options, regular
# files through the page cache) over the same disk, and the disk itself
# (ext4 or whatever /var/tmp is) for scale, in one run, repeated, medians
# printed. The load (bench/smallfiles): 2 writers, each in 4 directories
# of at most 64 files, creating files of 4-64 KiB with write + fsync,
# stating, listing, reading, renaming and deleting them.
#   bench/smallfiles.sh [repeats]      (RUNTIME=seconds per run, default 10)
# Scratch space: /var/tmp/vpool-smallfiles-<pid>, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-3}
runtime=${RUNTIME:-10}
scratch=/var/tmp/vpool-smallfiles-$$
mkdir -p "$scratch"/{bin,vpool,vpool-mnt,pt,pt-mnt,disk}
go build -o "$scratch/bin/vpool" ./cmd/vpool
go build -o "$scratch/bin/passthrough" ./bench/passthrough
go build -o "$scratch/bin/smallfiles" ./bench/smallfiles

warm_memory

pids=()
cleanup() {
	stop_pids
	unmount_lazy "$scratch/vpool-mnt" "$scratch/pt-mnt"
	rm -rf "$scratch"
}
trap cleanup EXIT

VPOOL_NFS_LISTEN=off VPOOL_WRITE_BUFFER_SIZE=4GiB "$scratch/bin/vpool" serve --data-dir "$scratch/vpool" \
	--mountpoint "$scratch/vpool-mnt" >"$scratch/vpool.log" 2>&1 &
pids+=($!); vpool_pid=$!
"$scratch/bin/passthrough" -cached "$scratch/pt" "$scratch/pt-mnt" >"$scratch/pt.log" 2>&1 &
pids+=($!); pt_pid=$!
wait_mounted "$scratch/vpool-mnt" "$scratch/pt-mnt"

declare -A dir=([vpool]=$scratch/vpool-mnt [passthrough]=$scratch/pt-mnt [disk]=$scratch/disk)
declare -A pid=([vpool]=$vpool_pid [passthrough]=$pt_pid [disk]=)
results=$scratch/results
: >"$results"
for r in $(seq "$n"); do
	echo "run $r"
	order=(vpool passthrough disk)
	((r % 2)) || order=(passthrough vpool disk)
	for t in "${order[@]}"; do
		rm -rf "${dir[$t]:?}/run"
		sync
		c0=0; [[ -n ${pid[$t]} ]] && c0=$(cpu_ticks "${pid[$t]}")
		out=$("$scratch/bin/smallfiles" -dir "${dir[$t]}/run" -seconds "$runtime" -seed "$r")
		c1=0; [[ -n ${pid[$t]} ]] && c1=$(cpu_ticks "${pid[$t]}")
		ops=$(sed -n 's/.*ops=\([0-9]*\) .*/\1/p' <<<"$out")
		rate=$(sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' <<<"$out")
		cpu=$(awk -v t=$((c1 - c0)) -v o="$ops" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / o}')
		printf '  %-12s %8s ops/s  daemon CPU %7s µs/op\n' "$t" "$rate" "$cpu"
		echo "$t $rate $cpu" >>"$results"
	done
	[[ $(du -s "$scratch/vpool" | cut -f1) -gt 0 ]] && quiesce "$scratch/bin/vpool" "$scratch/vpool"
done

echo
printf '%-12s %10s %10s %10s %12s\n' target "ops/s" "vs pt" "vs disk" "CPU µs/op"
for t in vpool passthrough disk; do
	m=$(awk -v t=$t '$1 == t {print $2}' "$results" | median)
	c=$(awk -v t=$t '$1 == t {print $3}' "$results" | median)
	pm=$(awk '$1 == "passthrough" {print $2}' "$results" | median)
	dm=$(awk '$1 == "disk" {print $2}' "$results" | median)
	printf '%-12s %10s %10.2f %10.2f %12s\n' "$t" "$m" "$(awk -v a="$m" -v b="$pm" 'BEGIN {print a / b}')" \
		"$(awk -v a="$m" -v b="$dm" 'BEGIN {print a / b}')" "$c"
done
