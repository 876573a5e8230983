//! VRRP advertisement codec: VRRPv3 over IPv4 (RFC 9568 §5) and VRRPv2 (RFC 3768 §5).
//!
//! ```text
//! v3:  |Ver|Type| VRID | Priority | Count |  |rsvd| Max Adver Int (12 bit) | Checksum |  IPv4 addr * Count
//! v2:  |Ver|Type| VRID | Priority | Count |  |Auth Type| Adver Int (s) | Checksum |  IPv4 addr * Count  Auth data (8)
//! ```
//!
//! Checksum policy is the caller's: for IPv4 the VRRPv3 checksum is implemented two ways.
//! keepalived 2.2.7 and FRR include the IPv4 pseudo-header; RFC 9568 §5.2.8 read for IPv4,
//! Cisco and Juniper do not. We emit either form ([`ChecksumMode`], pseudo-header by default
//! for keepalived interop) and accept both on receive.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// IP protocol number of VRRP (RFC 9568 §5.1.1.3).
pub const PROTOCOL: u8 = 112;
/// Destination of every IPv4 advertisement (RFC 9568 §5.1.1.2).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// "The TTL MUST be set to 255" (RFC 9568 §5.1.1.3); receivers discard anything else.
pub const TTL: u8 = 255;
/// The only message type: ADVERTISEMENT (RFC 9568 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Fixed header length shared by v2 and v3.
pub const HEADER_LEN: usize = 8;
/// VRRPv2 trailing authentication data (RFC 3768 §5.3.10).
pub const V2_AUTH_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v3: 4 reserved bits + 12-bit Max Adver Int; v2: byte 4 Auth Type, byte 5 Adver Int.
    pub const INTERVAL: Range<usize> = 4..6;
    pub const AUTH_TYPE: usize = 4;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Protocol version carried in the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// How the checksum of an emitted advertisement is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// VRRP message plus IPv4 pseudo-header (RFC 9568 §5.2.8; keepalived, FRR). Default.
    #[default]
    PseudoHeader,
    /// VRRP message only (RFC 3768 for v2; Cisco/Juniper for v3).
    VrrpOnly,
}

/// Why a buffer is not a valid advertisement. Each maps to one discard counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than the header says it is.
    Truncated,
    /// Longer than the header says (RFC 9568 §7.1: the length must match the count).
    LengthMismatch,
    /// Version nibble is not the one expected.
    Version(u8),
    /// Type nibble is not ADVERTISEMENT.
    Type(u8),
    /// Neither checksum form matches.
    Checksum,
    /// Advertisement interval of zero.
    ZeroInterval,
    /// Count IPvX Addr of zero ("the minimum value is 1", RFC 9568 §5.2.5).
    NoAddresses,
    /// VRRPv2 authentication type other than 0 (we neither send nor check auth data).
    AuthType(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated advertisement"),
            Error::LengthMismatch => write!(f, "length does not match the address count"),
            Error::Version(v) => write!(f, "unexpected VRRP version {v}"),
            Error::Type(t) => write!(f, "unknown VRRP message type {t}"),
            Error::Checksum => write!(f, "bad checksum"),
            Error::ZeroInterval => write!(f, "advertisement interval of zero"),
            Error::NoAddresses => write!(f, "advertisement carries no addresses"),
            Error::AuthType(t) => write!(f, "unsupported VRRPv2 authentication type {t}"),
        }
    }
}

impl std::error::Error for Error {}

/// A read/write view of a VRRP message (IP payload) in a buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header fits; header accessors then never
    /// panic. Address accessors are safe for `i < count()` once [`Packet::check_len`]
    /// passed, which [`Repr::parse`] does.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// Length the header claims for `version`.
    pub fn expected_len(&self, version: Version) -> usize {
        let addrs = HEADER_LEN + 4 * usize::from(self.count());
        match version {
            Version::V3 => addrs,
            Version::V2 => addrs + V2_AUTH_LEN,
        }
    }

    /// RFC 9568 §7.1: the packet must hold exactly what its count announces.
    pub fn check_len(&self, version: Version) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        let expected = self.expected_len(version);
        match len.cmp(&expected) {
            std::cmp::Ordering::Less => Err(Error::Truncated),
            std::cmp::Ordering::Greater => Err(Error::LengthMismatch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v3 Max Adver Int in centiseconds (low 12 bits; the 4 reserved bits are ignored
    /// on receive as RFC 9568 §5.2.6 asks).
    pub fn max_advert_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INTERVAL];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// v2 Auth Type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// v2 Adver Int in seconds.
    pub fn advert_int_v2(&self) -> u8 {
        self.buffer.as_ref()[field::INTERVAL.end - 1]
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Address `i`; call only with `i < count()` after `check_len`.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let at = field::ADDRESSES + 4 * i;
        let b = &self.buffer.as_ref()[at..at + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// True when the checksum verifies with the pseudo-header (`src`, `dst`) or without.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        checksum::fold(checksum::sum(data)) == 0
            || checksum::fold(checksum::sum(data) + checksum::pseudo_header(src, dst, data.len()))
                == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_version_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    fn set_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    fn set_interval_bytes(&mut self, value: [u8; 2]) {
        self.buffer.as_mut()[field::INTERVAL].copy_from_slice(&value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    fn set_address(&mut self, i: usize, addr: Ipv4Addr) {
        let at = field::ADDRESSES + 4 * i;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let mut sum = checksum::sum(data);
        if mode == ChecksumMode::PseudoHeader {
            sum += checksum::pseudo_header(src, dst, data.len());
        }
        let value = checksum::fold(sum);
        self.set_checksum(value);
    }
}

/// A valid advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repr {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: Max Adver Int in centiseconds (1..=4095); v2: Adver Int in seconds (1..=255).
    pub advert_int: u16,
    /// 1..=255 virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
}

impl Repr {
    /// Builds an advertisement from an interval, checking it fits the version's field.
    pub fn new(
        version: Version,
        vrid: u8,
        priority: u8,
        interval: Duration,
        addresses: Vec<Ipv4Addr>,
    ) -> Option<Repr> {
        let ms = interval.as_millis();
        let advert_int = match version {
            Version::V3 if ms.is_multiple_of(10) && (10..=40_950).contains(&ms) => (ms / 10) as u16,
            Version::V2 if ms.is_multiple_of(1000) && (1000..=255_000).contains(&ms) => {
                (ms / 1000) as u16
            }
            _ => return None,
        };
        if addresses.is_empty() || addresses.len() > 255 {
            return None;
        }
        Some(Repr {
            version,
            vrid,
            priority,
            advert_int,
            addresses,
        })
    }

    /// The advertisement interval as a duration.
    pub fn interval(&self) -> Duration {
        match self.version {
            Version::V3 => Duration::from_millis(u64::from(self.advert_int) * 10),
            Version::V2 => Duration::from_secs(u64::from(self.advert_int)),
        }
    }

    /// Parses and validates a VRRP message of the `expected` version received from `src`
    /// to `dst` (the pseudo-header addresses). Checks run in RFC 9568 §7.1 order.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        expected: Version,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Repr, Error> {
        if packet.version() != expected.number() {
            return Err(Error::Version(packet.version()));
        }
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(Error::Type(packet.msg_type()));
        }
        packet.check_len(expected)?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        if packet.count() == 0 {
            return Err(Error::NoAddresses);
        }
        let advert_int = match expected {
            Version::V3 => packet.max_advert_int(),
            Version::V2 => {
                if packet.auth_type() != 0 {
                    return Err(Error::AuthType(packet.auth_type()));
                }
                u16::from(packet.advert_int_v2())
            }
        };
        if advert_int == 0 {
            return Err(Error::ZeroInterval);
        }
        let addresses = (0..usize::from(packet.count()))
            .map(|i| packet.address(i))
            .collect();
        Ok(Repr {
            version: expected,
            vrid: packet.vrid(),
            priority: packet.priority(),
            advert_int,
            addresses,
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let addrs = HEADER_LEN + 4 * self.addresses.len().min(255);
        match self.version {
            Version::V3 => addrs,
            Version::V2 => addrs + V2_AUTH_LEN,
        }
    }

    /// Writes the advertisement into `packet` (exactly `buffer_len()` bytes long) with
    /// the checksum computed per `mode` for a datagram from `src` to `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        mode: ChecksumMode,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        let count = self.addresses.len().min(255);
        packet.set_version_type(self.version.number(), TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_count(count as u8);
        match self.version {
            // Reserved bits "MUST be set to zero on transmission" (RFC 9568 §5.2.6).
            Version::V3 => packet.set_interval_bytes((self.advert_int & 0x0fff).to_be_bytes()),
            // Auth Type 0: no authentication (RFC 3768 §5.3.6.1).
            Version::V2 => packet.set_interval_bytes([0, self.advert_int.min(255) as u8]),
        }
        for (i, addr) in self.addresses.iter().take(count).enumerate() {
            packet.set_address(i, *addr);
        }
        if self.version == Version::V2 {
            let at = HEADER_LEN + 4 * count;
            packet.buffer.as_mut()[at..at + V2_AUTH_LEN].fill(0);
        }
        // RFC 3768 §5.3.8: the v2 checksum never covers a pseudo-header.
        let mode = if self.version == Version::V2 {
            ChecksumMode::VrrpOnly
        } else {
            mode
        };
        packet.fill_checksum(mode, src, dst);
    }

    /// Convenience: emits into a fresh vector.
    pub fn to_bytes(&self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]), mode, src, dst);
        buf
    }
}

/// The Internet checksum (RFC 1071), shared with the IPv4 header codec.
pub(crate) mod checksum {
    use std::net::Ipv4Addr;

    /// One's-complement sum of 16-bit big-endian words, not yet folded.
    pub fn sum(data: &[u8]) -> u32 {
        let mut acc: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u32::from(*last) << 8;
        }
        acc
    }

    pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
        let mut buf = [0u8; 12];
        buf[0..4].copy_from_slice(&src.octets());
        buf[4..8].copy_from_slice(&dst.octets());
        buf[9] = super::PROTOCOL;
        buf[10..12].copy_from_slice(&(len as u16).to_be_bytes());
        sum(&buf)
    }

    /// Folds carries and complements: the checksum to store, or 0 over a correct buffer.
    pub fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

    /// keepalived 2.2.7, VRID 51, prio 99, 100 cs, VIP 10.77.0.100, from 10.77.0.11
    /// (vectors/keepalived-2.2.7-v3-preempt.pcap, frame 5, VRRP part).
    static V3_PRIO99: [u8; 12] = [
        0x31, 0x33, 0x63, 0x01, 0x00, 0x64, 0x75, 0xcf, 0x0a, 0x4d, 0x00, 0x64,
    ];
    /// The same without the pseudo-header (BRIEF §4: 0x60b6).
    static V3_PRIO99_NO_PSEUDO: [u8; 12] = [
        0x31, 0x33, 0x63, 0x01, 0x00, 0x64, 0x60, 0xb6, 0x0a, 0x4d, 0x00, 0x64,
    ];
    /// keepalived 2.2.7 priority-0 advert on SIGTERM (sigterm-failover.pcap, frame 2).
    static V3_PRIO0: [u8; 12] = [
        0x31, 0x33, 0x00, 0x01, 0x00, 0x64, 0xd8, 0xcf, 0x0a, 0x4d, 0x00, 0x64,
    ];
    /// keepalived 2.2.7 at 10 cs (adv-100cs.pcap, frame 0).
    static V3_10CS: [u8; 12] = [
        0x31, 0x33, 0x63, 0x01, 0x00, 0x0a, 0x76, 0x29, 0x0a, 0x4d, 0x00, 0x64,
    ];

    fn parse(bytes: &[u8], src: Ipv4Addr) -> Result<Repr, Error> {
        Repr::parse(
            &Packet::new_checked(bytes)?,
            Version::V3,
            src,
            MULTICAST_GROUP,
        )
    }

    #[test]
    fn deconstruct_keepalived_advert() {
        let p = Packet::new_checked(&V3_PRIO99[..]).unwrap();
        assert_eq!(p.version(), 3);
        assert_eq!(p.msg_type(), 1);
        assert_eq!(p.vrid(), 51);
        assert_eq!(p.priority(), 99);
        assert_eq!(p.count(), 1);
        assert_eq!(p.max_advert_int(), 100);
        assert_eq!(p.checksum(), 0x75cf);
        assert_eq!(p.address(0), VIP);
    }

    #[test]
    fn parse_and_emit_every_keepalived_vector_byte_for_byte() {
        for (bytes, prio, cs, src) in [
            (V3_PRIO99, 99, 100, SRC),
            (V3_PRIO0, 0, 100, SRC),
            (V3_10CS, 99, 10, SRC),
        ] {
            let repr = parse(&bytes, src).unwrap();
            assert_eq!(repr.priority, prio);
            assert_eq!(repr.advert_int, cs);
            assert_eq!(repr.addresses, vec![VIP]);
            let mut buf = [0xa5u8; 12];
            repr.emit(
                &mut Packet::new_unchecked(&mut buf[..]),
                ChecksumMode::PseudoHeader,
                src,
                MULTICAST_GROUP,
            );
            assert_eq!(buf, bytes);
        }
    }

    #[test]
    fn checksum_without_pseudo_header_is_accepted_and_emitted_on_request() {
        let repr = parse(&V3_PRIO99_NO_PSEUDO, SRC).unwrap();
        assert_eq!(repr.priority, 99);
        let mut buf = [0xa5u8; 12];
        repr.emit(
            &mut Packet::new_unchecked(&mut buf[..]),
            ChecksumMode::VrrpOnly,
            SRC,
            MULTICAST_GROUP,
        );
        assert_eq!(buf, V3_PRIO99_NO_PSEUDO);
    }

    #[test]
    fn pseudo_header_checksum_from_another_source_is_rejected() {
        assert_eq!(
            parse(&V3_PRIO99, Ipv4Addr::new(10, 77, 0, 12)),
            Err(Error::Checksum)
        );
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let mut bad_version = V3_PRIO99;
        bad_version[0] = 0x21;
        assert_eq!(parse(&bad_version, SRC), Err(Error::Version(2)));
        let mut bad_type = V3_PRIO99;
        bad_type[0] = 0x32;
        assert_eq!(parse(&bad_type, SRC), Err(Error::Type(2)));
        assert_eq!(parse(&V3_PRIO99[..7], SRC), Err(Error::Truncated));
        assert_eq!(parse(&V3_PRIO99[..10], SRC), Err(Error::Truncated));
        let mut long = V3_PRIO99.to_vec();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse(&long, SRC), Err(Error::LengthMismatch));
        let mut bad_sum = V3_PRIO99;
        bad_sum[7] ^= 1;
        assert_eq!(parse(&bad_sum, SRC), Err(Error::Checksum));
        let zero = Repr {
            advert_int: 0,
            ..parse(&V3_PRIO99, SRC).unwrap()
        };
        let bytes = zero.to_bytes(ChecksumMode::PseudoHeader, SRC, MULTICAST_GROUP);
        assert_eq!(parse(&bytes, SRC), Err(Error::ZeroInterval));
        let none = Repr {
            addresses: vec![],
            ..parse(&V3_PRIO99, SRC).unwrap()
        };
        let bytes = none.to_bytes(ChecksumMode::PseudoHeader, SRC, MULTICAST_GROUP);
        assert_eq!(parse(&bytes, SRC), Err(Error::NoAddresses));
    }

    #[test]
    fn v2_round_trip_with_auth_trailer_and_plain_checksum() {
        let repr = Repr::new(Version::V2, 51, 89, Duration::from_secs(1), vec![VIP]).unwrap();
        let bytes = repr.to_bytes(ChecksumMode::PseudoHeader, SRC, MULTICAST_GROUP);
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..6], &[0x21, 51, 89, 1, 0, 1]);
        assert_eq!(&bytes[12..], &[0; 8]);
        assert_eq!(
            checksum::fold(checksum::sum(&bytes)),
            0,
            "v2 checksum excludes the pseudo-header"
        );
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&p, Version::V2, SRC, MULTICAST_GROUP), Ok(repr));
        assert_eq!(
            Repr::parse(&p, Version::V3, SRC, MULTICAST_GROUP),
            Err(Error::Version(2))
        );
        let mut auth = bytes.clone();
        auth[4] = 1;
        let mut p = Packet::new_unchecked(&mut auth[..]);
        p.fill_checksum(ChecksumMode::VrrpOnly, SRC, MULTICAST_GROUP);
        let p = Packet::new_checked(&auth[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, Version::V2, SRC, MULTICAST_GROUP),
            Err(Error::AuthType(1))
        );
    }

    #[test]
    fn interval_must_fit_the_version_field() {
        assert!(Repr::new(Version::V3, 1, 100, Duration::from_millis(30), vec![VIP]).is_some());
        assert!(Repr::new(Version::V3, 1, 100, Duration::from_millis(35), vec![VIP]).is_none());
        assert!(
            Repr::new(
                Version::V3,
                1,
                100,
                Duration::from_millis(40_960),
                vec![VIP]
            )
            .is_none()
        );
        assert!(Repr::new(Version::V2, 1, 100, Duration::from_millis(1500), vec![VIP]).is_none());
        assert!(Repr::new(Version::V3, 1, 100, Duration::from_secs(1), vec![]).is_none());
        let r = Repr::new(Version::V3, 1, 100, Duration::from_millis(30), vec![VIP]).unwrap();
        assert_eq!(r.interval(), Duration::from_millis(30));
    }
}
