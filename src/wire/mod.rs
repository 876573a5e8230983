//! Wire codecs (smoltcp style): a checked `Packet` view over a buffer and a `Repr`
//! holding only valid states. No I/O, no clock; untrusted input only via `new_checked`.
pub mod arp;
pub mod ipv4;
pub mod membership;
pub mod vrrp;
