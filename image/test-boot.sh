#!/usr/bin/env bash
# QEMU smoke test of the built image (image/build.sh first):
#   image/test-boot.sh [IMAGE.qcow2]     (no root needed: no tap devices, no KVM)
# Boot 1: a valid first-boot proxyha.toml (with [network]) is put on a copy's ESP with
# mtools; the console must show it installed, proxyha started by init and the VIP owned (a lone node
# becomes master); an ACPI power-down must stop proxyha first; /var/log/messages on the data
# partition must hold the state changes, the priority-0 advert and kernel messages.
# Boot 2 (same disk): an invalid proxyha.toml on the ESP; the console must show its line:col error
# and proxyha must run again with the installed config.
# Boot 3: a valid proxyha.toml with [appliance] builtin_proxy = false: installed, the built-in proxy
# stays off and the port monitor reports 9090 unserved (`current state: failure (port 9090: …)`).
# QEMU runs under TCG (no KVM here) with OVMF, serial console in a file; the VM's only NIC sits on a
# QEMU hub with no other port, so nothing leaves the VM. No wait has a fixed deadline: budgets come
# from the measured first stage of each boot (image/stage-lib.sh: the scale factor, a stall budget,
# a hard cap only a hang reaches); each stage's time is printed. KEEP=1 keeps the work directory;
# BIOS=1 adds a legacy-BIOS boot.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image/stage-lib.sh
. "$here/stage-lib.sh"
# QEMU start -> GRUB's "proxyha: booting slot" on an idle host (2 vCPU, TCG, OVMF)
STAGE_NOMINAL_GRUB=${STAGE_NOMINAL_GRUB:-5}
out=$here/out
qcow=${1:-$(ls -t "$out"/proxyha-*.qcow2 2>/dev/null | head -n1)}
[ -n "$qcow" ] && [ -f "$qcow" ] || { echo "test-boot: no image; run image/build.sh first" >&2; exit 2; }
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
for t in qemu-system-x86_64 qemu-img mcopy partx debugfs nc; do
	command -v "$t" >/dev/null || { echo "test-boot: $t missing; run image/host-deps.sh" >&2; exit 2; }
done
[ -f "$ovmf_code" ] || { echo "test-boot: $ovmf_code missing; apt-get install ovmf" >&2; exit 2; }

dir=$(mktemp -d /tmp/proxyha-boot.XXXXXX)
vm=""
cleanup() {
	stage_cleanup
	if [ "${KEEP:-0}" = 1 ]; then echo "test-boot: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
t0=$(date +%s.%N)
elapsed() { awk -v s="$1" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }
fail() { stage_fail "$vm" "$*"; }

# Copies FILES onto the ESP (partition 1, at 1 MiB) of the test disk: qcow2 -> raw, mcopy, -> qcow2.
put_on_esp() {
	qemu-img convert -f qcow2 -O raw "$disk" "$dir/disk.raw"
	mcopy -o -i "$dir/disk.raw@@1M" "$@" ::/
	qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$disk"
	rm -f "$dir/disk.raw"
}

boot() { # NAME [FIRMWARE]: starts the VM in the background, console in $dir/NAME.console
	local fw=(-drive if=pflash,format=raw,readonly=on,file="$ovmf_code"
		-drive if=pflash,format=raw,file="$dir/vars.fd")
	[ "${2:-uefi}" = bios ] && fw=() # QEMU's default firmware is SeaBIOS
	vm=$1
	stage_boot "$vm" "$dir/$vm.console" nice -n "${NICE:-15}" qemu-system-x86_64 \
		-machine q35,accel=tcg -cpu max -smp 2 -m 1024 \
		"${fw[@]}" \
		-drive if=virtio,format=qcow2,file="$disk" \
		-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0 \
		-display none -monitor unix:"$dir/monitor.sock",server=on,wait=off \
		-serial file:"$dir/$vm.console" -no-reboot
}

expect() { # "PATTERN|DESCRIPTION"...: each in order on the console (budgets: image/stage-lib.sh)
	local m
	for m in "$@"; do
		stage_expect "$vm" "${m%%|*}" "${m#*|}"
	done
}

powerdown() { # ACPI power button, as a hypervisor's "shut down guest"; proxyha must stop first
	local from
	stage_forbid "$vm" "proxyha: still running after" "rcK gave up waiting for proxyha to exit"
	stage_line "$vm" from
	echo "system_powerdown" | nc -U -q 1 "$dir/monitor.sock" >/dev/null 2>&1 || true
	stage_expect_from "$vm" "$from" "proxyha: stopping" "power button: rcK stopping proxyha"
	expect "proxyha: stopped|proxyha exited on SIGTERM" \
		"reboot: Power down|powered off"
	stage_poweroff "$vm" "QEMU exited"
	# rcK's own measure (guest clock, 10 ms steps): under TCG on a shared host, printed, not judged.
	grep -ao "proxyha: stopped in [0-9]* ms (SIGTERM to exit)" "$dir/$vm.console" | tail -n 1 |
		sed 's/^proxyha: stopped in \([0-9]*\) ms.*/  shutdown: proxyha SIGTERM to exit \1 ms (rcK, guest clock)/'
}

disk=$dir/disk.qcow2
cp "$qcow" "$disk"
cp "$ovmf_vars" "$dir/vars.fd"

# ---- boot 1: valid first-boot config -----------------------------------------------------------
cat >"$dir/proxyha.toml" <<'EOF'
[node]
name = "smoke"
management_ip = "10.99.0.11"

[ha]
interface = "eth0"
virtual_ip = "10.99.0.100"
priority = 99
port_redirects = [9090]

[network]
address = "10.99.0.11/24"
gateway = "10.99.0.1"
dns = ["10.99.0.2"]
hostname = "smoke-1"
EOF
put_on_esp "$dir/proxyha.toml"
echo "boot 1: first-boot proxyha.toml"
boot first
expect "proxyha: booting slot A|GRUB chose slot A" \
	"proxyha: root slot A|root slot mounted, init running" \
	"installed proxyha.toml from the boot partition|first-boot config installed" \
	"data path tools ok|nft and ip run" \
	"proxyha: starting proxyha run|init started proxyha" \
	"network: adding 10.99.0.11/24 to eth0|[network] address applied by proxyha" \
	"proxyha 0.1.0 starting on eth0|proxyha running" \
	"Entering MASTER STATE|MASTER" \
	"setting VIPs: 10.99.0.100|VIP owned (after the director data path, at most 1 s)"
powerdown

# /var/log/messages on the data partition (GPT partition 4), read without mounting.
qemu-img convert -f qcow2 -O raw "$disk" "$dir/disk.raw"
data_start=$(partx -g -o START -n 4 "$dir/disk.raw" | tr -d ' ')
debugfs -R "cat /log/messages" "$dir/disk.raw?offset=$((data_start * 512))" >"$dir/messages" 2>/dev/null
rm -f "$dir/disk.raw"
for want in "Entering MASTER STATE" "setting VIPs" "sent 0 priority" "removing VIPs" \
	"installed proxyha.toml from the boot partition" "kern.info kernel:" "tinyproxy[" \
	"network: setting the default route via 10.99.0.1 dev eth0" "network: writing /etc/resolv.conf" \
	"network: setting the host name to smoke-1"; do
	grep -qF "$want" "$dir/messages" ||
		{ tail -n 30 "$dir/messages" >&2; fail "/var/log/messages lacks \"$want\""; }
	echo "  /var/log/messages has: $want"
done

# ---- boot 2: invalid first-boot config, the installed one stays ---------------------------------
mkdir -p "$dir/bad"
sed 's/^priority = 99$/priority = 300/' "$dir/proxyha.toml" >"$dir/bad/proxyha.toml"
put_on_esp "$dir/bad/proxyha.toml"
echo "boot 2: invalid proxyha.toml on the ESP"
boot second
expect "proxyha.toml on the boot partition is invalid|invalid first-boot config reported" \
	"proxyha.toml:8:12: ha.priority = 300|its line:col error shown" \
	"proxyha 0.1.0 starting on eth0|proxyha running with the installed config" \
	"Entering MASTER STATE|VIP owned (MASTER)"
powerdown

# ---- boot 3: a bring-your-own-proxy node: the built-in proxy off, the port monitor says so -------
mkdir -p "$dir/byop"
printf '\n[appliance]\nbuiltin_proxy = false\n' | cat "$dir/proxyha.toml" - >"$dir/byop/proxyha.toml"
put_on_esp "$dir/byop/proxyha.toml"
echo "boot 3: [appliance] builtin_proxy = false"
boot third
expect "installed proxyha.toml from the boot partition|the new first-boot config installed" \
	"built-in proxy off ([appliance] builtin_proxy = false)|the built-in proxy not started" \
	"current state: failure (port 9090: nothing is listening)|the port monitor reports 9090 unserved" \
	"Entering MASTER STATE|VIP owned (MASTER)"
powerdown

# ---- boot 4 (BIOS=1): legacy BIOS (SeaBIOS) through the MBR boot code and the bios partition ---
if [ "${BIOS:-0}" = 1 ]; then
	echo "boot 4: legacy BIOS"
	boot legacy bios
	expect "proxyha: booting slot A|GRUB (i386-pc) chose slot A" \
		"proxyha: root slot A|root slot mounted, init running" \
		"Entering MASTER STATE|VIP owned (MASTER)"
	powerdown
fi
echo "test-boot: PASS ($(elapsed "$t0")s)"
