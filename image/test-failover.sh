#!/usr/bin/env bash
# Two appliances on one virtual LAN (QEMU TCG, tap devices in a bridge inside a network namespace
# this test creates; see image/qemu-lib.sh), priorities 99 and 89, each configured only by its
# first-boot proxyha.toml ([network] included, remote syslog to the client):
#   1. vm1 owns the VIP, vm2 is backup; the client fetches a page through VIP:9090 (the built-in
#      proxy; the Via header names the node that served);
#   2. vm1 is powered off (QEMU quit: the plug pulled, no priority-0 advert);
#   3. vm2 owns the VIP and the client's fetches work again; the gap is printed.
# Also: the client received remote syslog lines ([log] remote). Run as root: image/test-failover.sh
# (re-runs itself with sudo when not root). Budgets: image/stage-lib.sh; KEEP=1 keeps the work
# directory.
# shellcheck source=image/qemu-lib.sh
. "$(dirname "$0")/qemu-lib.sh"

net=10.98.0
vip=$net.100
client=$net.50
lab_init "$client/24"
lab_tap "${id}t1"
lab_tap "${id}t2"
serve_page "$client"
client_bg nc -k -u -l "$client" 514 >"$dir/remote-syslog.log"

for n in 1 2; do
	cluster_toml "$n" "$(printf '[log]\nremote = "udp://%s:514"' "$client")"
	make_disk "$dir/vm$n.qcow2" "$dir/vm$n.toml"
done

echo "booting vm1 (priority 99) and vm2 (priority 89)"
boot_vm vm1 "$dir/vm1.qcow2" "${id}t1,52:54:00:98:00:11"
boot_vm vm2 "$dir/vm2.qcow2" "${id}t2,52:54:00:98:00:12"
expect_vm vm1 "network: adding $net.11/24 to eth0" "[network] applied"
expect_vm vm1 "Entering MASTER STATE" "vm1 owns the VIP (MASTER)"
expect_vm vm2 "Entering BACKUP STATE" "vm2 is backup"

url=http://$client:8080/hello.txt
stage_until vm1 "the client fetches $url through $vip:9090" 20 fetch_to "$dir/page" "$vip:9090" "$url"
body=$(cat "$dir/page")
[ "$body" = "hello from the client LAN" ] || fail "unexpected body through the VIP: $body"
via=$(tr -d '\r' <"$dir/page.headers" | sed -n 's/^Via: //Ip')
echo "  client fetched through $vip:9090 (Via: ${via:-?})"

start_probe "$vip:9090" "$url"
expect_probe_ok vm1 0 5 10 "the probe through the VIP succeeds (5 fetches)"
stage_line vm2 from
off=$(now)
monitor vm1 quit
echo "  vm1 powered off"
expect_vm vm2 "Entering MASTER STATE" "vm2 owns the VIP (MASTER)" "$from"
expect_probe_ok vm2 "$off" 5 20 "the client's fetches through $vip:9090 are back (5 fetches)"
gap=$(probe_gap "$off") || fail "no probe result around the power-off"
stage_until vm2 "a fetch of the page through the VIP after the failover" 20 fetch_to "$dir/page2" "$vip:9090" "$url"
[ "$(cat "$dir/page2")" = "hello from the client LAN" ] || fail "unexpected body after the failover: $(cat "$dir/page2")"
via=$(tr -d '\r' <"$dir/page2.headers" | sed -n 's/^Via: //Ip')
echo "  client fetches through the VIP again (Via: ${via:-?}); gap ${gap} s (last success before the power-off to first after)"

grep -q "proxyha" "$dir/remote-syslog.log" ||
	fail "the client received no remote syslog line ([log] remote = \"udp://$client:514\")"
echo "  remote syslog: $(grep -c proxyha "$dir/remote-syslog.log") proxyha lines received by the client"
echo "test-failover: PASS ($(elapsed "$t0")s, gap ${gap}s)"
