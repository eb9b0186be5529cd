#!/usr/bin/env bash
# Installs the system packages vpool and its tests need, if missing.
# Debian; run as root. Safe to run again.
set -euo pipefail
# util-linux: runuser, mountpoint; mount: losetup; diffutils: diff (tests); curl: bench profiles
pkgs=(fuse3 fio qemu-utils qemu-block-extra libnfs-utils e2fsprogs util-linux mount diffutils curl iproute2 nftables openssl)
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
	export PATH="$PATH:/usr/local/go/bin"
fi
# The S3 server of the S3 backend's tests (none is packaged in Debian 12):
# versitygw, built from the module proxy into /usr/local/bin.
versitygw_version=v1.8.0
if [ "$(cat /usr/local/lib/vpool-versitygw.version 2>/dev/null)" != "$versitygw_version" ] || ! [ -x /usr/local/bin/versitygw ]; then
	echo "install-deps: building versitygw $versitygw_version (about 2 minutes)" >&2
	GOBIN=/usr/local/bin go install "github.com/versity/versitygw/cmd/versitygw@$versitygw_version"
	mkdir -p /usr/local/lib
	echo "$versitygw_version" >/usr/local/lib/vpool-versitygw.version
fi
