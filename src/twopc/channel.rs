//! The message channel between the two servers, as the protocol sees it: framed messages,
//! counted. The real one is the authenticated TLS link ([`crate::net`]); tests use an
//! in-memory pair.

use crate::ring::Party;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::corr::pack::{low_mask, pack, unpack};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("peer link: {0}")]
    Link(String),
    #[error("peer sent a malformed message: {0}")]
    Malformed(String),
    #[error("peer disagrees: {0}")]
    Mismatch(String),
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LinkStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
}

/// The length the next message must have. Every receive of the protocol knows it, so a
/// peer's length prefix of any other size is refused before memory is reserved for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Exactly(usize),
    /// Small control messages (session tags) whose length is checked by content afterwards.
    AtMost(usize),
}

impl Expect {
    pub fn check(self, len: u64) -> Result<(), String> {
        match self {
            Expect::Exactly(n) if len == n as u64 => Ok(()),
            Expect::Exactly(n) => Err(format!("{len} bytes where {n} were expected")),
            Expect::AtMost(n) if len <= n as u64 => Ok(()),
            Expect::AtMost(n) => Err(format!("{len} bytes where at most {n} were expected")),
        }
    }
}

pub trait Channel {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError>;
    /// Sends a message the caller is done with: a channel that queues its messages takes it
    /// as it is instead of copying it (the garbled tables are most of a GC job's traffic).
    fn send_owned(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.send(&msg)
    }
    /// Receives the next message, which must have the length `expect` states.
    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError>;
    /// [`Channel::recv`] into `buf` (cleared first): a channel that reads from a link reuses
    /// its allocation, so a large message does not land in fresh pages every time. After an
    /// error `buf` holds anything (a part of the message).
    fn recv_into(&mut self, expect: Expect, buf: &mut Vec<u8>) -> Result<(), ChannelError> {
        *buf = self.recv(expect)?;
        Ok(())
    }
    /// An empty buffer to build a message of about `capacity` bytes in: one that an earlier
    /// [`Channel::send_owned`] gave back once it was sent, where the channel recycles them.
    fn spare(&mut self, capacity: usize) -> Vec<u8> {
        Vec::with_capacity(capacity)
    }
    fn stats(&self) -> LinkStats;
}

/// In-memory channel end (tests, benchmarks of the protocol without a network).
pub struct MemChannel {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
    stats: LinkStats,
    timeout: Duration,
}

pub fn mem_pair() -> (MemChannel, MemChannel) {
    let (t0, r1) = mpsc::channel();
    let (t1, r0) = mpsc::channel();
    let mk = |tx, rx| MemChannel {
        tx,
        rx,
        stats: LinkStats::default(),
        timeout: Duration::from_secs(600),
    };
    (mk(t0, r0), mk(t1, r1))
}

/// A channel end keeping every frame it sends and receives (tests of what a party learns).
#[cfg(test)]
pub(crate) struct Recording {
    inner: MemChannel,
    pub sent: Vec<Vec<u8>>,
    pub got: Vec<Vec<u8>>,
}

#[cfg(test)]
impl Recording {
    pub fn new(inner: MemChannel) -> Recording {
        Recording {
            inner,
            sent: Vec::new(),
            got: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Channel for Recording {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.sent.push(msg.to_vec());
        self.inner.send(msg)
    }
    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        let m = self.inner.recv(expect)?;
        self.got.push(m.clone());
        Ok(m)
    }
    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }
}

impl Channel for MemChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.send_owned(msg.to_vec())
    }

    fn send_owned(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.stats.bytes_sent += msg.len() as u64 + 8;
        self.stats.messages_sent += 1;
        self.tx
            .send(msg)
            .map_err(|_| ChannelError::Link("peer closed the connection".into()))
    }

    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        let m = self
            .rx
            .recv_timeout(self.timeout)
            .map_err(|e| ChannelError::Link(format!("peer gone: {e}")))?;
        expect
            .check(m.len() as u64)
            .map_err(ChannelError::Malformed)?;
        self.stats.bytes_received += m.len() as u64 + 8;
        self.stats.messages_received += 1;
        Ok(m)
    }

    fn stats(&self) -> LinkStats {
        self.stats
    }
}

pub fn u64s_to_bytes(v: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn bytes_to_u64s(b: &[u8], expected: usize, what: &str) -> Result<Vec<u64>, ChannelError> {
    if b.len() != expected * 8 {
        return Err(ChannelError::Malformed(format!(
            "{what}: {} bytes, expected {}",
            b.len(),
            expected * 8
        )));
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// Opens a shared vector: each party sends its share and adds the other's. Party 0 sends
/// first and party 1 receives first, so large messages never deadlock a blocking link.
pub fn open(
    ch: &mut dyn Channel,
    party: Party,
    share: &[u64],
    what: &str,
) -> Result<Vec<u64>, ChannelError> {
    let mine = u64s_to_bytes(share);
    let theirs = swap_named(ch, party, mine, what)?;
    let other = bytes_to_u64s(&theirs, share.len(), what)?;
    Ok(share
        .iter()
        .zip(&other)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect())
}

/// Sends `mine` and receives the peer's message of the same length, party 0 sending first;
/// a failed receive (a wrong length above all) names the message `what`, so a peer that
/// disagrees on a message's size is told which one.
fn swap_named(
    ch: &mut dyn Channel,
    party: Party,
    mine: Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, ChannelError> {
    let want = Expect::Exactly(mine.len());
    let named = |e: ChannelError| match e {
        ChannelError::Link(m) => ChannelError::Link(format!("{what}: {m}")),
        ChannelError::Malformed(m) => ChannelError::Malformed(format!("{what}: {m}")),
        ChannelError::Mismatch(m) => ChannelError::Mismatch(format!("{what}: {m}")),
    };
    if party.is_s0() {
        ch.send_owned(mine)?;
        ch.recv(want).map_err(named)
    } else {
        let t = ch.recv(want).map_err(named)?;
        ch.send_owned(mine)?;
        Ok(t)
    }
}

/// [`open`] of a vector that matters only mod 2^`bits` (a CNN or graph job's masked map,
/// docs/protocol.md, "Ring width"): each party sends the low `bits` bits of its share,
/// packed, and gets the opened value mod 2^`bits` (high bits zero). At 64 bits the message
/// is [`open`]'s, byte for byte.
pub fn open_bits(
    ch: &mut dyn Channel,
    party: Party,
    share: &[u64],
    bits: u32,
    what: &str,
) -> Result<Vec<u64>, ChannelError> {
    let mine = pack(share, bits);
    let theirs = swap_named(ch, party, mine, what)?;
    let other = unpack(&theirs, share.len(), bits)
        .map_err(|e| ChannelError::Malformed(format!("{what}: {e}")))?;
    let m = low_mask(bits);
    Ok(share
        .iter()
        .zip(&other)
        .map(|(a, b)| a.wrapping_add(*b) & m)
        .collect())
}

/// Sends `mine` and receives the peer's message of the same length, both parties sending
/// first: one one-way delay per round instead of a round trip (the boolean engine's rounds).
/// The channel's sends must not wait for the peer to read: the queued TLS link (a writer
/// thread) and the in-memory pair do not; the bare `net::Link` would, for messages larger
/// than the socket buffers.
pub fn swap(ch: &mut dyn Channel, mine: &[u64], what: &str) -> Result<Vec<u64>, ChannelError> {
    ch.send_owned(u64s_to_bytes(mine))?;
    let theirs = ch.recv(Expect::Exactly(8 * mine.len()))?;
    bytes_to_u64s(&theirs, mine.len(), what)
}

/// Largest control message [`exchange`] accepts.
pub const MAX_CONTROL: usize = 4096;

/// Exchanges small control messages (the same ordering rule as [`open`]).
pub fn exchange(ch: &mut dyn Channel, party: Party, msg: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let want = Expect::AtMost(MAX_CONTROL);
    if party.is_s0() {
        ch.send(msg)?;
        ch.recv(want)
    } else {
        let t = ch.recv(want)?;
        ch.send(msg)?;
        Ok(t)
    }
}

impl Channel for crate::net::Link {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        crate::net::Link::send(self, msg).map_err(|e| ChannelError::Link(e.to_string()))
    }

    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        let mut buf = Vec::new();
        Channel::recv_into(self, expect, &mut buf)?;
        Ok(buf)
    }

    fn recv_into(&mut self, expect: Expect, buf: &mut Vec<u8>) -> Result<(), ChannelError> {
        let (_, rx) = self.split();
        rx.recv_expecting_into(buf, &|len| expect.check(len))
            .map_err(|e| ChannelError::Link(e.to_string()))
    }

    fn stats(&self) -> LinkStats {
        let s = crate::net::Link::stats(self);
        LinkStats {
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            messages_sent: s.messages_sent,
            messages_received: s.messages_received,
        }
    }
}

/// A channel whose sends are queued to a writer thread, so a party can keep computing (and
/// reading) while a large message is still going out; lets the garbler stream chunk i+1
/// while the evaluator works on chunk i without either side blocking on a full socket.
pub struct QueuedLink<'a> {
    queue: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Large buffers the writer has sent, handed back for [`Channel::spare`]...
    spares: std::sync::mpsc::Receiver<Vec<u8>>,
    /// ...if their capacity is near the one last asked for (0: none asked for yet); others
    /// (an opening's buffer, say) are freed as before instead of held.
    wanted: &'a std::sync::atomic::AtomicUsize,
    rx: &'a mut crate::net::LinkReceiver,
    /// Tears the link down when a receive fails, so a writer blocked on it returns.
    abort: &'a crate::net::AbortHandle,
    writer_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    stats: LinkStats,
}

impl QueuedLink<'_> {
    fn writer_failure(&self) -> ChannelError {
        let e = self.writer_error.lock().map(|g| g.clone()).unwrap_or(None);
        ChannelError::Link(e.unwrap_or_else(|| "the link writer stopped".into()))
    }
}

impl Channel for QueuedLink<'_> {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.send_owned(msg.to_vec())
    }

    fn send_owned(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        let len = msg.len() as u64;
        let q = self.queue.as_ref().expect("queue open until the end");
        q.send(msg).map_err(|_| self.writer_failure())?;
        self.stats.bytes_sent += len + 8;
        self.stats.messages_sent += 1;
        Ok(())
    }

    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        let mut buf = Vec::new();
        self.recv_into(expect, &mut buf)?;
        Ok(buf)
    }

    fn recv_into(&mut self, expect: Expect, buf: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.rx
            .recv_expecting_into(buf, &|len| expect.check(len))
            .map_err(|e| {
                self.abort.abort();
                ChannelError::Link(e.to_string())
            })?;
        self.stats.bytes_received += buf.len() as u64 + 8;
        self.stats.messages_received += 1;
        Ok(())
    }

    fn spare(&mut self, capacity: usize) -> Vec<u8> {
        self.wanted
            .store(capacity, std::sync::atomic::Ordering::Relaxed);
        // Spares outside the window are dropped: the next ones are the size of the large
        // messages that keep recurring (the garbled tables).
        while let Ok(mut b) = self.spares.try_recv() {
            if recyclable(b.capacity(), capacity) {
                b.clear();
                return b;
            }
        }
        Vec::with_capacity(capacity)
    }

    fn stats(&self) -> LinkStats {
        self.stats
    }
}

/// Messages a [`QueuedLink`] holds before a send waits for its writer.
pub(crate) const QUEUE_DEPTH: usize = 4;

/// Sent buffers kept for reuse by a [`QueuedLink`] (memory: this many large messages more).
const SPARES: usize = 2;
/// Smallest sent buffer worth keeping: below this, fresh allocations are cheap.
const SPARE_MIN: usize = 1 << 20;

/// Whether a sent buffer of `capacity` may serve a request for `wanted` bytes: large enough,
/// and not more than twice as large (so a rare large message is not held on to).
fn recyclable(capacity: usize, wanted: usize) -> bool {
    capacity >= SPARE_MIN && capacity >= wanted && capacity <= wanted.saturating_mul(2)
}

/// The writer's side of the spare pool: keeps a sent buffer if it may serve the size last
/// asked for and the pool has room; frees it otherwise.
fn offer_spare(
    pool: &std::sync::mpsc::SyncSender<Vec<u8>>,
    wanted: &std::sync::atomic::AtomicUsize,
    m: Vec<u8>,
) {
    if recyclable(
        m.capacity(),
        wanted.load(std::sync::atomic::Ordering::Relaxed),
    ) {
        let _ = pool.try_send(m);
    }
}

/// Runs `f` with a [`QueuedLink`] over `link`; waits until every queued message is written.
pub fn with_queued_link<R>(
    link: &mut crate::net::Link,
    f: impl FnOnce(&mut dyn Channel) -> R,
) -> Result<R, ChannelError> {
    let abort = link
        .abort_handle()
        .map_err(|e| ChannelError::Link(e.to_string()))?;
    let (tx, rx) = link.split();
    let err = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    // Four messages in flight bound memory. A party with more consecutive sends (the GC
    // evaluator's input COTs, one per chunk) waits for the writer; its peer reads them all
    // before it sends, so that wait always ends.
    let (q, qr) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_DEPTH);
    let (spare_tx, spares) = std::sync::mpsc::sync_channel::<Vec<u8>>(SPARES);
    let wanted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let werr = err.clone();
        let abort = &abort;
        let wanted = &wanted;
        let writer = s.spawn(move || {
            for m in qr {
                if let Err(e) = tx.send(&m) {
                    *werr.lock().expect("writer error lock") = Some(e.to_string());
                    // A receive waiting for the peer's answer to this message never ends.
                    abort.abort();
                    return;
                }
                offer_spare(&spare_tx, wanted, m);
            }
        });
        let mut ch = QueuedLink {
            queue: Some(q),
            spares,
            wanted,
            rx,
            abort,
            writer_error: err.clone(),
            stats: LinkStats::default(),
        };
        let r = f(&mut ch);
        drop(ch.queue.take());
        let _ = writer.join();
        if let Some(e) = err.lock().expect("writer error lock").clone() {
            return Err(ChannelError::Link(e));
        }
        Ok(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::link::tests::{announce, good_pair};
    use std::time::{Duration, Instant};

    /// Over a real link: each sent buffer comes back from `spare`, and every message arrives
    /// as sent although the sender reuses its buffers.
    #[test]
    fn queued_link_recycles_sent_buffers_without_corrupting_messages() {
        let (mut a, mut b) = good_pair();
        const BIG: usize = SPARE_MIN + 4096;
        const N: usize = 8;
        let msg =
            |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (i * 31 + j) as u8).collect() };
        let reader = std::thread::spawn(move || {
            with_queued_link(&mut b, |ch| {
                let mut buf = Vec::new();
                for i in 0..N {
                    ch.recv_into(Expect::Exactly(BIG), &mut buf).unwrap();
                    assert!(buf == msg(i, BIG), "message {i} arrived changed");
                    ch.send(b"ack").unwrap();
                }
            })
            .unwrap();
        });
        with_queued_link(&mut a, |ch| {
            // A recycled buffer is told apart by its capacity: a fresh spare has exactly the
            // capacity asked for, every buffer sent here a larger one.
            let recycled = |ch: &mut dyn Channel| -> Vec<u8> {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let m = ch.spare(BIG);
                    assert!(m.is_empty() && m.capacity() >= BIG);
                    if m.capacity() > BIG || Instant::now() > deadline {
                        return m;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            let mut m = ch.spare(BIG);
            m.reserve_exact(BIG + 1);
            for i in 0..N {
                m.extend_from_slice(&msg(i, BIG));
                let sent_capacity = m.capacity();
                ch.send_owned(m).unwrap();
                assert_eq!(ch.recv(Expect::AtMost(16)).unwrap(), b"ack");
                m = recycled(ch);
                assert_eq!(
                    m.capacity(),
                    sent_capacity,
                    "message {i}'s buffer came back"
                );
            }
        })
        .unwrap();
        reader.join().unwrap();
    }

    /// An l-bit opening gives the shared value mod 2^l, also where the value and the shares
    /// fill all 64 bits (the bits above l are neither sent nor read), from exactly
    /// ceil(n l / 8) bytes each way; at 64 bits it is `open`, byte for byte.
    #[test]
    fn an_l_bit_opening_is_exact_mod_2_to_the_l_whatever_the_high_bits() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for bits in [1, 7, 33, 34, 63, 64] {
            for n in [0, 1, 9, 100] {
                let x: Vec<u64> = (0..n).map(|_| next() | 1 << 63).collect();
                let s0: Vec<u64> = (0..n).map(|_| next()).collect();
                let s1: Vec<u64> = x.iter().zip(&s0).map(|(x, a)| x.wrapping_sub(*a)).collect();
                let (mut c0, mut c1) = mem_pair();
                let (o0, o1) = std::thread::scope(|sc| {
                    let a = sc.spawn(|| open_bits(&mut c0, Party::S0, &s0, bits, "t").unwrap());
                    let b = sc.spawn(|| open_bits(&mut c1, Party::S1, &s1, bits, "t").unwrap());
                    (a.join().unwrap(), b.join().unwrap())
                });
                let want: Vec<u64> = x.iter().map(|v| v & low_mask(bits)).collect();
                assert_eq!(o0, want, "{bits} bits, {n} values");
                assert_eq!(o1, want, "{bits} bits, {n} values");
                assert_eq!(
                    c0.stats().bytes_sent,
                    (n * bits as usize).div_ceil(8) as u64 + 8
                );
                if bits == 64 {
                    let (mut d0, mut d1) = mem_pair();
                    let t = std::thread::spawn(move || {
                        open(&mut d1, Party::S1, &s1, "t").unwrap();
                    });
                    assert_eq!(open(&mut d0, Party::S0, &s0, "t").unwrap(), want);
                    t.join().unwrap();
                    assert_eq!(d0.stats(), c0.stats());
                }
            }
        }
    }

    /// A peer's share of another length (an older peer opening at 64 bits, say) is refused
    /// naming the message, on both parties' sides of `open_bits` and by `open`.
    #[test]
    fn a_share_of_the_wrong_length_is_refused_naming_the_message() {
        for party in Party::BOTH {
            let (mut c0, mut c1) = mem_pair();
            // 64-bit words where 3 values of 31 bits (12 bytes) are expected.
            c1.send(&u64s_to_bytes(&[5, 6, 7])).unwrap();
            let e = open_bits(&mut c0, party, &[1, 2, 3], 31, "masked map").unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("masked map: 24 bytes where 12 were expected"),
                "party {party}: {e}"
            );
        }
        let (mut c0, mut c1) = mem_pair();
        c1.send(&[0u8; 12]).unwrap();
        let e = open(&mut c0, Party::S0, &[1, 2, 3], "masked activations").unwrap_err();
        assert!(
            e.to_string()
                .contains("masked activations: 12 bytes where 24 were expected"),
            "{e}"
        );
    }

    /// A peer's packed share with bits set past its last value is malformed, not read.
    #[test]
    fn a_packed_share_with_dirty_padding_is_refused() {
        let (mut c0, mut c1) = mem_pair();
        let mut m = pack(&[5, 6, 7], 5);
        *m.last_mut().unwrap() |= 0x80;
        c1.send(&m).unwrap();
        let e = open_bits(&mut c0, Party::S0, &[1, 2, 3], 5, "masked map").unwrap_err();
        assert!(
            e.to_string().contains("masked map") && e.to_string().contains("padding"),
            "{e}"
        );
    }

    #[test]
    fn only_buffers_near_the_size_asked_for_are_recycled() {
        assert!(recyclable(SPARE_MIN, SPARE_MIN));
        assert!(recyclable(2 * SPARE_MIN, SPARE_MIN));
        assert!(!recyclable(2 * SPARE_MIN + 1, SPARE_MIN));
        assert!(
            !recyclable(SPARE_MIN - 1, 10),
            "small buffers are not worth keeping"
        );
        assert!(
            !recyclable(SPARE_MIN, SPARE_MIN + 1),
            "too small for the request"
        );
        assert!(!recyclable(SPARE_MIN, 0), "nothing asked for yet");
    }

    /// The writer's side: a sent buffer is kept only near the size last asked for, and only
    /// while the pool has room.
    #[test]
    fn the_writer_keeps_only_buffers_near_the_size_asked_for() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (pool, kept) = std::sync::mpsc::sync_channel::<Vec<u8>>(SPARES);
        let wanted = AtomicUsize::new(0);
        offer_spare(&pool, &wanted, Vec::with_capacity(2 * SPARE_MIN));
        assert!(kept.try_recv().is_err(), "kept before anyone asked");
        wanted.store(SPARE_MIN, Ordering::Relaxed);
        offer_spare(&pool, &wanted, Vec::with_capacity(4 * SPARE_MIN));
        assert!(
            kept.try_recv().is_err(),
            "kept a buffer 4x the size asked for"
        );
        for _ in 0..SPARES + 2 {
            offer_spare(&pool, &wanted, Vec::with_capacity(SPARE_MIN + 7));
        }
        let back: Vec<usize> = kept.try_iter().map(|b| b.capacity()).collect();
        assert_eq!(
            back,
            vec![SPARE_MIN + 7; SPARES],
            "the pool holds SPARES buffers"
        );
    }

    #[test]
    fn a_frame_of_another_length_than_expected_is_refused_before_allocation() {
        // A peer announcing 1 GiB where the protocol expects 16 bytes: refused on the
        // length prefix alone (the 1 GiB never arrives, and nothing is reserved for it).
        let (mut s, mut c) = good_pair();
        announce(&mut s, 1 << 30);
        let e = Channel::recv(&mut c, Expect::Exactly(16)).unwrap_err();
        assert!(
            e.to_string()
                .contains("1073741824 bytes where 16 were expected"),
            "{e}"
        );
        // A frame of the expected length passes; a control message over its bound does not.
        let (mut s, mut c) = good_pair();
        s.send(&[7u8; 16]).unwrap();
        assert_eq!(
            Channel::recv(&mut c, Expect::Exactly(16)).unwrap(),
            [7u8; 16]
        );
        s.send(&[0u8; 5000]).unwrap();
        let e = Channel::recv(&mut c, Expect::AtMost(4096)).unwrap_err();
        assert!(e.to_string().contains("at most 4096"), "{e}");
    }
}
