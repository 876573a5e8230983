//! Untrusted control-socket lines (anyone in the socket's group can connect) through the
//! request decoder: nothing may panic, and what decodes encodes back to a line that decodes
//! to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxyha::status::{Request, decode_line, encode_line};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_line::<Request>(data) {
        let line = encode_line(&req);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Request = decode_line(&line).expect("re-decodes");
        assert_eq!(back, req);
    }
});
