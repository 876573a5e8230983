#!/usr/bin/env bash
# Shared by the multi-VM QEMU tests (test-failover.sh, test-bond.sh); sourced, not run.
# A virtual LAN that never touches the machine's real interfaces: a network namespace holding a
# bridge (snooping off), QEMU tap devices created inside it (QEMU runs in that namespace), and a
# client namespace joined to the bridge by a veth pair. Addresses are 10.x and exist only there.
# Everything (QEMU processes we started, by PID; namespaces, with their taps and veths; the
# client's helper processes) is torn down by lab_cleanup on exit, also on failure.
# Waits have no fixed deadlines: image/stage-lib.sh derives their budgets from each VM's measured
# first stage and prints each stage's time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/root.sh
. "$here/../scripts/root.sh"
need_root "$0" "$@"
# shellcheck source=image/stage-lib.sh
. "$here/stage-lib.sh"
# QEMU start -> GRUB's "proxyha: booting slot" on an idle host (1 vCPU each, two VMs at once)
STAGE_NOMINAL_GRUB=${STAGE_NOMINAL_GRUB:-5}
out=$here/out
qcow=${QCOW:-$(ls -t "$out"/proxyha-*.qcow2 2>/dev/null | head -n1)}
[ -n "$qcow" ] && [ -f "$qcow" ] || { echo "$0: no image; run image/build.sh first" >&2; exit 2; }
busybox=$out/work/busybox/bin/busybox # the image's busybox-static serves the client's web page
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
for t in qemu-system-x86_64 qemu-img mcopy partx debugfs nc curl ip; do
	command -v "$t" >/dev/null || { echo "$0: $t missing; run image/host-deps.sh" >&2; exit 2; }
done
[ -x "$busybox" ] || { echo "$0: $busybox missing; run image/build.sh first" >&2; exit 2; }

id=pbq$(($$ % 100000))
lan=$id-lan
cl=$id-cl
dir=$(mktemp -d /tmp/proxyha-vms.XXXXXX)
pids=()          # the client's helpers
helper_life=3600 # a safety net for the helpers only (lab_cleanup kills them): not a test budget
t0=$(date +%s.%N)
elapsed() { awk -v s="$1" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }
now() { date +%s.%N; }

lab_cleanup() {
	local p
	stage_cleanup
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	ip netns del "$cl" 2>/dev/null || true
	ip netns del "$lan" 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then echo "$0: kept $dir"; else rm -rf "$dir"; fi
}
trap lab_cleanup EXIT

fail() { stage_fail "" "$*"; } # the tails of every running VM's console

# The LAN namespace with bridge br0 and the client namespace at CLIENT_ADDR (A.B.C.D/N).
lab_init() {
	ip netns add "$lan"
	ip netns add "$cl"
	ip -n "$lan" link set lo up
	ip -n "$lan" link add br0 type bridge stp_state 0 mcast_snooping 0
	ip -n "$lan" link set br0 up
	ip -n "$lan" link add c0 type veth peer name eth0 netns "$cl"
	ip -n "$lan" link set c0 master br0 up
	ip -n "$cl" link set lo up
	ip -n "$cl" addr add "$1" dev eth0
	ip -n "$cl" link set eth0 up
}

# A tap device NAME on br0, for QEMU (which runs in the LAN namespace) to open.
lab_tap() {
	ip -n "$lan" tuntap add dev "$1" mode tap
	ip -n "$lan" link set "$1" master br0 up
}

# Runs CMD... in the client namespace in the background, bounded by timeout, remembered by PID.
client_bg() {
	ip netns exec "$cl" timeout "$helper_life" "$@" &
	pids+=($!)
}

# A copy of the image with TOML as its first-boot proxyha.toml on the ESP: DISK.
# The first-boot config of node N (1: priority 99, 2: priority 89) of a two-VM cluster on $net
# (addresses $net.1N, gateway $net.1) with VIP $vip redirecting 9090, plus EXTRA config text:
# $dir/vmN.toml.
cluster_toml() { # N [EXTRA]
	cat >"$dir/vm$1.toml" <<TOML
[node]
name = "vm$1"
management_ip = "$net.1$1"

[ha]
interface = "eth0"
virtual_ip = "$vip"
priority = $(($1 == 1 ? 99 : 89))
port_redirects = [9090]

[network]
address = "$net.1$1/24"
gateway = "$net.1"
${2:-}
TOML
}

make_disk() { # DISK TOML
	local raw=$1.raw
	qemu-img convert -f qcow2 -O raw "$qcow" "$raw"
	cp "$2" "$dir/proxyha.toml"
	mcopy -o -i "$raw@@1M" "$dir/proxyha.toml" ::/
	qemu-img convert -f raw -O qcow2 "$raw" "$1"
	rm -f "$raw"
}

# Boots VM NAME from DISK with one NIC per "TAP,MAC" argument (netdev ids n0, n1, …), serial
# console on a socket (for logging in) logged to $dir/NAME.console, monitor on $dir/NAME.mon.
# VM_REBOOT=1: the VM may reboot itself (no -no-reboot; updates). VM_EXTRA_DISK=FILE: a second
# virtio disk (raw), e.g. a vfat image with update bundles.
boot_vm() { # NAME DISK TAP,MAC...
	local name=$1 disk=$2 nics=() i=0 spec extra=(-no-reboot)
	shift 2
	[ "${VM_REBOOT:-0}" = 1 ] && extra=()
	[ -n "${VM_EXTRA_DISK:-}" ] && extra+=(-drive if=virtio,format=raw,file="$VM_EXTRA_DISK")
	for spec in "$@"; do
		nics+=(-netdev "tap,id=n$i,ifname=${spec%%,*},script=no,downscript=no"
			-device "virtio-net-pci,netdev=n$i,mac=${spec#*,}")
		i=$((i + 1))
	done
	cp "$ovmf_vars" "$dir/$name.vars"
	stage_boot "$name" "$dir/$name.console" ip netns exec "$lan" nice -n "${NICE:-10}" \
		qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 512 \
		-drive if=pflash,format=raw,readonly=on,file="$ovmf_code" \
		-drive if=pflash,format=raw,file="$dir/$name.vars" \
		-drive if=virtio,format=qcow2,file="$disk" \
		"${nics[@]}" \
		-display none -monitor unix:"$dir/$name.mon",server=on,wait=off \
		-chardev socket,id=ser0,path="$dir/$name.ser",server=on,wait=off,logfile="$dir/$name.console" \
		-serial chardev:ser0 "${extra[@]}"
}

monitor() { # NAME COMMAND
	echo "$2" | nc -U -q 1 "$dir/$1.mon" >/dev/null 2>&1 || true
}

# Types LINE on NAME's serial console.
type_line() { # NAME LINE
	printf '%s\r' "$2" | nc -U -q 1 "$dir/$1.ser" >/dev/null 2>&1 || true
}

# Waits until NAME's console shows PATTERN (fixed string); with FROM (from stage_line NAME VAR),
# only lines from there on count. Budgets and the printed stage times: image/stage-lib.sh.
expect_vm() { # NAME PATTERN DESCRIPTION [FROM]
	if [ -n "${4:-}" ]; then
		stage_expect_from "$1" "$4" "$2" "$3"
	else
		stage_expect "$1" "$2" "$3"
	fi
}

# One fetch through PROXY (host:port) of URL from the client; prints the body, status 0 on success.
fetch() { # PROXY URL
	ip netns exec "$cl" curl -s -f --max-time 2 -x "http://$1" "$2"
}

fetch_ok() { fetch "$@" >/dev/null; } # PROXY URL: status only

# One fetch like fetch, the body in FILE and the response headers in FILE.headers.
fetch_to() { # FILE PROXY URL
	ip netns exec "$cl" curl -s -f --max-time 2 -D "$1.headers" -o "$1" -x "http://$2" "$3"
}

# Background probe: every 100 ms one fetch, one line "TIME ok|fail" in $dir/probe.log.
start_probe() { # PROXY URL
	: >"$dir/probe.log"
	(
		end=$(($(date +%s) + helper_life))
		while [ "$(date +%s)" -lt "$end" ]; do
			if ip netns exec "$cl" curl -s -f -o /dev/null --max-time 1 -x "http://$1" "$2"; then
				echo "$(now) ok"
			else
				echo "$(now) fail"
			fi >>"$dir/probe.log"
			sleep 0.1
		done
	) &
	pids+=($!)
}

# Seconds without a successful fetch around EVENT_TIME: first ok after it minus last ok before.
probe_gap() { # EVENT_TIME
	awk -v t="$1" '$2 == "ok" && $1 < t { last = $1 } $2 == "ok" && $1 >= t && !after { after = $1 }
		END { if (last == "" || after == "") exit 1; printf "%.2f", after - last }' "$dir/probe.log"
}

probe_ok_count() { # EVENT_TIME N: status 0 once the probe has N successes after EVENT_TIME
	[ "$(awk -v t="$1" '$2 == "ok" && $1 >= t' "$dir/probe.log" | wc -l)" -ge "$2" ]
}

# Waits until the probe has N successes after EVENT_TIME, within NOMINAL x scale x margin
# (stage_until, VM's scale factor), printing the stage; fails the test otherwise.
expect_probe_ok() { # VM EVENT_TIME N NOMINAL DESCRIPTION
	stage_until "$1" "$5" "$4" probe_ok_count "$2" "$3"
}

# The same without a stage line, status 1 instead of failing: within SECONDS x the largest scale
# factor of the running VMs.
wait_probe_ok() { # EVENT_TIME N SECONDS
	local v s=100 end
	for v in "${STAGE_VMS[@]}"; do
		[ -n "${STAGE_PID[$v]}" ] && [ "$(_stage_scale100 "$v")" -gt "$s" ] && s=$(_stage_scale100 "$v")
	done
	end=$(($(date +%s) + $3 * s / 100))
	until probe_ok_count "$1" "$2"; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		_stage_tick
		sleep 0.5
	done
}

# The client's web page, served by busybox httpd at ADDR:8080 in the client namespace.
serve_page() { # ADDR
	mkdir -p "$dir/www"
	echo "hello from the client LAN" >"$dir/www/hello.txt"
	client_bg "$busybox" httpd -f -p "$1:8080" -h "$dir/www"
}
