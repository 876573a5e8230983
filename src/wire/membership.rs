//! Membership codec, "protocol 253" (BRIEF §4): director announcements and node load reports.
//!
//! ```text
//!  0      4     5      6      7      8          10             10+len        +32
//!  | magic | ver | lb_id | type | flags | body len | postcard body | [fresh] | [HMAC-SHA256] |
//!  "PXHA"   1                    bit0,1   u16 BE                     16 bytes  over all before it
//! ```
//!
//! `fresh` (flag bit 1, always sent with a MAC) is the sender's boot id and a sequence
//! number, both u64 big-endian: a receiver accepts a sender's messages only in increasing
//! (boot, seq) order, so a captured message replayed later is discarded.
//!
//! The fixed header is read without serde, so a receiver can tell a foreign or newer
//! sender (magic, version), another Proxy HA group on the same subnet (`lb_id`, counted
//! apart) and a bad MAC from a malformed body, and can authenticate before the body ever
//! reaches the deserializer. The body is postcard (compact, schema-less): fields are
//! appended only with a version bump.
//!
//! Untrusted input goes through [`decode`] (or [`Packet::new_checked`]); neither panics.
//! The body is at most [`MAX_BODY`] bytes, so no list can claim more elements than there
//! are bytes behind it, and serde's cautious pre-allocation bounds what a lying length
//! prefix can reserve; list sizes are then capped again by [`MAX_MEMBERS`],
//! [`MAX_ASSIGNMENTS`] and [`MAX_PORTS`] so the core only sees plausible states.

use std::fmt;
use std::net::Ipv4Addr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// IP protocol number the seed's product uses for its membership traffic (BRIEF §1).
pub const PROTOCOL: u8 = 253;
/// Announcements go to the limited broadcast address (BRIEF §1).
pub const BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;
/// First four bytes of every message. The version lives in its own byte, not here.
pub const MAGIC: [u8; 4] = *b"PXHA";
/// The only header/body version this codec speaks.
pub const VERSION: u8 = 1;
/// Fixed header length.
pub const HEADER_LEN: usize = 10;
/// HMAC-SHA256 trailer length.
pub const MAC_LEN: usize = 32;
/// Flag bit 0: a [`MAC_LEN`]-byte HMAC trailer follows the body. Other bits are reserved:
/// sent as zero, ignored on receive (a later version may use them without a bump).
pub const FLAG_MAC: u8 = 0x01;
/// Flag bit 1: a [`FRESH_LEN`]-byte [`Freshness`] block follows the body, covered by the
/// MAC. Sent with every MAC; a MAC without it is refused ([`Error::NoFreshness`]).
pub const FLAG_FRESH: u8 = 0x02;
/// Freshness block length: boot id and sequence number, u64 big-endian each.
pub const FRESH_LEN: usize = 16;
/// Message type byte of an [`Announcement`].
pub const TYPE_ANNOUNCEMENT: u8 = 1;
/// Message type byte of a [`Report`].
pub const TYPE_REPORT: u8 = 2;
/// Message type byte of a [`Handover`] (planned director change). Added after 0.1.0 as a
/// new type, not a new report field, so 0.1.0 nodes in a rolling update count it as a bad
/// message and ignore it while they keep reading our reports.
pub const TYPE_HANDOVER: u8 = 3;
/// Message type byte of [`Pins`]: director → standby candidate, unicast (added after 0.1.0,
/// as a new type, like [`TYPE_HANDOVER`]).
pub const TYPE_PINS: u8 = 4;
/// Message type byte of [`Replica`]: standby candidate → director, unicast.
pub const TYPE_REPLICA: u8 = 5;
/// Pins (added and removed together) in one [`Pins`] message: at most 16 bytes each, so a
/// message stays one unfragmented datagram on a 1500-byte link.
pub const MAX_PINS: usize = 80;
/// Largest body: what fits one IPv4 datagram (65535) after a 20-byte IP header, our
/// header, a freshness block and a MAC. Larger assignment sets are paged over successive announcements.
pub const MAX_BODY: usize = 65535 - 20 - HEADER_LEN - FRESH_LEN - MAC_LEN;
/// Members in one announcement. A group is 2–8 nodes (BRIEF §1); the cap is headroom.
pub const MAX_MEMBERS: usize = 64;
/// Sticky assignments in one announcement page (at most 16 bytes each on the wire: two
/// addresses, a varint port and a varint age; so a full page fits [`MAX_BODY`] with room
/// for the member list).
pub const MAX_ASSIGNMENTS: usize = 3072;
/// Port entries in one report (connections, health).
pub const MAX_PORTS: usize = 64;
/// Longest node name, software version or health reason, in bytes.
pub const MAX_TEXT: usize = 255;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const LB_ID: usize = 5;
    pub const TYPE: usize = 6;
    pub const FLAGS: usize = 7;
    pub const BODY_LEN: Range<usize> = 8..10;
}

type HmacSha256 = Hmac<Sha256>;

/// Why a datagram is not a valid membership message. Each maps to one discard counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than the header says it is.
    Truncated,
    /// Not `PXHA`: some other protocol-253 user on the subnet.
    BadMagic,
    /// A version this build does not speak (a newer node during a rolling update).
    UnsupportedVersion(u8),
    /// Another Proxy HA group (different `lb_id`) on the same subnet; ignored and counted.
    OtherGroup(u8),
    /// Message type other than announcement (1) or report (2).
    UnknownType(u8),
    /// Longer than header + body + MAC.
    LengthMismatch,
    /// The body does not deserialize, or holds an out-of-range value; names the field.
    BadBody(String),
    /// We hold a key but the sender sent no MAC (key configured on one side only).
    MissingMac,
    /// The MAC does not verify (wrong key, or tampered).
    BadMac,
    /// The sender sent a MAC but we hold no key (key configured on one side only).
    UnexpectedMac,
    /// Encoding only: the body exceeds [`MAX_BODY`]; page the assignments.
    TooLarge(usize),
    /// A valid MAC but no freshness block: a node that cannot be protected from replay
    /// (an older proxyha).
    NoFreshness,
}

/// Where a message stands in its sender's stream: the sender's boot id (grows with every
/// start of the daemon) and a per-boot sequence number. Ordered as (boot, seq).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Freshness {
    pub boot: u64,
    pub seq: u64,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated membership message"),
            Error::BadMagic => write!(f, "membership message without the PXHA magic"),
            Error::UnsupportedVersion(v) => {
                write!(
                    f,
                    "membership version {v} not supported (this build speaks {VERSION})"
                )
            }
            Error::OtherGroup(id) => write!(f, "membership message for lb_id {id}, not ours"),
            Error::UnknownType(t) => write!(f, "unknown membership message type {t}"),
            Error::LengthMismatch => {
                write!(f, "membership message longer than its header says")
            }
            Error::BadBody(why) => write!(f, "malformed membership body: {why}"),
            Error::MissingMac => write!(
                f,
                "membership message without HMAC while a key is configured (set the same key on every node)"
            ),
            Error::BadMac => write!(
                f,
                "membership HMAC does not verify (check that every node has the same key)"
            ),
            Error::UnexpectedMac => write!(
                f,
                "membership message carries an HMAC but no key is configured (set the same key on every node)"
            ),
            Error::NoFreshness => write!(
                f,
                "membership message signed without a replay counter (an older proxyha: update it)"
            ),
            Error::TooLarge(n) => write!(
                f,
                "membership body of {n} bytes exceeds {MAX_BODY} (send fewer assignments per announcement)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A read-only view of a membership message in a buffer (smoltcp style).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header fits and that the buffer is exactly
    /// as long as header, body and (if flagged) MAC; every accessor is then safe.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Length the header announces, header and MAC included.
    pub fn expected_len(&self) -> usize {
        let mac = if self.has_mac() { MAC_LEN } else { 0 };
        self.fresh_end() + mac
    }

    /// End of the body and, when flagged, of the freshness block.
    fn fresh_end(&self) -> usize {
        let fresh = if self.has_fresh() { FRESH_LEN } else { 0 };
        HEADER_LEN + usize::from(self.body_len()) + fresh
    }

    /// Header present and total length consistent with it.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        match len.cmp(&self.expected_len()) {
            std::cmp::Ordering::Less => Err(Error::Truncated),
            std::cmp::Ordering::Greater => Err(Error::LengthMismatch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    pub fn magic(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::MAGIC];
        [b[0], b[1], b[2], b[3]]
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn lb_id(&self) -> u8 {
        self.buffer.as_ref()[field::LB_ID]
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn has_mac(&self) -> bool {
        self.flags() & FLAG_MAC != 0
    }

    pub fn has_fresh(&self) -> bool {
        self.flags() & FLAG_FRESH != 0
    }

    /// The freshness block; `None` when the flag is clear.
    pub fn freshness(&self) -> Option<Freshness> {
        if !self.has_fresh() {
            return None;
        }
        let start = HEADER_LEN + usize::from(self.body_len());
        let b = &self.buffer.as_ref()[start..start + FRESH_LEN];
        let word = |b: &[u8]| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        Some(Freshness {
            boot: word(&b[..8]),
            seq: word(&b[8..]),
        })
    }

    pub fn body_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::BODY_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header, body and freshness: what the MAC covers.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.fresh_end()]
    }

    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.body_len())]
    }

    /// The MAC trailer; empty when the flag is clear.
    pub fn mac(&self) -> &[u8] {
        let start = self.fresh_end();
        let end = if self.has_mac() {
            start + MAC_LEN
        } else {
            start
        };
        &self.buffer.as_ref()[start..end]
    }
}

/// A member as the director sees it, in an announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub address: Ipv4Addr,
    pub name: String,
    /// Effective weight the director gives the node (capacity × load feedback).
    pub weight: f64,
    pub state: MemberState,
}

/// What the director currently does with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Reports arrive and at least one redirected port is healthy: gets new clients.
    Active,
    /// Asked to drain (or every port unhealthy): keeps its pinned clients, gets no new ones.
    Draining,
    /// Missed reports: its clients have moved to others.
    Failed,
}

/// One sticky client → node pin, replicated so a standby director continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub client: Ipv4Addr,
    /// The redirected (VIP-side) port: pins are per client and port.
    pub port: u16,
    pub node: Ipv4Addr,
    /// Time since the client was last seen, in ms (ages, not timestamps: the directors'
    /// clocks are not synchronised).
    pub idle_ms: u32,
}

/// Director → broadcast, every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub director: Ipv4Addr,
    /// Increments when a node becomes director, so nodes can tell a takeover (and a
    /// stale director still announcing) from continuity.
    pub epoch: u64,
    pub members: Vec<Member>,
    /// Increments whenever the bucket table changes.
    pub table_version: u64,
    /// Which page of the sticky assignments this is (0-based) and how many pages the
    /// current set spans; a standby merges pages as they come.
    pub page: u16,
    pub pages: u16,
    pub assignments: Vec<Assignment>,
}

/// Established connections on one redirected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConns {
    pub port: u16,
    pub established: u32,
}

/// Port monitor result for one redirected port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortHealth {
    pub port: u16,
    /// Listening on the wildcard address (BRIEF §1).
    pub listening: bool,
    /// Why not, for status and logs ("bound to 10.0.0.5 only"); empty when listening.
    pub reason: String,
}

/// Node → director (unicast), every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub address: Ipv4Addr,
    /// Relative capacity: `node.capacity`, or the CPU count. Finite and > 0.
    pub capacity: f64,
    /// Smoothed CPU utilisation, 0..=1.
    pub cpu_load: f32,
    pub cpu_count: u16,
    pub connections: Vec<PortConns>,
    pub ports: Vec<PortHealth>,
    /// SHA-256 of the group-relevant config, so status can flag nodes that disagree.
    pub config_digest: [u8; 32],
    /// That config in words (VIP, VRID, lb_id, port redirects, mode), so a mismatch can be
    /// shown with both values.
    pub group_config: String,
    pub software_version: String,
    /// The administrator asked this node to take no new clients.
    pub draining: bool,
}

/// A planned director change between proxyha nodes (the RFC path stays for every other
/// VRRP speaker): candidates tell the director their VRRP priority; the leaving director
/// names its successor; the successor says when it holds the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The sender (checked against the datagram's source).
    pub from: Ipv4Addr,
    /// The director's epoch the message belongs to: a request or confirmation from another
    /// epoch is stale (a replay or a leftover) and is discarded.
    pub epoch: u64,
    pub kind: HandoverKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandoverKind {
    /// Node → director, with each report: this node can direct, at this VRRP priority.
    Candidate { priority: u8 },
    /// Leaving director → successor: take over now (the pins were just announced).
    Request,
    /// Successor → leaving director: the VIP and its gratuitous ARPs are out; leave.
    Done,
}

/// The key of a pin: client and redirected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PinKey {
    pub client: Ipv4Addr,
    pub port: u16,
}

/// What a [`Pins`] message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinsKind {
    /// What changed since the previous delta (new pins, a pin's new node, an expiry that
    /// moved, removed pins); `seq` counts the deltas of the epoch, so a gap shows a loss.
    Delta { seq: u64 },
    /// Page `page` of `pages` of the director's whole set (a cycle per standby; the
    /// background refresh that heals any loss). The cycle walks the set as read `age_ms`
    /// before this page was sent: a pin the standby got since then stays when the cycle
    /// completes without it.
    Full {
        cycle: u32,
        page: u32,
        pages: u32,
        age_ms: u32,
    },
}

/// Director → standby candidate (unicast): replicated pins, by change and in a slow full
/// refresh (the scale issue: announcements no longer carry pins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub director: Ipv4Addr,
    pub epoch: u64,
    pub kind: PinsKind,
    /// Pins, each with how long its client has been idle (ages: clocks differ).
    pub pins: Vec<Assignment>,
    /// Pins the director deleted (their node no longer serves the port).
    pub removed: Vec<PinKey>,
}

/// Standby candidate → director (unicast), with each report: what it holds, so the
/// director can tell who needs a catch-up refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The sender (checked against the datagram's source).
    pub from: Ipv4Addr,
    /// The director epoch these pins came from.
    pub epoch: u64,
    pub pins: u32,
    /// The last full cycle received completely; 0 when none yet.
    pub full_cycle: u32,
    /// The highest delta `seq` received in the epoch.
    pub delta_seq: u64,
}

/// A decoded membership message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Announcement(Announcement),
    Report(Report),
    Handover(Handover),
    Pins(Pins),
    Replica(Replica),
}

impl Message {
    fn type_byte(&self) -> u8 {
        match self {
            Message::Announcement(_) => TYPE_ANNOUNCEMENT,
            Message::Report(_) => TYPE_REPORT,
            Message::Handover(_) => TYPE_HANDOVER,
            Message::Pins(_) => TYPE_PINS,
            Message::Replica(_) => TYPE_REPLICA,
        }
    }
}

/// Builds the MAC state. HMAC accepts keys of any length (RFC 2104 §3: longer ones are
/// hashed first), so construction cannot fail.
fn hmac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Encodes `msg` for group `lb_id`, with freshness zero and an HMAC-SHA256 trailer when
/// `key` is given (tests, tools); a node sends with [`encode_fresh`].
pub fn encode(msg: &Message, lb_id: u8, key: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    encode_fresh(msg, lb_id, key, Freshness::default())
}

/// Encodes `msg` for group `lb_id`; with a `key`, `fresh` and an HMAC-SHA256 trailer.
/// Fails only when the body would not fit one datagram ([`Error::TooLarge`]).
pub fn encode_fresh(
    msg: &Message,
    lb_id: u8,
    key: Option<&[u8]>,
    fresh: Freshness,
) -> Result<Vec<u8>, Error> {
    let body = match msg {
        Message::Announcement(a) => postcard::to_stdvec(a),
        Message::Report(r) => postcard::to_stdvec(r),
        Message::Handover(h) => postcard::to_stdvec(h),
        Message::Pins(p) => postcard::to_stdvec(p),
        Message::Replica(r) => postcard::to_stdvec(r),
    }
    // Serializing plain structs into a Vec only fails on allocation; report it anyway.
    .map_err(|e| Error::BadBody(e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err(Error::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + FRESH_LEN + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(lb_id);
    out.push(msg.type_byte());
    out.push(if key.is_some() {
        FLAG_MAC | FLAG_FRESH
    } else {
        0
    });
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    if let Some(key) = key {
        out.extend_from_slice(&fresh.boot.to_be_bytes());
        out.extend_from_slice(&fresh.seq.to_be_bytes());
        let tag = hmac(key).chain_update(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// [`decode_fresh`] without the freshness.
pub fn decode(
    bytes: &[u8],
    expected_lb_id: u8,
    key: Option<&[u8]>,
) -> Result<(u8, Message), Error> {
    decode_fresh(bytes, expected_lb_id, key).map(|(lb_id, msg, _)| (lb_id, msg))
}

/// Decodes an IP payload. Checks run cheapest and least trusting first: header, group,
/// length, MAC (constant time), and only then the body, so unauthenticated bytes never
/// reach the deserializer when a key is configured. With a key, the verified freshness
/// comes back for the caller's replay check.
pub fn decode_fresh(
    bytes: &[u8],
    expected_lb_id: u8,
    key: Option<&[u8]>,
) -> Result<(u8, Message, Option<Freshness>), Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let packet = Packet::new_unchecked(bytes);
    if packet.magic() != MAGIC {
        return Err(Error::BadMagic);
    }
    if packet.version() != VERSION {
        return Err(Error::UnsupportedVersion(packet.version()));
    }
    if packet.lb_id() != expected_lb_id {
        return Err(Error::OtherGroup(packet.lb_id()));
    }
    let msg_type = packet.msg_type();
    if !matches!(
        msg_type,
        TYPE_ANNOUNCEMENT | TYPE_REPORT | TYPE_HANDOVER | TYPE_PINS | TYPE_REPLICA
    ) {
        return Err(Error::UnknownType(msg_type));
    }
    packet.check_len()?;
    match (key, packet.has_mac()) {
        (Some(key), true) => hmac(key)
            .chain_update(packet.authenticated())
            .verify_slice(packet.mac())
            .map_err(|_| Error::BadMac)?,
        (Some(_), false) => return Err(Error::MissingMac),
        (None, true) => return Err(Error::UnexpectedMac),
        (None, false) => {}
    }
    let fresh = match key {
        Some(_) => Some(packet.freshness().ok_or(Error::NoFreshness)?),
        None => None,
    };
    if packet.body().len() > MAX_BODY {
        return Err(Error::BadBody(format!(
            "{} bytes, more than {MAX_BODY}",
            packet.body().len()
        )));
    }
    let msg = match msg_type {
        TYPE_ANNOUNCEMENT => {
            let a: Announcement = body(packet.body())?;
            validate_announcement(&a)?;
            Message::Announcement(a)
        }
        TYPE_HANDOVER => Message::Handover(body(packet.body())?),
        TYPE_PINS => {
            let p: Pins = body(packet.body())?;
            check_count("pins and removed", p.pins.len() + p.removed.len(), MAX_PINS)?;
            if let PinsKind::Full { page, pages, .. } = p.kind
                && (pages == 0 || page >= pages)
            {
                return Err(bad(format!("full-set page {page} of {pages} out of range")));
            }
            Message::Pins(p)
        }
        TYPE_REPLICA => Message::Replica(body(packet.body())?),
        _ => {
            let r: Report = body(packet.body())?;
            validate_report(&r)?;
            Message::Report(r)
        }
    };
    Ok((packet.lb_id(), msg, fresh))
}

fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| Error::BadBody(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::BadBody(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

fn bad(what: String) -> Error {
    Error::BadBody(what)
}

fn check_count(field: &str, len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        return Err(bad(format!(
            "{field} has {len} entries, at most {max} allowed"
        )));
    }
    Ok(())
}

fn check_text(field: &str, text: &str) -> Result<(), Error> {
    if text.len() > MAX_TEXT {
        return Err(bad(format!(
            "{field} is {} bytes long, at most {MAX_TEXT} allowed",
            text.len()
        )));
    }
    Ok(())
}

fn validate_announcement(a: &Announcement) -> Result<(), Error> {
    check_count("members", a.members.len(), MAX_MEMBERS)?;
    check_count("assignments", a.assignments.len(), MAX_ASSIGNMENTS)?;
    if a.pages == 0 || a.page >= a.pages {
        return Err(bad(format!("page {} of {} out of range", a.page, a.pages)));
    }
    for m in &a.members {
        check_text("member name", &m.name)?;
        if !m.weight.is_finite() || m.weight < 0.0 {
            return Err(bad(format!(
                "member {} weight {} is not a finite value >= 0",
                m.address, m.weight
            )));
        }
    }
    Ok(())
}

fn validate_report(r: &Report) -> Result<(), Error> {
    check_text("name", &r.name)?;
    check_text("software_version", &r.software_version)?;
    check_count("connections", r.connections.len(), MAX_PORTS)?;
    check_count("ports", r.ports.len(), MAX_PORTS)?;
    for p in &r.ports {
        check_text("port health reason", &p.reason)?;
    }
    if !r.capacity.is_finite() || r.capacity <= 0.0 {
        return Err(bad(format!(
            "capacity {} is not a finite value > 0",
            r.capacity
        )));
    }
    if !(0.0..=1.0).contains(&r.cpu_load) {
        return Err(bad(format!("cpu_load {} outside 0..=1", r.cpu_load)));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    const LB: u8 = 51;
    const KEY: &[u8] = b"group secret";

    fn announcement() -> Message {
        Message::Announcement(Announcement {
            director: Ipv4Addr::new(10, 77, 0, 11),
            epoch: 7,
            members: vec![
                Member {
                    address: Ipv4Addr::new(10, 77, 0, 11),
                    name: "n1".into(),
                    weight: 2.0,
                    state: MemberState::Active,
                },
                Member {
                    address: Ipv4Addr::new(10, 77, 0, 12),
                    name: "n2".into(),
                    weight: 0.5,
                    state: MemberState::Draining,
                },
            ],
            table_version: 300,
            page: 0,
            pages: 1,
            assignments: vec![Assignment {
                client: Ipv4Addr::new(10, 77, 1, 5),
                port: 9090,
                node: Ipv4Addr::new(10, 77, 0, 12),
                idle_ms: 1500,
            }],
        })
    }

    fn report() -> Message {
        Message::Report(Report {
            name: "n2".into(),
            address: Ipv4Addr::new(10, 77, 0, 12),
            capacity: 2.0,
            cpu_load: 0.25,
            cpu_count: 2,
            connections: vec![PortConns {
                port: 9090,
                established: 130,
            }],
            ports: vec![
                PortHealth {
                    port: 9090,
                    listening: true,
                    reason: String::new(),
                },
                PortHealth {
                    port: 2121,
                    listening: false,
                    reason: "bound".into(),
                },
            ],
            config_digest: [0x11; 32],
            group_config: "vip 10.77.0.100 vrid 51 lb_id 51 ports 9090 mode direct".into(),
            software_version: "0.1.0".into(),
            draining: false,
        })
    }

    /// `announcement()` encoded for lb_id 51 without MAC. Checked in so an accidental
    /// change of the wire format (field order, types, header) fails here.
    const ANNOUNCEMENT_HEX: &str = "\
        50584841 01 33 01 00 0037\
        0a4d000b 07 02\
        0a4d000b 026e31 0000000000000040 00\
        0a4d000c 026e32 000000000000e03f 01\
        ac02 00 01 01\
        0a4d0105 8247 0a4d000c dc0b";

    /// `report()` encoded for lb_id 51 with HMAC-SHA256 under `KEY` (last 32 bytes, checked
    /// against Python's `hmac.new(key, header_and_body, sha256)`).
    /// Ports and counts are postcard varints (9090 = `82 47`).
    const REPORT_MAC_HEX: &str = "\
        50584841 01 33 02 03 0086\
        026e32 0a4d000c 0000000000000040 0000803e 02\
        01 8247 8201\
        02 8247 01 00 c910 00 05626f756e64\
        1111111111111111111111111111111111111111111111111111111111111111\
        37 7669702031302e37372e302e3130302076726964203531206c625f696420353120706f7274732039303930206d6f646520646972656374\
        05302e312e30 00\
        0000000000000000 0000000000000000\
        c723e755c149e21911981bddc21aea59ef50362ff86a68abc7321daebd93ba76";

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn handover_messages_round_trip_with_and_without_mac() {
        for kind in [
            HandoverKind::Candidate { priority: 89 },
            HandoverKind::Request,
            HandoverKind::Done,
        ] {
            let m = Message::Handover(Handover {
                from: Ipv4Addr::new(10, 77, 0, 11),
                epoch: 3,
                kind,
            });
            for key in [None, Some(KEY)] {
                let bytes = encode(&m, LB, key).unwrap();
                assert_eq!(bytes[field::TYPE], TYPE_HANDOVER);
                assert_eq!(decode(&bytes, LB, key), Ok((LB, m.clone())));
            }
        }
    }

    #[test]
    fn announcement_golden_vector_round_trips() {
        let bytes = encode(&announcement(), LB, None).unwrap();
        assert_eq!(to_hex(&bytes), to_hex(&hex(ANNOUNCEMENT_HEX)));
        assert_eq!(decode(&bytes, LB, None), Ok((LB, announcement())));
    }

    #[test]
    fn report_golden_vector_with_mac_round_trips() {
        let bytes = encode(&report(), LB, Some(KEY)).unwrap();
        assert_eq!(to_hex(&bytes), to_hex(&hex(REPORT_MAC_HEX)));
        assert_eq!(decode(&bytes, LB, Some(KEY)), Ok((LB, report())));
    }

    #[test]
    fn deconstruct_header() {
        let bytes = encode(&report(), LB, Some(KEY)).unwrap();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.magic(), MAGIC);
        assert_eq!(p.version(), 1);
        assert_eq!(p.lb_id(), LB);
        assert_eq!(p.msg_type(), TYPE_REPORT);
        assert!(p.has_mac());
        assert!(p.has_fresh());
        assert_eq!(
            usize::from(p.body_len()),
            bytes.len() - HEADER_LEN - FRESH_LEN - MAC_LEN
        );
        assert_eq!(p.mac().len(), MAC_LEN);
        assert_eq!(p.freshness(), Some(Freshness::default()));
    }

    #[test]
    fn freshness_is_covered_by_the_mac_and_required_with_it() {
        let fresh = Freshness {
            boot: 0x0102_0304_0506_0708,
            seq: 42,
        };
        let bytes = encode_fresh(&report(), LB, Some(KEY), fresh).unwrap();
        assert_eq!(
            decode_fresh(&bytes, LB, Some(KEY)),
            Ok((LB, report(), Some(fresh)))
        );
        // A replayer cannot move a captured message forward in the stream.
        let seq_at = bytes.len() - MAC_LEN - 1;
        let mut later = bytes.clone();
        later[seq_at] = 43;
        assert_eq!(decode_fresh(&later, LB, Some(KEY)), Err(Error::BadMac));
        // Signed without the block (an older proxyha): refused, with its own error.
        let mut old = bytes[..bytes.len() - FRESH_LEN - MAC_LEN].to_vec();
        old[field::FLAGS] = FLAG_MAC;
        let tag = hmac(KEY).chain_update(&old).finalize().into_bytes();
        old.extend_from_slice(&tag);
        assert_eq!(decode_fresh(&old, LB, Some(KEY)), Err(Error::NoFreshness));
        // Without a key nothing is sent or required.
        let plain = encode_fresh(&report(), LB, None, fresh).unwrap();
        assert_eq!(decode_fresh(&plain, LB, None), Ok((LB, report(), None)));
    }

    #[test]
    fn hmac_on_off_and_wrong_key() {
        let plain = encode(&report(), LB, None).unwrap();
        let signed = encode(&report(), LB, Some(KEY)).unwrap();
        assert_eq!(signed.len(), plain.len() + FRESH_LEN + MAC_LEN);
        assert_eq!(signed[field::FLAGS], FLAG_MAC | FLAG_FRESH);
        assert_eq!(plain[field::FLAGS], 0);
        assert!(decode(&plain, LB, None).is_ok());
        assert!(decode(&signed, LB, Some(KEY)).is_ok());
        assert_eq!(decode(&signed, LB, Some(b"other")), Err(Error::BadMac));
        assert_eq!(decode(&plain, LB, Some(KEY)), Err(Error::MissingMac));
        assert_eq!(decode(&signed, LB, None), Err(Error::UnexpectedMac));
        // Tampering with any covered byte or the tag itself breaks the MAC.
        for at in [field::TYPE + 1, HEADER_LEN + 3, signed.len() - 1] {
            let mut t = signed.clone();
            t[at] ^= 0x40;
            assert_eq!(decode(&t, LB, Some(KEY)), Err(Error::BadMac), "byte {at}");
        }
        // Stripping the MAC and clearing the flag is caught too: the receiver wants one.
        let mut stripped = signed[..signed.len() - FRESH_LEN - MAC_LEN].to_vec();
        stripped[field::FLAGS] = 0;
        assert_eq!(decode(&stripped, LB, Some(KEY)), Err(Error::MissingMac));
    }

    #[test]
    fn other_group_is_reported_with_its_lb_id_before_any_mac_check() {
        let bytes = encode(&announcement(), 52, Some(b"their key")).unwrap();
        assert_eq!(decode(&bytes, LB, Some(KEY)), Err(Error::OtherGroup(52)));
        assert_eq!(decode(&bytes, LB, None), Err(Error::OtherGroup(52)));
    }

    #[test]
    fn each_header_malformation_has_its_own_error() {
        let good = encode(&announcement(), LB, None).unwrap();
        assert_eq!(decode(&[], LB, None), Err(Error::Truncated));
        assert_eq!(
            decode(&good[..HEADER_LEN - 1], LB, None),
            Err(Error::Truncated)
        );
        assert_eq!(
            decode(&good[..good.len() - 1], LB, None),
            Err(Error::Truncated)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long, LB, None), Err(Error::LengthMismatch));
        let mut magic = good.clone();
        magic[0] = b'Q';
        assert_eq!(decode(&magic, LB, None), Err(Error::BadMagic));
        let mut version = good.clone();
        version[field::VERSION] = 2;
        assert_eq!(
            decode(&version, LB, None),
            Err(Error::UnsupportedVersion(2))
        );
        let mut kind = good.clone();
        kind[field::TYPE] = 9;
        assert_eq!(decode(&kind, LB, None), Err(Error::UnknownType(9)));
        // An announcement's body under the handover type is not a handover.
        kind[field::TYPE] = TYPE_HANDOVER;
        assert!(matches!(decode(&kind, LB, None), Err(Error::BadBody(_))));
        // A MAC flag without the 32 bytes behind it is a short packet.
        let mut flagged = good.clone();
        flagged[field::FLAGS] = FLAG_MAC;
        assert_eq!(decode(&flagged, LB, Some(KEY)), Err(Error::Truncated));
        // Reserved flag bits are ignored.
        let mut reserved = good.clone();
        reserved[field::FLAGS] = 0x80;
        assert!(decode(&reserved, LB, None).is_ok());
    }

    fn with_body(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[VERSION, LB, msg_type, 0]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn is_bad_body(r: Result<(u8, Message), Error>) -> bool {
        matches!(r, Err(Error::BadBody(_)))
    }

    #[test]
    fn malformed_bodies_are_bad_body() {
        // Empty, garbage, trailing bytes, and a type/body mismatch.
        assert!(is_bad_body(decode(&with_body(TYPE_REPORT, &[]), LB, None)));
        assert!(is_bad_body(decode(
            &with_body(TYPE_REPORT, &[0xff; 40]),
            LB,
            None
        )));
        let good = encode(&report(), LB, None).unwrap();
        let mut trailing = good[HEADER_LEN..].to_vec();
        trailing.push(0);
        let err = decode(&with_body(TYPE_REPORT, &trailing), LB, None).unwrap_err();
        assert_eq!(err, Error::BadBody("1 trailing bytes".into()));
        assert!(is_bad_body(decode(
            &with_body(TYPE_ANNOUNCEMENT, &good[HEADER_LEN..]),
            LB,
            None
        )));
    }

    #[test]
    fn a_lying_list_length_neither_allocates_nor_panics() {
        // Director, epoch, then a member count of u32::MAX as a varint and nothing behind.
        let body = [10, 77, 0, 11, 7, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(is_bad_body(decode(
            &with_body(TYPE_ANNOUNCEMENT, &body),
            LB,
            None
        )));
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_field() {
        let Message::Report(mut r) = report() else {
            unreachable!()
        };
        r.cpu_load = 1.5;
        let bytes = encode(&Message::Report(r.clone()), LB, None).unwrap();
        let err = decode(&bytes, LB, None).unwrap_err().to_string();
        assert!(err.contains("cpu_load 1.5"), "{err}");
        r.cpu_load = f32::NAN;
        let bytes = encode(&Message::Report(r.clone()), LB, None).unwrap();
        assert!(is_bad_body(decode(&bytes, LB, None)));
        r.cpu_load = 0.5;
        r.capacity = 0.0;
        let bytes = encode(&Message::Report(r.clone()), LB, None).unwrap();
        assert!(
            decode(&bytes, LB, None)
                .unwrap_err()
                .to_string()
                .contains("capacity")
        );
        r.capacity = 1.0;
        r.ports = vec![r.ports[0].clone(); MAX_PORTS + 1];
        let bytes = encode(&Message::Report(r), LB, None).unwrap();
        assert!(
            decode(&bytes, LB, None)
                .unwrap_err()
                .to_string()
                .contains("ports has 65")
        );

        let Message::Announcement(mut a) = announcement() else {
            unreachable!()
        };
        a.page = 1;
        let bytes = encode(&Message::Announcement(a.clone()), LB, None).unwrap();
        assert!(
            decode(&bytes, LB, None)
                .unwrap_err()
                .to_string()
                .contains("page 1 of 1")
        );
        a.page = 0;
        a.members[0].weight = f64::INFINITY;
        let bytes = encode(&Message::Announcement(a.clone()), LB, None).unwrap();
        assert!(
            decode(&bytes, LB, None)
                .unwrap_err()
                .to_string()
                .contains("weight")
        );
        a.members = vec![a.members[1].clone(); MAX_MEMBERS + 1];
        let bytes = encode(&Message::Announcement(a), LB, None).unwrap();
        assert!(
            decode(&bytes, LB, None)
                .unwrap_err()
                .to_string()
                .contains("members has 65")
        );
    }

    #[test]
    fn a_full_assignment_page_fits_one_datagram_and_more_does_not_encode() {
        let Message::Announcement(mut a) = announcement() else {
            unreachable!()
        };
        let pin = Assignment {
            client: Ipv4Addr::new(255, 255, 255, 255),
            port: u16::MAX,
            node: Ipv4Addr::new(255, 255, 255, 255),
            idle_ms: u32::MAX,
        };
        a.assignments = vec![pin; MAX_ASSIGNMENTS];
        let bytes = encode(&Message::Announcement(a.clone()), LB, Some(KEY)).unwrap();
        assert!(bytes.len() + 20 <= 65535);
        assert!(decode(&bytes, LB, Some(KEY)).is_ok());
        a.assignments = vec![pin; 4500];
        assert!(matches!(
            encode(&Message::Announcement(a), LB, None),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn errors_read_as_lowercase_sentences_naming_the_fix() {
        for e in [Error::BadMac, Error::MissingMac, Error::UnexpectedMac] {
            let s = e.to_string();
            assert!(
                s.starts_with(char::is_lowercase) && s.contains("key"),
                "{s}"
            );
        }
    }

    #[test]
    fn pins_and_replica_round_trip_and_a_full_message_stays_one_unfragmented_datagram() {
        let worst = Assignment {
            client: Ipv4Addr::new(255, 255, 255, 255),
            port: u16::MAX,
            node: Ipv4Addr::new(255, 255, 255, 255),
            idle_ms: u32::MAX,
        };
        let p = Pins {
            director: Ipv4Addr::new(10, 0, 0, 1),
            epoch: u64::MAX,
            kind: PinsKind::Full {
                cycle: u32::MAX,
                page: u32::MAX - 1,
                pages: u32::MAX,
                age_ms: u32::MAX,
            },
            pins: vec![worst; MAX_PINS],
            removed: vec![],
        };
        let bytes = encode(&Message::Pins(p.clone()), LB, Some(KEY)).unwrap();
        // IP header 20 + this ≤ 1500: never fragmented on an Ethernet link.
        assert!(bytes.len() + 20 <= 1500, "{} bytes", bytes.len());
        assert_eq!(
            decode(&bytes, LB, Some(KEY)).unwrap(),
            (LB, Message::Pins(p.clone()))
        );
        let r = Replica {
            from: Ipv4Addr::new(10, 0, 0, 2),
            epoch: 7,
            pins: 100_000,
            full_cycle: 3,
            delta_seq: 42,
        };
        let bytes = encode(&Message::Replica(r), LB, None).unwrap();
        assert_eq!(decode(&bytes, LB, None).unwrap(), (LB, Message::Replica(r)));
        // more than MAX_PINS, or a page out of range, is refused
        let mut over = p.clone();
        over.removed = vec![
            PinKey {
                client: worst.client,
                port: 1
            };
            1
        ];
        let bytes = encode(&Message::Pins(over), LB, None).unwrap();
        assert!(matches!(decode(&bytes, LB, None), Err(Error::BadBody(_))));
        let mut bad_page = p;
        bad_page.pins.clear();
        bad_page.kind = PinsKind::Full {
            cycle: 1,
            page: 2,
            pages: 2,
            age_ms: 0,
        };
        let bytes = encode(&Message::Pins(bad_page), LB, None).unwrap();
        assert!(matches!(decode(&bytes, LB, None), Err(Error::BadBody(_))));
    }
}
