//! Untrusted protocol-253 payloads through the membership codec: nothing may panic or
//! allocate without bound, and whatever decodes must encode back to bytes that decode to
//! the same message (with and without a key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxyha::wire::membership::{Error, decode, encode};

const KEY: &[u8] = b"fuzz key";

fuzz_target!(|data: &[u8]| {
    // The lb_id in the datagram itself, so the fuzzer reaches the body without guessing it.
    let lb_id = data.get(5).copied().unwrap_or(51);
    for key in [None, Some(KEY)] {
        match decode(data, lb_id, key) {
            Ok((id, msg)) => {
                assert_eq!(id, lb_id);
                for again_key in [None, Some(KEY)] {
                    let bytes = encode(&msg, lb_id, again_key).expect("decoded body fits");
                    let (_, back) = decode(&bytes, lb_id, again_key).expect("re-decodes");
                    // NaN never decodes (validated), so PartialEq is reflexive here.
                    assert_eq!(back, msg);
                }
            }
            Err(Error::TooLarge(_)) => panic!("decode never reports TooLarge"),
            Err(_) => {}
        }
    }
});
