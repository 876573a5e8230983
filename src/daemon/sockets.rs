//! The two sockets VRRP needs: a raw IP protocol-112 socket for adverts and an
//! AF_PACKET socket for gratuitous ARP frames.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU32;

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use crate::wire::{arp, membership, vrrp};

/// Raw IPv4 socket for IP protocol 112 on one interface.
///
/// Held as a tokio `UdpSocket`: tokio only registers the descriptor and issues plain
/// `recv`/`sendto` calls, which are the same for a raw socket, and this avoids an
/// unsafe `AsyncFd` registration.
pub struct VrrpSocket {
    sock: tokio::net::UdpSocket,
    ifindex: u32,
    /// Joined to 224.0.0.18 (multicast mode); unicast mode never joins it.
    joined: bool,
}

impl VrrpSocket {
    /// Opens the socket as RFC 9568 §5.1.1 wants it: bound to the HA interface, TTL 255,
    /// sourced from `primary`, and without multicast loopback (a router must not hear
    /// itself; the core drops its own adverts anyway). `multicast`: joined to 224.0.0.18
    /// there; otherwise (unicast peers) only adverts sent to this host arrive.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        primary: Ipv4Addr,
        multicast: bool,
    ) -> io::Result<VrrpSocket> {
        let ctx = context(ifname);
        let sock = raw_socket_on(ifname, vrrp::PROTOCOL)?;
        NonZeroU32::new(ifindex)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "interface index 0"))?;
        // Only deliver groups this socket joined, not those of every socket on the host.
        sock.set_multicast_all_v4(false)
            .map_err(ctx("setting IP_MULTICAST_ALL"))?;
        sock.set_multicast_if_v4(&primary)
            .map_err(ctx("setting the multicast source address"))?;
        sock.set_multicast_ttl_v4(u32::from(vrrp::TTL))
            .map_err(ctx("setting TTL 255"))?;
        sock.set_ttl_v4(u32::from(vrrp::TTL))
            .map_err(ctx("setting TTL 255"))?;
        sock.set_multicast_loop_v4(false)
            .map_err(ctx("disabling multicast loop"))?;
        // Internetwork control precedence, as keepalived and routers mark VRRP.
        sock.set_tos_v4(0xc0).map_err(ctx("setting TOS"))?;
        sock.set_nonblocking(true)
            .map_err(ctx("setting non-blocking mode"))?;
        let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
        let mut vrrp = VrrpSocket {
            sock,
            ifindex,
            joined: false,
        };
        vrrp.set_multicast(multicast)
            .map_err(ctx("joining 224.0.0.18"))?;
        Ok(vrrp)
    }

    /// Joins or leaves 224.0.0.18 (a reload between multicast and unicast peers).
    pub fn set_multicast(&mut self, on: bool) -> io::Result<()> {
        if on == self.joined {
            return Ok(());
        }
        let sock = socket2::SockRef::from(&self.sock);
        let iface = socket2::InterfaceIndexOrAddress::Index(self.ifindex);
        if on {
            sock.join_multicast_v4_n(&vrrp::MULTICAST_GROUP, &iface)?;
        } else {
            sock.leave_multicast_v4_n(&vrrp::MULTICAST_GROUP, &iface)?;
        }
        self.joined = on;
        Ok(())
    }

    /// Waits for a datagram (IPv4 header included, as raw sockets deliver it).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf).await
    }

    /// Reads a datagram if one is queued, without waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.sock.try_recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one VRRP message to `to` (224.0.0.18 or a unicast peer); the kernel writes
    /// the IP header.
    pub fn send(&self, to: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        self.sock
            .try_send_to(payload, SocketAddr::V4(SocketAddrV4::new(to, 0)))
            .map(|_| ())
    }
}

/// Send-only AF_PACKET socket for gratuitous ARP. Protocol 0: it receives nothing.
pub struct GarpSocket {
    sock: Socket,
    dest: SockAddr,
}

impl GarpSocket {
    pub fn open(ifindex: u32) -> io::Result<GarpSocket> {
        let sock = Socket::new(Domain::PACKET, Type::RAW, None).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening AF_PACKET socket for gratuitous ARP: {e}"),
            )
        })?;
        sock.set_nonblocking(true)?;
        Ok(GarpSocket {
            sock,
            dest: link_layer_broadcast(ifindex),
        })
    }

    /// Sends `count` announcements of `vip` at `mac`, back to back as keepalived does.
    pub fn announce(&self, mac: [u8; 6], vip: Ipv4Addr, count: usize) -> io::Result<()> {
        let frame = arp::gratuitous(mac, vip);
        for _ in 0..count {
            self.sock.send_to(&frame, &self.dest)?;
        }
        Ok(())
    }
}

impl GarpSocket {
    /// Sends one whole Ethernet frame (an ARP probe of the gateway) to the broadcast address.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        self.sock.send_to(frame, &self.dest).map(|_| ())
    }
}

/// Receive-only AF_PACKET datagram socket for ARP on one interface (`[ha.track] gateway`):
/// delivers the ARP packet without its Ethernet header. Held as a tokio `UdpSocket` like
/// [`VrrpSocket`] (plain `recv` calls).
pub struct ArpSocket {
    sock: tokio::net::UdpSocket,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let protocol = Protocol::from(i32::from(arp::ETHERTYPE_ARP.to_be()));
        let sock = Socket::new(Domain::PACKET, Type::DGRAM, Some(protocol)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening AF_PACKET socket for ARP replies: {e}"),
            )
        })?;
        // Bound to the interface: sll_protocol ARP and the index, the address is ignored.
        sock.bind(&link_layer_broadcast(ifindex))?;
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
        Ok(ArpSocket { sock })
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf).await
    }
}

/// `sockaddr_ll` for the Ethernet broadcast address on `ifindex`.
fn link_layer_broadcast(ifindex: u32) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: SockAddrStorage is a sockaddr_storage, which is larger than and suitably
    // aligned for sockaddr_ll; we write only within that struct's size.
    #[allow(unsafe_code)]
    let ll = unsafe { &mut *(&mut storage as *mut SockAddrStorage).cast::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = (arp::ETHERTYPE_ARP).to_be();
    ll.sll_ifindex = ifindex as libc::c_int;
    ll.sll_halen = 6;
    ll.sll_addr[..6].fill(0xff);
    // SAFETY: `storage` holds an initialised sockaddr_ll of length `len`.
    #[allow(unsafe_code)]
    unsafe {
        SockAddr::new(storage, len)
    }
}

/// Receive and send buffer of the membership socket.
const BUFFER: usize = 4 << 20;

/// Raw IPv4 socket for IP protocol 253 (membership) on the HA interface: announcements to
/// 255.255.255.255 and unicast reports. Held as a tokio `UdpSocket` like [`VrrpSocket`].
pub struct MembershipSocket {
    sock: tokio::net::UdpSocket,
}

impl MembershipSocket {
    pub fn open(ifname: &str) -> io::Result<MembershipSocket> {
        let ctx = context(ifname);
        // Bound to the HA interface: the limited broadcast leaves through it, and we only
        // hear our own group's LAN.
        let sock = raw_socket_on(ifname, membership::PROTOCOL)?;
        sock.set_broadcast(true)
            .map_err(ctx("setting SO_BROADCAST"))?;
        sock.set_nonblocking(true)
            .map_err(ctx("setting non-blocking mode"))?;
        // Pins come in bursts (a catch-up cycle, a flood of new clients): buffers for a few
        // thousand messages each way, beyond the sysctl maximum when root.
        // The forced size only where it is refused: setting the plain size afterwards would
        // cap it at the sysctl maximum again.
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&sock, sockopt::RcvBufForce, &BUFFER).is_err()
            && let Err(e) = sock.set_recv_buffer_size(BUFFER)
        {
            log::debug!("membership socket receive buffer on {ifname}: {e}");
        }
        if setsockopt(&sock, sockopt::SndBufForce, &BUFFER).is_err()
            && let Err(e) = sock.set_send_buffer_size(BUFFER)
        {
            log::debug!("membership socket send buffer on {ifname}: {e}");
        }
        let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
        Ok(MembershipSocket { sock })
    }

    /// Waits for a datagram (IPv4 header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf).await
    }

    /// Sends one membership message to `dst`; the kernel writes the IP header.
    pub fn send(&self, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        self.sock
            .try_send_to(payload, SocketAddr::V4(SocketAddrV4::new(dst, 0)))
            .map(|_| ())
    }
}

/// Wraps an I/O error with what we were doing and on which interface.
fn context(ifname: &str) -> impl Fn(&str) -> Box<dyn FnOnce(io::Error) -> io::Error> + '_ {
    move |what: &str| {
        let what = format!("{what} on {ifname}");
        Box::new(move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// A raw IPv4 socket for `protocol`, bound to the interface (receives its traffic only).
fn raw_socket_on(ifname: &str, protocol: u8) -> io::Result<Socket> {
    let ctx = context(ifname);
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol))),
    )
    .map_err(ctx(&format!(
        "opening raw IP protocol {protocol} socket (needs root or CAP_NET_RAW)"
    )))?;
    sock.bind_device(Some(ifname.as_bytes()))
        .map_err(ctx(&format!("binding the IP protocol {protocol} socket")))?;
    Ok(sock)
}
