#!/usr/bin/env bash
# S3 backend (issue 20), against a versitygw over a directory of the local
# disk on loopback, in one run, repeated, medians printed:
#  1. upload of 64 MiB SCOs by the S3 backend (framed, CRC-32C trailer)
#     against the same number of plain PUTs of the same size by a bare
#     minio-go client (unsigned payload, no checksum), 2 at once
#     (engine.upload_concurrency), alternating (bench/s3put);
#  2. 4 KiB random reads of those objects: bytes fetched per byte needed,
#     and latency against a bare 4 KiB ranged GET (bench/s3put);
#  3. read misses through a vDisk: 256 MiB written and uploaded, the data
#     dir wiped and restored from the bucket, then 4 KiB random reads with
#     fio; bytes the daemon fetched from S3 (vpool status) per byte read.
#   bench/s3.sh [repeats]
# Scratch space: /var/tmp/vpool-s3bench-<pid>, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-5}
scratch=/var/tmp/vpool-s3bench-$$
mkdir -p "$scratch"/{bin,s3,vpool,mnt}
go build -o "$scratch/bin/vpool" ./cmd/vpool
go build -o "$scratch/bin/s3put" ./bench/s3put
gw=$(command -v versitygw || echo /usr/local/bin/versitygw)
[[ -x $gw ]] || { echo "bench: versitygw not installed: run scripts/install-deps.sh"; exit 1; }

pids=()
cleanup() {
	stop_pids
	unmount_lazy "$scratch/mnt"
	rm -rf "$scratch"
}
trap cleanup EXIT

port=7079
access=bench secret=bench-secret-key
"$gw" --port 127.0.0.1:$port --access $access --secret $secret --quiet posix "$scratch/s3" >"$scratch/s3.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
warm_memory

echo "== 1, 2: S3 backend against a bare client ($n runs each)"
"$scratch/bin/s3put" -endpoint http://127.0.0.1:$port -access $access -secret $secret -repeats "$n" -dir "$scratch"

echo "== 3: read misses through a vDisk"
cat >"$scratch/vpool.yaml" <<YAML
backend:
  type: s3
  s3:
    endpoint: http://127.0.0.1:$port
    bucket: bench-vdisk
    access_key: $access
YAML
serve() {
	VPOOL_NFS_LISTEN=off VPOOL_BACKEND_S3_SECRET_KEY=$secret VPOOL_ENGINE_SEAL_IDLE=1s VPOOL_FS_BACKUP_INTERVAL=1s \
		VPOOL_READ_CACHE_SIZE=64MiB VPOOL_WRITE_BUFFER_SIZE=1GiB \
		"$scratch/bin/vpool" serve --config "$scratch/vpool.yaml" --data-dir "$scratch/vpool" --mountpoint "$scratch/mnt" \
		>>"$scratch/vpool.log" 2>&1 &
	vpool_pid=$!
	pids+=($vpool_pid)
	wait_mounted "$scratch/mnt"
}
get_bytes() { "$scratch/bin/vpool" status --json --data-dir "$scratch/vpool" | sed -n 's/^ *"get_bytes": \([0-9]*\),*/\1/p'; }
serve
truncate -s 256M "$scratch/mnt/v.raw"
fio --name=fill --filename="$scratch/mnt/v.raw" --rw=write --bs=1M --size=256M --direct=1 --ioengine=libaio --iodepth=4 \
	--output-format=terse >/dev/null
quiesce "$scratch/bin/vpool" "$scratch/vpool"
sleep 3 # a namespace backup after the last upload
kill -TERM "$vpool_pid"; tail --pid="$vpool_pid" -f /dev/null
rm -rf "$scratch/vpool"
serve
ios=4000
ratios=()
for r in $(seq "$n"); do
	before=$(get_bytes)
	fio --name=miss --filename="$scratch/mnt/v.raw" --rw=randread --bs=4k --size=256M --number_ios=$ios --direct=1 \
		--ioengine=psync --randrepeat=0 --randseed=$r --output-format=terse >/dev/null
	after=$(get_bytes)
	ratios+=("$(awk -v a="$after" -v b="$before" -v n=$ios 'BEGIN {printf "%.4f", (a-b)/(n*4096)}')")
done
echo "vDisk 4 KiB random read misses: fetched/needed per run: ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | median)x" \
	"(repeats hit the read cache: below 1 is that)"
