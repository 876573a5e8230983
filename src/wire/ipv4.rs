//! The IPv4 header as a raw IP socket delivers it (Linux hands raw sockets the header
//! in network byte order) and as our tests inject it with IP_HDRINCL.

use std::net::Ipv4Addr;

use super::vrrp::checksum;

/// Minimum (option-less) header length.
pub const MIN_HEADER_LEN: usize = 20;

/// The header fields the VRRP receive checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

/// Why a buffer is not an IPv4 datagram we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    NotIpv4(u8),
    BadHeaderLength(u8),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated IPv4 datagram"),
            Error::NotIpv4(v) => write!(f, "IP version {v} is not 4"),
            Error::BadHeaderLength(l) => write!(f, "IPv4 header length {l} words is invalid"),
        }
    }
}

impl std::error::Error for Error {}

/// Splits a datagram into its header and payload. The payload is cut to the header's
/// total length, so link-layer padding never reaches the VRRP length check.
pub fn parse(buf: &[u8]) -> Result<(Header, &[u8]), Error> {
    if buf.len() < MIN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let version = buf[0] >> 4;
    if version != 4 {
        return Err(Error::NotIpv4(version));
    }
    let ihl_words = buf[0] & 0x0f;
    let ihl = usize::from(ihl_words) * 4;
    if ihl < MIN_HEADER_LEN {
        return Err(Error::BadHeaderLength(ihl_words));
    }
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if total < ihl || buf.len() < total {
        return Err(Error::Truncated);
    }
    let header = Header {
        ttl: buf[8],
        protocol: buf[9],
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
    };
    Ok((header, &buf[ihl..total]))
}

/// Writes an option-less header (TOS 0xc0, internetwork control, as keepalived sends;
/// DF clear) for `payload_len` bytes into `buf[..20]`, checksum included.
pub fn emit(buf: &mut [u8], header: &Header, id: u16, payload_len: usize) {
    let total = (MIN_HEADER_LEN + payload_len) as u16;
    buf[0] = 0x45;
    buf[1] = 0xc0;
    buf[2..4].copy_from_slice(&total.to_be_bytes());
    buf[4..6].copy_from_slice(&id.to_be_bytes());
    buf[6..8].fill(0);
    buf[8] = header.ttl;
    buf[9] = header.protocol;
    buf[10..12].fill(0);
    buf[12..16].copy_from_slice(&header.src.octets());
    buf[16..20].copy_from_slice(&header.dst.octets());
    let sum = checksum::fold(checksum::sum(&buf[..MIN_HEADER_LEN]));
    buf[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod test {
    use super::*;

    /// keepalived 2.2.7 advert frame from vectors/keepalived-2.2.7-v3-preempt.pcap
    /// (frame 5), IP header onward.
    static DATAGRAM: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x42, 0x0a, 0x4d, 0x00,
        0x0b, 0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x63, 0x01, 0x00, 0x64, 0x75, 0xcf, 0x0a, 0x4d,
        0x00, 0x64,
    ];

    #[test]
    fn parse_and_emit_keepalived_header() {
        let (h, payload) = parse(&DATAGRAM).unwrap();
        assert_eq!(h.ttl, 255);
        assert_eq!(h.protocol, 112);
        assert_eq!(h.src, Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(h.dst, Ipv4Addr::new(224, 0, 0, 18));
        assert_eq!(payload, &DATAGRAM[20..]);
        let mut buf = [0xa5u8; 20];
        emit(&mut buf, &h, 1, payload.len());
        assert_eq!(buf, DATAGRAM[..20]);
    }

    #[test]
    fn padding_is_cut_and_short_buffers_refused() {
        let mut padded = DATAGRAM.to_vec();
        padded.extend_from_slice(&[0; 14]);
        assert_eq!(parse(&padded).unwrap().1, &DATAGRAM[20..]);
        assert_eq!(parse(&DATAGRAM[..19]), Err(Error::Truncated));
        assert_eq!(parse(&DATAGRAM[..31]), Err(Error::Truncated));
        let mut v6 = DATAGRAM;
        v6[0] = 0x65;
        assert_eq!(parse(&v6), Err(Error::NotIpv4(6)));
        let mut ihl = DATAGRAM;
        ihl[0] = 0x44;
        assert_eq!(parse(&ihl), Err(Error::BadHeaderLength(4)));
    }
}
