#!/usr/bin/env bash
# QEMU smoke test of the built image (image/build.sh first):
#   sudo image/test-boot.sh [IMAGE.qcow2]
# Puts a first-boot proxyha.toml (and the interim network.conf) on a copy's ESP with mtools, boots
# it under OVMF (TCG: no KVM here) with the serial console in a file, and passes when the console
# shows the config installed, proxyha started by init and the VIP owned (a lone node becomes
# master). The VM's only NIC sits on a QEMU hub with no other port: nothing leaves the VM.
# Bounded by BOOT_TIMEOUT seconds (default 120). Prints the time from QEMU start to each milestone.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
qcow=${1:-$(ls -t "$out"/proxyha-*.qcow2 2>/dev/null | head -n1)}
[ -n "$qcow" ] && [ -f "$qcow" ] || { echo "test-boot: no image; run image/build.sh first" >&2; exit 2; }
timeout_s=${BOOT_TIMEOUT:-120}
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
for t in qemu-system-x86_64 qemu-img mcopy; do
	command -v "$t" >/dev/null || { echo "test-boot: $t missing; run image/host-deps.sh" >&2; exit 2; }
done
[ -f "$ovmf_code" ] || { echo "test-boot: $ovmf_code missing; apt-get install ovmf" >&2; exit 2; }

dir=$(mktemp -d /tmp/proxyha-boot.XXXXXX)
qpid=""
cleanup() {
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid"; wait "$qpid" 2>/dev/null || true; fi
	if [ "${KEEP:-0}" = 1 ]; then echo "test-boot: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# First-boot files on the ESP (partition 1, at 1 MiB): edit a raw copy, boot it as qcow2 again.
qemu-img convert -f qcow2 -O raw "$qcow" "$dir/disk.raw"
cat >"$dir/proxyha.toml" <<'EOF'
[node]
name = "smoke"
management_ip = "10.99.0.11"

[ha]
interface = "eth0"
virtual_ip = "10.99.0.100"
priority = 99
port_redirects = [9090]
EOF
printf 'interface=eth0\naddress=10.99.0.11/24\n' >"$dir/network.conf"
mcopy -o -i "$dir/disk.raw@@1M" "$dir/proxyha.toml" "$dir/network.conf" ::/
qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$dir/disk.qcow2"
rm -f "$dir/disk.raw"
cp "$ovmf_vars" "$dir/vars.fd"

console=$dir/console.log
: >"$console"
start=$(date +%s.%N)
nice -n "${NICE:-15}" qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1024 \
	-drive if=pflash,format=raw,readonly=on,file="$ovmf_code" \
	-drive if=pflash,format=raw,file="$dir/vars.fd" \
	-drive if=virtio,format=qcow2,file="$dir/disk.qcow2" \
	-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0 \
	-display none -monitor unix:"$dir/monitor.sock",server=on,wait=off -serial file:"$console" -no-reboot &
qpid=$!

elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }
milestones=(
	"proxyha: booting slot A|GRUB chose a slot"
	"proxyha: root slot A|root slot mounted, init running"
	"installed proxyha.toml from the boot partition|first-boot config installed"
	"proxyha: starting proxyha run|init started proxyha"
	"proxyha 0.1.0 starting on eth0|proxyha running"
	"Entering MASTER STATE|VIP owned (MASTER)"
)
# Waits for each milestone in order on the console; returns 1 with the console tail on a miss.
next=0
deadline=$(($(date +%s) + timeout_s))
wait_console() {
while [ $next -lt ${#milestones[@]} ]; do
	pattern=${milestones[$next]%%|*}
	if grep -qF "$pattern" "$console"; then
		printf '  %6ss  %s\n' "$(elapsed)" "${milestones[$next]#*|}"
		next=$((next + 1))
		continue
	fi
	if ! kill -0 "$qpid" 2>/dev/null; then echo "test-boot: QEMU exited" >&2; break; fi
	[ "$(date +%s)" -lt $deadline ] || { echo "test-boot: timeout after ${timeout_s}s" >&2; break; }
	sleep 0.5
done
if [ $next -lt ${#milestones[@]} ]; then
	echo "test-boot: FAIL: console never showed: ${milestones[$next]#*|} (\"${milestones[$next]%%|*}\")" >&2
	echo "---- console (last 40 lines) ----" >&2
	tail -n 40 "$console" | tr -d '\r' >&2
	exit 1
fi
}
wait_console

# Graceful shutdown as a hypervisor does it (ACPI power button): proxyha must stop first.
echo "system_powerdown" | nc -U -q 1 "$dir/monitor.sock" >/dev/null 2>&1 || true
milestones+=(
	"proxyha: stopping|power button: rcK stopping proxyha"
	"proxyha: stopped|proxyha exited on SIGTERM"
	"reboot: Power down|powered off"
)
wait_console
for i in $(seq 1 20); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$qpid" 2>/dev/null && { echo "test-boot: FAIL: QEMU still running after power-down" >&2; exit 1; }
qpid=""

# The log on the data partition (GPT partition 4), read without mounting.
qemu-img convert -f qcow2 -O raw "$dir/disk.qcow2" "$dir/disk.raw"
start_sector=$(partx -g -o START -n 4 "$dir/disk.raw" | tr -d ' ')
debugfs -R "cat /log/messages" "$dir/disk.raw?offset=$((start_sector * 512))" >"$dir/messages" 2>/dev/null
for want in "Entering MASTER STATE" "sent 0 priority" "installed proxyha.toml from the boot partition" "kern."; do
	if grep -qF "$want" "$dir/messages"; then
		echo "  /var/log/messages has: $want"
	else
		echo "test-boot: FAIL: /var/log/messages lacks \"$want\"" >&2
		tail -n 30 "$dir/messages" >&2
		exit 1
	fi
done
echo "test-boot: PASS ($(elapsed)s)"
