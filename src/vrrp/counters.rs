//! Named counters, shown by `proxyha status` under the names the contract fixes.

/// Defines the struct and its iteration order from one list, so a counter can never be
/// added to the struct and forgotten in `status`.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Event counters of one router. Plain data: the shell reads them, only the
        /// core writes them.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Every counter name, in the order [`Counters::iter`] yields them.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// All counters, zeros included, in a stable order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name)),*].into_iter()
            }

            /// One counter by name, `None` for an unknown name.
            pub fn get(&self, name: &str) -> Option<u64> {
                self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
            }
        }
    };
}

counters! {
    /// Valid adverts for our VRID from another router.
    rx_adverts,
    /// Adverts we emitted (priority 0 included).
    tx_adverts,
    /// Valid adverts with priority 0 (a master resigning).
    rx_priority_zero,
    /// Priority-0 adverts we emitted on shutdown.
    tx_priority_zero,
    /// Transitions into Master.
    became_master,
    /// IPv4 header unreadable, or protocol is not 112.
    discard_ip_header,
    /// TTL is not 255 (the packet crossed a router, RFC 9568 §7.1); multicast mode only.
    discard_ttl,
    /// From a sender that is neither a unicast peer nor in `ha.vrrp_sources`.
    discard_source,
    /// VRRP version is not the configured one.
    discard_version,
    /// Message type is not ADVERTISEMENT.
    discard_type,
    /// Neither checksum form verifies.
    discard_checksum,
    /// Shorter or longer than its address count says.
    discard_length,
    /// VRID is not ours.
    discard_vrid,
    /// Zero interval, or (v2) an interval other than ours.
    discard_interval,
    /// Count IPvX Addr of zero.
    discard_no_addresses,
    /// VRRPv2 authentication type other than 0.
    discard_auth,
    /// Our own advert looped back.
    discard_own,
    /// Address list differs from our VIPs (counted, logged, still processed).
    vip_mismatch,
}
