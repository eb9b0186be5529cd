#!/usr/bin/env bash
# Installs the system packages vpool and its tests need, if missing.
# Debian; run as root. Safe to run again.
set -euo pipefail
# util-linux: runuser, mountpoint; mount: losetup; diffutils: diff (tests); curl: bench profiles
pkgs=(fuse3 fio qemu-utils qemu-block-extra libnfs-utils e2fsprogs util-linux mount diffutils curl iproute2)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	echo 'install-deps: Go is at /usr/local/go/bin; add it to PATH' >&2
fi
