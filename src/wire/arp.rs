//! Gratuitous ARP frames (RFC 5227 §3 "ARP Announcement"), as keepalived sends them on
//! becoming master: an ARP request from the VIP to the VIP, broadcast.

use std::net::Ipv4Addr;

/// Ethernet + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 42;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// A broadcast ARP request announcing that `vip` is at `mac`. The target hardware
/// address is all-ones, as keepalived 2.2.7 writes it (vectors/…-preempt.pcap frame 6).
pub fn gratuitous(mac: [u8; 6], vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].fill(0xff);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn matches_keepalived_frame() {
        // vectors/keepalived-2.2.7-v3-preempt.pcap, frame 6.
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x4a, 0x52, 0xe1, 0x3c, 0xe8, 0x01, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x4a, 0x52, 0xe1, 0x3c, 0xe8, 0x01,
            0x0a, 0x4d, 0x00, 0x64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x4d, 0x00, 0x64,
        ];
        let mac = [0x4a, 0x52, 0xe1, 0x3c, 0xe8, 0x01];
        assert_eq!(gratuitous(mac, Ipv4Addr::new(10, 77, 0, 100)), expected);
    }
}
