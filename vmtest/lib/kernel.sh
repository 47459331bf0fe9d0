# shellcheck shell=bash
# vmtest kernel acquisition, sourced by vmtest/run.sh.
#
# Debian's kernel is fetched with `apt-get download` and unpacked with dpkg-deb into the cache,
# never installed.  Only vmlinuz, the config and the closure of the modules named in
# vmtest/modules.list are kept, so the cache stays small; the .deb is kept too, so a longer
# module list only costs an unpack.  A bzImage given with --kernel is used as is, with modules
# from a lib/modules/KVER tree when one can be found.
#
# Both paths set KVER, VMLINUZ and KSTAGE (a dir holding lib/modules/KVER/ with the staged modules
# plus modules.load, the [boot] modules in the order the guest's /init loads them; empty when
# there are no modules).
#
# Callers provide log(), die(), skip() and tmp_add() (remove a path at exit).
# shellcheck disable=SC2034  # KVER, VMLINUZ and KSTAGE are the caller's

# Module names of a list file, one per line, '-' folded to '_'; with a second argument only
# those of that section ([boot] or [demand]).
mod_names() {
	sed -e 's/#.*//' -e 's/-/_/g' "$1" | tr -s ' \t' '\n' |
		awk -v want="${2:-}" '/^\[.*\]$/ { sec = $0; next } NF && (want == "" || sec == "[" want "]")'
}

# The kernel version string of a bzImage: the setup header (magic "HdrS" at 0x202) holds at
# 0x20E the offset, minus 0x200, of a NUL-terminated "KVER (builder) #N ..." string.
bzimage_version() {
	local img=$1 off
	[ "$(dd if="$img" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] || return 1
	off=$(od -An -tu2 -j 526 -N 2 "$img" | tr -d ' ')
	[ -n "$off" ] && [ "$off" -gt 0 ] || return 1
	dd if="$img" bs=1 skip=$((off + 512)) count=256 2>/dev/null | tr '\0' '\n' | head -n 1 |
		awk '{ print $1 }'
}

# stage_modules DEPFILE SRCDIR KVER DEST LIST
# Copy each listed module of SRCDIR (a lib/modules/KVER tree described by DEPFILE, a modules.dep
# that already holds transitive dependencies) and its dependencies to DEST/lib/modules/KVER, then
# index the subset with busybox depmod so the guest's busybox modprobe can resolve it.
stage_modules() {
	local dep=$1 src=$2 kver=$3 dest=$4 list=$5 name line rel pat staged=
	local dmod="$dest/lib/modules/$kver"
	rm -rf "${dest:?}/lib" "$dest/modules.load"
	mkdir -p "$dmod" || return 1
	: >"$dest/modules.load"
	for name in $(mod_names "$list"); do
		line=$(awk -F: -v n="$name" '{
			b = $1; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b)
			if (b == n) { print; exit } }' "$dep")
		if [ -z "$line" ]; then
			pat=$(printf '%s' "$name" | sed 's/_/[-_]/g')
			if ! grep -qE "/$pat\.ko" "$src/modules.builtin" 2>/dev/null; then
				log "module $name: not in kernel $kver, skipped"
			fi
			continue
		fi
		for rel in ${line%%:*} ${line#*:}; do
			rel=${rel#"$src"/}
			[ -f "$dmod/$rel" ] && continue
			mkdir -p "$dmod/$(dirname "$rel")" && cp "$src/$rel" "$dmod/$rel" || return 1
		done
		staged+=" $name"
	done
	for name in $(mod_names "$list" boot); do
		case " $staged " in *" $name "*) echo "$name" >>"$dest/modules.load" ;; esac
	done
	for f in modules.builtin modules.order; do
		[ -f "$src/$f" ] && cp "$src/$f" "$dmod/"
	done
	busybox depmod -b "$dest" "$kver"
}

# The binary package linux-image-amd64 currently points at (linux-image-6.1.0-NN-amd64 on
# Debian 12).  Empty when apt has no lists.
debian_kernel_pkg() {
	local meta=$1
	apt-cache depends "$meta" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Download PKG's .deb into DIR with apt-get (verified against the archive's signed index).
# Runs `apt-get update` once and retries when the lists are stale.
apt_download() {
	local pkg=$1 dir=$2 tmp opts=()
	# apt drops to the _apt user for downloads; that user cannot write into our cache dir.
	[ "$(id -u)" = 0 ] && opts=(-o APT::Sandbox::User=root)
	tmp=$(mktemp -d "$dir/dl.XXXXXX") || return 1
	if ! (cd "$tmp" && apt-get -qq "${opts[@]}" download "$pkg" >/dev/null 2>&1); then
		if [ "$(id -u)" = 0 ]; then
			log "apt-get download $pkg failed; running apt-get update once"
			apt-get -qq update >/dev/null 2>&1
			(cd "$tmp" && apt-get -qq "${opts[@]}" download "$pkg" >/dev/null 2>&1)
		fi
	fi
	mv "$tmp"/*.deb "$dir"/ 2>/dev/null
	rm -rf "$tmp"
	ls "$dir/${pkg}"_*.deb >/dev/null 2>&1
}

# debian_kernel CACHE LIST: fetch and stage Debian's default kernel (VMTEST_KERNEL_PKG,
# default linux-image-amd64).  Works offline once the cache holds a staged kernel.
debian_kernel() {
	local cache=$1 list=$2 meta=${VMTEST_KERNEL_PKG:-linux-image-amd64} pkg deb kdir stamp tmp
	mkdir -p "$cache/debs" "$cache/kernels" || die "cannot create $cache"
	case "$meta" in
	linux-image-[0-9]*) pkg=$meta ;;
	*) pkg=$(debian_kernel_pkg "$meta") ;;
	esac
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		apt-get -qq update >/dev/null 2>&1
		pkg=$(debian_kernel_pkg "$meta")
	fi
	if [ -z "$pkg" ]; then
		# offline: fall back to the newest kernel staged by an earlier run
		kdir=$(ls -d "$cache"/kernels/*/ 2>/dev/null | sort -V | tail -n 1)
		[ -n "$kdir" ] && [ -f "$kdir/vmlinuz" ] ||
			skip "cannot resolve $meta with apt-cache and no kernel is cached"
		log "apt cannot resolve $meta; using cached $(basename "$kdir")"
		pkg=linux-image-$(basename "$kdir")
	fi
	KVER=${pkg#linux-image-}
	kdir="$cache/kernels/$KVER"
	deb=$(ls "$cache/debs/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n 1)
	stamp="$(basename "${deb:-none}") $(md5sum <"$list" | cut -c1-32)"
	if [ -f "$kdir/vmlinuz" ] && [ "$(cat "$kdir/stamp" 2>/dev/null)" = "$stamp" ]; then
		VMLINUZ="$kdir/vmlinuz" KSTAGE=$kdir
		return 0
	fi
	if [ -z "$deb" ]; then
		command -v apt-get >/dev/null || skip "apt-get not found"
		log "downloading $pkg with apt-get"
		apt_download "$pkg" "$cache/debs" || skip "apt-get download $pkg failed (no mirror access?)"
		deb=$(ls "$cache/debs/${pkg}"_*.deb | sort -V | tail -n 1)
		stamp="$(basename "$deb") $(md5sum <"$list" | cut -c1-32)"
	fi
	command -v dpkg-deb >/dev/null || skip "dpkg-deb not found"
	log "unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$cache/unpack.XXXXXX") || die "mktemp failed"
	tmp_add "$tmp"
	dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x $deb failed"
	[ -f "$tmp/boot/vmlinuz-$KVER" ] || die "$deb holds no boot/vmlinuz-$KVER"
	# Debian ships no modules.dep (depmod runs at install time); make one in the unpacked tree.
	busybox depmod -b "$tmp" "$KVER" || die "depmod failed"
	rm -rf "$kdir"
	mkdir -p "$kdir"
	cp "$tmp/boot/vmlinuz-$KVER" "$kdir/vmlinuz" &&
		cp "$tmp/boot/config-$KVER" "$kdir/config" &&
		stage_modules "$tmp/lib/modules/$KVER/modules.dep" "$tmp/lib/modules/$KVER" "$KVER" \
			"$kdir" "$list" || die "staging kernel $KVER failed"
	rm -rf "$tmp"
	echo "$stamp" >"$kdir/stamp"
	log "kernel $KVER: $(find "$kdir/lib" -name '*.ko*' | wc -l) modules staged in $kdir"
	VMLINUZ="$kdir/vmlinuz" KSTAGE=$kdir
}

# custom_kernel BZIMAGE MODDIR STAGE LIST: use a given bzImage.  MODDIR may be empty: then
# BZIMAGE's ../lib/modules/KVER (dpkg -x layout) and /lib/modules/KVER are tried, and without
# either the kernel must have virtio-pci and 9p built in.
custom_kernel() {
	local img=$1 moddir=$2 stage=$3 list=$4 d dep base
	[ -f "$img" ] || die "kernel image $img not found"
	KVER=$(bzimage_version "$img") || die "$img is not an x86 bzImage"
	[ -n "$KVER" ] || die "cannot read the kernel version of $img"
	VMLINUZ=$img KSTAGE=
	if [ -z "$moddir" ]; then
		for d in "$(dirname "$img")/../lib/modules/$KVER" "/lib/modules/$KVER"; do
			[ -d "$d/kernel" ] && moddir=$(cd "$d" && pwd) && break
		done
	fi
	if [ -z "$moddir" ]; then
		log "no modules for $KVER found: the kernel needs virtio-pci and 9p built in"
		return 0
	fi
	[ -d "$moddir" ] || die "module dir $moddir not found"
	dep="$moddir/modules.dep"
	if [ ! -f "$dep" ]; then
		# index a tree nobody ran depmod on without writing into it
		base=${moddir%/lib/modules/"$KVER"}
		[ "$base" != "$moddir" ] || die "$moddir has no modules.dep and is not a lib/modules/$KVER dir"
		dep=$(mktemp) && tmp_add "$dep"
		busybox depmod -n -b "$base" "$KVER" 2>/dev/null | grep '\.ko[.a-z]*:' >"$dep"
	fi
	mkdir -p "$stage"
	stage_modules "$dep" "$moddir" "$KVER" "$stage" "$list" || die "staging modules of $KVER failed"
	[ "$dep" = "$moddir/modules.dep" ] || rm -f "$dep"
	KSTAGE=$stage
	log "kernel $KVER: $(find "$stage/lib" -name '*.ko*' | wc -l) modules staged from $moddir"
}
