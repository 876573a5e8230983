//! Untrusted datagrams through the IPv4 and VRRP codecs: nothing may panic, and whatever
//! parses must emit back to bytes that parse to the same advertisement.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxyha::wire::{ipv4, vrrp};

fuzz_target!(|data: &[u8]| {
    // As the raw socket hands it over: IPv4 header first.
    if let Ok((header, payload)) = ipv4::parse(data) {
        check(payload, header.src, header.dst);
    }
    // And the bare VRRP message.
    check(data, std::net::Ipv4Addr::new(10, 0, 0, 1), vrrp::MULTICAST_GROUP);
});

fn check(payload: &[u8], src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) {
    let Ok(packet) = vrrp::Packet::new_checked(payload) else { return };
    for version in [vrrp::Version::V3, vrrp::Version::V2] {
        if let Ok(repr) = vrrp::Repr::parse(&packet, version, src, dst) {
            for mode in [vrrp::ChecksumMode::PseudoHeader, vrrp::ChecksumMode::VrrpOnly] {
                let bytes = repr.to_bytes(mode, src, dst);
                let again = vrrp::Packet::new_checked(&bytes[..]).expect("emitted header");
                assert_eq!(vrrp::Repr::parse(&again, version, src, dst), Ok(repr.clone()));
            }
        }
    }
}
