#!/usr/bin/env bash
# DTL (issue 21): two hosts in network namespaces joined by veth (a
# bridge in host B's namespace), host A serving a vPool with host B's
# `vpool dtl serve` as its DTL, all in one run, repeated; prints every run
# and the medians:
#   - fio 4 KiB random writes at iodepth 16 through FUSE on three vDisks
#     of host A in DTL mode none, async and sync (ratios to none), and in
#     sync mode over TLS (ratio to plain TCP); CPU per write of host A's
#     daemon and of host B's DTL server;
#   - a restore on a third host of a vDisk with 1 GiB held only by the DTL
#     (uploads stopped with chattr +i on the ASDs): seconds from
#     `vpool serve --takeover` to the first read served.
#   bench/dtl.sh [repeats]        (RUNTIME=seconds per fio run, default 8)
#   PROFILE=sync bench/dtl.sh 1   (also a CPU profile of host A's daemon during that
#                                 mode, printed and kept in /tmp/vpool-dtl-<mode>.{prof,bin})
# (nsenter, not ip netns exec, which would hide the FUSE mounts in a mount
# namespace of its own.) Scratch space: /var/tmp/vpool-bench-dtl-<pid>,
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/local/go/bin"
n=${1:-3}
runtime=${RUNTIME:-8}
scratch=/var/tmp/vpool-bench-dtl-$$
ns=vpbd$$
mkdir -p "$scratch"/{bin,a,b,c,asd,certs}
go build -o "$scratch/bin/vpool" ./cmd/vpool
vp=$scratch/bin/vpool

pids=()
cleanup() {
	stop_pids
	chattr -R -i "$scratch/asd" 2>/dev/null || true
	unmount_lazy "$scratch/a/mnt" "$scratch/c/mnt"
	for h in a b c; do ip netns delete "$ns$h" 2>/dev/null || true; done
	rm -rf "$scratch"
}
trap cleanup EXIT

warm_memory

# Network: B holds a bridge (10.78.0.1); A is .2, C is .3.
for h in a b c; do
	ip netns add "$ns$h"
	ip -n "$ns$h" link set lo up
done
ip -n "${ns}b" link add br0 type bridge
ip -n "${ns}b" addr add 10.78.0.1/24 dev br0
ip -n "${ns}b" link set br0 up
i=2
for h in a c; do
	ip -n "$ns$h" link add eth0 type veth peer name "p$h" netns "${ns}b"
	ip -n "$ns$h" addr add "10.78.0.$i/24" dev eth0
	ip -n "$ns$h" link set eth0 up
	ip -n "${ns}b" link set "p$h" master br0
	ip -n "${ns}b" link set "p$h" up
	i=$((i + 1))
done

# One CA; every host's certificate is signed by it.
c=$scratch/certs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=vpool-bench-ca \
	-keyout "$c/ca.key" -out "$c/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=host -keyout "$c/host.key" -out "$c/host.csr" 2>/dev/null
printf 'extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:10.78.0.1,IP:10.78.0.2,IP:10.78.0.3\n' >"$c/ext"
openssl x509 -req -in "$c/host.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -CAcreateserial -days 2 -extfile "$c/ext" \
	-out "$c/host.pem" 2>/dev/null
tls="  tls: {ca: $c/ca.pem, cert: $c/host.pem, key: $c/host.key}"

# Host B: a plain DTL server and a TLS one.
VPOOL_DTL_LISTEN=10.78.0.1:7411 nsenter --net=/run/netns/${ns}b -- "$vp" dtl serve --data-dir "$scratch/b/plain" >"$scratch/b-plain.log" 2>&1 &
pids+=($!); b_plain=$!
printf 'dtl:\n  listen: 10.78.0.1:7412\n%s\n' "$tls" >"$scratch/b-tls.yaml"
nsenter --net=/run/netns/${ns}b -- "$vp" dtl serve --config "$scratch/b-tls.yaml" --data-dir "$scratch/b/tls" >"$scratch/b-tls.log" 2>&1 &
pids+=($!); b_tls=$!

asds="[$scratch/asd/0, $scratch/asd/1, $scratch/asd/2]"
printf 'backend:\n  asds: %s\ndtl:\n  peers: [10.78.0.1:7411]\n' "$asds" >"$scratch/plain.yaml"
printf 'backend:\n  asds: %s\ndtl:\n  peers: [10.78.0.1:7412]\n%s\n' "$asds" "$tls" >"$scratch/tls.yaml"

a_pid=
# serve_a CONFIG: (re)starts host A's daemon with CONFIG.
serve_a() {
	if [[ -n $a_pid ]]; then
		kill -TERM "$a_pid"
		timeout 60 tail --pid="$a_pid" -f /dev/null || kill -9 "$a_pid"
	fi
	VPOOL_WRITE_BUFFER_SIZE=8GiB nsenter --net=/run/netns/${ns}a -- "$vp" serve --config "$1" --data-dir "$scratch/a/data" \
		--mountpoint "$scratch/a/mnt" >>"$scratch/a.log" 2>&1 &
	a_pid=$!
	pids+=($a_pid)
	wait_mounted "$scratch/a/mnt"
}

# wait_dtl_ok: until every vDisk of host A whose DTL is on says ok.
wait_dtl_ok() {
	local i
	for i in $(seq 600); do
		"$vp" status --json --data-dir "$scratch/a/data" | grep -q '"state": "\(degraded\|catching up\|blocked\)"' || return 0
		sleep 0.1
	done
	echo "bench: host A's DTL did not get ok" >&2
	exit 1
}

serve_a "$scratch/plain.yaml"
for m in none async sync; do
	truncate -s 4G "$scratch/a/mnt/$m.raw"
	"$vp" vdisk set --data-dir "$scratch/a/data" "$m.raw" --dtl "$m" >/dev/null
done

results=$scratch/results
: >"$results"
# measure NAME FILE B-PID: fio on FILE; records writes/s and the CPU
# microseconds per write of host A's daemon and of B-PID.
measure() {
	local name=$1 f=$2 bpid=$3 a0 b0 a1 b1 t0 t1 out ops
	quiesce "$vp" "$scratch/a/data"
	wait_dtl_ok
	local prof=
	if [[ $name == "${PROFILE:-}" ]]; then
		curl -s --unix-socket "$scratch/a/data/vpool.sock" "http://vpool/debug/pprof/profile?seconds=$((runtime - 2))" \
			>"$scratch/cpu.prof" &
		prof=$!
	fi
	a0=$(cpu_ticks "$a_pid"); b0=$(cpu_ticks "$bpid"); t0=$(date +%s.%N)
	out=$(fio --name=b --filename="$f" --direct=1 --ioengine=libaio --iodepth=16 --size=4G --rw=randwrite --bs=4k \
		--runtime="$runtime" --time_based 2>&1) || { echo "$out"; exit 1; }
	a1=$(cpu_ticks "$a_pid"); b1=$(cpu_ticks "$bpid"); t1=$(date +%s.%N)
	if [[ -n $prof ]]; then
		wait "$prof"
		cp "$scratch/cpu.prof" "/tmp/vpool-dtl-$name.prof"; cp "$vp" "/tmp/vpool-dtl-$name.bin"
		go tool pprof -top -nodecount=40 "$vp" "$scratch/cpu.prof" 2>/dev/null | sed 's/^/    /'
	fi
	ops=$(sed -n 's/.*IOPS=\([0-9.]*\)\(k\?\).*/\1 \2/p' <<<"$out" | head -1 | awk '{printf "%.0f", $2=="k" ? $1*1000 : $1}')
	local total aus bus
	total=$(awk -v o="$ops" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", o*(b-a)}')
	aus=$(awk -v c="$((a1 - a0))" -v n="$total" 'BEGIN{printf "%.1f", n ? c*1e4/n : 0}')
	bus=$(awk -v c="$((b1 - b0))" -v n="$total" 'BEGIN{printf "%.1f", n ? c*1e4/n : 0}')
	echo "$name $ops $aus $bus" >>"$results"
	printf '  %-10s %8.0f writes/s  host A CPU %5.1f µs/write  DTL server CPU %5.1f µs/write\n' "$name" "$ops" "$aus" "$bus"
}

for r in $(seq "$n"); do
	echo "run $r"
	for m in none async sync; do
		measure "$m" "$scratch/a/mnt/$m.raw" "$b_plain"
	done
	serve_a "$scratch/tls.yaml"
	measure sync-tls "$scratch/a/mnt/sync.raw" "$b_tls"
	serve_a "$scratch/plain.yaml"
done

echo
printf '%-10s %12s %7s %16s %16s\n' mode writes/s ratio "host A µs/write" "DTL µs/write"
med() { awk -v t="$1" -v c="$2" '$1==t {print $c}' "$results" | median; }
for m in none async sync sync-tls; do
	base=none
	[[ $m == sync-tls ]] && base=sync
	printf '%-10s %12.0f %7.2f %16.1f %16.1f   (ratio to %s)\n' "$m" "$(med "$m" 2)" \
		"$(awk -v a="$(med "$m" 2)" -v b="$(med "$base" 2)" 'BEGIN{print a/b}')" "$(med "$m" 3)" "$(med "$m" 4)" "$base"
done

# Restore: 1 GiB held only by the DTL (the ASDs refuse new objects), host
# A killed -9 and its data dir gone, host C takes over.
echo
img=$scratch/a/mnt/restore.raw
truncate -s 2G "$img"
"$vp" vdisk set --data-dir "$scratch/a/data" restore.raw --dtl sync >/dev/null
serve_a "$scratch/plain.yaml" # a clean stop backs the namespace up: the backend names restore.raw
quiesce "$vp" "$scratch/a/data" # what the runs above left is uploaded: the DTL holds only the 1 GiB below
wait_dtl_ok
chattr -R +i "$scratch/asd"
(cd "$scratch" && fio --name=r --filename="$img" --direct=1 --ioengine=libaio --iodepth=16 --rw=write --bs=1M --size=1G \
	--verify=crc32c --do_verify=0 --verify_state_save=0 >/dev/null)
held=$("$vp" status --json --data-dir "$scratch/a/data" | sed -n 's/^  "write_buffer_bytes": \([0-9]*\),/\1/p')
kill -9 "$a_pid"
wait "$a_pid" 2>/dev/null || true
umount -l "$scratch/a/mnt"
rm -rf "$scratch/a/data"
chattr -R -i "$scratch/asd"
t0=$(date +%s.%N)
VPOOL_WRITE_BUFFER_SIZE=8GiB nsenter --net=/run/netns/${ns}c -- "$vp" serve --takeover --config "$scratch/plain.yaml" \
	--data-dir "$scratch/c/data" --mountpoint "$scratch/c/mnt" >"$scratch/c.log" 2>&1 &
pids+=($!)
for i in $(seq 1200); do
	qemu-io -f raw -c "read 1020M 4k" "$scratch/c/mnt/restore.raw" >/dev/null 2>&1 && break
	sleep 0.05
done
t1=$(date +%s.%N)
(cd "$scratch" && fio --name=r --filename="$scratch/c/mnt/restore.raw" --direct=1 --ioengine=libaio --iodepth=16 --rw=write --bs=1M --size=1G \
	--verify=crc32c --verify_only --verify_fatal=1 --verify_state_load=0 >/dev/null) || { echo "bench: restored data does not verify"; tail -30 "$scratch/c.log"; exit 1; }
grep -o 'read back the DTL.*' "$scratch/c.log" | head -1
printf 'restore of %.0f MiB held only by the DTL: %.1f s from serve --takeover to the first read (data verified)\n' \
	"$(awk -v b="$held" 'BEGIN{print b/1048576}')" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
