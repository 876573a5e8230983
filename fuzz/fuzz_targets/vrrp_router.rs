//! Untrusted datagrams into the VRRP core in every state it can be in: no input may panic,
//! and the VIP is requested only while the router is master.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proxyha::vrrp::{Action, Router, RouterConfig, State};
use proxyha::wire::vrrp::{self, ChecksumMode, Version};
use proxyha::wire::ipv4;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else { return };
    let version = if selector & 1 == 0 { Version::V3 } else { Version::V2 };
    let mut router = Router::new(RouterConfig {
        version,
        vrid: 51,
        priority: selector >> 1,
        advert_interval: Duration::from_secs(1),
        preempt: selector & 0x40 != 0,
        vips: vec![Ipv4Addr::new(10, 77, 0, 100)],
        primary_addr: Ipv4Addr::new(10, 77, 0, 11),
        checksum: ChecksumMode::PseudoHeader,
    });
    let start = Instant::now();
    router.handle_startup(start, true);
    // Reach master (when the priority allows) before feeding the datagram.
    let mut now = start;
    if selector & 0x80 != 0 {
        while let Some(deadline) = router.poll_timeout() {
            if router.state() == State::Master || deadline > start + Duration::from_secs(10) {
                break;
            }
            now = deadline;
            router.handle_timeout(now);
        }
    }
    while router.poll_action().is_some() {}
    // Random bytes rarely carry a valid checksum; half the time, fix it so the fuzzer
    // reaches the state machine behind the receive checks.
    let mut datagram = datagram.to_vec();
    if selector & 0x20 != 0 {
        fix_checksum(&mut datagram);
    }
    router.handle_datagram(now, &datagram);
    while let Some(action) = router.poll_action() {
        if action == Action::AddVips {
            assert_eq!(router.state(), State::Master);
        }
    }
    if let Some(deadline) = router.poll_timeout() {
        router.handle_timeout(deadline);
    }
});

fn fix_checksum(datagram: &mut [u8]) {
    let Ok((header, payload)) = ipv4::parse(datagram) else { return };
    let (src, dst, len) = (header.src, header.dst, payload.len());
    let start = usize::from(datagram[0] & 0x0f) * 4;
    if len < vrrp::HEADER_LEN {
        return;
    }
    let mut packet = vrrp::Packet::new_unchecked(&mut datagram[start..start + len]);
    packet.fill_checksum(ChecksumMode::PseudoHeader, src, dst);
}
