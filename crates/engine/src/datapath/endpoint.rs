//! The data socket: binding with large kernel buffers, batched I/O through quinn-udp
//! (recvmmsg/GRO in, GSO out), and the receive task that demultiplexes datagrams to sessions.
//!
//! Routing: DATA and CLOSE packets go to the *receiving* session registered under the header's
//! session id, ACK packets to the *sending* session. Keying by role lets one endpoint send to
//! itself (both ends of a transfer share one session id and one socket).

use super::lock;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use slipstream_proto::{Header, PacketType};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Kernel socket buffer size asked for, each direction.
const SOCKET_BUFFER: usize = 32 << 20;
/// One receive slot: the largest UDP payload, so a GRO batch of up to 64 segments fits.
const SLOT_LEN: usize = 65_536;
/// Largest GSO send (all segments together), under the 64 KiB UDP/IP length limit.
const MAX_GSO_BYTES: usize = 65_000;
/// Datagram bytes waiting for one session, at most; beyond it the demultiplexer drops (like a
/// full socket buffer), so a stalled session cannot make the endpoint's memory grow.
const INBOUND_BYTES: usize = 32 << 20;
/// A session id handed out by `allocate_session_id` stays reserved this long at most.
const RESERVATION: Duration = Duration::from_secs(600);

/// Datagrams of one receive call for one session: one buffer, several datagrams in it.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    pub buf: Vec<u8>,
    pub items: Vec<InboundItem>,
}

/// One datagram of an [`Inbound`] batch.
#[derive(Debug, Clone)]
pub(crate) struct InboundItem {
    /// Where it lies in `Inbound::buf`.
    pub range: Range<usize>,
    /// Its source address.
    pub from: SocketAddr,
    /// The local address it was sent to (to answer from the same address).
    pub local_ip: Option<IpAddr>,
}

/// The demultiplexer's end of a session's inbound queue.
#[derive(Clone)]
pub(crate) struct InboundTx {
    tx: mpsc::UnboundedSender<Inbound>,
    queued: Arc<AtomicUsize>,
}

impl InboundTx {
    /// Queues a batch unless the session's queue is full or gone.
    fn offer(&self, batch: Inbound) -> bool {
        let len = batch.buf.len();
        if self.queued.load(Ordering::Relaxed) + len > INBOUND_BYTES {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A session's end of its inbound queue.
pub(crate) struct InboundRx {
    rx: mpsc::UnboundedReceiver<Inbound>,
    queued: Arc<AtomicUsize>,
}

impl InboundRx {
    /// The next batch (cancel safe: nothing happens after the only await).
    pub async fn recv(&mut self) -> Option<Inbound> {
        let batch = self.rx.recv().await?;
        self.queued.fetch_sub(batch.buf.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        let batch = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(batch.buf.len(), Ordering::Relaxed);
        Some(batch)
    }
}

fn inbound_queue() -> (InboundTx, InboundRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        InboundTx {
            tx,
            queued: queued.clone(),
        },
        InboundRx { rx, queued },
    )
}

/// Live sessions and reserved ids.
#[derive(Default)]
struct Registry {
    receivers: HashMap<u32, InboundTx>,
    /// Sending sessions by session id; two receivers elsewhere may pick the same id, so each
    /// entry also has the peer address (used only when an id is shared).
    senders: HashMap<u32, Vec<(u64, SocketAddr, InboundTx)>>,
    reserved: HashMap<u32, Instant>,
    next_token: u64,
}

/// The shared state of a data endpoint, held by its I/O task and every session driver.
pub(crate) struct Core {
    socket: UdpSocket,
    state: UdpSocketState,
    local_addr: SocketAddr,
    /// The socket is bound to an unspecified address: answer from the address a peer used.
    wildcard: bool,
    registry: Mutex<Registry>,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub outgoing_limit_kbps: Option<u64>,
    pub incoming_limit_kbps: Option<u64>,
    pub active_sends: AtomicU64,
    pub active_receives: AtomicU64,
    /// Test aid: datagrams dropped on arrival, per million (see `simulate_inbound_loss`).
    pub inbound_loss_ppm: AtomicU64,
}

/// Sets an integer socket option, reporting the OS error.
fn set_int_option(socket: &socket2::Socket, name: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid descriptor, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises both socket buffers as far as allowed: the privileged `*FORCE` options first (root
/// may exceed `net.core.rmem_max`), then the ordinary ones (capped by the sysctl).
fn raise_buffers(socket: &socket2::Socket) {
    if set_int_option(socket, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if set_int_option(socket, libc::SO_SNDBUFFORCE, SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
}

impl Core {
    /// Adds a session's newly dropped datagrams to the endpoint's count: `total` is the
    /// session's count now, `seen` what it had reported before. Returns the new `seen`.
    pub(crate) fn report_session_drops(&self, total: u64, seen: u64) -> u64 {
        if total > seen {
            self.dropped.fetch_add(total - seen, Ordering::Relaxed);
        }
        total.max(seen)
    }

    /// Binds the socket and prepares quinn-udp's state for it.
    pub fn bind(
        address: SocketAddr,
        outgoing_limit_kbps: Option<u64>,
        incoming_limit_kbps: Option<u64>,
    ) -> io::Result<Core> {
        let domain = socket2::Domain::for_address(address);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if address.is_ipv6() {
            // Dual stack where the system allows it; ignore where it does not.
            let _ = socket.set_only_v6(false);
        }
        raise_buffers(&socket);
        socket.bind(&address.into())?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let local_addr = socket.local_addr()?;
        tracing::debug!(
            %local_addr,
            recv_buffer = state.recv_buffer_size(UdpSockRef::from(&socket)).unwrap_or(0),
            send_buffer = state.send_buffer_size(UdpSockRef::from(&socket)).unwrap_or(0),
            gso = state.max_gso_segments(),
            gro = state.gro_segments(),
            "data socket bound"
        );
        Ok(Core {
            socket,
            state,
            wildcard: local_addr.ip().is_unspecified(),
            local_addr,
            registry: Mutex::new(Registry::default()),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            outgoing_limit_kbps,
            incoming_limit_kbps,
            active_sends: AtomicU64::new(0),
            active_receives: AtomicU64::new(0),
            inbound_loss_ppm: AtomicU64::new(0),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The kernel buffer sizes actually granted (receive, send), as Linux reports them.
    pub fn buffer_sizes(&self) -> (usize, usize) {
        let sock = || UdpSockRef::from(&self.socket);
        (
            self.state.recv_buffer_size(sock()).unwrap_or(0),
            self.state.send_buffer_size(sock()).unwrap_or(0),
        )
    }

    /// A random nonzero id that no live receiving session uses and that was not handed out in
    /// the last [`RESERVATION`]; it stays reserved until `start_receive` takes it.
    pub fn allocate_session_id(&self) -> u32 {
        let mut registry = lock(&self.registry);
        let now = Instant::now();
        registry
            .reserved
            .retain(|_, at| now.saturating_duration_since(*at) < RESERVATION);
        loop {
            let id: u32 = rand::random();
            if id != 0
                && !registry.receivers.contains_key(&id)
                && !registry.reserved.contains_key(&id)
            {
                registry.reserved.insert(id, now);
                return id;
            }
        }
    }

    /// Registers a receiving session; None when the id is already live.
    pub fn register_receiver(
        self: &Arc<Self>,
        session_id: u32,
    ) -> Option<(Registration, InboundRx)> {
        let mut registry = lock(&self.registry);
        if registry.receivers.contains_key(&session_id) {
            return None;
        }
        registry.reserved.remove(&session_id);
        let (tx, rx) = inbound_queue();
        registry.receivers.insert(session_id, tx);
        Some((
            Registration {
                core: self.clone(),
                session_id,
                sender_token: None,
            },
            rx,
        ))
    }

    /// Registers a sending session towards `peer`.
    pub fn register_sender(
        self: &Arc<Self>,
        session_id: u32,
        peer: SocketAddr,
    ) -> (Registration, InboundRx) {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let mut registry = lock(&self.registry);
        let (tx, rx) = inbound_queue();
        registry.next_token += 1;
        let token = registry.next_token;
        registry
            .senders
            .entry(session_id)
            .or_default()
            .push((token, peer, tx));
        (
            Registration {
                core: self.clone(),
                session_id,
                sender_token: Some(token),
            },
            rx,
        )
    }

    /// Sends datagrams laid end to end in `buf` (`sizes` in order) to `destination`, in GSO
    /// batches of equal-size segments (the last of a batch may be shorter) where the system
    /// supports it, one datagram per call where it does not.
    pub async fn send(
        &self,
        destination: SocketAddr,
        src_ip: Option<IpAddr>,
        buf: &[u8],
        sizes: &[usize],
    ) {
        let src_ip = if self.wildcard { src_ip } else { None };
        // A dual-stack IPv6 socket reaches IPv4 peers through mapped addresses.
        let (destination, src_ip) = if self.local_addr.is_ipv6() {
            let map = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            (
                SocketAddr::new(map(destination.ip()), destination.port()),
                src_ip.map(map),
            )
        } else {
            (destination, src_ip)
        };
        let max_segments = self.state.max_gso_segments().max(1);
        let mut offset = 0;
        let mut index = 0;
        while index < sizes.len() {
            let segment = sizes[index];
            let limit = (MAX_GSO_BYTES / segment.max(1)).clamp(1, max_segments);
            let mut count = 1;
            let mut len = segment;
            while index + count < sizes.len() && count < limit {
                let next = sizes[index + count];
                if next > segment {
                    break;
                }
                count += 1;
                len += next;
                if next < segment {
                    break;
                }
            }
            let transmit = Transmit {
                destination,
                ecn: None,
                contents: &buf[offset..offset + len],
                segment_size: (count > 1).then_some(segment),
                src_ip,
            };
            // `send` reports only WouldBlock (async_io waits for room then); every other error
            // is logged by quinn-udp and the datagrams are lost, which the protocol repairs.
            let result = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    self.state.send(UdpSockRef::from(&self.socket), &transmit)
                })
                .await;
            if let Err(error) = result {
                tracing::debug!(%destination, "data socket send failed: {error}");
            }
            self.sent.fetch_add(count as u64, Ordering::Relaxed);
            offset += len;
            index += count;
        }
    }

    /// The receive task: reads batches until the endpoint is dropped.
    pub async fn receive_loop(self: Arc<Self>) {
        let slots = quinn_udp::BATCH_SIZE.max(1);
        let mut storage = vec![0u8; slots * SLOT_LEN];
        let mut meta = vec![RecvMeta::default(); slots];
        loop {
            if let Err(error) = self.socket.readable().await {
                tracing::warn!("data socket: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let result = self.socket.try_io(Interest::READABLE, || {
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.chunks_mut(SLOT_LEN).map(IoSliceMut::new).collect();
                self.state
                    .recv(UdpSockRef::from(&self.socket), &mut bufs, &mut meta)
            });
            match result {
                Ok(count) => self.dispatch(&storage, &meta[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // ICMP errors of earlier sends (port unreachable) surface here: harmless.
                Err(error) => tracing::trace!("data socket receive: {error}"),
            }
        }
    }

    /// Routes every datagram of one receive call to its session.
    fn dispatch(&self, storage: &[u8], meta: &[RecvMeta]) {
        struct Pending {
            receiver: bool,
            session_id: u32,
            from: SocketAddr,
            tx: InboundTx,
            batch: Inbound,
        }
        let mut pending: Vec<Pending> = Vec::new();
        let mut received = 0u64;
        let mut dropped = 0u64;
        let loss_ppm = self.inbound_loss_ppm.load(Ordering::Relaxed);
        {
            let registry = lock(&self.registry);
            for (slot, meta) in meta.iter().enumerate() {
                let base = slot * SLOT_LEN;
                let data = &storage[base..base + meta.len.min(SLOT_LEN)];
                let stride = if meta.stride == 0 {
                    data.len()
                } else {
                    meta.stride
                };
                // IPv4 peers of a dual-stack socket appear as mapped IPv6 addresses.
                let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
                let local_ip = meta.dst_ip.map(|ip| ip.to_canonical());
                for datagram in data.chunks(stride.max(1)) {
                    received += 1;
                    if loss_ppm > 0 && rand::random::<u32>() % 1_000_000 < loss_ppm as u32 {
                        dropped += 1;
                        continue;
                    }
                    let Ok(header) = Header::decode(datagram) else {
                        dropped += 1;
                        continue;
                    };
                    let receiver = header.packet_type != PacketType::Ack;
                    let id = header.session_id;
                    let existing = pending.iter_mut().position(|p| {
                        p.receiver == receiver && p.session_id == id && (receiver || p.from == from)
                    });
                    let index = match existing {
                        Some(index) => index,
                        None => {
                            let tx = if receiver {
                                registry.receivers.get(&id).cloned()
                            } else {
                                registry.senders.get(&id).and_then(|list| {
                                    if list.len() == 1 {
                                        Some(list[0].2.clone())
                                    } else {
                                        // The newest registration wins (an ended send
                                        // may linger under the same id for a moment).
                                        list.iter()
                                            .rev()
                                            .find(|(_, peer, _)| *peer == from)
                                            .map(|(_, _, tx)| tx.clone())
                                    }
                                })
                            };
                            let Some(tx) = tx else {
                                dropped += 1;
                                continue;
                            };
                            pending.push(Pending {
                                receiver,
                                session_id: id,
                                from,
                                tx,
                                batch: Inbound::default(),
                            });
                            pending.len() - 1
                        }
                    };
                    let batch = &mut pending[index].batch;
                    let start = batch.buf.len();
                    batch.buf.extend_from_slice(datagram);
                    batch.items.push(InboundItem {
                        range: start..batch.buf.len(),
                        from,
                        local_ip,
                    });
                }
            }
        }
        for p in pending {
            let count = p.batch.items.len() as u64;
            if !p.tx.offer(p.batch) {
                // The session is gone or cannot keep up: like a full socket buffer.
                dropped += count;
            }
        }
        self.received.fetch_add(received, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// The server-wide outgoing limit divided equally among the running sends.
    pub fn outgoing_share_kbps(&self) -> Option<u64> {
        let sends = self.active_sends.load(Ordering::Relaxed).max(1);
        self.outgoing_limit_kbps.map(|limit| (limit / sends).max(1))
    }

    /// The server-wide incoming limit divided equally among the running receptions.
    pub fn incoming_share_kbps(&self) -> Option<u64> {
        let receives = self.active_receives.load(Ordering::Relaxed).max(1);
        self.incoming_limit_kbps
            .map(|limit| (limit / receives).max(1))
    }
}

/// A registered session; unregisters when dropped.
pub(crate) struct Registration {
    core: Arc<Core>,
    session_id: u32,
    sender_token: Option<u64>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = lock(&self.core.registry);
        match self.sender_token {
            None => {
                registry.receivers.remove(&self.session_id);
            }
            Some(token) => {
                if let Some(list) = registry.senders.get_mut(&self.session_id) {
                    list.retain(|(t, _, _)| *t != token);
                    if list.is_empty() {
                        registry.senders.remove(&self.session_id);
                    }
                }
            }
        }
    }
}
