#!/usr/bin/env bash
# Engine benchmarks (issue: vDisk engine), each against its baseline in the
# same run, repeated; prints every run and the median of each figure.
#   bench/engine.sh [iops|upload|memory|repair|all] [repeats]
# Scratch space: /var/tmp/vpool-bench-<pid> (on the disk under test); the
# "ASDs on another device" iops run puts the ASDs in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
what=${1:-all}
n=${2:-5}
bin=$(mktemp -d)/bench-engine
trap 'rm -rf "$(dirname "$bin")"' EXIT # each run removes its own scratch dirs
go build -o "$bin" ./bench/engine


# field NAME KEY FILE: the KEY=value numbers of lines starting with NAME
field() { grep "^$1" "$3" | sed -E "s/.*$2=([0-9.]+).*/\1/"; }

iops() {
	local label=$1; shift
	local out; out=$(mktemp)
	for i in $(seq "$n"); do "$bin" -mode iops -seconds 4 "$@" | tee -a "$out" | sed "s|^|  [$label $i] |"; done
	for op in randwrite-4k randread-4k; do
		printf '%-26s %-13s median vpool=%.0f ops/s  baseline=%.0f ops/s  ratio=%.2f\n' "$label" "$op" \
			"$(field $op vpool "$out" | median)" "$(field $op plain-file "$out" | median)" "$(field $op ratio "$out" | median)"
	done
	rm -f "$out"
}

if [[ $what == iops || $what == all ]]; then
	iops "backend-down" -backend-down
	iops "asds-on-/dev/shm" -asd-dir /dev/shm
	iops "asds-on-same-disk"
fi
if [[ $what == upload || $what == all ]]; then
	out=$(mktemp)
	for i in $(seq "$n"); do "$bin" -mode upload -objects 6 | tee -a "$out" | sed "s/^/  [upload $i] /"; done
	printf 'upload 64MiB SCOs 16+4     median ec=%.0f MiB/s  plain-seq-write=%.0f MiB/s  ratio=%.2f\n' \
		"$(field upload-MiB/s ec "$out" | median)" "$(field upload-MiB/s plain-seq-write "$out" | median)" "$(field upload-MiB/s ratio "$out" | median)"
	rm -f "$out"
fi
if [[ $what == repair || $what == all ]]; then
	out=$(mktemp)
	for i in $(seq "$n"); do "$bin" -mode repair -objects 16 -seconds 4 | tee -a "$out" | sed "s/^/  [repair $i] /"; done
	printf 'repair rebuild, no limit     median repair=%.0f MiB/s  plain-seq-write=%.0f MiB/s  ratio=%.2f\n' \
		"$(field rebuild-MiB/s repair "$out" | median)" "$(field rebuild-MiB/s plain-seq-write "$out" | median)" "$(field rebuild-MiB/s ratio "$out" | median)"
	printf 'repair disk I/O, no limit    median repair=%.0f MiB/s  plain-seq-write=%.0f MiB/s  ratio=%.2f\n' \
		"$(field rebuild-io-MiB/s repair "$out" | median)" "$(field rebuild-io-MiB/s plain-seq-write "$out" | median)" "$(field rebuild-io-MiB/s ratio "$out" | median)"
	printf 'repair onto one disk         median repair=%.0f MiB/s  plain-seq-write=%.0f MiB/s  ratio=%.2f\n' \
		"$(field rebuild-onto-one-disk-MiB/s repair "$out" | median)" "$(field rebuild-onto-one-disk-MiB/s plain-seq-write "$out" | median)" "$(field rebuild-onto-one-disk-MiB/s ratio "$out" | median)"
	printf 'repair paced                 median repair=%.1f MiB/s  limit=%s MiB/s  ratio=%.3f\n' \
		"$(field paced-MiB/s repair "$out" | median)" "$(field paced-MiB/s limit "$out" | median)" "$(field paced-MiB/s ratio "$out" | median)"
	printf 'randwrite-4k during repair   median vpool=%.0f ops/s  idle=%.0f ops/s  ratio=%.2f\n' \
		"$(field randwrite-4k-during-repair vpool "$out" | median)" "$(field randwrite-4k-during-repair idle "$out" | median)" "$(field randwrite-4k-during-repair ratio "$out" | median)"
	rm -f "$out"
fi
if [[ $what == memory || $what == all ]]; then
	"$bin" -mode memory -big-gib "${VPOOL_BENCH_BIG_GIB:-32}"
fi
