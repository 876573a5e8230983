//! The nf_tables netlink messages the sticky maps need, and nothing more: a dump of a map's
//! elements (`NFT_MSG_GETSETELEM`) and batched adds and deletes (`NFT_MSG_NEWSETELEM`,
//! `NFT_MSG_DELSETELEM` between `NFNL_MSG_BATCH_BEGIN` and `_END`). Pure functions from and
//! to bytes; [`super::nfsock`] sends and receives them.
//!
//! No crate fits: rustables is GPL-3.0, nftnl-rs handles plain IP sets only; both carry a
//! whole nftables object model we do not need. Parsing goes through netlink-packet-core's
//! bounds-checked [`NetlinkBuffer`] and [`NlasIterator`] (the crates under rtnetlink); the
//! few attributes we write are emitted here.
//!
//! Elements of `type ipv4_addr . inet_service : mark`: the key is the concatenation with each
//! field padded to 4 bytes (address in network order, port in network order, two zero bytes),
//! the data the mark in host order (a `meta mark` register), timeout and expiration u64 ms in
//! network order.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};

use super::sticky::StickyEntry;

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFPROTO_IPV4: u8 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// One element on the wire: 56 bytes (list element, key, data, timeout, expiration).
pub const ELEM_BYTES: usize = 56;
/// Elements per NEWSETELEM/DELSETELEM message: the element list is one attribute, whose
/// length is a u16.
pub const ELEMS_PER_MSG: usize = 1000;

/// The (client, port) key of a pin, as the kernel stores it.
pub fn key_bytes(client: Ipv4Addr, port: u16) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&client.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k
}

/// Appends one attribute; `value` is padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Starts a nested attribute; [`end_nest`] fills its length in.
fn begin_nest(out: &mut Vec<u8>, kind: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Starts a netlink message with its nfgenmsg header; [`end_msg`] fills the length in.
fn begin_msg(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    at
}

fn end_msg(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn set_names(out: &mut Vec<u8>, table: &str, set: &str) {
    let mut t = table.as_bytes().to_vec();
    t.push(0);
    attr(out, NFTA_SET_ELEM_LIST_TABLE, &t);
    let mut s = set.as_bytes().to_vec();
    s.push(0);
    attr(out, NFTA_SET_ELEM_LIST_SET, &s);
}

/// The dump request for every element of `ip TABLE SET`.
pub fn dump_request(table: &str, set: &str, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let m = begin_msg(
        &mut out,
        nft_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_IPV4,
        0,
    );
    set_names(&mut out, table, set);
    end_msg(&mut out, m);
    out
}

/// One request per key for the elements of `ip TABLE SET` with these keys (a key per
/// message: the kernel stops a multi-element get at the first missing one). Each is answered
/// with the element or an error (ENOENT: gone). Returns the bytes and the next sequence
/// number; request `i` has sequence number `seq + i`.
pub fn get_requests(table: &str, set: &str, keys: &[(Ipv4Addr, u16)], seq: u32) -> (Vec<u8>, u32) {
    let mut out = Vec::with_capacity(keys.len() * 64);
    let mut seq = seq;
    for (client, port) in keys {
        let m = begin_msg(
            &mut out,
            nft_type(NFT_MSG_GETSETELEM),
            NLM_F_REQUEST,
            seq,
            NFPROTO_IPV4,
            0,
        );
        seq = seq.wrapping_add(1);
        set_names(&mut out, table, set);
        let list = begin_nest(&mut out, NFTA_SET_ELEM_LIST_ELEMENTS);
        let e = begin_nest(&mut out, NFTA_LIST_ELEM);
        let k = begin_nest(&mut out, NFTA_SET_ELEM_KEY);
        attr(&mut out, NFTA_DATA_VALUE, &key_bytes(*client, *port));
        end_nest(&mut out, k);
        end_nest(&mut out, e);
        end_nest(&mut out, list);
        end_msg(&mut out, m);
    }
    (out, seq)
}

/// What to change in a map, one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add elements (an existing key with the same mark is left alone, its expiry too).
    Add { timeout_ms: u64 },
    /// Delete elements by key (a missing key fails the whole transaction: use only for keys
    /// known to be there, or one batch per key set that may have expired).
    Delete,
}

/// One batch (one nf_tables transaction) adding or deleting `pins` in `ip TABLE SET`, in
/// messages of at most [`ELEMS_PER_MSG`] elements with sequence numbers from `seq`, each
/// acknowledged. Returns the bytes and the sequence numbers used (begin..end, exclusive).
pub fn batch(table: &str, set: &str, op: Op, pins: &[StickyEntry], seq: u32) -> (Vec<u8>, u32) {
    let mut out =
        Vec::with_capacity(64 + pins.len() * ELEM_BYTES + pins.len() / ELEMS_PER_MSG * 64);
    let mut seq = seq;
    let b = begin_msg(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    end_msg(&mut out, b);
    seq = seq.wrapping_add(1);
    for chunk in pins.chunks(ELEMS_PER_MSG) {
        let (kind, flags) = match op {
            Op::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
            Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        let m = begin_msg(&mut out, nft_type(kind), flags, seq, NFPROTO_IPV4, 0);
        seq = seq.wrapping_add(1);
        set_names(&mut out, table, set);
        let list = begin_nest(&mut out, NFTA_SET_ELEM_LIST_ELEMENTS);
        for p in chunk {
            let e = begin_nest(&mut out, NFTA_LIST_ELEM);
            let k = begin_nest(&mut out, NFTA_SET_ELEM_KEY);
            attr(&mut out, NFTA_DATA_VALUE, &key_bytes(p.client, p.port));
            end_nest(&mut out, k);
            if let Op::Add { timeout_ms } = op {
                let d = begin_nest(&mut out, NFTA_SET_ELEM_DATA);
                attr(&mut out, NFTA_DATA_VALUE, &p.mark.to_ne_bytes());
                end_nest(&mut out, d);
                attr(&mut out, NFTA_SET_ELEM_TIMEOUT, &timeout_ms.to_be_bytes());
                let left = p.expires_ms.clamp(1, timeout_ms.max(1));
                attr(&mut out, NFTA_SET_ELEM_EXPIRATION, &left.to_be_bytes());
            }
            end_nest(&mut out, e);
        }
        end_nest(&mut out, list);
        end_msg(&mut out, m);
    }
    let e = begin_msg(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    end_msg(&mut out, e);
    (out, seq.wrapping_add(1))
}

/// What one received datagram said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Sequence numbers acknowledged with success.
    pub acked: Vec<u32>,
    /// (sequence number, errno) of failed requests.
    pub errors: Vec<(u32, i32)>,
    /// The dump (or this request) is complete.
    pub done: bool,
    /// The set changed while it was dumped (NLM_F_DUMP_INTR): the dump may miss elements.
    pub interrupted: bool,
}

/// Parses one datagram from the kernel, appending dumped elements to `pins`. Elements that
/// do not have the expected shape are skipped (counted in the return value's `skipped`);
/// a datagram that is not netlink at all is an error.
pub fn parse(bytes: &[u8], pins: &mut Vec<StickyEntry>) -> Result<(Reply, usize), String> {
    let mut reply = Reply::default();
    let mut skipped = 0;
    let mut rest = bytes;
    while rest.len() >= 16 {
        let msg = NetlinkBuffer::new_checked(rest).map_err(|e| format!("netlink message: {e}"))?;
        let len = (msg.length() as usize).next_multiple_of(4).min(rest.len());
        let flags = msg.flags();
        let seq = msg.sequence_number();
        let payload = msg.payload();
        if flags & netlink_packet_core::NLM_F_DUMP_INTR != 0 {
            reply.interrupted = true;
        }
        match msg.message_type() {
            NLMSG_DONE => reply.done = true,
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or("netlink error message without a code")?;
                if code == 0 {
                    reply.acked.push(seq);
                } else {
                    reply.errors.push((seq, -code));
                }
            }
            t if t == nft_type(NFT_MSG_NEWSETELEM) => {
                skipped += parse_elements(payload.get(4..).unwrap_or_default(), pins);
            }
            _ => {}
        }
        rest = &rest[len..];
        if len == 0 {
            break;
        }
    }
    Ok((reply, skipped))
}

/// The elements of one NEWSETELEM (dump) message body after its nfgenmsg; returns how many
/// were skipped.
fn parse_elements(body: &[u8], pins: &mut Vec<StickyEntry>) -> usize {
    let mut skipped = 0;
    for nla in NlasIterator::new(body).flatten() {
        if nla.kind() & !NLA_F_NESTED != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in NlasIterator::new(value_of(nla)).flatten() {
            if elem.kind() & !NLA_F_NESTED != NFTA_LIST_ELEM {
                continue;
            }
            match parse_element(value_of(elem)) {
                Some(p) => pins.push(p),
                None => skipped += 1,
            }
        }
    }
    skipped
}

/// The value of an attribute, borrowed from the datagram (not from the parser).
fn value_of(nla: NlaBuffer<&[u8]>) -> &[u8] {
    let len = nla.length() as usize;
    let inner = nla.into_inner();
    inner.get(4..len).unwrap_or_default()
}

fn data_value(nested: &[u8]) -> Option<&[u8]> {
    NlasIterator::new(nested)
        .flatten()
        .find(|a| a.kind() & !NLA_F_NESTED == NFTA_DATA_VALUE)
        .map(value_of)
}

fn parse_element(body: &[u8]) -> Option<StickyEntry> {
    let (mut key, mut mark, mut expires_ms) = (None, None, None);
    for a in NlasIterator::new(body).flatten() {
        let kind = a.kind() & !NLA_F_NESTED;
        let v = value_of(a);
        match kind {
            NFTA_SET_ELEM_KEY => key = data_value(v),
            NFTA_SET_ELEM_DATA => {
                mark = data_value(v)
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_ne_bytes)
            }
            NFTA_SET_ELEM_EXPIRATION => {
                expires_ms = <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
            }
            _ => {}
        }
    }
    let key = key?;
    if key.len() != 8 {
        return None;
    }
    Some(StickyEntry {
        client: Ipv4Addr::new(key[0], key[1], key[2], key[3]),
        port: u16::from_be_bytes([key[4], key[5]]),
        mark: mark?,
        expires_ms: expires_ms.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(last: u8, port: u16, mark: u32, expires_ms: u64) -> StickyEntry {
        StickyEntry {
            client: Ipv4Addr::new(10, 88, 1, last),
            port,
            mark,
            expires_ms,
        }
    }

    /// The kernel's dump of what a batch adds, built from the batch's own element list: a
    /// NEWSETELEM message as the kernel sends it (flags multipart), then NLMSG_DONE.
    fn as_dump(batch_bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = batch_bytes;
        while rest.len() >= 16 {
            let msg = NetlinkBuffer::new_checked(rest).unwrap();
            let len = msg.length() as usize;
            if msg.message_type() == nft_type(NFT_MSG_NEWSETELEM) {
                let m = begin_msg(&mut out, msg.message_type(), 2, 7, NFPROTO_IPV4, 0);
                out.extend_from_slice(&msg.payload()[4..]);
                end_msg(&mut out, m);
            }
            rest = &rest[len..];
        }
        let d = begin_msg(&mut out, NLMSG_DONE, 2, 7, 0, 0);
        end_msg(&mut out, d);
        out
    }

    #[test]
    fn a_batch_frames_its_messages_and_round_trips_through_a_dump() {
        let pins: Vec<StickyEntry> = (0..2500u32)
            .map(|i| {
                pin(
                    (i % 250) as u8,
                    9000 + (i / 250) as u16,
                    0x0a58_0002 + i % 3,
                    120_000,
                )
            })
            .collect();
        let (bytes, next) = batch(
            "proxyha",
            "sticky",
            Op::Add {
                timeout_ms: 300_000,
            },
            &pins,
            100,
        );
        // begin, three element messages (1000, 1000, 500), end
        assert_eq!(next, 105);
        let mut kinds = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let msg = NetlinkBuffer::new_checked(rest).unwrap();
            assert_eq!(msg.length() as usize % 4, 0);
            kinds.push((msg.message_type(), msg.sequence_number()));
            rest = &rest[msg.length() as usize..];
        }
        let new = nft_type(NFT_MSG_NEWSETELEM);
        assert_eq!(
            kinds,
            [(16, 100), (new, 101), (new, 102), (new, 103), (17, 104)]
        );
        // the batch messages carry res_id = NFNL_SUBSYS_NFTABLES in network order
        assert_eq!(&bytes[18..20], &10u16.to_be_bytes());
        let mut back = Vec::new();
        let (reply, skipped) = parse(&as_dump(&bytes), &mut back).unwrap();
        assert!(reply.done && skipped == 0);
        assert_eq!(back, pins);
    }

    #[test]
    fn key_layout_is_the_kernels_concatenation() {
        assert_eq!(
            key_bytes(Ipv4Addr::new(10, 88, 1, 5), 9090),
            [10, 88, 1, 5, 0x23, 0x82, 0, 0]
        );
        // a delete carries keys only: no data, timeout or expiration (read back as a dump,
        // such an element is skipped)
        let (mut bytes, _) = batch("t", "s", Op::Delete, &[pin(5, 9090, 1, 1)], 1);
        let del = nft_type(NFT_MSG_DELSETELEM).to_ne_bytes();
        let at = 20 + 4; // after the batch-begin message, the type of the first message
        assert_eq!(&bytes[at..at + 2], &del);
        bytes[at..at + 2].copy_from_slice(&nft_type(NFT_MSG_NEWSETELEM).to_ne_bytes());
        let mut back = Vec::new();
        let (_, skipped) = parse(&as_dump(&bytes), &mut back).unwrap();
        assert_eq!((back.len(), skipped), (0, 1));
    }

    #[test]
    fn acks_errors_and_malformed_input() {
        let mut out = Vec::new();
        for (seq, code) in [(5u32, 0i32), (6, -17)] {
            let m = begin_msg(&mut out, NLMSG_ERROR, 0, seq, 0, 0);
            out.truncate(out.len() - 4); // an error message has no nfgenmsg
            out.extend_from_slice(&code.to_ne_bytes());
            out.extend_from_slice(&[0; 16]); // the original header
            end_msg(&mut out, m);
        }
        let mut pins = Vec::new();
        let (reply, _) = parse(&out, &mut pins).unwrap();
        assert_eq!(reply.acked, [5]);
        assert_eq!(reply.errors, [(6, 17)]);
        // a length beyond the datagram is an error, not a panic; garbage inside an element
        // list is skipped
        let mut bad = out.clone();
        bad[0] = 0xff;
        bad[1] = 0xff;
        assert!(parse(&bad, &mut pins).is_err());
        for cut in 0..out.len() {
            let _ = parse(&out[..cut], &mut pins);
        }
        let (bytes, _) = batch(
            "t",
            "s",
            Op::Add { timeout_ms: 1000 },
            &[pin(1, 80, 2, 500)],
            1,
        );
        let mut dump = as_dump(&bytes);
        for i in 40..dump.len() - 20 {
            dump[i] ^= 0x5a;
            let _ = parse(&dump, &mut pins);
            dump[i] ^= 0x5a;
        }
    }
}
