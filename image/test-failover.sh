#!/usr/bin/env bash
# Two appliances on one virtual LAN (QEMU TCG, tap devices in a bridge inside a network namespace
# this test creates; see image/qemu-lib.sh), priorities 99 and 89, each configured only by its
# first-boot proxyha.toml ([network] included, remote syslog to the client):
#   1. vm1 owns the VIP, vm2 is backup; the client fetches a page through VIP:9090 (the built-in
#      proxy; the Via header names the node that served);
#   2. vm1 is powered off (QEMU quit: the plug pulled, no priority-0 advert);
#   3. vm2 owns the VIP and the client's fetches work again; the gap is printed.
# Also: the client received remote syslog lines ([log] remote). Run: sudo image/test-failover.sh
# Each wait is bounded (BOOT_TIMEOUT, default 240 s); KEEP=1 keeps the work directory.
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
	prio=$((n == 1 ? 99 : 89))
	cat >"$dir/vm$n.toml" <<TOML
[node]
name = "vm$n"
management_ip = "$net.1$n"

[ha]
interface = "eth0"
virtual_ip = "$vip"
priority = $prio
port_redirects = [9090]

[network]
address = "$net.1$n/24"
gateway = "$net.1"

[log]
remote = "udp://$client:514"
TOML
	make_disk "$dir/vm$n.qcow2" "$dir/vm$n.toml"
done

echo "booting vm1 (priority 99) and vm2 (priority 89)"
boot_vm vm1 "$dir/vm1.qcow2" "${id}t1,52:54:00:98:00:11"
boot_vm vm2 "$dir/vm2.qcow2" "${id}t2,52:54:00:98:00:12"
expect_vm vm1 "network: adding $net.11/24 to eth0" "[network] applied"
expect_vm vm1 "Entering MASTER STATE" "vm1 owns the VIP (MASTER)"
expect_vm vm2 "Entering BACKUP STATE" "vm2 is backup"

url=http://$client:8080/hello.txt
end=$(($(date +%s) + 60))
until body=$(fetch "$vip:9090" "$url"); do
	[ "$(date +%s)" -lt "$end" ] || fail "the client cannot fetch $url through $vip:9090 within 60 s"
	sleep 1
done
[ "$body" = "hello from the client LAN" ] || fail "unexpected body through the VIP: $body"
via=$(ip netns exec "$cl" curl -s -D - -o /dev/null --max-time 2 -x "http://$vip:9090" "$url" | tr -d '\r' | sed -n 's/^Via: //Ip')
echo "  client fetched through $vip:9090 (Via: ${via:-?})"

start_probe "$vip:9090" "$url"
wait_probe_ok 0 5 30 || fail "the probe through the VIP does not succeed before the power-off"
from=$(console_lines vm2)
off=$(now)
monitor vm1 quit
echo "  vm1 powered off"
expect_vm vm2 "Entering MASTER STATE" "vm2 owns the VIP (MASTER)" "$from"
wait_probe_ok "$off" 5 60 || fail "the client's fetches through $vip:9090 did not come back within 60 s"
gap=$(probe_gap "$off") || fail "no probe result around the power-off"
body=$(fetch "$vip:9090" "$url") || fail "fetch through the VIP after failover"
echo "  client fetches through the VIP again; gap ${gap} s (last success before the power-off to first after)"

grep -q "proxyha" "$dir/remote-syslog.log" ||
	fail "the client received no remote syslog line ([log] remote = \"udp://$client:514\")"
echo "  remote syslog: $(grep -c proxyha "$dir/remote-syslog.log") proxyha lines received by the client"
echo "test-failover: PASS ($(elapsed "$t0")s, gap ${gap}s)"
