//! Party 0's listener: whom it gives a TLS handshake, and how the peer's two lanes are paired
//! into a [`Link`] ([`Link::listen`], [`Link::bind`], [`Link::accept`]).
//!
//! Admission control: an allow-list (`--peer-addr`), a token bucket per source (an IPv4
//! address or an IPv6 /64), caps on handshakes under way (overall and per source, a new
//! connection shedding the oldest unauthenticated one) and on lanes waiting for a partner, so
//! that no flood of stray, silent or trickling connections keeps the peer out. It is apart
//! from `link.rs` because it defends against other people's connections and is not the link
//! itself (frames, lanes, party 1's side), which `link.rs` holds. `link.rs` does not name this
//! module: [`Link`]'s listening constructors live here, so the two do not import each other.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::identity::{Identity, PeerCert};
use super::link::{configure, Link, HANDSHAKE_TIMEOUT, LANE_DOWN, LANE_UP};
use super::tls::{self, Handshaken, Role};
use super::NetError;

/// Handshakes under way at once, from all sources together, each on its own thread. New
/// beats old: a connection arriving when they are all taken sheds the oldest one, so a flood
/// of idle or trickling connections cannot keep the real peer out (its handshake takes
/// milliseconds; a flooder would have to open this many connections in that time).
const MAX_PENDING_HANDSHAKES: usize = 32;
/// Handshakes under way from one address, new beating old as above (the peer needs two).
const MAX_PENDING_PER_SOURCE: usize = 4;
/// Threads at most, counting shed handshakes that have not ended yet (a shed connection is
/// shut down, so its thread ends at once).
const MAX_HANDSHAKE_THREADS: usize = 2 * MAX_PENDING_HANDSHAKES;

/// New connections one source (as for the per-source cap) may open at once, and per second
/// after that: more are closed at the door, before a thread or a handshake is spent on them.
/// The peer opens two per attempt and tries again at most every 100 ms after a failure, so
/// it stays far below; a storm from a few addresses is reduced to this rate per address.
const SOURCE_BURST: f64 = 16.0;
const SOURCE_RATE: f64 = 8.0;
/// Sources the rate limit remembers at once (those back at a full burst are forgotten first).
const MAX_SOURCES_TRACKED: usize = 4096;

/// Connections the kernel queues for the listener before it drops new ones (the default of
/// 128 filled within milliseconds of a storm, and the peer's SYN waited for a retransmit);
/// the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Lanes the listener keeps waiting for their partner; more are closed (only the
/// authenticated peer can open one, so this bounds a misbehaving peer's sockets).
const MAX_UNPAIRED_LANES: usize = 4;

/// A server-side connection that finished its handshake and said which lane it is, with the
/// key that pairs it: the up lane's exported keying material, computed here for the up lane
/// and presented by the client on the down lane.
struct ServerLane {
    lane: u8,
    key: [u8; 32],
    hs: Handshaken,
}

/// A handshake under way on the listener.
struct Pending {
    id: u64,
    from: SocketAddr,
    /// A handle on its socket, taken (and the socket shut down) when it is shed.
    sock: Option<TcpStream>,
    /// Set by its thread once the pinned peer certificate is verified: never shed then
    /// (only the peer gets there).
    authed: Arc<AtomicBool>,
}

/// What the listener turned away, for one line in its log.
#[derive(Default)]
struct Shed {
    shed: usize,
    not_allowed: usize,
    rate_limited: usize,
}

/// One source for the per-source cap: an IPv4 address, or an IPv6 /64 (what one host
/// typically holds).
fn source_key(ip: IpAddr) -> (u8, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, u128::from(v6) >> 64),
    }
}

/// Frees a slot for a new connection from `ip`: sheds the oldest unauthenticated handshake
/// from that source when it has [`MAX_PENDING_PER_SOURCE`], else, when
/// [`MAX_PENDING_HANDSHAKES`] run, the oldest of the source with the most under way, and
/// among those the one that opened the most lately (fewest tokens in `rate`): a storm sheds
/// its own before the peer's, which has at most two under way and opens few.
fn make_room(pending: &mut [Pending], ip: IpAddr, rate: &RateLimit, now: Instant, shed: &mut Shed) {
    let mut per_source: HashMap<(u8, u128), usize> = HashMap::new();
    for p in pending.iter().filter(|p| p.sock.is_some()) {
        *per_source.entry(source_key(p.from.ip())).or_default() += 1;
    }
    let key = source_key(ip);
    let sheddable = |p: &Pending| p.sock.is_some() && !p.authed.load(Ordering::Acquire);
    let victim = if per_source.get(&key).copied().unwrap_or(0) >= MAX_PENDING_PER_SOURCE {
        pending
            .iter_mut()
            .filter(|p| sheddable(p) && source_key(p.from.ip()) == key)
            .min_by_key(|p| p.id)
    } else if per_source.values().sum::<usize>() >= MAX_PENDING_HANDSHAKES {
        let rank = |p: &Pending| {
            let key = source_key(p.from.ip());
            (
                std::cmp::Reverse(per_source[&key]),
                rate.tokens(key, now),
                p.id,
            )
        };
        pending.iter_mut().filter(|p| sheddable(p)).min_by(|a, b| {
            let (a, b) = (rank(a), rank(b));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
        })
    } else {
        None
    };
    if let Some(s) = victim.and_then(|p| p.sock.take()) {
        let _ = s.shutdown(Shutdown::Both);
        shed.shed += 1;
    }
}

/// A token bucket per source ([`SOURCE_BURST`], [`SOURCE_RATE`]), in memory bounded by
/// [`MAX_SOURCES_TRACKED`].
#[derive(Default)]
struct RateLimit {
    /// Tokens left and when they were counted.
    buckets: HashMap<(u8, u128), (f64, Instant)>,
}

impl RateLimit {
    fn level((tokens, at): (f64, Instant), now: Instant) -> f64 {
        (tokens + now.saturating_duration_since(at).as_secs_f64() * SOURCE_RATE).min(SOURCE_BURST)
    }

    /// Tokens left to a source (a full burst if it opened nothing lately).
    fn tokens(&self, key: (u8, u128), now: Instant) -> f64 {
        self.buckets
            .get(&key)
            .map_or(SOURCE_BURST, |b| Self::level(*b, now))
    }

    /// Takes a token for a new connection from `ip`; false when it has none left.
    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        if self.buckets.len() >= MAX_SOURCES_TRACKED && !self.buckets.contains_key(&key) {
            self.buckets
                .retain(|_, b| Self::level(*b, now) < SOURCE_BURST);
            if self.buckets.len() >= MAX_SOURCES_TRACKED {
                // More sources at work than can be told apart: each starts afresh (such an
                // attacker wins anyway, see docs/protocol.md).
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(key).or_insert((SOURCE_BURST, now));
        let level = Self::level(*b, now);
        let admitted = level >= 1.0;
        *b = (if admitted { level - 1.0 } else { level }, now);
        admitted
    }
}

type Report = (u64, SocketAddr, Result<ServerLane, NetError>);

/// What the listener holds while it waits for the peer's two lanes.
struct Waiting {
    pending: Vec<Pending>,
    pairing: Pairing,
    last_failure: Option<NetError>,
    /// An up lane that arrived in time may finish its pairing past the deadline.
    grace: Instant,
    timeout: Duration,
}

impl Waiting {
    /// A finished handshake: filed, and the pair (up lane's address, up, down) when it
    /// completes one.
    fn collect(&mut self, (id, from, r): Report) -> Option<(SocketAddr, Handshaken, Handshaken)> {
        let k = self.pending.iter().position(|p| p.id == id)?;
        // A shed connection was shut down: whatever it reports is dropped.
        self.pending.swap_remove(k).sock?;
        match r {
            Ok(l) => {
                if l.lane == LANE_UP {
                    self.grace = self
                        .grace
                        .max(Instant::now() + HANDSHAKE_TIMEOUT.min(self.timeout));
                }
                self.pairing.file(from, l)
            }
            Err(e) => {
                eprintln!("ppdenoise link: refused connection from {from}: {e}");
                self.last_failure = Some(e);
                None
            }
        }
    }
}

/// Authenticated lanes waiting for their partner, by pairing key.
#[derive(Default)]
struct Pairing {
    ups: HashMap<[u8; 32], (SocketAddr, Handshaken)>,
    downs: HashMap<[u8; 32], Handshaken>,
}

impl Pairing {
    /// Files a lane; the pair (up lane's address, up, down) when its partner is here.
    fn file(
        &mut self,
        from: SocketAddr,
        l: ServerLane,
    ) -> Option<(SocketAddr, Handshaken, Handshaken)> {
        if l.lane == LANE_UP {
            if let Some(down) = self.downs.remove(&l.key) {
                return Some((from, l.hs, down));
            }
        } else if let Some((up_from, up)) = self.ups.remove(&l.key) {
            return Some((up_from, up, l.hs));
        }
        // Only the peer opens lanes, one attempt at a time: lanes of its earlier attempts
        // will never be paired, so the newest one evicts them when too many wait.
        let waiting = self.ups.len() + self.downs.len();
        if waiting >= MAX_UNPAIRED_LANES {
            eprintln!(
                "ppdenoise link: dropped {waiting} unpaired lane(s) of the peer's earlier attempts"
            );
            self.ups.clear();
            self.downs.clear();
        }
        if l.lane == LANE_UP {
            self.ups.insert(l.key, (from, l.hs));
        } else {
            self.downs.insert(l.key, l.hs);
        }
        None
    }
}

impl Link {
    /// Party 0: bind `addr` and accept the peer (see [`Link::accept`]).
    pub fn listen(
        addr: SocketAddr,
        me: &Identity,
        peer: &PeerCert,
        timeout: Duration,
        allowed: &[IpAddr],
    ) -> Result<Link, NetError> {
        Link::accept(&Link::bind(addr)?, me, peer, timeout, allowed)
    }

    /// Party 0's listening socket on `addr` (port 0: one the system picks), for
    /// [`Link::accept`].
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, NetError> {
        TcpListener::bind(addr).map_err(|e| NetError::io(format!("listening on {addr}"), e))
    }

    /// Party 0 on an already bound listener: accept connections until one completes the
    /// handshake with the pinned peer certificate, or until `timeout`. Each connection's
    /// handshake runs on its own thread, so a connection that fails or stalls (wrong
    /// certificate, not TLS, silent) delays nobody: it is logged to stderr and the listener
    /// keeps waiting. At most [`MAX_PENDING_HANDSHAKES`] run at once, [`MAX_PENDING_PER_SOURCE`]
    /// from one address, and a new connection sheds the oldest when they are taken, so no
    /// number of stray connections can hold the listener. A source opening more than
    /// [`SOURCE_BURST`] connections at once or [`SOURCE_RATE`] a second has the rest closed
    /// before any handshake. With `allowed` non-empty, only
    /// connections from those addresses are handshaken at all. At the deadline the last
    /// failure is returned if there was one, else [`NetError::Timeout`].
    pub fn accept(
        listener: &TcpListener,
        me: &Identity,
        peer: &PeerCert,
        timeout: Duration,
        allowed: &[IpAddr],
    ) -> Result<Link, NetError> {
        let local = listener
            .local_addr()
            .map_err(|e| NetError::io("reading the listening address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| NetError::io(format!("configuring the listener on {local}"), e))?;
        // Re-listening on a listening socket changes its backlog (Linux); elsewhere the
        // default stays.
        if let Err(e) = socket2::SockRef::from(listener).listen(LISTEN_BACKLOG) {
            eprintln!("ppdenoise link: could not enlarge the backlog on {local}: {e}");
        }
        let mut shed = Shed::default();
        let result =
            Self::accept_concurrently(listener, local, me, peer, timeout, allowed, &mut shed);
        let _ = listener.set_nonblocking(false);
        if shed.shed + shed.not_allowed + shed.rate_limited > 0 {
            eprintln!(
                "ppdenoise link: {} pending handshake(s) shed for newer connections, {} \
                 connection(s) from addresses not allowed (--peer-addr) and {} over their \
                 address's rate closed",
                shed.shed, shed.not_allowed, shed.rate_limited
            );
        }
        result
    }

    fn accept_concurrently(
        listener: &TcpListener,
        local: SocketAddr,
        me: &Identity,
        peer: &PeerCert,
        timeout: Duration,
        allowed: &[IpAddr],
        shed: &mut Shed,
    ) -> Result<Link, NetError> {
        // Handshake threads own copies; a thread still running when a link is returned ends
        // within its own deadline and its result is dropped (the connection closes).
        let (me, config) = (
            Arc::new(me.clone()),
            tls::Config::new(Role::Server, me, peer)?,
        );
        let mut rate = RateLimit::default();
        let (done_tx, done_rx) = mpsc::channel::<Report>();
        let allowed: Vec<IpAddr> = allowed.iter().map(|a| a.to_canonical()).collect();
        let start = Instant::now();
        let deadline = start + timeout;
        let every = super::wait_note_every();
        let mut note = start + every;
        let mut next_id = 0u64;
        let mut st = Waiting {
            pending: Vec::new(),
            pairing: Pairing::default(),
            last_failure: None,
            grace: deadline,
            timeout,
        };
        loop {
            // Every finished handshake first, so that none waits to be shed.
            while let Ok(rep) = done_rx.try_recv() {
                if let Some((from, up, down)) = st.collect(rep) {
                    return Link::paired(down, up, peer, from);
                }
            }
            let now = Instant::now();
            if now >= note && now < deadline {
                eprintln!(
                    "ppdenoise link: waiting for the peer {} to connect to {local} ({}s of {}s; \
                     {} handshake(s) under way)",
                    peer.name(),
                    (now - start).as_secs(),
                    timeout.as_secs(),
                    st.pending.len()
                );
                note = now + every;
            }
            let accepting = if st.pairing.ups.is_empty() {
                deadline
            } else {
                st.grace
            };
            if now < accepting && st.pending.len() < MAX_HANDSHAKE_THREADS {
                match listener.accept() {
                    Ok((stream, from)) => {
                        if !allowed.is_empty() && !allowed.contains(&from.ip().to_canonical()) {
                            if shed.not_allowed == 0 {
                                eprintln!(
                                    "ppdenoise link: closed the connection from {from}: not a \
                                     --peer-addr address (further ones are only counted)"
                                );
                            }
                            shed.not_allowed += 1;
                            continue; // dropped: closed before any handshake
                        }
                        if !rate.admit(from.ip(), now) {
                            shed.rate_limited += 1;
                            continue; // dropped likewise
                        }
                        let Ok(sock) = stream.try_clone() else {
                            eprintln!("ppdenoise link: closed the connection from {from}: no handle on its socket");
                            continue;
                        };
                        make_room(&mut st.pending, from.ip(), &rate, now, shed);
                        let step = deadline
                            .saturating_duration_since(now)
                            .clamp(Duration::from_secs(1), HANDSHAKE_TIMEOUT);
                        let authed = Arc::new(AtomicBool::new(false));
                        let (me, config, done, flag) = (
                            Arc::clone(&me),
                            config.clone(),
                            done_tx.clone(),
                            Arc::clone(&authed),
                        );
                        let id = next_id;
                        next_id += 1;
                        let spawned = std::thread::Builder::new()
                            .name("ppdenoise-handshake".into())
                            .spawn(move || {
                                // A panic must still be reported, or the slot is never freed.
                                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    Link::server_lane(stream, from, &me, &config, step, &flag)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(NetError::Handshake("the handshake thread panicked".into()))
                                });
                                // The listener may have returned already: nobody wants it.
                                let _ = done.send((id, from, r));
                            });
                        match spawned {
                            Ok(_) => st.pending.push(Pending {
                                id,
                                from,
                                sock: Some(sock),
                                authed,
                            }),
                            Err(e) => eprintln!(
                                "ppdenoise link: no thread for the connection from {from}: {e}"
                            ),
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Transient accept failures (e.g. the client reset before accept): note
                    // them and keep listening.
                    Err(e) => eprintln!("ppdenoise link: accept on {local} failed: {e}"),
                }
            }
            if now >= accepting && st.pending.is_empty() {
                let unpaired = !st.pairing.ups.is_empty() || !st.pairing.downs.is_empty();
                let why = st.last_failure.take();
                if unpaired {
                    let why = why.map(|e| format!(": {e}")).unwrap_or_default();
                    return Err(NetError::Timeout(format!(
                        "the peer {} opened one lane of the link on {local} but not the \
                         other ({timeout:?}){why}",
                        peer.name()
                    )));
                }
                return Err(why.unwrap_or_else(|| {
                    NetError::Timeout(format!(
                        "waiting for the peer {} to connect to {local} ({timeout:?})",
                        peer.name()
                    ))
                }));
            }
            // Past the deadline only handshakes started before it remain; each ends within
            // a second of it.
            if let Ok(rep) = done_rx.recv_timeout(Duration::from_millis(20)) {
                if let Some((from, up, down)) = st.collect(rep) {
                    return Link::paired(down, up, peer, from);
                }
            }
        }
    }

    /// One connection on the listener's side: handshake, then the client's lane message.
    fn server_lane(
        stream: TcpStream,
        from: SocketAddr,
        me: &Identity,
        config: &tls::Config,
        step: Duration,
        authed: &AtomicBool,
    ) -> Result<ServerLane, NetError> {
        // One deadline for the handshake and the lane message together.
        let until = Instant::now() + step;
        configure(&stream, from)?;
        let mut hs = tls::handshake_with(stream, config, me, step)?;
        authed.store(true, Ordering::Release);
        let msg = tls::recv_lane(&mut hs, until.saturating_duration_since(Instant::now()))?;
        let key = match msg[0] {
            LANE_UP if msg[1..].iter().all(|&b| b == 0) => tls::lane_binding(&hs)?,
            LANE_UP => {
                return Err(NetError::Handshake(
                    "the up lane's message carries a binding (it must be zeros)".into(),
                ))
            }
            LANE_DOWN => msg[1..].try_into().expect("32 bytes"),
            _ => {
                return Err(NetError::Handshake(format!(
                    "unknown lane message (lane byte {})",
                    msg[0]
                )))
            }
        };
        Ok(ServerLane {
            lane: msg[0],
            key,
            hs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::keygen;
    use crate::net::link::lane_message;
    use crate::net::link::tests::identities;
    use std::thread;

    /// Opens one lane by hand: handshake as the client, then (if given) the lane message.
    fn raw_lane(
        addr: SocketAddr,
        me: &Identity,
        peer: &PeerCert,
        msg: Option<(u8, [u8; 32])>,
    ) -> Handshaken {
        let stream = TcpStream::connect(addr).unwrap();
        configure(&stream, addr).unwrap();
        let mut hs = tls::handshake(stream, Role::Client, me, peer, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some((lane, binding)) = msg {
            tls::send_lane(&mut hs, &lane_message(lane, &binding)).unwrap();
        }
        hs
    }

    /// The listener in a thread, with its peer's identities; returns its address.
    fn listener(
        timeout: Duration,
    ) -> (
        SocketAddr,
        Identity,
        PeerCert,
        thread::JoinHandle<Result<Link, NetError>>,
    ) {
        let (s0, s1) = identities();
        let p1 = s1.peer_cert();
        let p0 = s0.peer_cert();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || Link::accept(&l, &s0, &p1, timeout, &[]));
        (addr, s1, p0, h)
    }

    /// A listener's thread: the first message of the link it accepted.
    type Receiving = thread::JoinHandle<Result<Result<Vec<u8>, NetError>, NetError>>;

    /// The listener in a thread (only `allowed` addresses, if any), returning the first
    /// message of the link it accepts; its address and the client's identity and pin.
    fn receiving_listener(
        timeout: Duration,
        allowed: Vec<IpAddr>,
    ) -> (SocketAddr, Identity, PeerCert, Receiving) {
        receiving_listener_on(TcpListener::bind("127.0.0.1:0").unwrap(), timeout, allowed)
    }

    /// [`receiving_listener`] on a listener bound by the caller.
    fn receiving_listener_on(
        listener: TcpListener,
        timeout: Duration,
        allowed: Vec<IpAddr>,
    ) -> (SocketAddr, Identity, PeerCert, Receiving) {
        let (s0, s1) = identities();
        let addr = listener.local_addr().unwrap();
        let (p1, p0) = (s1.peer_cert(), s0.peer_cert());
        let h = thread::spawn(move || {
            Link::accept(&listener, &s0, &p1, timeout, &allowed).map(|mut l| l.recv())
        });
        (addr, s1, p0, h)
    }

    #[test]
    fn lanes_pair_whatever_order_their_messages_arrive_in() {
        let (addr, s1, p0, h) = listener(Duration::from_secs(10));
        let mut up = raw_lane(addr, &s1, &p0, None);
        let binding = tls::lane_binding(&up).unwrap();
        // The down lane says which it is before the up lane does.
        let down = raw_lane(addr, &s1, &p0, Some((LANE_DOWN, binding)));
        thread::sleep(Duration::from_millis(100));
        tls::send_lane(&mut up, &lane_message(LANE_UP, &[0; 32])).unwrap();
        let mut c = Link::from_lanes(up, down, &p0, addr).unwrap();
        c.await_ready(Duration::from_secs(5)).unwrap();
        let mut s = h.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        c.send(b"up").unwrap();
        assert_eq!(s.recv().unwrap(), b"up");
        s.send(b"down").unwrap();
        assert_eq!(c.recv().unwrap(), b"down");
    }

    /// Lanes left by the peer's earlier attempts (never to be paired) make way for the
    /// newest: the real attempt still pairs (they used to fill the slots and have it dropped).
    #[test]
    fn lanes_of_earlier_attempts_do_not_block_the_next() {
        let (addr, s1, p0, h) = listener(Duration::from_secs(10));
        let stale: Vec<Handshaken> = (0..MAX_UNPAIRED_LANES as u8)
            .map(|k| raw_lane(addr, &s1, &p0, Some((LANE_DOWN, [k + 1; 32]))))
            .collect();
        thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(8)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().recv().unwrap(), b"made it");
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );
        drop(stale);
    }

    #[test]
    fn a_down_lane_bound_to_another_session_is_not_paired() {
        let (addr, s1, p0, h) = listener(Duration::from_secs(2));
        let _up = raw_lane(addr, &s1, &p0, Some((LANE_UP, [0; 32])));
        let _down = raw_lane(addr, &s1, &p0, Some((LANE_DOWN, [7; 32])));
        let e = h.join().unwrap().unwrap_err();
        assert!(matches!(e, NetError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("opened one lane"), "{e}");
    }

    #[test]
    fn a_peer_gone_after_its_first_lane_gives_a_clear_timeout() {
        let (addr, s1, p0, h) = listener(Duration::from_secs(2));
        drop(raw_lane(addr, &s1, &p0, Some((LANE_UP, [0; 32]))));
        let e = h.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("opened one lane"), "{e}");
    }

    #[test]
    fn malformed_lane_messages_are_refused() {
        for (msg, want) in [
            ((LANE_UP, [1; 32]), "carries a binding"),
            ((9, [0; 32]), "unknown lane message"),
        ] {
            let (addr, s1, p0, h) = listener(Duration::from_secs(2));
            let _lane = raw_lane(addr, &s1, &p0, Some(msg));
            let e = h.join().unwrap().unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn stray_connections_do_not_stop_the_listener() {
        let intruder = keygen("ppdenoise-s1").unwrap();
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(20), vec![]);
        // Not TLS at all, then a wrong certificate, then the real peer.
        {
            use std::io::Write;
            let mut junk = TcpStream::connect(addr).unwrap();
            junk.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            // A handshake record header claiming more than TLS 1.3 allows (16,641 bytes).
            let mut long = TcpStream::connect(addr).unwrap();
            long.write_all(&[0x16, 0x03, 0x01, 0x41, 0x01]).unwrap();
        }
        let e = Link::connect(addr, &intruder, &p0, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, NetError::RejectedByPeer { .. }), "{e}");
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(5)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
    }

    #[test]
    fn a_trickling_client_cannot_hold_the_listener() {
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(2), vec![]);
        // A record header, then one byte every 200 ms for 20 s: each read alone is quick, so
        // only a deadline on the whole handshake stops it.
        let trickle = thread::spawn(move || {
            use std::io::Write;
            let mut t = TcpStream::connect(addr).unwrap();
            let _ = t.write_all(&[0x16, 0x03, 0x01, 0x00, 100]);
            for _ in 0..100 {
                if t.write_all(&[0]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        });
        thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(8)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
        drop(c);
        trickle.join().unwrap();
    }

    /// A connection to `addr` from the loopback address 127.0.0.`host`.
    fn connect_from(host: u8, addr: SocketAddr) -> Option<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let src: SocketAddr = format!("127.0.0.{host}:0").parse().unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        s.bind(&src.into()).ok()?;
        s.connect_timeout(&addr.into(), Duration::from_secs(2))
            .ok()?;
        Some(s.into())
    }

    /// Hundreds of idle and trickling connections from 127.0.0.2 to 127.0.0.201 (at most
    /// 400, for a few seconds), before and while the real peer connects: the link still
    /// comes up, and soon. With 8 handshakes at a time of up to 10 s each, the flood held
    /// the listener for minutes.
    #[test]
    fn a_flood_of_idle_and_trickling_connections_cannot_keep_the_peer_out() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(30), vec![]);
        let (opened, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let flood = {
            let (opened, stop) = (Arc::clone(&opened), Arc::clone(&stop));
            thread::spawn(move || {
                let mut held = Vec::new();
                for k in 0..400usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(mut t) = connect_from(2 + (k % 200) as u8, addr) {
                        if k % 3 == 0 {
                            // A TLS record header, then silence: a handshake that never ends.
                            let _ = t.write_all(&[0x16, 0x03, 0x01, 0x00, 100, 1]);
                        }
                        held.push(t);
                    }
                    opened.fetch_add(1, Ordering::Relaxed);
                    if k >= 250 {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                // Held until the test ends.
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
                held.len()
            })
        };
        while opened.load(Ordering::Relaxed) < 250 {
            thread::sleep(Duration::from_millis(10));
        }
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("the peer was kept out: {e}"));
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let held = flood.join().unwrap();
        assert!(held >= 250, "only {held} flood connections opened");
        assert!(
            took < Duration::from_secs(15),
            "the link took {took:?} under the flood"
        );
    }

    /// With --peer-addr, a connection from elsewhere is closed before any handshake, and
    /// the peer's own address still gets through.
    #[test]
    fn connections_from_addresses_not_allowed_are_closed_at_once() {
        use std::io::Read;
        let allowed = vec!["127.0.0.1".parse().unwrap()];
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(10), allowed);
        let mut stranger = connect_from(7, addr).expect("a loopback connection");
        // A connection left open ends the read at this timeout (read as 0 bytes): only the
        // time tells it from one closed at once, which takes milliseconds; half the timeout
        // leaves a loaded machine seconds.
        stranger
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1];
        let n = stranger.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the stranger's connection was not closed");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(10)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
    }

    /// Silent clients under a server's long accept timeout: before handshakes ran side by
    /// side, each held the listener for HANDSHAKE_TIMEOUT (10 s), so three cost 30 s.
    #[test]
    fn silent_clients_do_not_delay_the_peer() {
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(120), vec![]);
        let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(30)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        drop(silent);
    }

    /// Pending handshakes from `sources` (ids 0, 1, ... in order), each holding a live socket.
    fn pendings(sources: &[&str]) -> (Vec<Pending>, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let p = sources
            .iter()
            .enumerate()
            .map(|(id, ip)| Pending {
                id: id as u64,
                from: SocketAddr::new(ip.parse().unwrap(), 40000),
                sock: Some(TcpStream::connect(addr).unwrap()),
                authed: Arc::new(AtomicBool::new(false)),
            })
            .collect();
        (p, l)
    }

    /// The ids of the handshakes shed so far.
    fn shed_ids(p: &[Pending]) -> Vec<u64> {
        p.iter()
            .filter(|p| p.sock.is_none())
            .map(|p| p.id)
            .collect()
    }

    /// `make_room` for a new connection from `ip`, with no source's rate spent.
    fn room_for(p: &mut [Pending], ip: &str) -> Vec<u64> {
        let (before, mut shed) = (shed_ids(p).len(), Shed::default());
        make_room(
            p,
            ip.parse().unwrap(),
            &RateLimit::default(),
            Instant::now(),
            &mut shed,
        );
        assert_eq!(before + shed.shed, shed_ids(p).len());
        shed_ids(p)
    }

    #[test]
    fn make_room_sheds_the_same_sources_oldest_at_its_cap() {
        // Three from 10.0.0.1: under the cap, nothing is shed.
        let (mut p, _l) = pendings(&["10.0.0.2", "10.0.0.1", "10.0.0.1", "10.0.0.1"]);
        assert_eq!(room_for(&mut p, "10.0.0.1"), Vec::<u64>::new());
        // Four: 10.0.0.1's oldest goes, not 10.0.0.2's older one.
        let mut sources = vec!["10.0.0.2"];
        sources.extend(["10.0.0.1"; MAX_PENDING_PER_SOURCE]);
        let (mut p, _l) = pendings(&sources);
        assert_eq!(room_for(&mut p, "10.0.0.1"), vec![1]);
        // Another source is not at its cap: nothing more.
        assert_eq!(room_for(&mut p, "10.0.0.3"), vec![1]);
    }

    #[test]
    fn make_room_never_sheds_an_authenticated_handshake() {
        let (mut p, _l) = pendings(&["10.0.0.1"; MAX_PENDING_PER_SOURCE]);
        p[0].authed.store(true, Ordering::Release);
        assert_eq!(room_for(&mut p, "10.0.0.1"), vec![1]);
        let (mut p, _l) = pendings(&["10.0.0.1"; MAX_PENDING_PER_SOURCE]);
        p.iter()
            .for_each(|p| p.authed.store(true, Ordering::Release));
        assert_eq!(room_for(&mut p, "10.0.0.1"), Vec::<u64>::new());
        // At the overall cap too.
        let ips: Vec<String> = (0..MAX_PENDING_HANDSHAKES)
            .map(|k| format!("10.1.0.{k}"))
            .collect();
        let ips: Vec<&str> = ips.iter().map(|s| s.as_str()).collect();
        let (mut p, _l) = pendings(&ips);
        p.iter()
            .for_each(|p| p.authed.store(true, Ordering::Release));
        p[5].authed.store(false, Ordering::Release);
        assert_eq!(room_for(&mut p, "10.2.0.1"), vec![5]);
    }

    #[test]
    fn make_room_counts_an_ipv6_64_as_one_source() {
        let one_64 = [
            "2001:db8:0:1::1",
            "2001:db8:0:1::2",
            "2001:db8:0:1:ffff:ffff:ffff:ffff",
            "2001:db8:0:1:8000::3",
        ];
        let (mut p, _l) = pendings(&one_64);
        assert_eq!(room_for(&mut p, "2001:db8:0:2::1"), Vec::<u64>::new());
        assert_eq!(room_for(&mut p, "2001:db8:0:1::99"), vec![0]);
        // An IPv4-mapped address is its IPv4 source.
        let (mut p, _l) = pendings(&["::ffff:10.0.0.1"; MAX_PENDING_PER_SOURCE]);
        assert_eq!(room_for(&mut p, "10.0.0.1"), vec![0]);
    }

    #[test]
    fn make_room_at_the_overall_cap_sheds_the_busiest_sources_oldest() {
        let mut ips: Vec<String> = (0..MAX_PENDING_HANDSHAKES - 3)
            .map(|k| format!("10.1.0.{k}"))
            .collect();
        ips.extend(["10.0.0.9".to_string(), "10.0.0.9".into(), "10.0.0.9".into()]);
        let ips: Vec<&str> = ips.iter().map(|s| s.as_str()).collect();
        // One short of the cap: nothing.
        let (mut p, _l) = pendings(&ips[1..]);
        assert_eq!(room_for(&mut p, "10.2.0.1"), Vec::<u64>::new());
        // At the cap: the oldest of the source with three, not the oldest of all.
        let (mut p, _l) = pendings(&ips);
        assert_eq!(room_for(&mut p, "10.2.0.1"), vec![29]);
        // Sources with one each: the one that opened the most lately, then the oldest.
        let singles = |p: &mut Vec<Pending>, q: &mut Vec<Pending>| {
            p.append(q);
            p.iter_mut()
                .enumerate()
                .for_each(|(id, p)| p.id = id as u64);
        };
        let (mut p, _l) = pendings(&ips[..MAX_PENDING_HANDSHAKES - 3]);
        let (mut q, _m) = pendings(&["10.3.0.1", "10.3.0.2", "10.3.0.3"]);
        singles(&mut p, &mut q);
        let now = Instant::now();
        let mut rate = RateLimit::default();
        for _ in 0..10 {
            assert!(rate.admit("10.1.0.7".parse().unwrap(), now));
        }
        let mut shed = Shed::default();
        make_room(&mut p, "10.2.0.1".parse().unwrap(), &rate, now, &mut shed);
        assert_eq!(shed_ids(&p), vec![7]);
        let (mut p, _l) = pendings(&ips[..MAX_PENDING_HANDSHAKES - 3]);
        let (mut q, _m) = pendings(&["10.3.0.1", "10.3.0.2", "10.3.0.3"]);
        singles(&mut p, &mut q);
        assert_eq!(room_for(&mut p, "10.2.0.1"), vec![0]);
    }

    #[test]
    fn the_rate_limit_admits_a_burst_then_its_rate_per_source() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut r = RateLimit::default();
        let t0 = Instant::now();
        for _ in 0..SOURCE_BURST as usize {
            assert!(r.admit(ip("10.0.0.1"), t0));
        }
        assert!(!r.admit(ip("10.0.0.1"), t0));
        assert!(
            r.admit(ip("10.0.0.2"), t0),
            "another address has its own budget"
        );
        for _ in 0..SOURCE_BURST as usize {
            assert!(r.admit(ip("2001:db8::1"), t0));
        }
        assert!(
            !r.admit(ip("2001:db8::ffff:2"), t0),
            "one /64 shares one budget"
        );
        assert!(r.admit(ip("2001:db8:0:1::1"), t0));
        // A second later, SOURCE_RATE more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..SOURCE_RATE as usize {
            assert!(r.admit(ip("10.0.0.1"), t1));
        }
        assert!(!r.admit(ip("10.0.0.1"), t1));
        // Its memory is bounded, however many sources.
        for k in 0..2 * MAX_SOURCES_TRACKED as u32 {
            r.admit(IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + k)), t1);
            assert!(r.buckets.len() <= MAX_SOURCES_TRACKED);
        }
    }

    /// The allow-list is compared canonically: an IPv4-mapped entry admits the IPv4 peer.
    #[test]
    fn the_allow_list_admits_an_ipv4_peer_by_its_mapped_address() {
        let mapped = vec!["::ffff:127.0.0.1".parse().unwrap()];
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(10), mapped);
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(4))
            .unwrap_or_else(|e| panic!("a mapped entry kept its IPv4 peer out: {e}"));
        c.send(b"mapped").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"mapped");
    }

    /// ... and an IPv4 entry admits the peer on a dual-stack listener, where its address
    /// reads `::ffff:127.0.0.1`.
    #[test]
    fn the_allow_list_admits_an_ipv4_peer_on_a_dual_stack_listener() {
        use socket2::{Domain, Socket, Type};
        let dual = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        dual.set_only_v6(false).unwrap();
        let any: SocketAddr = "[::]:0".parse().unwrap();
        dual.bind(&any.into()).unwrap();
        dual.listen(128).unwrap();
        let dual: TcpListener = dual.into();
        let port = dual.local_addr().unwrap().port();
        let v4 = vec!["127.0.0.1".parse().unwrap()];
        let (_, s1, p0, h) = receiving_listener_on(dual, Duration::from_secs(10), v4);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(4))
            .unwrap_or_else(|e| panic!("a dual-stack listener kept an allowed peer out: {e}"));
        c.send(b"dual").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"dual");
    }

    /// At most MAX_UNPAIRED_LANES lanes wait for a partner: the next one closes them and
    /// waits itself; the peer still gets in after.
    #[test]
    fn unpaired_lanes_are_capped() {
        use std::io::Read;
        let (addr, s1, p0, h) = listener(Duration::from_secs(20));
        let mut stale: Vec<Handshaken> = (0..MAX_UNPAIRED_LANES as u8)
            .map(|k| raw_lane(addr, &s1, &p0, Some((LANE_DOWN, [k + 1; 32]))))
            .collect();
        thread::sleep(Duration::from_millis(300));
        let mut newest = raw_lane(addr, &s1, &p0, Some((LANE_DOWN, [99; 32])));
        let mut b = [0u8; 1];
        for (k, l) in stale.iter_mut().enumerate() {
            l.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let r = l.stream.read(&mut b);
            let closed = match &r {
                Ok(0) => true,
                Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            assert!(closed, "unpaired lane {k} still open past the cap: {r:?}");
        }
        newest
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let r = newest.stream.read(&mut b);
        let open = matches!(&r, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        assert!(open, "the newest lane was closed: {r:?}");
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(8)).unwrap();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().recv().unwrap(), b"made it");
    }

    /// A client trickling a byte every 100 ms into a record that never completes, and no
    /// peer: the listener still returns soon after its 2 s deadline, because the handshake
    /// has one deadline for all its reads (each read alone is quick; the trickle would go on
    /// for 15 s).
    #[test]
    fn a_trickling_client_is_cut_at_the_handshake_deadline() {
        use std::io::Write;
        use std::sync::atomic::AtomicBool;
        let (s0, s1) = identities();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let p1 = s1.peer_cert();
        let start = Instant::now();
        let h = thread::spawn(move || Link::accept(&l, &s0, &p1, Duration::from_secs(2), &[]));
        let stop = Arc::new(AtomicBool::new(false));
        let trickle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut t = TcpStream::connect(addr).unwrap();
                // A handshake record of 16,000 bytes, sent a byte at a time.
                let _ = t.write_all(&[0x16, 0x03, 0x01, 0x3e, 0x80]);
                for _ in 0..150 {
                    if stop.load(Ordering::Relaxed) || t.write_all(&[0]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let e = h.join().unwrap().unwrap_err();
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        trickle.join().unwrap();
        // The listener's deadline is 2 s; were it not applied to the handshake as a whole,
        // the trickler would hold it for its own 15 s, or for HANDSHAKE_TIMEOUT (10 s) if
        // only that cut it. Below 8 s proves the 2 s deadline, with 6 s for a loaded machine.
        assert!(
            took < Duration::from_secs(8),
            "the trickler held the listener {took:?}"
        );
        assert!(matches!(e, NetError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("TLS handshake"), "{e}");
    }

    /// A connection storm (issue 45, item 4): two threads open connections at 20,000 per
    /// second together (or as fast as they can, if slower) from 64 loopback addresses
    /// (127.0.0.2 to 127.0.0.65), without waiting for the listener (non-blocking connects, as
    /// an attacker's SYNs do not wait), each thread holding its 48 newest open and resetting
    /// older ones; at most 100,000 connections and 2 s. S1 (from 127.0.0.1) gets in while it
    /// runs (here within 10-150 ms). Before, each accepted connection shed the oldest pending
    /// handshake, S1's among them: S1 gave up at once, or, with the cut retried, got in only
    /// after 2 to 5 s.
    #[test]
    fn a_connection_storm_cannot_keep_the_peer_out() {
        use socket2::{Domain, Socket, Type};
        use std::collections::VecDeque;
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        const SOURCES: usize = 64;
        const THREADS: usize = 2;
        const PER_SECOND: f64 = 20_000.0;
        const HELD: usize = 48;
        const MAX_CONNECTS: usize = 100_000;
        const MAX_STORM: Duration = Duration::from_secs(2);
        let (addr, s1, p0, h) = receiving_listener(Duration::from_secs(30), vec![]);
        let (opened, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let storm_start = Instant::now();
        let storm: Vec<_> = (0..THREADS)
            .map(|t| {
                let (opened, stop) = (Arc::clone(&opened), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut held = VecDeque::new();
                    let mut k = t;
                    let mut mine = 0usize;
                    while !stop.load(Ordering::Relaxed)
                        && opened.load(Ordering::Relaxed) < MAX_CONNECTS
                        && storm_start.elapsed() < MAX_STORM
                    {
                        // Paced to this thread's share of the rate.
                        let due =
                            Duration::from_secs_f64(mine as f64 * THREADS as f64 / PER_SECOND);
                        if let Some(early) = due.checked_sub(storm_start.elapsed()) {
                            thread::sleep(early);
                        }
                        let src = SocketAddr::from(([127, 0, 0, 2 + (k % SOURCES) as u8], 0));
                        k += THREADS;
                        let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
                            continue;
                        };
                        // Reset, not closed, when dropped: no TIME_WAIT to run out of ports.
                        let _ = s.set_linger(Some(Duration::ZERO));
                        let _ = s.set_nonblocking(true);
                        if s.bind(&src.into()).is_ok() {
                            // In progress, or done at once on loopback when there is room.
                            let _ = s.connect(&addr.into());
                            mine += 1;
                            opened.fetch_add(1, Ordering::Relaxed);
                            held.push_back(s);
                            if held.len() > HELD {
                                held.pop_front();
                            }
                        }
                    }
                })
            })
            .collect();
        while opened.load(Ordering::Relaxed) < 2000 && storm_start.elapsed() < MAX_STORM {
            thread::sleep(Duration::from_millis(5));
        }
        let before = opened.load(Ordering::Relaxed);
        let rate = before as f64 / storm_start.elapsed().as_secs_f64();
        let start = Instant::now();
        let c = Link::connect(addr, &s1, &p0, Duration::from_secs(25));
        let took = start.elapsed();
        let during = opened.load(Ordering::Relaxed) - before;
        let storm_on =
            storm_start.elapsed() < MAX_STORM && opened.load(Ordering::Relaxed) < MAX_CONNECTS;
        stop.store(true, Ordering::Relaxed);
        for t in storm {
            t.join().unwrap();
        }
        let mut c = c.unwrap_or_else(|e| panic!("the storm kept the peer out: {e}"));
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
        eprintln!(
            "storm: {before} connections at {rate:.0} per second before S1 started, {during} \
             more in the {took:?} it took to get in"
        );
        assert!(
            storm_on,
            "S1 got in only once the storm was over ({took:?})"
        );
        // A floor far below the pace, for loaded machines: it was a storm all the same.
        assert!(
            rate >= 2000.0,
            "hardly a storm: {rate:.0} connections per second"
        );
    }

    #[test]
    fn listener_times_out_without_a_peer() {
        let (s0, s1) = identities();
        let start = Instant::now();
        let e = Link::listen(
            "127.0.0.1:0".parse().unwrap(),
            &s0,
            &s1.peer_cert(),
            Duration::from_millis(300),
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, NetError::Timeout(_)), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
