//! ARP frames: gratuitous ARP (RFC 5227 §3 "ARP Announcement"), as keepalived sends them on
//! becoming master: an ARP request from the VIP to the VIP, broadcast; the ARP request that
//! probes the gateway (`[ha.track] gateway`), and the sender of a received ARP packet.

use std::net::Ipv4Addr;

/// Ethernet + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 42;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// A broadcast ARP request announcing that `vip` is at `mac`. The target hardware
/// address is all-ones, as keepalived 2.2.7 writes it (vectors/…-preempt.pcap frame 6).
pub fn gratuitous(mac: [u8; 6], vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    request_frame(mac, vip, [0xff; 6], vip)
}

/// A broadcast ARP request from `sender` at `mac` asking who has `target` (target hardware
/// address zero, RFC 826).
pub fn request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    request_frame(mac, sender, [0; 6], target)
}

/// The sender protocol address of an ARP packet for IPv4 over Ethernet (the 28 bytes after
/// the Ethernet header, as an AF_PACKET datagram socket delivers them); `None` for anything
/// else.
pub fn sender(payload: &[u8]) -> Option<Ipv4Addr> {
    let p = payload.get(..28)?;
    let ethernet_ipv4 = p[0..2] == [0, 1] && p[2..4] == [0x08, 0x00] && p[4] == 6 && p[5] == 4;
    let op = u16::from_be_bytes([p[6], p[7]]);
    (ethernet_ipv4 && (op == 1 || op == 2)).then(|| Ipv4Addr::new(p[14], p[15], p[16], p[17]))
}

fn request_frame(
    mac: [u8; 6],
    sender: Ipv4Addr,
    target_mac: [u8; 6],
    target: Ipv4Addr,
) -> [u8; FRAME_LEN] {
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
    f[28..32].copy_from_slice(&sender.octets());
    f[32..38].copy_from_slice(&target_mac);
    f[38..42].copy_from_slice(&target.octets());
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

    #[test]
    fn probe_request_and_its_sender() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = request(mac, Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&f[32..38], &[0; 6], "target hardware address unknown");
        assert_eq!(&f[38..42], &[10, 0, 0, 1]);
        assert_eq!(sender(&f[14..]), Some(Ipv4Addr::new(10, 0, 0, 11)));
        let mut reply = f;
        reply[21] = 2;
        assert_eq!(sender(&reply[14..]), Some(Ipv4Addr::new(10, 0, 0, 11)));
        reply[21] = 3; // RARP
        assert_eq!(sender(&reply[14..]), None);
        assert_eq!(sender(&f[14..30]), None, "truncated");
    }
}
