# Helpers shared by the benchmark scripts (sourced, not run).

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# warm_memory: this machine is a VM, and the first write to a guest page
# the host has not backed yet costs an exit to the hypervisor (we measured
# 660 MB/s into fresh memory against 2.9 GB/s into reused memory), so
# whichever target grows the page cache first would pay for it. Touch
# most free memory once, up front.
warm_memory() {
	local mib f=/dev/shm/vpool-bench-warm-$$
	mib=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
	echo "warming ${mib} MiB of memory (hypervisor first-touch cost)"
	dd if=/dev/zero of="$f" bs=1M count="$mib" status=none || true
	rm -f "$f"
}

# quiesce VPOOL DATA_DIR: waits until the daemon has uploaded everything
# and the kernel has written back dirty pages, so that one run's
# background work does not land on the next (of either target).
quiesce() {
	local b i
	sync
	for i in $(seq 600); do
		b=$("$1" status --json --data-dir "$2" | sed -n 's/^  "write_buffer_bytes": \([0-9]*\),/\1/p')
		[[ ${b:-1} == 0 ]] && return
		sleep 0.5
	done
	echo "bench: vpool uploads did not finish in 5 minutes" >&2
}

# stop_pids: TERM every PID in the array pids, then KILL those still
# running after 60 s.
stop_pids() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do timeout 60 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
}

# unmount_lazy DIR...: detaches those of DIR... that are mount points.
unmount_lazy() {
	local m
	for m in "$@"; do mountpoint -q "$m" && umount -l "$m"; done
	return 0
}

# wait_mounted DIR...: waits up to 10 s for each DIR to be a mount point;
# else prints the logs in $scratch and exits.
wait_mounted() {
	local m i
	for m in "$@"; do
		for i in $(seq 100); do mountpoint -q "$m" && break; sleep 0.1; done
		mountpoint -q "$m" || { echo "bench: $m did not mount"; cat "$scratch"/*.log; exit 1; }
	done
}
