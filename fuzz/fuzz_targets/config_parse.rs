//! Untrusted configuration text (a first-boot file, an edit on the console) through the
//! parser: nothing may panic, every error must carry a line and column inside the text, a
//! file that parses renders every key `config get` offers, and parsing is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxyha::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(c) => {
            // Every value `config get` offers renders without panicking.
            for key in proxyha::config::GET_KEYS {
                let _ = c.get(key);
            }
            // Parsing is a function of the text.
            assert_eq!(Config::parse(text, "fuzz.toml").ok(), Some(c));
        }
        Err(e) => {
            let lines = text.split('\n').count();
            for d in e.diagnostics() {
                assert!(d.line >= 1 && d.line <= lines, "line {} of {lines}: {}", d.line, d.message);
                assert!(d.column >= 1, "column {}: {}", d.column, d.message);
                assert!(!d.message.is_empty());
            }
            assert!(!e.to_string().is_empty());
        }
    }
});
