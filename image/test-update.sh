#!/usr/bin/env bash
# A/B updates under QEMU (TCG), on one appliance disk (image/build.sh first):
#   image/test-update.sh [IMAGE.qcow2]
# X is the built image's version; Y (X with its patch number + 1) is built here as a bundle
# (PROXYHA_VERSION=Y BUNDLE_ONLY=1 image/build.sh) unless image/out already has it. From Y the test
# makes, signed with the same key: a broken Y (its proxyha cannot start), a Y whose root slot does
# not mount (squashfs superblock destroyed), and six bundles that must be refused. They reach the VM
# on a second virtual disk (vfat, label UPDATES); commands are typed on the serial console.
#   1. boot X; a marker line goes to /var/log/messages; the trial timeout is set from the measured
#      host speed ([update] health_timeout_s, 30 s on an idle host);
#   2. refused, with slot B's hash and the environment block unchanged: a payload byte flipped,
#      truncated, unsigned, signed by a key not in the keyring, another board, an older version;
#   3. the broken Y installed with --reboot: three trial boots, each rebooted by the trial watchdog,
#      then GRUB boots X, which logs `failed its health check 3 times; back on X (slot A)`; status
#      shows the failure and its reasons; installing it again is refused;
#   4. the same for the Y whose root slot does not mount (the initramfs reboots, and says why);
#   5. Y's install is cut by killing the VM while it writes the slot: the next boot is X, healthy;
#   6. X -> Y without a console: the VM powered off, a disk labelled CONFIG holding Y's bundle
#      attached (as a USB stick would be); at boot it is installed and the box reboots into it;
#      `proxyha version` says Y, `update status` shows Y good and X as the fallback, the config and
#      the old /var/log/messages lines are still there, and the file is renamed .installed.
# Stage budgets scale with the measured host speed (image/stage-lib.sh); each stage's time is
# printed. KEEP=1 keeps the work directory. No network namespace: the VM's NIC is on a QEMU hub.
# Disk writes are throttled to 4 MiB/s so that step 5's kill lands while the slot is written.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image/stage-lib.sh
. "$here/stage-lib.sh"
STAGE_NOMINAL_GRUB=${STAGE_NOMINAL_GRUB:-5}
out=$here/out
qcow=${1:-$(ls -t "$out"/proxyha-*.qcow2 2>/dev/null | head -n1)}
[ -n "$qcow" ] && [ -f "$qcow" ] || { echo "test-update: no image; run image/build.sh first" >&2; exit 2; }
for t in qemu-system-x86_64 qemu-img mcopy mkfs.vfat mksquashfs minisign nc tar; do
	command -v "$t" >/dev/null || { echo "test-update: $t missing; run image/host-deps.sh" >&2; exit 2; }
done
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
# shellcheck source=/dev/null
. "$here/../board/x86_64/generic-x86-64/meta"
base=$(basename "$qcow" .qcow2)
x=${base#proxyha-}
x=${x%-"$BOARD_ID"}
y=$(echo "${x%%[-+]*}" | awk -F. '{ printf "%d.%d.%d", $1, $2, $3 + 1 }')

dir=$(mktemp -d /tmp/proxyha-update.XXXXXX)
cleanup() {
	stage_cleanup
	if [ "${KEEP:-0}" = 1 ]; then echo "test-update: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
t0=$(date +%s)
phase() { echo "== $* ($(($(date +%s) - t0)) s)"; }
fail() { stage_fail vm "$*"; }

# ---- bundles -------------------------------------------------------------------------------------
ybundle=$out/proxyha-$y-$BOARD_ID.update
if [ ! -f "$ybundle" ]; then
	phase "building Y = $y (bundle only)"
	start=$(date +%s)
	PROXYHA_VERSION=$y BUNDLE_ONLY=1 "$here/build.sh" >"$dir/build-y.log" 2>&1 ||
		{ tail -n 30 "$dir/build-y.log" >&2; echo "test-update: building $y failed" >&2; exit 1; }
	echo "  built $(basename "$ybundle") in $(($(date +%s) - start)) s"
fi
phase "bundles derived from Y"
mkdir -p "$dir/y" "$dir/u"
tar -xf "$ybundle" -C "$dir/y"
grep -q "version = \"$y\"" "$dir/y/manifest.toml" || { echo "test-update: $ybundle is not version $y" >&2; exit 1; }
sign() { "$here/make-bundle.sh" "$dir/u/$1.update" "$2" "${3:-$BOARD_ID}" "$4" "$dir/y/vmlinuz" "$dir/y/initrd.img"; }
# broken: Y's root slot with a proxyha that cannot start
unsquashfs -q -n -d "$dir/broken-root" "$dir/y/rootfs.squashfs" >/dev/null
printf '#!/bin/sh\necho "proxyha: broken on purpose by test-update" >&2\nexit 1\n' >"$dir/broken-root/usr/bin/proxyha"
mksquashfs "$dir/broken-root" "$dir/broken.squashfs" -all-root -comp xz -noappend -quiet -no-progress
sign broken "$y-broken" "" "$dir/broken.squashfs"
# unmountable: the squashfs superblock's magic destroyed, signed as it is
cp "$dir/y/rootfs.squashfs" "$dir/corrupt.squashfs"
printf 'XXXX' | dd of="$dir/corrupt.squashfs" bs=1 conv=notrunc status=none
sign corrupt "$y-corrupt" "" "$dir/corrupt.squashfs"
cp "$ybundle" "$dir/u/good.update"
# refused ones
size=$(stat -c %s "$ybundle")
cp "$ybundle" "$dir/u/flipped.update"
rootoff=$(tar -tvf "$ybundle" --block-number | awk '/rootfs.squashfs/ { gsub(/[^0-9]/, "", $2); print $2 }')
at=$(((rootoff + 1) * 512 + 100000))
printf '\x5a' | dd of="$dir/u/flipped.update" bs=1 seek="$at" conv=notrunc status=none
head -c $((size * 6 / 10)) "$ybundle" >"$dir/u/truncated.update"
tar --format=ustar -C "$dir/y" -cf "$dir/u/unsigned.update" manifest.toml rootfs.squashfs vmlinuz initrd.img
minisign -G -W -p "$dir/other.pub" -s "$dir/other.key" >/dev/null
PROXYHA_SIGNING_KEY=$dir/other.key sign otherkey "$y" "" "$dir/y/rootfs.squashfs"
sign otherboard "$y" other-board "$dir/y/rootfs.squashfs"
sign older 0.0.1 "" "$dir/y/rootfs.squashfs"
truncate -s 320M "$dir/updates.img"
mkfs.vfat -n UPDATES "$dir/updates.img" >/dev/null
mcopy -i "$dir/updates.img" "$dir"/u/*.update ::/
ls -l "$dir/u" | awk 'NR > 1 { printf "  %-22s %10d bytes\n", $9, $5 }'

# ---- the VM --------------------------------------------------------------------------------------
disk=$dir/disk.qcow2
cat >"$dir/proxyha.toml" <<'EOF'
[node]
name = "upd"
management_ip = "10.99.0.11"

[ha]
interface = "eth0"
virtual_ip = "10.99.0.100"
priority = 99
port_redirects = [9090]

[network]
address = "10.99.0.11/24"

[update]
health_timeout_s = 300
EOF
qemu-img convert -f qcow2 -O raw "$qcow" "$dir/disk.raw"
mcopy -o -i "$dir/disk.raw@@1M" "$dir/proxyha.toml" ::/
qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$disk"
rm -f "$dir/disk.raw"
cp "$ovmf_vars" "$dir/vars.fd"

vm_boot() { # starts the VM (it reboots itself; no -no-reboot)
	stage_boot vm "$dir/vm.console" nice -n "${NICE:-15}" qemu-system-x86_64 \
		-machine q35,accel=tcg -cpu max -smp 2 -m 1024 \
		-drive if=pflash,format=raw,readonly=on,file="$ovmf_code" \
		-drive if=pflash,format=raw,file="$dir/vars.fd" \
		-drive if=virtio,format=qcow2,file="$disk",throttling.bps-write=4194304 \
		-drive if=virtio,format=raw,file="$dir/updates.img" \
		${EXTRA_DRIVE:+-drive if=virtio,format=raw,file="$EXTRA_DRIVE"} \
		-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0 \
		-display none -monitor unix:"$dir/vm.mon",server=on,wait=off \
		-chardev socket,id=ser0,path="$dir/vm.ser",server=on,wait=off,logfile="$dir/vm.console" \
		-serial chardev:ser0
}
type_line() { printf '%s\r' "$1" | nc -U -q 1 "$dir/vm.ser" >/dev/null 2>&1 || true; }
console_from() { tail -n +"$1" "$dir/vm.console" | tr -d '\r'; }

# Waits for the boot of SLOT to be up (MASTER) from console line FROM and logs in as root.
up_and_login() { # FROM SLOT VERSION
	stage_expect_from vm "$1" "proxyha: booting slot $2" "GRUB boots slot $2"
	stage_expect_from vm "$1" "proxyha $3 starting on eth0" "proxyha $3 running"
	stage_expect_from vm "$1" "Entering MASTER STATE" "MASTER"
	local l
	stage_line vm l
	type_line ""
	sleep 1
	type_line "root"
	stage_expect_from vm "$l" "ProxyHA appliance. proxyha status" "logged in on the serial console"
}

# Runs CMD on the console; OUT: its output lines, RC: its exit status.
n=0
vm_run() { # DESC CMD
	local l
	n=$((n + 1))
	stage_line vm l
	# The markers are split in the typed text, so the echoed command line never matches them.
	type_line "echo @@B\"\"$n; $2; echo @@E\"\"$n rc=\$?"
	stage_expect_from vm "$l" "@@E$n rc=" "$1"
	OUT=$(console_from "$l" | sed -n "/^@@B$n\$/,/^@@E$n rc=/p" | sed '1d;$d')
	RC=$(console_from "$l" | sed -n "s/^@@E$n rc=//p" | tail -n 1)
}
want_out() { # TEXT DESC
	grep -qF -- "$1" <<<"$OUT" || fail "$2: the output lacks \"$1\":
$OUT"
}
want_re() { # REGEX DESC (extended)
	grep -qE -- "$1" <<<"$OUT" || fail "$2: the output does not match /$1/:
$OUT"
}

# ---- 1. X -------------------------------------------------------------------------------------------
phase "1. boot X = $x"
vm_boot
up_and_login 1 A "$x"
vm_run "marker line into /var/log/messages" "logger -t test-update 'before any update'"
timeout=$(awk -v s="$(stage_scale vm)" 'BEGIN { t = int(25 * s + 0.5); if (t < 30) t = 30; print t }')
vm_run "trial timeout $timeout s (scale $(stage_scale vm))" \
	"sed -i 's/^health_timeout_s = .*/health_timeout_s = $timeout/' /etc/proxyha/proxyha.toml && proxyha config get update.health_timeout_s"
[ "$RC" = 0 ] && want_out "$timeout" "health_timeout_s set"
vm_run "the updates disk mounted" "mkdir -p /tmp/u && mount -t vfat -o ro /dev/vdb /tmp/u && ls /tmp/u | wc -l"
[ "$RC" = 0 ] || fail "mounting the updates disk: $OUT"
vm_run "update status on X" "proxyha update status"
want_out "slot A ($x)" "booted slot"
want_out "$x: good (running)" "slot A good"

# ---- 2. refusals ----------------------------------------------------------------------------------
phase "2. refused bundles write nothing"
hashes="sha256sum /dev/vda3 /boot/EFI/BOOT/grubenv"
# Only the hash lines: the console also carries proxyha's log lines (console-log).
hash_lines() { grep -E '^[0-9a-f]{64}  /' <<<"$OUT"; }
vm_run "slot B and grubenv hashed" "$hashes"
before=$(hash_lines)
for c in "flipped|image rootfs.squashfs: sha256 mismatch" "truncated|truncated at byte" \
	"unsigned|unsigned: the second member is rootfs.squashfs" "otherkey|signed by an unknown key" \
	"otherboard|for board other-board, this is $BOARD_ID" "older|version 0.0.1 is not newer than the running $x"; do
	name=${c%%|*}
	vm_run "$name refused" "proxyha update install /tmp/u/$name.update"
	[ "$RC" = 1 ] || fail "$name.update: exit $RC, want 1: $OUT"
	want_out "${c#*|}" "$name refused"
	vm_run "  nothing written" "$hashes"
	[ "$(hash_lines)" = "$before" ] || fail "$name.update changed slot B or grubenv:
before: $before
after:  $OUT"
done

# ---- 3. broken Y: three trials, back on X -----------------------------------------------------------
rollback() { # NAME VERSION TRY_END_PATTERN REASON_IN_STATUS
	local l
	stage_line vm l
	type_line "proxyha update install /tmp/u/$1.update --reboot"
	stage_expect_from vm "$l" "installed in slot B" "$2 installed in slot B"
	stage_expect_from vm "$l" "update: rebooting into slot B" "rebooting into it"
	local i
	for i in 1 2 3; do
		stage_expect_from vm "$l" "proxyha: booting slot B" "trial boot $i of slot B"
		stage_expect_from vm "$l" "$3" "  try $i ends: $3"
		stage_line vm l
	done
	up_and_login "$l" A "$x"
	stage_expect_from vm "$l" "update: $2 failed its health check 3 times; back on $x (slot A)" "X logs the rollback"
	vm_run "update status after the rollback" "proxyha update status"
	want_re "^slot B +$2: bad" "slot B bad"
	want_re "^last failure +$2 in slot B: failed 3 tries; back on $x" "the failure shown"
	want_out "$4" "the reason of each try"
	vm_run "the updates disk mounted again" "mkdir -p /tmp/u && mount -t vfat -o ro /dev/vdb /tmp/u"
	vm_run "$2 not installed again" "proxyha update install /tmp/u/$1.update"
	[ "$RC" = 1 ] || fail "$1.update installed again: $OUT"
	want_out "failed its health check here before" "refused as failed before"
}
phase "3. broken Y ($y-broken): proxyha cannot start"
rollback broken "$y-broken" "not healthy after $timeout s" "try 3 of 3: not healthy after $timeout s: proxyha run is not running"

phase "4. a root slot that does not mount ($y-corrupt)"
rollback corrupt "$y-corrupt" "initramfs: rebooting in 10 s" "root slot B (/dev/vda3, squashfs) does not mount"

# ---- 5. killed while writing the slot ---------------------------------------------------------------
phase "5. the VM killed while it writes slot B"
stage_line vm l
type_line "proxyha update install /tmp/u/good.update"
stage_expect_from vm "$l" "marked not bootable; writing it" "writing slot B"
echo quit | nc -U -q 1 "$dir/vm.mon" >/dev/null 2>&1 || true
stage_poweroff vm "VM killed (QEMU quit) mid-write"
vm_boot
up_and_login 1 A "$x"
vm_run "update status after the kill" "proxyha update status"
want_out "$x: good (running)" "X good after the kill"
want_re "^next boot +slot A$" "X boots next"

# ---- 6. X -> Y from a stick labelled CONFIG, at boot -------------------------------------------------
phase "6. X -> Y = $y from a disk labelled CONFIG"
truncate -s 64M "$dir/config.img"
mkfs.vfat -n CONFIG "$dir/config.img" >/dev/null
mcopy -i "$dir/config.img" "$dir/u/good.update" ::/proxyha-$y.update
stage_line vm l
type_line "poweroff"
stage_poweroff vm "powered off"
EXTRA_DRIVE=$dir/config.img vm_boot
stage_expect vm "update: installing /run/proxyha/usb/proxyha-$y.update found at boot" "the bundle found at boot"
stage_expect vm "installed in slot B" "$y installed"
stage_expect vm "rebooting into it" "rebooting into it"
up_and_login 1 B "$y"
l=1
stage_expect_from vm "$l" "update: $y in slot B is healthy" "the trial is healthy: marked good"
vm_run "proxyha version" "proxyha version"
want_out "proxyha $y" "the new version runs"
vm_run "update status on Y" "proxyha update status"
want_out "slot B ($y)" "booted slot B"
want_out "$y: good (running)" "Y good"
want_re "^slot A +$x: good$" "X is the fallback"
vm_run "config kept" "proxyha config check /etc/proxyha/proxyha.toml && grep -c 'before any update' /var/log/messages"
[ "$RC" = 0 ] || fail "config or old log lines lost: $OUT"
mdir -i "$dir/config.img" -b ::/ | grep -q "proxyha-$y.update.installed" ||
	fail "the bundle on the CONFIG disk was not renamed .installed: $(mdir -i "$dir/config.img" -b ::/)"
echo "  the bundle on the CONFIG disk is now proxyha-$y.update.installed"
echo "test-update: PASS ($(($(date +%s) - t0)) s)"
