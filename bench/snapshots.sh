#!/usr/bin/env bash
# Snapshots, clones and scrub (issue: snapshots, clones, scrubbing), in one
# run, printing every measurement and the medians:
#  1. a 64 GiB vDisk with 8 GiB written: `vpool snapshot create` and
#     `vpool clone` wall time (the CLI included), REPEATS times each;
#  2. a 4 GiB region of it overwritten 4 times (3 x 4 GiB garbage, plus
#     the first 4 GiB that phase 1 wrote there): bytes `vpool scrub` frees
#     against the garbage present;
#  3. compaction: a 1 GiB vDisk filled, then overwritten 4 times by
#     64 KiB random writes (fio --norandommap: each pass hits about 63% of
#     the blocks, so SCOs stay partly live); `vpool scrub` of it, and its
#     SCOs' bytes on the backend before and after against the garbage
#     (SCO bytes minus the 1 GiB the vDisk maps);
#  4. 4 KiB random-write IOPS (fio, libaio, direct, iodepth 16) without a
#     scrub and while scrubs run back to back, the ratio of the two.
#   bench/snapshots.sh [repeats]      (RUNTIME=seconds per fio run, default 15)
# Scratch space: /var/tmp/vpool-bench-<pid> (about 40 GiB at the peak),
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-5}
runtime=${RUNTIME:-15}
scratch=/var/tmp/vpool-bench-$$
mkdir -p "$scratch"/{bin,vpool,mnt}
go build -o "$scratch/bin/vpool" ./cmd/vpool
vp() { "$scratch/bin/vpool" "$@" --data-dir "$scratch/vpool"; }

pid=
cleanup() {
	[[ -n $pid ]] && { kill -TERM "$pid" 2>/dev/null || true; timeout 120 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; }
	mountpoint -q "$scratch/mnt" && umount -l "$scratch/mnt"
	rm -rf "$scratch"
}
trap cleanup EXIT

VPOOL_NFS_LISTEN=off VPOOL_WRITE_BUFFER_SIZE=8GiB VPOOL_ENGINE_SEAL_IDLE=2s VPOOL_SCRUB_INTERVAL=0 \
	"$scratch/bin/vpool" serve --data-dir "$scratch/vpool" --mountpoint "$scratch/mnt" >"$scratch/vpool.log" 2>&1 &
pid=$!
for i in $(seq 100); do mountpoint -q "$scratch/mnt" && break; sleep 0.1; done
mountpoint -q "$scratch/mnt" || { echo "bench: vpool did not mount"; cat "$scratch/vpool.log"; exit 1; }

disk=$scratch/mnt/big.raw
truncate -s 64G "$disk"
echo "writing 8 GiB into a 64 GiB vDisk"
fio --name=fill --filename="$disk" --rw=write --bs=1M --size=8G --direct=1 --ioengine=libaio --iodepth=8 >/dev/null
quiesce "$scratch/bin/vpool" "$scratch/vpool"

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
snaps=() clones=()
for i in $(seq "$n"); do
	s=$(ms vp snapshot create big.raw "s$i"); snaps+=("$s")
	c=$(ms vp clone "big.raw@s$i" "clone$i.raw"); clones+=("$c")
	echo "run $i: snapshot create ${s} ms, clone ${c} ms"
done
echo "snapshot create (64 GiB vDisk, 8 GiB written): median $(printf '%s\n' "${snaps[@]}" | median) ms"
echo "clone create (same):                          median $(printf '%s\n' "${clones[@]}" | median) ms"
for i in $(seq "$n"); do rm "$scratch/mnt/clone$i.raw"; vp snapshot delete big.raw "s$i" >/dev/null; done

echo "overwriting a 4 GiB region 4 times"
for r in 1 2 3 4; do
	fio --name=over$r --filename="$disk" --rw=write --bs=1M --size=4G --direct=1 --ioengine=libaio --iodepth=8 >/dev/null
done
quiesce "$scratch/bin/vpool" "$scratch/vpool"
sleep 3 # the open SCO seals when idle
quiesce "$scratch/bin/vpool" "$scratch/vpool"
out=$(vp scrub)
echo "$out"
freed=$(vp status --json | sed -n 's/^    "bytes_freed": \([0-9]*\),*/\1/p')
garbage=$((16 << 30))
echo "scrub freed ${freed:-0} of ${garbage} garbage bytes: $(awk -v f="${freed:-0}" -v g="$garbage" 'BEGIN {printf "%.1f%%", 100 * f / g}')"

echo "compaction: a 1 GiB vDisk overwritten 4 times at random (64 KiB blocks)"
rnd=$scratch/mnt/rand.raw
truncate -s 1G "$rnd"
fio --name=rfill --filename="$rnd" --rw=write --bs=1M --size=1G --direct=1 --ioengine=libaio --iodepth=8 >/dev/null
for r in 1 2 3 4; do
	fio --name=rover$r --filename="$rnd" --rw=randwrite --bs=64k --size=1G --norandommap --randseed=$r \
		--direct=1 --ioengine=libaio --iodepth=16 >/dev/null
done
quiesce "$scratch/bin/vpool" "$scratch/vpool"
sleep 3 # the open SCO seals when idle
quiesce "$scratch/bin/vpool" "$scratch/vpool"
rid=$(vp status --json | awk '/"path": "\/rand.raw"/ {f=1} f && /"id":/ {gsub(/[",]/, "", $2); print $2; exit}')
scobytes() { # rand.raw's SCOs on the backend, as SCO bytes (fragments are 1.5x with 2+1)
	du -cb "$scratch"/vpool/asd/*/objects/*"%2F${rid}%2Fsco%2F"* 2>/dev/null | awk 'END {printf "%.0f", $1 / 1.5}'
}
before=$(scobytes)
# the daemon's own count of the garbage (status), once it has counted
# since the uploads finished
t0=$(date +%s)
for i in $(seq 90); do
	line=$(vp status | grep '^reclaimable' || true)
	age=$(sed -n 's/.*(counted \([0-9]*\)s ago).*/\1/p' <<<"$line")
	[[ -n $age && $age -lt $(($(date +%s) - t0)) ]] && break
	sleep 1
done
echo "status before the scrub: $line"
out=$(vp scrub rand.raw)
echo "$out"
after=$(scobytes)
rgarbage=$((before - (1 << 30)))
echo "compaction: SCO bytes ${before} before, ${after} after; garbage ${rgarbage}; reclaimed $(awk -v b="$before" -v a="$after" -v g="$rgarbage" 'BEGIN {printf "%.1f%%", 100 * (b - a) / g}')"
rm "$rnd"

iops() {
	fio --name=rw --filename="$disk" --rw=randwrite --bs=4k --size=4G --direct=1 --ioengine=libaio --iodepth=16 \
		--time_based --runtime="$runtime" --output-format=terse --terse-version=3 | awk -F';' '{print $49}'
}
idle=() busy=()
for i in $(seq "$n"); do
	# each measurement starts with the uploads (and a compaction's) done
	quiesce "$scratch/bin/vpool" "$scratch/vpool"
	a=$(iops); idle+=("$a")
	quiesce "$scratch/bin/vpool" "$scratch/vpool"
	( while :; do vp scrub >/dev/null 2>&1 || true; done ) & sp=$!
	b=$(iops); busy+=("$b")
	kill "$sp"; wait "$sp" 2>/dev/null || true
	echo "run $i: randwrite 4k ${a} IOPS idle, ${b} IOPS while scrubbing"
done
mi=$(printf '%s\n' "${idle[@]}" | median); mb=$(printf '%s\n' "${busy[@]}" | median)
echo "randwrite 4k IOPS: median ${mi} idle, ${mb} during scrubs; ratio $(awk -v a="$mi" -v b="$mb" 'BEGIN {printf "%.2f", b / a}')"
