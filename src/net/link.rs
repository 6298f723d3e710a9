//! [`Link`]: the authenticated, encrypted S0 <-> S1 connection, carrying length-prefixed
//! frames (`u64` little-endian length, then the payload).
//!
//! Party 0 listens ([`Link::listen`] / [`Link::accept`], in `admission.rs` with the rules on
//! whom it lets in) and party 1 connects ([`Link::connect`]). A link is two TLS connections,
//! one per direction (the up lane carries party 1's data, the down lane party 0's), each
//! owned by one half: a send half ([`LinkSender`]) and a receive half ([`LinkReceiver`]) that
//! share nothing, so neither waits for the other; [`Link::split`] hands out both so two
//! threads can stream in opposite directions, and [`Link::exchange`] does that for one
//! message each way, so two parties exchanging large messages at once never deadlock on full
//! TCP buffers.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::identity::{Identity, PeerCert};
use super::tls::{self, Handshaken, RecordReader, RecordWriter, Role, LANE_MSG};
use super::NetError;

/// Largest frame [`LinkReceiver::recv`] accepts unless changed with [`Link::set_max_frame`].
pub const DEFAULT_MAX_FRAME: u64 = 4 << 30;

/// Most a frame's length prefix makes the receiver reserve before its bytes arrive. Real
/// frames (at most ~450 MB: the paper-size network's weight opening) are reserved exactly;
/// growing them by doubling from a small reservation measurably slowed that opening.
const RESERVE_AHEAD: usize = 1 << 30;

/// Length prefix of every frame.
const FRAME_HEADER: u64 = 8;

/// Upper bound on the whole TLS handshake of one connection (a stalled or trickling stray
/// client cannot hold the listener for longer than this).
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between connection attempts while the peer is not up yet.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Messages up to this size are sent before receiving in [`Link::exchange`], without a
/// second thread: they fit in any socket buffer, so sending them cannot block.
const INLINE_EXCHANGE: usize = 1024;

/// The lane message's first byte: which direction the connection carries.
pub(super) const LANE_UP: u8 = 0;
pub(super) const LANE_DOWN: u8 = 1;
/// S0's first frame on a new link: the lanes are paired (S1 waits for it before the protocol).
const LINK_READY: u8 = 0x52;

/// The lane message: the lane, then the up lane's binding (zeros on the up lane itself).
pub(super) fn lane_message(lane: u8, binding: &[u8; 32]) -> [u8; LANE_MSG] {
    let mut m = [0u8; LANE_MSG];
    m[0] = lane;
    m[1..].copy_from_slice(binding);
    m
}

/// Whether S1 tries again after a failed attempt at the link: yes for what a busy or
/// flooded listener does to an attempt (no answer in time, the connection cut or closed, a
/// second lane it could not open, a link it never confirmed), no for what another attempt
/// cannot change (a certificate refused by either side, not a ppdenoise peer, a local
/// error). `Unreachable` already spent the whole timeout. Exhaustive on purpose: a new
/// kind of error must be placed here.
fn worth_retrying(e: &NetError) -> bool {
    match e {
        NetError::Timeout(_) | NetError::Cut(_) | NetError::PeerClosed(_) | NetError::Broken(_) => {
            true
        }
        NetError::Unreachable { .. }
        | NetError::PeerRejected { .. }
        | NetError::RejectedByPeer { .. }
        | NetError::Handshake(_)
        | NetError::FrameTooLarge { .. }
        | NetError::UnexpectedFrame(_)
        | NetError::Protocol(_)
        | NetError::Identity { .. }
        | NetError::KeyGen(_)
        | NetError::Io { .. } => false,
    }
}

/// Traffic counters. `bytes_*` count frames (8-byte length prefix plus payload);
/// `wire_bytes_*` count what went over TCP, TLS handshake and record overhead included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
}

/// The sending half of a [`Link`].
pub struct LinkSender {
    w: RecordWriter,
    bytes: u64,
    messages: u64,
    broken: Option<String>,
}

/// The receiving half of a [`Link`].
pub struct LinkReceiver {
    r: RecordReader,
    bytes: u64,
    messages: u64,
    max_frame: u64,
    broken: Option<String>,
}

/// An established link to the other server.
pub struct Link {
    tx: LinkSender,
    rx: LinkReceiver,
    peer_name: String,
    peer_fingerprint: String,
    peer_addr: SocketAddr,
    /// Both lanes' sockets, to unblock a half stuck on one when the link fails.
    abort: AbortHandle,
}

impl Link {
    /// S0's link over the paired lanes, after telling S1 that they are paired: S1 waits for
    /// that word, so a lane S0 never paired (an earlier attempt's, a dropped one) makes S1
    /// try again instead of waiting for the protocol.
    pub(super) fn paired(
        send: Handshaken,
        recv: Handshaken,
        peer: &PeerCert,
        from: SocketAddr,
    ) -> Result<Link, NetError> {
        let mut link = Link::from_lanes(send, recv, peer, from)?;
        link.set_io_timeout(HANDSHAKE_TIMEOUT);
        link.send(&[LINK_READY])?;
        link.set_io_timeout(Duration::ZERO);
        link.tx.bytes = 0;
        link.tx.messages = 0;
        Ok(link)
    }

    /// S1: waits (at most `wait`) for S0's word that the lanes are paired.
    pub(crate) fn await_ready(&mut self, wait: Duration) -> Result<(), NetError> {
        self.set_io_timeout(wait);
        let got = self.recv();
        self.set_io_timeout(Duration::ZERO);
        match got {
            Ok(m) if m == [LINK_READY] => {
                self.rx.bytes = 0;
                self.rx.messages = 0;
                Ok(())
            }
            Ok(_) => Err(NetError::Protocol(
                "the peer's first frame is not its link-ready word".into(),
            )),
            Err(NetError::Timeout(_) | NetError::PeerClosed(_) | NetError::Broken(_)) => {
                Err(NetError::Timeout(format!(
                    "waiting for the peer to pair our two lanes ({wait:?})"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Party 1: connect to the peer at `addr` until `timeout`, retrying while nothing listens
    /// there (the peer may start later) and while a handshake does not complete (the
    /// listener may be busy with a flood of other connections, or have shed ours for newer
    /// ones). A certificate refused by either side is not retried: it is a configuration
    /// problem. The up lane is opened first; the down lane follows at once and presents the
    /// up lane's binding.
    pub fn connect(
        addr: SocketAddr,
        me: &Identity,
        peer: &PeerCert,
        timeout: Duration,
    ) -> Result<Link, NetError> {
        let deadline = Instant::now() + timeout;
        let config = tls::Config::new(Role::Client, me, peer)?;
        loop {
            match Self::connect_once(addr, me, peer, &config, deadline) {
                Ok(link) => return Ok(link),
                Err(e) if worth_retrying(&e) && Instant::now() + RETRY_PAUSE < deadline => {
                    eprintln!("ppdenoise link: {e}; trying again");
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt at both lanes, within `deadline`.
    fn connect_once(
        addr: SocketAddr,
        me: &Identity,
        peer: &PeerCert,
        config: &tls::Config,
        deadline: Instant,
    ) -> Result<Link, NetError> {
        let open = |wait: Duration| match super::connect_retrying(addr, wait, RETRY_PAUSE) {
            Ok(stream) => Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(NetError::io(format!("connecting to {addr}"), e))
            }
            Err(e) => Err(NetError::Unreachable {
                addr,
                timeout: wait,
                last: e.to_string(),
            }),
        };
        let step = || {
            deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_secs(1), HANDSHAKE_TIMEOUT)
        };
        let client_lane = |stream: TcpStream, lane: u8, binding: &[u8; 32]| {
            configure(&stream, addr)?;
            let mut hs = tls::handshake_with(stream, config, me, step())?;
            tls::send_lane(&mut hs, &lane_message(lane, binding))?;
            Ok::<_, NetError>(hs)
        };
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let up = client_lane(open(rest)?, LANE_UP, &[0; 32])?;
        let binding = tls::lane_binding(&up)?;
        // The peer listens by now: the second connection needs no more than a step (a
        // listener too busy to take it is worth another attempt).
        let down_stream = open(step()).map_err(|e| match e {
            NetError::Unreachable { last, .. } => {
                NetError::Timeout(format!("opening the second lane to {addr}: {last}"))
            }
            e => e,
        })?;
        let down = client_lane(down_stream, LANE_DOWN, &binding)?;
        let mut link = Link::from_lanes(up, down, peer, addr)?;
        link.await_ready(step())?;
        Ok(link)
    }

    /// The link over its two lanes: `send` carries our data, `recv` the peer's.
    pub(super) fn from_lanes(
        send: Handshaken,
        recv: Handshaken,
        peer: &PeerCert,
        peer_addr: SocketAddr,
    ) -> Result<Link, NetError> {
        let w = RecordWriter::new(send);
        let r = RecordReader::new(recv);
        let abort = AbortHandle::new(w.socket(), r.socket())?;
        let mut link = Link {
            tx: LinkSender {
                w,
                bytes: 0,
                messages: 0,
                broken: None,
            },
            rx: LinkReceiver {
                r,
                bytes: 0,
                messages: 0,
                max_frame: DEFAULT_MAX_FRAME,
                broken: None,
            },
            peer_name: peer.name().to_string(),
            peer_fingerprint: peer.fingerprint().to_string(),
            peer_addr,
            abort,
        };
        link.set_io_timeout(Duration::ZERO);
        Ok(link)
    }

    /// Send one frame (length prefix and payload) and flush it.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), NetError> {
        self.tx.send(msg)
    }

    /// Receive one frame.
    pub fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        self.rx.recv()
    }

    /// Receive one frame into `buf` (cleared first; its allocation is reused).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), NetError> {
        self.rx.recv_into(buf)
    }

    /// Send `msg` and receive the peer's frame at the same time (the send runs on a second
    /// thread), so both parties may call this with large messages without deadlocking.
    pub fn exchange(&mut self, msg: &[u8]) -> Result<Vec<u8>, NetError> {
        let mut buf = Vec::new();
        self.exchange_into(msg, &mut buf)?;
        Ok(buf)
    }

    /// [`Link::exchange`] receiving into `buf` (cleared first; its allocation is reused).
    pub fn exchange_into(&mut self, msg: &[u8], buf: &mut Vec<u8>) -> Result<(), NetError> {
        if msg.len() <= INLINE_EXCHANGE {
            self.tx.send(msg)?;
            return self.rx.recv_into(buf);
        }
        let (tx, rx) = (&mut self.tx, &mut self.rx);
        let abort = &self.abort;
        std::thread::scope(|s| {
            let sender = s.spawn(move || {
                let sent = tx.send(msg);
                if sent.is_err() {
                    // Unblock the receiver: the peer will never get the rest of our frame.
                    abort.abort();
                }
                (sent, tx)
            });
            let received = rx.recv_into(buf);
            if received.is_err() {
                // Unblock the sender if the peer stopped reading; the link is dead anyway.
                abort.abort();
                rx.broken.get_or_insert_with(|| "exchange failed".into());
            }
            let (sent, tx) = sender
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if received.is_err() {
                tx.broken.get_or_insert_with(|| "exchange failed".into());
            }
            match (sent, received) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) => Err(e),
                (_, Err(e)) => Err(e),
            }
        })
    }

    /// A handle that tears both lanes down from any thread: a half blocked on its socket
    /// returns with an error at once. For code that drives the halves on threads of its own.
    pub fn abort_handle(&self) -> Result<AbortHandle, NetError> {
        self.abort.try_clone()
    }

    /// Both halves, for two threads streaming in opposite directions at once.
    pub fn split(&mut self) -> (&mut LinkSender, &mut LinkReceiver) {
        (&mut self.tx, &mut self.rx)
    }

    /// Counters since the link was established (handshake included in the wire counts).
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            bytes_sent: self.tx.bytes,
            bytes_received: self.rx.bytes,
            messages_sent: self.tx.messages,
            messages_received: self.rx.messages,
            wire_bytes_sent: self.tx.w.wire_sent + self.rx.r.wire_sent,
            wire_bytes_received: self.tx.w.wire_received + self.rx.r.wire_received,
        }
    }

    /// Read and write timeout for every later operation; `Duration::ZERO` means none (the
    /// default). A peer that stalls for longer gives [`NetError::Timeout`]; one whose process
    /// dies gives [`NetError::PeerClosed`] at once.
    pub fn set_io_timeout(&mut self, d: Duration) {
        let t = (!d.is_zero()).then_some(d);
        // Timeouts on both sockets of both lanes (the receiving lane writes nothing in
        // practice, but a write there must not block forever either).
        for sock in [self.tx.w.socket(), self.rx.r.socket()] {
            let _ = sock.set_write_timeout(t);
            let _ = sock.set_read_timeout(t);
        }
        self.tx.w.timeout = t;
        self.rx.r.timeout = t;
    }

    /// Largest frame accepted from the peer (default [`DEFAULT_MAX_FRAME`], 4 GiB).
    pub fn set_max_frame(&mut self, max: u64) {
        self.rx.max_frame = max;
    }

    /// The peer's name (from its pinned certificate).
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    /// Fingerprint of the peer's (pinned) certificate.
    pub fn peer_fingerprint(&self) -> &str {
        &self.peer_fingerprint
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Close cleanly: send a TLS close_notify and shut the socket down. The peer's next
    /// receive reports [`NetError::PeerClosed`] mentioning close_notify.
    pub fn close(mut self) -> Result<(), NetError> {
        self.tx.w.close_notify()?;
        let _ = self.tx.w.socket().shutdown(Shutdown::Write);
        Ok(())
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer_name", &self.peer_name)
            .field("peer_addr", &self.peer_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LinkSender {
    /// Send one frame and flush it.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), NetError> {
        self.send_parts(&[msg])
    }

    /// Send one frame whose payload is the concatenation of `parts`, without copying them
    /// together first.
    pub fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), NetError> {
        if let Some(why) = &self.broken {
            return Err(NetError::Broken(why.clone()));
        }
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let doing = || format!("sending a frame of {len} bytes");
        let result = (|| {
            self.w.write_all(&len.to_le_bytes(), &doing)?;
            for part in parts {
                self.w.write_all(part, &doing)?;
            }
            self.w.flush(&doing)
        })();
        match result {
            Ok(()) => {
                self.bytes += FRAME_HEADER + len;
                self.messages += 1;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Frames and bytes (payload plus length prefix) sent so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.messages, self.bytes)
    }
}

impl LinkReceiver {
    /// Receive one frame.
    pub fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf)?;
        Ok(buf)
    }

    /// Receive one frame into `buf` (cleared first; its allocation is reused). A frame above
    /// the limit is refused before anything is allocated. A timeout before the frame starts
    /// leaves the link usable; any other failure leaves it broken.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), NetError> {
        self.recv_checked(buf, &|_| Ok(()))
    }

    /// Receive one frame whose length `accept` approves (the protocol knows every message's
    /// length): any other length prefix is refused before anything is reserved for it.
    /// `buf` is cleared first (its allocation is reused); after an error it holds a part.
    pub fn recv_expecting_into(
        &mut self,
        buf: &mut Vec<u8>,
        accept: &dyn Fn(u64) -> Result<(), String>,
    ) -> Result<(), NetError> {
        self.recv_checked(buf, accept)
    }

    fn recv_checked(
        &mut self,
        buf: &mut Vec<u8>,
        accept: &dyn Fn(u64) -> Result<(), String>,
    ) -> Result<(), NetError> {
        if let Some(why) = &self.broken {
            return Err(NetError::Broken(why.clone()));
        }
        buf.clear();
        let waiting = || "while waiting for the next frame".to_string();
        if let Err(e) = self.r.wait_plaintext(&waiting) {
            if !e.is_timeout() {
                self.broken = Some(e.to_string());
            }
            return Err(e);
        }
        match self.recv_frame(buf, accept) {
            Ok(len) => {
                self.bytes += FRAME_HEADER + len;
                self.messages += 1;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        accept: &dyn Fn(u64) -> Result<(), String>,
    ) -> Result<u64, NetError> {
        let mut header = [0u8; FRAME_HEADER as usize];
        self.r
            .read_exact(&mut header, &|| "while reading a frame header".to_string())?;
        let len = u64::from_le_bytes(header);
        let too_large = NetError::FrameTooLarge {
            len,
            max: self.max_frame,
        };
        if len > self.max_frame {
            return Err(too_large);
        }
        accept(len).map_err(NetError::UnexpectedFrame)?;
        let n = usize::try_from(len).map_err(|_| too_large)?;
        // A length prefix alone cannot make us reserve more than RESERVE_AHEAD.
        buf.reserve_exact(n.min(RESERVE_AHEAD));
        let before = buf.len();
        self.r.read_append(buf, n, &|| {
            format!("in the middle of a frame of {len} bytes")
        })?;
        debug_assert_eq!(buf.len(), before + n);
        Ok(len)
    }

    /// Frames and bytes (payload plus length prefix) received so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.messages, self.bytes)
    }
}

/// Shuts both lanes of a link down (see [`Link::abort_handle`]).
#[derive(Debug)]
pub struct AbortHandle {
    socks: [TcpStream; 2],
}

impl AbortHandle {
    fn new(a: &TcpStream, b: &TcpStream) -> Result<AbortHandle, NetError> {
        let dup = |s: &TcpStream| {
            s.try_clone()
                .map_err(|e| NetError::io("duplicating a socket", e))
        };
        Ok(AbortHandle {
            socks: [dup(a)?, dup(b)?],
        })
    }

    fn try_clone(&self) -> Result<AbortHandle, NetError> {
        AbortHandle::new(&self.socks[0], &self.socks[1])
    }

    /// Shut both sockets down; the link is dead afterwards.
    pub fn abort(&self) {
        for s in &self.socks {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Blocking mode and no Nagle delay for one of the link's sockets.
pub(super) fn configure(stream: &TcpStream, peer_addr: SocketAddr) -> Result<(), NetError> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| NetError::io(format!("configuring the socket to {peer_addr}"), e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::identity::keygen;
    use std::net::TcpListener;
    use std::thread;

    pub(crate) fn identities() -> (Identity, Identity) {
        (
            keygen("ppdenoise-s0").unwrap(),
            keygen("ppdenoise-s1").unwrap(),
        )
    }

    /// Establish a link between `server` (expects `server_peer`) and `client` (expects
    /// `client_peer`) on an ephemeral port.
    fn connect_pair(
        server: Identity,
        server_peer: PeerCert,
        client: &Identity,
        client_peer: &PeerCert,
        timeout: Duration,
    ) -> (Result<Link, NetError>, Result<Link, NetError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let h = thread::spawn(move || Link::accept(&listener, &server, &server_peer, timeout, &[]));
        let c = Link::connect(addr, client, client_peer, timeout);
        (h.join().unwrap(), c)
    }

    /// A connected pair of links (S0's, S1's) on an ephemeral port.
    pub(crate) fn good_pair() -> (Link, Link) {
        let (s0, s1) = identities();
        let p1 = s1.peer_cert();
        let p0 = s0.peer_cert();
        let (a, b) = connect_pair(s0, p1, &s1, &p0, Duration::from_secs(10));
        (
            a.unwrap_or_else(|e| panic!("server: {e}")),
            b.unwrap_or_else(|e| panic!("client: {e}")),
        )
    }

    /// Sends only a frame's length prefix, announcing `len` bytes that never come (for the
    /// channel's tests of what a receiver refuses on the prefix alone).
    pub(crate) fn announce(link: &mut Link, len: u64) {
        let (tx, _) = link.split();
        tx.w.write_all(&len.to_le_bytes(), &|| String::new())
            .unwrap();
        tx.w.flush(&|| String::new()).unwrap();
    }

    #[test]
    fn an_abort_unblocks_both_halves() {
        let (mut s, mut c) = good_pair();
        let abort = c.abort_handle().unwrap();
        let (tx, rx) = c.split();
        thread::scope(|sc| {
            // A receive that would wait forever, and a send too large for the socket buffers.
            let r = sc.spawn(|| rx.recv());
            let big = pattern(64 << 20, 3);
            let w = sc.spawn(move || tx.send(&big));
            thread::sleep(Duration::from_millis(200));
            abort.abort();
            assert!(r.join().unwrap().is_err());
            assert!(w.join().unwrap().is_err());
        });
        drop(s.recv());
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
            .collect()
    }

    #[test]
    fn happy_path_messages_and_stats() {
        let (mut s, mut c) = good_pair();
        assert_eq!(s.peer_name(), "ppdenoise-s1");
        assert_eq!(c.peer_name(), "ppdenoise-s0");

        c.send(b"hello from s1").unwrap();
        assert_eq!(s.recv().unwrap(), b"hello from s1");
        let big = pattern(3_000_000, 7);
        s.send(&big).unwrap();
        s.send(b"").unwrap();
        assert_eq!(c.recv().unwrap(), big);
        let mut buf = Vec::with_capacity(16);
        c.recv_into(&mut buf).unwrap();
        assert!(buf.is_empty());
        for i in 0..100u32 {
            c.send(&i.to_le_bytes()).unwrap();
        }
        for i in 0..100u32 {
            s.recv_into(&mut buf).unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
        let (tx, _) = c.split();
        tx.send_parts(&[b"ab", b"", b"cde"]).unwrap();
        assert_eq!(s.recv().unwrap(), b"abcde");
    }

    #[test]
    fn stats_count_frames_on_both_sides() {
        let (mut s, mut c) = good_pair();
        c.send(b"hello").unwrap();
        s.recv().unwrap();
        let big = pattern(100_000, 1);
        s.send(&big).unwrap();
        s.send(b"").unwrap();
        c.recv().unwrap();
        c.recv().unwrap();
        let (ss, cs) = (s.stats(), c.stats());
        assert_eq!(cs.messages_sent, 1);
        assert_eq!(cs.bytes_sent, 8 + 5);
        assert_eq!(ss.messages_received, 1);
        assert_eq!(ss.bytes_received, 8 + 5);
        assert_eq!(ss.messages_sent, 2);
        assert_eq!(ss.bytes_sent, 8 + 100_000 + 8);
        assert_eq!(cs.messages_received, 2);
        assert_eq!(cs.bytes_received, ss.bytes_sent);
        // Wire counts include the handshake and the record overhead, and agree end to end.
        assert!(ss.wire_bytes_sent > ss.bytes_sent);
        assert_eq!(ss.wire_bytes_sent, cs.wire_bytes_received);
        assert_eq!(cs.wire_bytes_sent, ss.wire_bytes_received);
    }

    #[test]
    fn exchange_small_and_large() {
        let (mut s, mut c) = good_pair();
        let h = thread::spawn(move || {
            let a = s.exchange(b"from s0").unwrap();
            let b = s.exchange(&pattern(5_000_000, 3)).unwrap();
            (a, b, s)
        });
        let a = c.exchange(&pattern(2_000_000, 9)).unwrap();
        let b = c.exchange(b"").unwrap();
        let (sa, sb, _s) = h.join().unwrap();
        assert_eq!(a, b"from s0");
        assert_eq!(b, pattern(5_000_000, 3));
        assert_eq!(sa, pattern(2_000_000, 9));
        assert!(sb.is_empty());
    }

    #[test]
    fn large_simultaneous_exchange_does_not_deadlock() {
        const N: usize = 64 << 20;
        let (mut s, mut c) = good_pair();
        s.set_io_timeout(Duration::from_secs(60));
        c.set_io_timeout(Duration::from_secs(60));
        let start = Instant::now();
        let h = thread::spawn(move || {
            let got = s.exchange(&pattern(N, 1)).unwrap();
            (got, s.stats())
        });
        let got = c.exchange(&pattern(N, 2)).unwrap();
        let (sgot, sstats) = h.join().unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(got == pattern(N, 1), "client received wrong bytes");
        assert!(sgot == pattern(N, 2), "server received wrong bytes");
        assert_eq!(sstats.bytes_received, (N + 8) as u64);
        eprintln!(
            "64 MiB each way at once: {secs:.2} s, {:.0} MB/s per direction",
            N as f64 / secs / 1e6
        );
    }

    #[test]
    fn split_halves_stream_in_both_directions() {
        let (mut s, mut c) = good_pair();
        let frames = 40;
        let frame = pattern(1 << 20, 5);
        let h = thread::spawn(move || {
            let (tx, rx) = s.split();
            thread::scope(|sc| {
                sc.spawn(|| {
                    for _ in 0..frames {
                        tx.send(&frame).unwrap();
                    }
                });
                let mut buf = Vec::new();
                for _ in 0..frames {
                    rx.recv_into(&mut buf).unwrap();
                    assert_eq!(buf.len(), 1 << 20);
                }
            });
        });
        let frame = pattern(1 << 20, 6);
        let (tx, rx) = c.split();
        thread::scope(|sc| {
            sc.spawn(|| {
                for _ in 0..frames {
                    tx.send(&frame).unwrap();
                }
            });
            let mut buf = Vec::new();
            for _ in 0..frames {
                rx.recv_into(&mut buf).unwrap();
                assert_eq!(buf, pattern(1 << 20, 5));
            }
        });
        h.join().unwrap();
    }

    #[test]
    fn intruder_client_is_refused_on_both_sides() {
        let (s0, s1) = identities();
        let intruder = keygen("ppdenoise-s1").unwrap();
        let p0 = s0.peer_cert();
        let (server, client) =
            connect_pair(s0, s1.peer_cert(), &intruder, &p0, Duration::from_secs(2));
        match server.unwrap_err() {
            NetError::PeerRejected {
                expected_fp,
                got_fp,
                ..
            } => {
                assert_eq!(expected_fp, s1.fingerprint());
                assert_eq!(got_fp, intruder.fingerprint());
            }
            e => panic!("server: unexpected error {e}"),
        }
        match client.unwrap_err() {
            NetError::RejectedByPeer { our_fp, .. } => assert_eq!(our_fp, intruder.fingerprint()),
            e => panic!("client: unexpected error {e}"),
        }
    }

    #[test]
    fn impostor_server_is_refused_on_both_sides() {
        let (s0, s1) = identities();
        let other = keygen("ppdenoise-s0").unwrap();
        // The client pins `other`, but the real s0 answers.
        let s0_fp = s0.fingerprint().to_string();
        let (server, client) = connect_pair(
            s0,
            s1.peer_cert(),
            &s1,
            &other.peer_cert(),
            Duration::from_secs(2),
        );
        let e = client.unwrap_err();
        match &e {
            NetError::PeerRejected {
                expected_fp,
                got_fp,
                ..
            } => {
                assert_eq!(expected_fp, other.fingerprint());
                assert_eq!(got_fp, &s0_fp);
            }
            e => panic!("client: unexpected error {e}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("peer presented certificate sha256:"), "{msg}");
        match server.unwrap_err() {
            NetError::RejectedByPeer { our_fp, .. } => assert_eq!(our_fp, s0_fp),
            e => panic!("server: unexpected error {e}"),
        }
    }

    /// The retry rule, over every kind of error: what a busy listener does to an attempt
    /// is retried, what another attempt cannot change is not.
    #[test]
    fn the_retry_rule_covers_every_error_kind() {
        let io = || io::Error::other("x");
        let cases = [
            (NetError::Timeout("x".into()), true),
            (NetError::Cut("x".into()), true),
            (NetError::PeerClosed("x".into()), true),
            (NetError::Broken("x".into()), true),
            (
                NetError::Unreachable {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    timeout: Duration::from_secs(1),
                    last: "x".into(),
                },
                false,
            ),
            (
                NetError::PeerRejected {
                    expected_fp: "a".into(),
                    got_fp: "b".into(),
                    expected_source: "c".into(),
                },
                false,
            ),
            (
                NetError::RejectedByPeer {
                    our_fp: "a".into(),
                    alert: "b".into(),
                },
                false,
            ),
            (NetError::Handshake("x".into()), false),
            (NetError::FrameTooLarge { len: 2, max: 1 }, false),
            (NetError::UnexpectedFrame("x".into()), false),
            (NetError::Protocol("x".into()), false),
            (
                NetError::Identity {
                    path: "k".into(),
                    problem: "x".into(),
                },
                false,
            ),
            (NetError::KeyGen("x".into()), false),
            (NetError::io("x", io()), false),
        ];
        for (e, want) in &cases {
            assert_eq!(worth_retrying(e), *want, "{e:?}");
        }
    }

    /// A listener that cuts S1's first connection in the middle of its handshake (what S0
    /// does to a pending handshake it sheds) and then accepts: S1 tries again and comes up
    /// well within its timeout (it gave up at once when `Cut` was not retried).
    #[test]
    fn a_handshake_cut_by_the_listener_is_retried() {
        use std::io::Read;
        let (s0, s1) = identities();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (p1, p0) = (s1.peer_cert(), s0.peer_cert());
        let h = thread::spawn(move || {
            let (mut first, _) = listener.accept().unwrap();
            // The ClientHello's record header: the handshake is under way.
            let mut hello = [0u8; 5];
            first.read_exact(&mut hello).unwrap();
            assert_eq!(hello[0], 0x16, "not a TLS handshake record");
            first.shutdown(Shutdown::Both).unwrap();
            drop(first);
            Link::accept(&listener, &s0, &p1, Duration::from_secs(20), &[]).map(|mut l| l.recv())
        });
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("S1 gave up after its handshake was cut: {e}"));
        let took = start.elapsed();
        c.send(b"made it").unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), b"made it");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn missing_listener_is_unreachable_within_the_timeout() {
        let (s0, s1) = identities();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let start = Instant::now();
        let e = Link::connect(addr, &s1, &s0.peer_cert(), Duration::from_millis(600)).unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, NetError::Unreachable { .. }), "{e}");
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn client_waits_for_a_late_listener() {
        let (s0, s1) = identities();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (p0, p1) = (s0.peer_cert(), s1.peer_cert());
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(400));
            let mut l = Link::listen(addr, &s0, &p1, Duration::from_secs(10), &[]).unwrap();
            l.recv().unwrap()
        });
        let start = Instant::now();
        let mut c = Link::connect(addr, &s1, &p0, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        c.send(b"waited").unwrap();
        assert_eq!(h.join().unwrap(), b"waited");
    }

    #[test]
    fn vanished_peer_gives_peer_closed() {
        let (s, mut c) = good_pair();
        c.set_io_timeout(Duration::from_secs(5));
        let start = Instant::now();
        drop(s);
        let e = c.recv().unwrap_err();
        assert!(matches!(e, NetError::PeerClosed(_)), "{e}");
        assert!(start.elapsed() < Duration::from_secs(4));
        // The link stays broken.
        assert!(matches!(c.recv().unwrap_err(), NetError::Broken(_)));
    }

    #[test]
    fn peer_dying_mid_frame_gives_peer_closed() {
        let (mut s, mut c) = good_pair();
        c.set_io_timeout(Duration::from_secs(5));
        // Write a frame header announcing more than is sent, then vanish.
        let (tx, _) = s.split();
        tx.w.write_all(&1000u64.to_le_bytes(), &|| String::new())
            .unwrap();
        tx.w.write_all(&[1; 10], &|| String::new()).unwrap();
        tx.w.flush(&|| String::new()).unwrap();
        drop(s);
        let e = c.recv().unwrap_err();
        assert!(matches!(e, NetError::PeerClosed(_)), "{e}");
        assert!(e.to_string().contains("middle of a frame"), "{e}");
    }

    #[test]
    fn stalled_peer_gives_timeout_and_link_survives() {
        let (mut s, mut c) = good_pair();
        c.set_io_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let e = c.recv().unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, NetError::Timeout(_)), "{e}");
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(4));
        // Nothing of a frame was consumed: the link is still usable.
        s.send(b"late").unwrap();
        assert_eq!(c.recv().unwrap(), b"late");
    }

    #[test]
    fn clean_close_is_reported() {
        let (s, mut c) = good_pair();
        s.close().unwrap();
        let e = c.recv().unwrap_err();
        assert!(e.to_string().contains("close_notify"), "{e}");
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let (mut s, mut c) = good_pair();
        c.set_max_frame(1000);
        s.send(&[0u8; 2000]).unwrap();
        match c.recv().unwrap_err() {
            NetError::FrameTooLarge { len, max } => assert_eq!((len, max), (2000, 1000)),
            e => panic!("unexpected {e}"),
        }
        // A hostile length is refused the same way with the default limit.
        let (mut s, mut c) = good_pair();
        let (tx, _) = s.split();
        tx.w.write_all(&u64::MAX.to_le_bytes(), &|| String::new())
            .unwrap();
        tx.w.flush(&|| String::new()).unwrap();
        match c.recv().unwrap_err() {
            NetError::FrameTooLarge { len, max } => {
                assert_eq!((len, max), (u64::MAX, DEFAULT_MAX_FRAME))
            }
            e => panic!("unexpected {e}"),
        }
    }

    /// Loopback throughput in release mode:
    /// `cargo test --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        let (mut s, mut c) = good_pair();
        // One direction: 4 GiB in 64 MiB frames.
        let frame = pattern(64 << 20, 1);
        let frames = 64;
        let h = thread::spawn(move || {
            let mut buf = Vec::new();
            for _ in 0..frames {
                s.recv_into(&mut buf).unwrap();
            }
            s
        });
        let start = Instant::now();
        for _ in 0..frames {
            c.send(&frame).unwrap();
        }
        let mut s = h.join().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let total = (frames * frame.len()) as f64;
        eprintln!(
            "one way: {:.1} GB in {secs:.2} s = {:.0} MB/s",
            total / 1e9,
            total / secs / 1e6
        );

        // Both directions at once: 200 MB each way, 5 rounds of exchange.
        let msg = pattern(200_000_000, 2);
        let rounds = 5;
        let msg2 = msg.clone();
        let h = thread::spawn(move || {
            let mut buf = Vec::new();
            for _ in 0..rounds {
                s.exchange_into(&msg2, &mut buf).unwrap();
            }
            buf.len()
        });
        let start = Instant::now();
        let mut buf = Vec::new();
        for _ in 0..rounds {
            c.exchange_into(&msg, &mut buf).unwrap();
        }
        assert_eq!(h.join().unwrap(), msg.len());
        assert!(buf == msg);
        let secs = start.elapsed().as_secs_f64();
        let per_dir = (rounds * msg.len()) as f64;
        eprintln!(
            "exchange, 200 MB each way x{rounds}: {secs:.2} s = {:.0} MB/s per direction, \
             {:.0} MB/s total",
            per_dir / secs / 1e6,
            2.0 * per_dir / secs / 1e6
        );
    }
}
