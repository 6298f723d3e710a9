//! A shaping TCP relay for benchmarks: test and bench tooling, not part of the protocol path.
//!
//! It sits on localhost between the two servers (S1 connects to the relay, the relay connects
//! to S0), passes every byte through untouched (the TLS inside is end to end, the relay sees
//! only ciphertext) and imposes on each direction independently a bandwidth limit and a
//! one-way delay, like a link between two clouds: `1gbit,5ms` is 1 Gbit/s each way and 5 ms
//! one way, so 10 ms round trip.
//!
//! Pacing, per direction: a reader thread reads chunks of up to [`CHUNK`] bytes and stamps each
//! with its arrival time; a writer thread starts sending a chunk at
//! `max(arrival + delay, end of the previous chunk)`, the chunk occupies the link for
//! `len * 8 / bandwidth` (its serialization time) and is written out when its last bit would
//! have arrived. So the bytes delivered never run ahead of the bandwidth, and every byte is
//! delayed by at least the one-way delay. End of stream travels the same way: a half-close
//! (`shutdown(Write)`) on one side is passed on as a half-close of the other, after the data
//! before it. Any error tears the whole connection down, like a reset.
//!
//! Only the standard library: threads, blocking [`TcpStream`]s, a mutex and a condvar.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest chunk a reader takes off a socket at once: big enough that the per-chunk cost
/// (a wakeup, a sleep, a syscall) is small next to 1 Gbit/s, small enough that a chunk's
/// serialization time (0.5 ms at 1 Gbit/s) keeps the pacing smooth.
pub const CHUNK: usize = 64 * 1024;

/// Bounds of the bytes queued in one direction (see [`LinkShape::queue_budget`]).
const MIN_QUEUE: u64 = 4 << 20;
const MAX_QUEUE: u64 = 256 << 20;

/// Charged per queued chunk on top of its length, so that a stream of tiny chunks cannot
/// queue millions of allocations within the byte budget.
const CHUNK_OVERHEAD: usize = 256;

/// How far the link may lag behind its schedule and catch up at full speed. If the receiving
/// side stalls (a blocked write), the link's schedule falls into the past; without this cap the
/// writer would then deliver everything queued as one burst above the bandwidth. Small enough
/// that a burst is at most a millisecond's worth of bytes, large enough to absorb sleep
/// overshoot (tens of microseconds) without losing throughput.
const MAX_LAG: Duration = Duration::from_millis(1);

/// Longest one-way delay accepted (an hour; beyond that it is surely a typo).
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Pause between attempts to reach the target while it is not listening yet.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

// ------------------------------------------------------------------------------------------
// Link shape

/// Bandwidth and one-way delay imposed on each direction of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkShape {
    /// Bits per second; at least 1.
    pub bits_per_second: u64,
    /// Added to every byte's trip, in each direction.
    pub one_way_delay: Duration,
}

/// A link shape that could not be parsed, with the input and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("link shape '{input}': {problem}")]
pub struct LinkShapeError {
    pub input: String,
    pub problem: String,
}

impl LinkShape {
    /// Parse `<bandwidth>,<delay>` such as `1gbit,5ms` or `100mbit,0.5ms`.
    ///
    /// Bandwidth units (decimal, bits per second): `bit`, `kbit`, `mbit`, `gbit`. Delay units:
    /// `s`, `ms`, `us`, `ns`. Units are case-insensitive and required; numbers may have a
    /// fractional part. `bps`-style units are refused: tc reads `kbps` as kilobytes per second
    /// and others read it as kilobits, so it is ambiguous.
    pub fn parse(s: &str) -> Result<LinkShape, LinkShapeError> {
        let fail = |problem: String| LinkShapeError {
            input: s.to_string(),
            problem,
        };
        let (bw, delay) = s
            .split_once(',')
            .ok_or_else(|| fail("expected <bandwidth>,<delay> such as 1gbit,5ms".to_string()))?;
        let (bw, delay) = (bw.trim(), delay.trim());

        let (value, unit) = split_number(bw).ok_or_else(|| {
            fail(format!(
                "bandwidth '{bw}' is not a number with a unit bit, kbit, mbit or gbit \
                 (such as 100mbit)"
            ))
        })?;
        let scale = match unit.to_ascii_lowercase().as_str() {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "" => {
                return Err(fail(format!(
                    "bandwidth '{bw}' needs a unit: bit, kbit, mbit or gbit (such as 100mbit)"
                )))
            }
            _ => {
                return Err(fail(format!(
                    "bandwidth unit '{unit}' is not one of bit, kbit, mbit, gbit \
                     (bits per second; 'bps' units are ambiguous)"
                )))
            }
        };
        let bits = value * scale;
        // 10 Tbit/s: far beyond what a localhost relay can pump, and safely inside u64/f64.
        if !(1.0..=1e13).contains(&bits) {
            return Err(fail(format!(
                "bandwidth '{bw}' must be between 1bit and 10000gbit"
            )));
        }

        let (value, unit) = split_number(delay).ok_or_else(|| {
            fail(format!(
                "delay '{delay}' is not a number with a unit s, ms or us (such as 5ms)"
            ))
        })?;
        let nanos_per_unit = match unit.to_ascii_lowercase().as_str() {
            "s" => 1e9,
            "ms" => 1e6,
            "us" => 1e3,
            "ns" => 1.0,
            "" => {
                return Err(fail(format!(
                    "delay '{delay}' needs a unit: s, ms or us (such as 5ms)"
                )))
            }
            _ => {
                return Err(fail(format!(
                    "delay unit '{unit}' is not one of s, ms, us, ns"
                )))
            }
        };
        let nanos = value * nanos_per_unit;
        if nanos > MAX_DELAY.as_nanos() as f64 {
            return Err(fail(format!(
                "delay '{delay}' is longer than the limit of {}s",
                MAX_DELAY.as_secs()
            )));
        }
        Ok(LinkShape {
            bits_per_second: bits.round() as u64,
            one_way_delay: Duration::from_nanos(nanos.round() as u64),
        })
    }

    /// Time the link is busy with `bytes` bytes, rounded up so the schedule never gets ahead
    /// of the bandwidth.
    pub fn serialization(&self, bytes: usize) -> Duration {
        let bps = u128::from(self.bits_per_second.max(1));
        let nanos = (bytes as u128 * 8 * 1_000_000_000).div_ceil(bps);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Bytes in flight on the link in one direction: bandwidth times one-way delay.
    pub fn bandwidth_delay_product(&self) -> u64 {
        let bits = u128::from(self.bits_per_second) * self.one_way_delay.as_nanos();
        u64::try_from(bits / 8 / 1_000_000_000).unwrap_or(u64::MAX)
    }

    /// Bytes one direction may hold between reading and writing them: twice the
    /// bandwidth-delay product, so the pipe never limits throughput below the bandwidth (the
    /// sender's window is not the bottleneck: the relay acknowledges at once on localhost),
    /// at least 4 MiB and at most 256 MiB, so memory stays bounded. When the queue is full the
    /// reader stops reading and TCP flow control pushes back on the sender.
    pub fn queue_budget(&self) -> u64 {
        self.bandwidth_delay_product()
            .saturating_mul(2)
            .clamp(MIN_QUEUE, MAX_QUEUE)
    }
}

/// Split `12.5mbit` into `(12.5, "mbit")`. The number is digits with an optional fractional
/// part (no sign, exponent, `inf` or `nan`, which `f64::from_str` would accept).
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let mut parts = num.split('.');
    let int = parts.next()?;
    let frac = parts.next();
    if parts.next().is_some() || int.is_empty() || frac.is_some_and(|f| f.is_empty()) {
        return None;
    }
    Some((num.parse().ok()?, unit.trim()))
}

impl FromStr for LinkShape {
    type Err = LinkShapeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LinkShape::parse(s)
    }
}

impl fmt::Display for LinkShape {
    /// The shape in the syntax [`LinkShape::parse`] reads, with the largest exact units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_second;
        match b {
            _ if b.is_multiple_of(1_000_000_000) => write!(f, "{}gbit", b / 1_000_000_000)?,
            _ if b.is_multiple_of(1_000_000) => write!(f, "{}mbit", b / 1_000_000)?,
            _ if b.is_multiple_of(1_000) => write!(f, "{}kbit", b / 1_000)?,
            _ => write!(f, "{b}bit")?,
        }
        let n = self.one_way_delay.as_nanos();
        match n {
            0 => write!(f, ",0ms"),
            _ if n.is_multiple_of(1_000_000_000) => write!(f, ",{}s", n / 1_000_000_000),
            _ if n.is_multiple_of(1_000_000) => write!(f, ",{}ms", n / 1_000_000),
            _ if n.is_multiple_of(1_000) => write!(f, ",{}us", n / 1_000),
            _ => write!(f, ",{n}ns"),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Statistics

/// Bytes delivered per direction and connections accepted, shared with the relay's threads.
#[derive(Debug, Default)]
pub struct RelayStats {
    client_to_target: AtomicU64,
    target_to_client: AtomicU64,
    connections: AtomicU64,
}

impl RelayStats {
    /// Bytes written to the target so far (sent by the clients that connected to the relay).
    pub fn client_to_target_bytes(&self) -> u64 {
        self.client_to_target.load(Ordering::Relaxed)
    }

    /// Bytes written back to the clients so far (sent by the target).
    pub fn target_to_client_bytes(&self) -> u64 {
        self.target_to_client.load(Ordering::Relaxed)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

// ------------------------------------------------------------------------------------------
// Relay

/// A listening relay. [`Relay::run`] accepts connections, connects each to the target and
/// shapes both directions on threads of its own.
pub struct Relay {
    listener: TcpListener,
    local: SocketAddr,
    target: SocketAddr,
    shape: LinkShape,
    connect_timeout: Duration,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Listen on `listen` (port 0 picks a free port: see [`Relay::local_addr`]) and forward to
    /// `target`, shaping each direction as `shape`.
    pub fn bind(listen: SocketAddr, target: SocketAddr, shape: LinkShape) -> io::Result<Relay> {
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        Ok(Relay {
            listener,
            local,
            target,
            shape,
            connect_timeout: Duration::from_secs(60),
            stats: Arc::default(),
        })
    }

    /// How long to keep trying to reach the target for each accepted connection (default
    /// 60 s). The relay accepts clients at once, so a client that would have retried until the
    /// target came up is connected before it is: the relay has to wait on its behalf.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Relay {
        self.connect_timeout = timeout;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn shape(&self) -> LinkShape {
        self.shape
    }

    /// The relay's counters; they stay readable after the relay has finished.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Accept and relay connections, each on its own threads, so a client that reconnects is
    /// served again. With `Some(n)`, stop accepting after `n` connections and return once they
    /// have all finished; with `None`, run until the process ends. Errors of a single
    /// connection end that connection only (reported on stderr); an error of the listener
    /// itself is returned.
    pub fn run(self, max_connections: Option<u64>) -> io::Result<()> {
        let mut live: Vec<JoinHandle<()>> = Vec::new();
        let mut accepted = 0u64;
        while max_connections.is_none_or(|n| accepted < n) {
            let client = match self.listener.accept() {
                Ok((s, _)) => s,
                // The client gave up between SYN and accept, or a signal: keep listening.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            accepted += 1;
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            let (target, shape, timeout) = (self.target, self.shape, self.connect_timeout);
            let stats = Arc::clone(&self.stats);
            live.retain(|h| !h.is_finished());
            live.push(thread::spawn(move || {
                if let Err(e) = relay_connection(client, target, shape, timeout, &stats) {
                    eprintln!("relay: connection {accepted}: {e}");
                }
            }));
        }
        for h in live {
            // A panicking connection thread is a bug in the pumps; the relay itself is done.
            let _ = h.join();
        }
        Ok(())
    }

    /// [`Relay::run`] on a thread of its own.
    pub fn spawn(self, max_connections: Option<u64>) -> JoinHandle<io::Result<()>> {
        thread::spawn(move || self.run(max_connections))
    }
}

/// Connect to `target`, retrying while nothing listens there yet, until `timeout`.
fn connect_target(target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    super::connect_retrying(target, timeout, CONNECT_RETRY).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("could not reach the target {target} within {timeout:?}: {e}"),
        )
    })
}

/// Relay one accepted client until both directions have ended.
fn relay_connection(
    client: TcpStream,
    target: SocketAddr,
    shape: LinkShape,
    connect_timeout: Duration,
    stats: &Arc<RelayStats>,
) -> io::Result<()> {
    let server = match connect_target(target, connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            // Closing the client tells it at once that there is nobody behind the relay.
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    // Nagle would add its own delays to small messages (handshakes, pings) on top of the
    // shaped ones; the relay's pacing is the only delay there should be.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let budget = shape.queue_budget() as usize;
    let conn = Arc::new(Conn {
        client,
        server,
        up: Pipe::new(budget),
        down: Pipe::new(budget),
        aborted: AtomicBool::new(false),
    });
    let pumps = [Dir::Up, Dir::Down]
        .into_iter()
        .flat_map(|dir| {
            let (c1, c2, s) = (Arc::clone(&conn), Arc::clone(&conn), Arc::clone(stats));
            [
                thread::spawn(move || read_side(&c1, dir)),
                thread::spawn(move || write_side(&c2, dir, shape, &s)),
            ]
        })
        .collect::<Vec<_>>();
    for p in pumps {
        if p.join().is_err() {
            conn.abort();
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Pumps

/// A direction: `Up` is client to target, `Down` target to client.
#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

/// One relayed connection: both sockets and the queue of each direction. Every pump thread
/// holds all of it, so whichever thread hits an error can tear the whole connection down.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    up: Pipe,
    down: Pipe,
    aborted: AtomicBool,
}

impl Conn {
    /// Source socket, destination socket and queue of a direction.
    fn route(&self, dir: Dir) -> (&TcpStream, &TcpStream, &Pipe) {
        match dir {
            Dir::Up => (&self.client, &self.server, &self.up),
            Dir::Down => (&self.server, &self.client, &self.down),
        }
    }

    /// End everything: wakes every pump (blocked reads return, queues refuse and stop
    /// yielding), and both peers see the connection die as they would on a reset.
    fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.up.close();
        self.down.close();
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// A chunk read from one side; empty means end of stream.
struct Chunk {
    data: Vec<u8>,
    arrived: Instant,
}

/// The queue between a reader and a writer, bounded in bytes rather than in chunks (as an
/// `mpsc::sync_channel` would be): chunks range from one byte (a ping) to [`CHUNK`], and
/// a bound in chunks would either cap throughput when chunks are small or let memory grow
/// when they are large.
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
    budget: usize,
}

struct PipeState {
    chunks: VecDeque<Chunk>,
    cost: usize,
    closed: bool,
}

impl Pipe {
    fn new(budget: usize) -> Pipe {
        Pipe {
            state: Mutex::new(PipeState {
                chunks: VecDeque::new(),
                cost: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // The state stays consistent under a panic (every update is a single step), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, PipeState>) -> MutexGuard<'a, PipeState> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a chunk, waiting while the queue is full. False once the pipe is closed.
    fn push(&self, chunk: Chunk) -> bool {
        let cost = chunk.data.len() + CHUNK_OVERHEAD;
        let mut g = self.lock();
        while !g.closed && !g.chunks.is_empty() && g.cost + cost > self.budget {
            g = self.wait(g);
        }
        if g.closed {
            return false;
        }
        g.cost += cost;
        g.chunks.push_back(chunk);
        self.changed.notify_all();
        true
    }

    /// Take the oldest chunk, waiting while there is none. None once the pipe is closed.
    fn pop(&self) -> Option<Chunk> {
        let mut g = self.lock();
        loop {
            if g.closed {
                return None;
            }
            if let Some(c) = g.chunks.pop_front() {
                g.cost -= c.data.len() + CHUNK_OVERHEAD;
                self.changed.notify_all();
                return Some(c);
            }
            g = self.wait(g);
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// Read one direction's source into its queue, stamping each chunk with its arrival time.
fn read_side(conn: &Conn, dir: Dir) {
    let (mut src, _, pipe) = conn.route(dir);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match src.read(&mut buf) {
            Ok(n) => {
                let arrived = Instant::now();
                // Copied out at its length: a one-byte chunk should not pin 64 KiB.
                let data = buf[..n].to_vec();
                if !pipe.push(Chunk { data, arrived }) || n == 0 {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return conn.abort(),
        }
    }
}

/// Deliver one direction's queue on the link's schedule (module docs), counting the bytes.
fn write_side(conn: &Conn, dir: Dir, shape: LinkShape, stats: &RelayStats) {
    let (_, mut dst, pipe) = conn.route(dir);
    let counter = match dir {
        Dir::Up => &stats.client_to_target,
        Dir::Down => &stats.target_to_client,
    };
    // When the link finishes the previous chunk, on its own (virtual) clock: scheduling from
    // it rather than from the time the previous write happened keeps sleep overshoot from
    // adding up, so long transfers run at the bandwidth, not a little under it.
    let mut link_free = Instant::now();
    while let Some(chunk) = pipe.pop() {
        let start = link_free.max(chunk.arrived + shape.one_way_delay);
        let end = start + shape.serialization(chunk.data.len());
        let now = Instant::now();
        if end > now {
            thread::sleep(end - now);
        }
        if conn.aborted.load(Ordering::Relaxed) {
            return;
        }
        if chunk.data.is_empty() {
            // The source half-closed: pass it on, after everything it sent before.
            let _ = dst.shutdown(Shutdown::Write);
            return;
        }
        if dst.write_all(&chunk.data).is_err() {
            return conn.abort();
        }
        counter.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
        let behind = Instant::now().checked_sub(MAX_LAG).unwrap_or(end);
        link_free = end.max(behind);
    }
}
