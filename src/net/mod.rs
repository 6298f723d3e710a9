//! The S0 <-> S1 link: mutually authenticated, encrypted TCP.
//!
//! * [`identity`]: key pairs and self-signed certificates made by `keygen`, their files
//!   (atomic writes, `0600` private keys) and the pinned peer certificate.
//! * [`tls`]: TLS 1.3 (rustls, ring provider) in which each side accepts exactly one peer
//!   certificate, compared byte for byte, and the two lanes (one rustls connection per
//!   direction) that carry the link's records.
//! * [`link`]: [`Link`], length-prefixed frames over the encrypted stream, with a send half and
//!   a receive half that can run on two threads (so [`Link::exchange`] never deadlocks).
//! * `admission` (private): party 0's listener, [`Link::listen`] and [`Link::accept`]: whom it
//!   handshakes (an allow-list, a rate per source, caps with the oldest shed) and the pairing
//!   of the peer's two lanes.
//! * [`relay`]: a shaping TCP relay (bandwidth and one-way delay per direction) that benchmarks
//!   put between the two servers to emulate a link between two clouds; not on the protocol path.
//!
//! How the pieces fit: rustls runs the whole handshake, the certificate checks and a short
//! confirmation message in each direction, and its record layer seals and opens every record
//! for the whole job, with KeyUpdates before a key's AEAD limit. A link is two TLS
//! connections ("lanes"), one per direction, bound into one link by exported keying material
//! (RFC 8446 section 7.5); the send half owns one lane's connection and the receive half the
//! other's, so a sender thread and a receiver thread work at once with no lock and no shared
//! rustls connection.

mod admission;
pub mod identity;
pub mod link;
pub mod relay;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use identity::{fingerprint, keygen, load_peer_cert, Identity, PeerCert};
pub use link::{AbortHandle, Link, LinkReceiver, LinkSender, LinkStats, DEFAULT_MAX_FRAME};

/// Everything that can go wrong on the link, worded for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Nothing accepted a TCP connection at `addr` before the deadline.
    #[error("could not reach the peer at {addr} within {timeout:?} (last error: {last})")]
    Unreachable {
        addr: SocketAddr,
        timeout: Duration,
        last: String,
    },
    /// The peer's certificate is not the pinned one. Raised by the side that checked it.
    #[error(
        "peer presented certificate {got_fp}, expected {expected_fp} (from {expected_source})"
    )]
    PeerRejected {
        expected_fp: String,
        got_fp: String,
        expected_source: String,
    },
    /// The peer refused our certificate (it sent a TLS alert). Raised by the side whose
    /// certificate was refused; the peer reports [`NetError::PeerRejected`] with the details.
    #[error(
        "the peer refused our certificate {our_fp} (TLS alert: {alert}); \
         is the peer configured with our current certificate?"
    )]
    RejectedByPeer { our_fp: String, alert: String },
    /// Any other handshake failure (protocol mismatch, not a ppdenoise peer, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The connection was closed or reset during the handshake: a listener that shed it
    /// for newer connections, or one that refused our certificate without an alert.
    #[error("TLS handshake cut off: {0}")]
    Cut(String),
    /// No progress for longer than the allowed time; the text says what was waited for.
    #[error("timed out {0}")]
    Timeout(String),
    /// The peer closed the connection (or its process died); the text says when.
    #[error("the peer closed the connection {0}")]
    PeerClosed(String),
    /// An incoming frame announced more bytes than this side accepts; nothing was allocated.
    #[error("incoming frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("the peer sent a frame the protocol does not expect here: {0}")]
    UnexpectedFrame(String),
    /// The encrypted stream is corrupt or the peer broke the record protocol.
    #[error("link protocol error: {0}")]
    Protocol(String),
    /// An earlier error left this link in an unknown state; reconnect.
    #[error("the link is unusable after an earlier error: {0}")]
    Broken(String),
    /// A key, certificate or peer certificate file is missing or malformed.
    #[error("{}: {problem}", path.display())]
    Identity { path: PathBuf, problem: String },
    /// Making a key pair or a certificate failed.
    #[error("key generation failed: {0}")]
    KeyGen(String),
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }

    /// Map an I/O error of an established stream to the most useful variant.
    pub(crate) fn from_stream_io(e: io::Error, doing: &str, timeout: Option<Duration>) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => match timeout {
                Some(t) => NetError::Timeout(format!("{doing}: no progress for {t:?}")),
                None => NetError::Timeout(doing.to_string()),
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => NetError::PeerClosed(format!("({doing}: {e})")),
            _ => NetError::io(doing, e),
        }
    }

    /// True for errors that leave the stream in a known state (nothing of a frame consumed).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, NetError::Timeout(_))
    }
}

/// How often a side waiting for its peer says so on stderr (what it waits for, how long so
/// far): `PPDENOISE_WAIT_NOTE_SECS`, 60 s by default; a job whose peer never comes is then
/// not silent for its whole timeout (issue 71, items 9 and 10).
pub(crate) fn wait_note_every() -> std::time::Duration {
    let secs = std::env::var("PPDENOISE_WAIT_NOTE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// Opens a TCP connection to `addr`, retrying every `pause` while nothing listens there yet
/// (the peer may start later), until `timeout`, with a note on stderr every
/// [`wait_note_every`]. Err: the last attempt's error; an invalid
/// address fails at once. Shared by the link and the benchmarks' relay.
pub(crate) fn connect_retrying(
    addr: SocketAddr,
    timeout: Duration,
    pause: Duration,
) -> io::Result<std::net::TcpStream> {
    let start = std::time::Instant::now();
    let deadline = start + timeout;
    let every = wait_note_every();
    let mut note = start + every;
    // The last real failure (e.g. connection refused) is what the caller reports.
    let mut last: Option<io::Error> = None;
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let attempt = if remaining.is_zero() {
            Err(last
                .take()
                .unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no time left")))
        } else {
            std::net::TcpStream::connect_timeout(&addr, remaining)
        };
        // On loopback, a connect to a port nothing listens on can pick that same port as its
        // own source and connect the socket to itself (TCP simultaneous open): that is no
        // peer, so it counts as refused and is retried.
        let attempt = attempt.and_then(|s| {
            let (me, peer) = (s.local_addr()?, s.peer_addr()?);
            if (me.ip(), me.port()) == (peer.ip(), peer.port()) {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connected to itself (nothing listens there yet)",
                ))
            } else {
                Ok(s)
            }
        });
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(e),
            Err(e) => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                if now >= note {
                    eprintln!(
                        "ppdenoise link: waiting for the peer at {addr} to accept a connection \
                         ({e}; {}s of {}s)",
                        (now - start).as_secs(),
                        timeout.as_secs()
                    );
                    note = now + every;
                }
                last = Some(e);
                std::thread::sleep(pause.min(deadline - now));
            }
        }
    }
}
