#!/usr/bin/env bash
# One appliance with two NICs bonded active-backup ([network] bond) on a virtual LAN (QEMU TCG,
# taps in a bridge inside a network namespace this test creates; see image/qemu-lib.sh):
#   1. proxyha creates bond0 from eth0 + eth1 and owns the VIP on it; `proxyha status --json`
#      (typed on the serial console) shows the mode, the active slave and both slaves' links;
#   2. the active slave's link is taken down (QEMU monitor set_link): the client's fetches through
#      VIP:9090 keep working, the log shows `bond0: active slave eth1 (eth0 link down)` and status
#      shows the new active slave.
# Run as root: image/test-bond.sh (re-runs itself with sudo when not root). Budgets:
# image/stage-lib.sh; KEEP=1 keeps the work directory.
# shellcheck source=image/qemu-lib.sh
. "$(dirname "$0")/qemu-lib.sh"

net=10.97.0
vip=$net.100
client=$net.50
lab_init "$client/24"
lab_tap "${id}t1"
lab_tap "${id}t2"
serve_page "$client"

cat >"$dir/vm.toml" <<TOML
[node]
name = "bonded"
management_ip = "$net.11"

[ha]
interface = "bond0"
virtual_ip = "$vip"
priority = 99
port_redirects = [9090]

[network]
address = "$net.11/24"
bond = { name = "bond0", slaves = ["eth0", "eth1"], mode = "active-backup" }
TOML
make_disk "$dir/vm.qcow2" "$dir/vm.toml"

echo "booting a VM with two NICs"
boot_vm vm "$dir/vm.qcow2" "${id}t1,52:54:00:97:00:11" "${id}t2,52:54:00:97:00:12"
expect_vm vm "network: creating bond bond0 (mode active-backup)" "proxyha created bond0"
expect_vm vm "network: enslaving eth1 to bond0" "eth0 and eth1 enslaved"
expect_vm vm "Entering MASTER STATE" "VIP owned on bond0 (MASTER)"

url=http://$client:8080/hello.txt
stage_until vm "the client fetches $url through $vip:9090" 20 fetch_ok "$vip:9090" "$url"

# Log in on the serial console (root, no password on the appliance console) and ask for status.
# The markers are typed split ("end-""s1") so that the echo of the typed line does not match.
status_json() { # MARK VAR: sets VAR to the JSON status lines between MARK and end-MARK
	local from
	stage_line vm from
	type_line vm "echo $1; proxyha status --json; echo \"end-\"\"$1\""
	expect_vm vm "end-$1" "proxyha status --json printed ($1)" "$from"
	printf -v "$2" '%s' "$(tail -n +"$from" "$dir/vm.console" | tr -d '\r' | sed -n "/^$1\$/,/^end-$1\$/p")"
}
stage_line vm from
type_line vm ""
expect_vm vm "login:" "a login prompt on the serial console" "$from"
stage_line vm from
type_line vm "root"
expect_vm vm "ProxyHA appliance." "logged in as root (the shell's banner)" "$from"
s1="" s2=""
status_json s1 s1
echo "$s1" | grep -q '"mode": "active-backup"' || fail "status lacks the bond mode: $s1"
echo "$s1" | grep -q '"active_slave": "eth0"' || fail "status lacks active slave eth0: $s1"
[ "$(echo "$s1" | grep -c '"link": "up"')" = 2 ] || fail "status does not show both slaves up: $s1"
echo "  status: bond0 active-backup, active slave eth0, eth0 and eth1 up"

start_probe "$vip:9090" "$url"
expect_probe_ok vm 0 5 10 "the probe through the VIP succeeds (5 fetches)"
stage_line vm from
off=$(now)
monitor vm "set_link n0 off"
echo "  eth0's link set down (QEMU monitor set_link n0 off)"
expect_vm vm "bond0: active slave eth1 (eth0 link down)" "slave change logged" "$from"
expect_probe_ok vm "$off" 5 10 "fetches through $vip:9090 continue after eth0 went down (5 fetches)"
gap=$(probe_gap "$off") || fail "no probe result around the link change"
status_json s2 s2
echo "$s2" | grep -q '"active_slave": "eth1"' || fail "status does not show active slave eth1: $s2"
echo "$s2" | grep -q '"link": "down"' || fail "status does not show eth0 down: $s2"
echo "  VIP reachable through eth1 (gap ${gap} s); status shows active slave eth1, eth0 down"
monitor vm quit
echo "test-bond: PASS ($(elapsed "$t0")s)"
