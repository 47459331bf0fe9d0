#!/usr/bin/env bash
# Installs the Debian 12 packages warpgate needs to build, test and run its demo.
# Idempotent and quiet when everything is present; needs root (or sudo) only to install.
set -u
PKGS=(
	# build
	make gcc clang llvm pkg-config libbpf-dev bpftool linux-libc-dev
	libmnl-dev libsodium-dev libssl-dev libmosquitto-dev libminiupnpc-dev libnatpmp-dev
	libjansson-dev libcmocka-dev libsqlite3-dev libnetfilter-queue-dev
	# optional speed-up of secp256k1 signatures, loaded at run time
	libsecp256k1-1
	# tools the tests and the NAT lab drive
	iproute2 nftables bc procps psmisc kmod jq
	coturn mosquitto mosquitto-clients miniupnpd miniupnpc natpmpc chrony stun-client
	# vmtest
	qemu-system-x86 busybox-static cpio
	# style
	clang-format cppcheck
)
missing=()
for p in "${PKGS[@]}"; do
	case "$p" in \#*) continue ;; esac
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else
	echo "install-deps: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as miniupnpd, chrony, coturn and mosquitto would start system services on
# install; the tests start their own instances in namespaces, so keep the packaged ones off.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod +x /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
install() { $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/warpgate-apt.log 2>&1; }
if ! install; then
	$SUDO apt-get update -q >/dev/null 2>&1
	install || { tail -n 30 /tmp/warpgate-apt.log >&2; exit 1; }
fi
echo "install-deps: done"
