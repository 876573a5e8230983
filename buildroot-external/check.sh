#!/usr/bin/env bash
# Offline checks of this BR2_EXTERNAL tree against Buildroot 2025.02.x LTS (run by .ci/run):
#   1. proxyha_x86_64_defconfig loads and every line of it is in the resulting .config (Kconfig
#      drops unknown or unsatisfiable symbols silently), and savedefconfig round-trips;
#   2. utils/check-package -b over the whole tree reports nothing;
#   3. show-info lists proxyha with its dependencies, and host-rust-bin at the pinned version
#      with hashes for its downloads; proxyha-rsync copies the source tree without target/;
#   4. every line of board/.../kernel.fragment survives `make olddefconfig` of Debian's
#      linux-source-6.1 with the fragment merged over x86_64_defconfig (merge_config.sh), every
#      busybox.fragment option is one Buildroot's busybox knows, and GRUB's settings match meta;
#   5. the checks fail on a misspelled defconfig symbol, a misspelled kernel option and a
#      check-package finding.
#
#   buildroot-external/check.sh      # BUILDROOT=DIR: an unpacked Buildroot instead of the tarball
#
# Without Buildroot (BUILDROOT unset and no ../shared/buildroot/buildroot-*.tar.xz beside the
# project) it says so and exits 0, or 1 with CI=true. Needs python3-magic, python3-flake8,
# ShellCheck, flex, bison, rsync and linux-source-6.1 (scripts/host-deps.sh installs them).
set -euo pipefail

ext=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$ext/.." && pwd)
board=x86_64/generic-x86-64
defconfig=proxyha_x86_64_defconfig
fail=0
t0=$(date +%s)
step() { printf '== %s (%ss)\n' "$*" $(($(date +%s) - t0)); }
ok() { printf '   ok: %s\n' "$*"; }
bad() { printf '   FAIL: %s\n' "$*"; fail=1; }

tmp=$(mktemp -d /tmp/proxyha-brcheck.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---- Buildroot -------------------------------------------------------------------------------------
if [ -n "${BUILDROOT:-}" ]; then
	br=$(cd "$BUILDROOT" && pwd)
else
	# The snapshot beside the project (../shared/buildroot), also for a clone elsewhere on this
	# machine (/work/shared/buildroot), or BUILDROOT_TARBALL=FILE.
	tarball=${BUILDROOT_TARBALL:-}
	for d in "$top/../shared/buildroot" "$top/../../shared/buildroot" /work/shared/buildroot; do
		[ -n "$tarball" ] && break
		[ -d "$d" ] || continue
		tarball=$(find "$d" -maxdepth 1 -name 'buildroot-2025.02*.tar.xz' | sort | tail -n 1)
	done
	if [ -z "$tarball" ]; then
		echo "buildroot-external/check.sh: no Buildroot: set BUILDROOT=DIR (a tree) or BUILDROOT_TARBALL=FILE, or put buildroot-2025.02.x.tar.xz in $top/../shared/buildroot/"
		[ "${CI:-}" = true ] && exit 1
		exit 0
	fi
	step "unpacking $(basename "$tarball")"
	tar -C "$tmp" -xf "$tarball"
	br=$(find "$tmp" -maxdepth 1 -type d -name 'buildroot-*' | head -n 1)
fi
if [ ! -f "$br/Makefile" ] || [ ! -x "$br/utils/check-package" ]; then
	echo "check.sh: $br is not a Buildroot tree"
	exit 1
fi
brmake() { make -s -C "$br" "$@"; }
echo "Buildroot: $br ($(brmake O="$tmp/o0" BR2_EXTERNAL="$ext" print-version 2>/dev/null || echo '?'))"

# 1. Loads a defconfig of the external tree EXT into O, checks every line is in .config.
check_defconfig() { # ext o -> 0 when every line survived
	local e=$1 o=$2 missing
	brmake O="$o" BR2_EXTERNAL="$e" "$defconfig" >"$o.log" 2>&1 || { cat "$o.log"; return 1; }
	missing=$(grep -v '^$' "$e/configs/$defconfig" | grep -vxFf "$o/.config" || true)
	[ -z "$missing" ] || { printf '   not in .config (unknown or unsatisfiable): %s\n' "$missing"; return 1; }
}

step "1. $defconfig: every line in .config, savedefconfig round-trip"
if check_defconfig "$ext" "$tmp/o1"; then
	ok "$(grep -vc '^$' "$ext/configs/$defconfig") defconfig lines all in .config"
else
	bad "$defconfig lost lines"
fi
brmake O="$tmp/o1" savedefconfig BR2_DEFCONFIG="$tmp/saved_defconfig" >/dev/null
brmake O="$tmp/o2" BR2_EXTERNAL="$ext" defconfig BR2_DEFCONFIG="$tmp/saved_defconfig" >/dev/null 2>&1
if diff <(grep -v '^BR2_DEFCONFIG=' "$tmp/o1/.config") <(grep -v '^BR2_DEFCONFIG=' "$tmp/o2/.config") >"$tmp/rt.diff"; then
	ok "savedefconfig output ($(wc -l <"$tmp/saved_defconfig") lines) loads to the same .config"
else
	bad "savedefconfig does not round-trip: $(head -20 "$tmp/rt.diff")"
fi

# 2. check-package, over every file of the tree (with -b; without it nothing is checked).
step "2. utils/check-package -b"
mapfile -t files < <(cd "$ext" && find . -type f ! -name '*.md' | sed 's|^\./||' | sort)
if out=$(cd "$ext" && /usr/bin/python3 "$br/utils/check-package" -b "${files[@]}" 2>&1); then rc=0; else rc=$?; fi
lines=$(sed -n 's/^\([0-9]*\) lines processed/\1/p' <<<"$out")
warnings=$(sed -n 's/^\([0-9]*\) warnings generated/\1/p' <<<"$out")
if [ "$rc" -eq 0 ] && [ "${warnings:-x}" = 0 ] && [ "${lines:-0}" -gt 0 ]; then
	ok "${#files[@]} files, $lines lines, 0 warnings"
else
	bad "check-package (exit $rc): $out"
fi

# 3. show-info, the Rust pin, proxyha-rsync.
step "3. show-info, host-rust-bin pin, proxyha-rsync"
brmake O="$tmp/o1" show-info >"$tmp/info.json"
if python3 - "$tmp/info.json" <<'EOF'; then ok "show-info: proxyha with its dependencies, host-rust-bin 1.88.0"; else bad "show-info"; fi
import json, sys
info = json.load(open(sys.argv[1]))
p = info.get("proxyha")
assert p, "proxyha not in show-info"
deps = set(p["dependencies"])
assert "host-rustc" in deps, f"proxyha dependencies {sorted(deps)} lack host-rustc"
assert p["virtual"] is False and p["type"] == "target", p
# What the package selects for run time (the data path's ip and nft, the built-in proxy).
runtime = {"iproute2", "nftables", "tinyproxy"}
assert runtime <= set(info), f"selected packages missing: {sorted(runtime - set(info))}"
r = info.get("host-rust-bin")
assert r and r["version"] == "1.88.0", f"host-rust-bin: {r and r['version']}"
print("   proxyha", p["version"], "builds with", " ".join(sorted(deps)) + "; runs with", " ".join(sorted(runtime)))
EOF
vars=$(brmake O="$tmp/o1" printvars VARS='HOST_RUST_BIN_SOURCE HOST_RUST_BIN_EXTRA_DOWNLOADS HOST_RUST_BIN_HASH_FILES' QUOTED_VARS=YES)
eval "$vars"
hashes=""
for f in $HOST_RUST_BIN_HASH_FILES; do [ -f "$f" ] && hashes+=" $f"; done
for f in $HOST_RUST_BIN_SOURCE $HOST_RUST_BIN_EXTRA_DOWNLOADS; do
	# shellcheck disable=SC2086
	if grep -qE "^sha256 +[0-9a-f]{64} +$f\$" $hashes; then ok "hash for $f"; else bad "no sha256 for $f in$hashes"; fi
done
need_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$top/Cargo.toml")
if [ "$(printf '%s\n%s\n' "$need_rust" 1.88.0 | sort -V | tail -n 1)" = 1.88.0 ]; then ok "Cargo.toml rust-version $need_rust <= 1.88.0"; else bad "Cargo.toml wants Rust $need_rust, the pin is 1.88.0"; fi
brmake O="$tmp/o1" proxyha-rsync >"$tmp/rsync.log" 2>&1 || { cat "$tmp/rsync.log"; bad "proxyha-rsync failed"; }
src=$(find "$tmp/o1/build" -maxdepth 1 -type d -name 'proxyha-*' | head -n 1)
if [ -n "$src" ] && [ -f "$src/Cargo.lock" ] && [ -f "$src/src/main.rs" ] && [ -d "$src/buildroot-external" ] &&
	[ ! -e "$src/target" ] && [ ! -e "$src/image/out" ] && [ ! -e "$src/.git" ]; then
	ok "proxyha-rsync: $(basename "$src"), $(du -sh "$src" | cut -f1), no target/, image/out/, .git"
else
	bad "proxyha-rsync copied ${src:-nothing} wrongly: $(find "${src:-/nonexistent}" -maxdepth 1 2>&1 | tr '\n' ' ')"
fi

# 4. Kernel and busybox fragments, GRUB settings.
step "4. kernel fragment vs linux-source-6.1, busybox fragment, GRUB settings"
ksrc_tar=$(find /usr/src -maxdepth 1 -name 'linux-source-6.1.tar.xz' | head -n 1)
[ -n "$ksrc_tar" ] || { echo "check.sh: /usr/src/linux-source-6.1.tar.xz missing (apt-get install linux-source-6.1)"; exit 1; }
kcache=${KSRC_CACHE:-$top/image/out/cache/linux-source-6.1-$(dpkg-query -W -f '${Version}' linux-source-6.1)}
if [ ! -f "$kcache/Makefile" ]; then
	rm -rf "$kcache.tmp"
	mkdir -p "$kcache.tmp"
	tar -C "$kcache.tmp" --strip-components=1 -xf "$ksrc_tar"
	rm -rf "$kcache"
	mv "$kcache.tmp" "$kcache"
fi
check_kernel() { # fragment o -> 0 when every line survived olddefconfig
	local frag=$1 o=$2 missing
	mkdir -p "$o"
	make -s -C "$kcache" O="$o" x86_64_defconfig >/dev/null
	(cd "$o" && "$kcache/scripts/kconfig/merge_config.sh" -m -O "$o" "$o/.config" "$frag" >"$o/merge.log" 2>&1)
	make -s -C "$kcache" O="$o" olddefconfig >/dev/null
	missing=$(grep -E '^(CONFIG_|# CONFIG_)' "$frag" | grep -vxFf "$o/.config" || true)
	[ -z "$missing" ] || { printf '   lost by olddefconfig (misspelled or unsatisfiable): %s\n' "$missing"; return 1; }
}
frag=$top/board/$board/kernel.fragment
if check_kernel "$frag" "$tmp/k1"; then
	ok "$(grep -cE '^CONFIG_' "$frag") kernel options survive olddefconfig (linux-source $(make -s -C "$kcache" kernelversion))"
else
	bad "kernel.fragment"
fi
bbconf=$br/package/busybox/busybox.config
bbfrag=$top/board/common/busybox.fragment
unknown=""
while read -r n; do
	grep -qE "^(# )?${n}[= ]" "$bbconf" || unknown+=" $n"
done < <(grep -oE '^CONFIG_[A-Z0-9_]+' "$bbfrag")
if [ -z "$unknown" ]; then ok "$(grep -cE '^CONFIG_' "$bbfrag") busybox options known to Buildroot's busybox"; else bad "busybox.fragment: unknown$unknown"; fi
# shellcheck source=/dev/null
. "$top/board/$board/meta"
cfg() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$tmp/o1/.config"; }
if [ "$(cfg BR2_TARGET_GRUB2_BUILTIN_MODULES_EFI)" = "$GRUB_MODULES_EFI" ]; then ok "GRUB EFI modules = meta"; else bad "BR2_TARGET_GRUB2_BUILTIN_MODULES_EFI != meta's GRUB_MODULES_EFI"; fi
if [ "$(cfg BR2_TARGET_GRUB2_BUILTIN_MODULES_PC)" = "$GRUB_MODULES_PC" ]; then ok "GRUB PC modules = meta"; else bad "BR2_TARGET_GRUB2_BUILTIN_MODULES_PC != meta's GRUB_MODULES_PC"; fi
if [ "$(cfg BR2_TARGET_GRUB2_BOOT_PARTITION)" = "$GRUB_BOOT_PARTITION" ]; then ok "GRUB boot partition = meta"; else bad "BR2_TARGET_GRUB2_BOOT_PARTITION != meta's GRUB_BOOT_PARTITION"; fi
# shellcheck disable=SC2016 # the literal make variable, as in the defconfig
if [ "$(cfg BR2_TARGET_GRUB2_BUILTIN_CONFIG_PC)" = '$(BR2_EXTERNAL_PROXYHA_PATH)/../board/'"$board/grub-early.cfg" ]; then ok "GRUB PC early config = board's"; else bad "BR2_TARGET_GRUB2_BUILTIN_CONFIG_PC is not board/$board/grub-early.cfg"; fi

if grep -qxF "set prefix=($GRUB_BOOT_PARTITION)/EFI/BOOT" "$top/board/$board/grub-early.cfg"; then ok "grub-early.cfg: prefix on ($GRUB_BOOT_PARTITION)"; else bad "grub-early.cfg does not set prefix=($GRUB_BOOT_PARTITION)/EFI/BOOT"; fi

# 5. The checks catch misspellings.
step "5. misspelled defconfig symbol and kernel option are caught"
mkdir -p "$tmp/e3"
cp -a "$ext/." "$tmp/e3/"
sed -i 's/^BR2_PACKAGE_PROXYHA=y$/BR2_PACKAGE_PROXYHAA=y/' "$tmp/e3/configs/$defconfig"
if check_defconfig "$tmp/e3" "$tmp/o3" >/dev/null; then bad "BR2_PACKAGE_PROXYHAA=y was not caught"; else ok "BR2_PACKAGE_PROXYHAA=y caught"; fi
sed 's/^CONFIG_NFT_NUMGEN=y$/CONFIG_NFT_NUMGENN=y/' "$frag" >"$tmp/bad.fragment"
if check_kernel "$tmp/bad.fragment" "$tmp/k2" >/dev/null; then bad "CONFIG_NFT_NUMGENN=y was not caught"; else ok "CONFIG_NFT_NUMGENN=y caught"; fi

mkdir -p "$tmp/e4"
cp -a "$ext/." "$tmp/e4/"
sed -i 's/^PROXYHA_SITE_METHOD = local$/PROXYHA_SITE_METHOD = local /' "$tmp/e4/package/proxyha/proxyha.mk"
if (cd "$tmp/e4" && /usr/bin/python3 "$br/utils/check-package" -b package/proxyha/proxyha.mk >/dev/null 2>&1); then
	bad "check-package missed a trailing space"
else
	ok "check-package catches a trailing space in proxyha.mk"
fi

step "done"
[ $fail -eq 0 ] && echo "buildroot-external/check.sh: PASS" || echo "buildroot-external/check.sh: FAIL"
exit $fail
