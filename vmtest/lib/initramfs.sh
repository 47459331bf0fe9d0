# shellcheck shell=bash
# vmtest initramfs, sourced by vmtest/run.sh.
#
# The initramfs holds only what is needed before the host root is reachable over 9p: a static
# busybox, vmtest/guest/init and the staged kernel modules.  Test binaries, their shared
# libraries, bash, ip and bpftool all come from the host root, so nothing else is packed.

# True when FILE is a statically linked executable (a dynamic busybox cannot run in the
# initramfs, which has no libc).
is_static() {
	[ -x "$1" ] || return 1
	LC_ALL=C ldd "$1" 2>&1 | grep -qE 'not a dynamic executable|statically linked'
}

# build_initramfs OUT KSTAGE KVER: write a gzip'd newc cpio to OUT.
build_initramfs() {
	local out=$1 kstage=$2 kver=$3 root
	root=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-initramfs.XXXXXX") || return 1
	tmp_add "$root"
	mkdir -p "$root"/bin "$root"/sbin "$root"/etc "$root"/dev "$root"/proc "$root"/sys \
		"$root"/host "$root"/out "$root"/rw "$root"/newroot "$root"/lib/modules || return 1
	cp "$BUSYBOX" "$root/bin/busybox" || return 1
	ln -s busybox "$root/bin/sh"
	# the kernel's request_module() runs /sbin/modprobe in this root (PID 1 never chroots)
	ln -s ../bin/busybox "$root/sbin/modprobe"
	cp "$VMTEST_DIR/guest/init" "$root/init" && chmod 0755 "$root/init" || return 1
	if [ -n "$kstage" ] && [ -d "$kstage/lib/modules/$kver" ]; then
		cp -a "$kstage/lib/modules/$kver" "$root/lib/modules/" || return 1
		cp "$kstage/modules.load" "$root/etc/modules.load" || return 1
	fi
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null) |
		gzip -1 >"$out.tmp" && mv "$out.tmp" "$out"
	local rc=$?
	rm -rf "$root"
	return $rc
}
