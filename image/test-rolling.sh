#!/usr/bin/env bash
# Rolling update of a two-appliance cluster under QEMU (TCG; taps in a bridge inside a network
# namespace this test creates, image/qemu-lib.sh), while a client fetches a page through the VIP's
# load-shared port 9090 every 100 ms:
#   1. vm1 (priority 99) directs, vm2 (89) is backup; both X (the built image);
#   2. vm2 installs Y (image/test-update.sh builds it) with --reboot, comes back, commits its trial;
#   3. vm1 does the same: its planned stop hands the director role to vm2 (no priority-0 wait),
#      it boots Y, commits, and preempts;
# Prints the client-visible gap of each reboot (last successful fetch before it to the first after,
# and the longest run of failures around it) and the total; the VIP ends on vm1.
# Run as root (namespaces, taps). KEEP=1 keeps the work directory.
# shellcheck source=image/qemu-lib.sh
. "$(dirname "$0")/qemu-lib.sh"
# shellcheck source=/dev/null
. "$here/../board/x86_64/generic-x86-64/meta"

base=$(basename "$qcow" .qcow2)
x=${base#proxyha-}
x=${x%-"$BOARD_ID"}
y=$(echo "${x%%[-+]*}" | awk -F. '{ printf "%d.%d.%d", $1, $2, $3 + 1 }')
ybundle=$out/proxyha-$y-$BOARD_ID.update
if [ ! -f "$ybundle" ]; then
	echo "building Y = $y (bundle only)"
	PROXYHA_VERSION=$y BUNDLE_ONLY=1 "$here/build.sh" >"$dir/build-y.log" 2>&1 ||
		{ tail -n 30 "$dir/build-y.log" >&2; fail "building $y failed"; }
fi

net=10.96.0
vip=$net.100
client=$net.50
lab_init "$client/24"
lab_tap "${id}t1"
lab_tap "${id}t2"
serve_page "$client"

for n in 1 2; do
	cluster_toml "$n"
	make_disk "$dir/vm$n.qcow2" "$dir/vm$n.toml"
	truncate -s 64M "$dir/u$n.img"
	mkfs.vfat -n UPDATES "$dir/u$n.img" >/dev/null
	mcopy -i "$dir/u$n.img" "$ybundle" ::/y.update
done

echo "booting vm1 (priority 99) and vm2 (priority 89), version $x"
VM_REBOOT=1 VM_EXTRA_DISK=$dir/u1.img boot_vm vm1 "$dir/vm1.qcow2" "${id}t1,52:54:00:96:00:11"
VM_REBOOT=1 VM_EXTRA_DISK=$dir/u2.img boot_vm vm2 "$dir/vm2.qcow2" "${id}t2,52:54:00:96:00:12"
expect_vm vm1 "Entering MASTER STATE" "vm1 directs (MASTER)"
expect_vm vm2 "Entering BACKUP STATE" "vm2 is backup"
expect_vm vm1 "Scanning partner joined $net.12" "vm2 joined the pool"

url=http://$client:8080/hello.txt
stage_until vm1 "the client fetches through $vip:9090" 20 fetch_ok "$vip:9090" "$url"
start_probe "$vip:9090" "$url"
wait_probe_ok 0 5 60 || fail "the probe through the VIP does not succeed before the updates"

login() { # VM
	local l
	stage_line "$1" l
	type_line "$1" ""
	sleep 1
	type_line "$1" "root"
	expect_vm "$1" "ProxyHA appliance. proxyha status" "$1: logged in on the serial console" "$l"
}

# Longest run without a successful fetch between T1 and T2 (seconds, 2 decimals).
worst_gap() { # T1 T2
	awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b { if ($2 == "ok") { if (last != "" && $1 - last > w) w = $1 - last; last = $1 } }
		END { printf "%.2f", w }' "$dir/probe.log"
}

update_vm() { # VM: installs Y with --reboot, waits until it committed its trial; sets GAP, START
	local vm=$1 l end
	login "$vm"
	type_line "$vm" "mkdir -p /tmp/u && mount -t vfat -o ro /dev/vdb /tmp/u && ls /tmp/u"
	stage_line "$vm" l
	START=$(now)
	type_line "$vm" "proxyha update install /tmp/u/y.update --reboot"
	expect_vm "$vm" "installed in slot B" "$vm: $y installed in slot B" "$l"
	expect_vm "$vm" "proxyha: booting slot B" "$vm: rebooting into slot B" "$l"
	expect_vm "$vm" "proxyha $y starting on eth0" "$vm: proxyha $y running" "$l"
	expect_vm "$vm" "update: $y in slot B is healthy" "$vm: trial healthy, marked good" "$l"
	end=$(now)
	GAP=$(worst_gap "$START" "$end")
}

echo "updating vm2 (backup) first"
update_vm vm2
gap2=$GAP
echo "  client-visible gap while vm2 rebooted: ${gap2} s"
sleep 3

echo "updating vm1 (director): its planned stop hands over to vm2"
stage_line vm2 l2
stage_line vm1 l1
update_vm vm1
expect_vm vm2 "hands over: taking over now" "vm2 took over at vm1's request (handover)" "$l2"
expect_vm vm1 "Entering MASTER STATE" "vm1 ($y) preempts" "$l1"
t=$(now)
wait_probe_ok "$t" 5 60 || fail "fetches through the VIP did not come back after vm1 preempted"
gap1=$(worst_gap "$START" "$(now)")
total=$(awk '$2 == "fail" { n++ } END { printf "%.1f", n * 0.1 }' "$dir/probe.log")
# Where the client's packets for the VIP go: vm1's MAC.
fetch_ok "$vip:9090" "$url" || fail "fetch through the VIP at the end"
mac=$(ip -n "$cl" neigh show "$vip" | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')
[ "$mac" = 52:54:00:96:00:11 ] || fail "the client's neighbour entry for $vip is $mac, not vm1's 52:54:00:96:00:11"
echo "  client-visible gap around vm1's update (handover + reboot + preemption): worst ${gap1} s"
echo "test-rolling: PASS ($(elapsed "$t0")s; worst gaps: vm2 ${gap2} s, vm1 ${gap1} s; failed probes ≈ ${total} s in all)"
