//! TLS 1.3 with one pinned peer certificate on each side, rustls end to end.
//!
//! Handshake: rustls (ring provider, TLS 1.3 only, client authentication mandatory). Both
//! sides install [`PinnedPeerVerifier`], which accepts exactly the peer certificate that the
//! operator configured (compared byte for byte) and then checks the handshake signature with
//! the provider's algorithms. After the handshake each side sends a short confirmation message
//! (`HELLO_*`) through rustls and waits for the peer's: the client's handshake finishes before
//! the server has judged the client's certificate, so only the server's confirmation proves
//! that the server accepted it. During the handshake the socket is read one whole record at a
//! time, so a stray client cannot make the listener buffer more than one record.
//!
//! Records: rustls's record layer seals and opens every record after that too, with its
//! KeyUpdates, so the link has no record code of its own and no traffic limit. A link is two
//! such connections ("lanes"), one per direction: the sending half ([`RecordWriter`]) owns
//! the up lane's connection and the receiving half ([`RecordReader`]) the down lane's (or the
//! reverse on the server), so each half runs on its own thread with no lock and rustls
//! writes its records straight to the socket. After the confirmation the client sends a lane
//! message on each: which lane it is, and for the down lane the up lane's exported keying
//! material ([`lane_binding`]), which binds the two connections into one link.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection,
    DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig, ServerConnection,
    SignatureScheme,
};

use super::identity::{provider, Identity, PeerCert};
use super::NetError;

// ---------------------------------------------------------------------------------------------
// Certificate pinning

/// Why a pinned verifier refused a certificate; carried inside the rustls error so the
/// handshake can report [`NetError::PeerRejected`].
#[derive(Debug)]
struct PinMismatch {
    expected_fp: String,
    got_fp: String,
    expected_source: String,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer presented certificate {}, expected {} (from {})",
            self.got_fp, self.expected_fp, self.expected_source
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly one peer certificate, as server verifier (on the client) and as client
/// verifier (on the server, client authentication mandatory).
#[derive(Debug)]
pub struct PinnedPeerVerifier {
    expected: CertificateDer<'static>,
    expected_fp: String,
    expected_source: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedPeerVerifier {
    pub fn new(peer: &PeerCert, provider: &CryptoProvider) -> Self {
        PinnedPeerVerifier {
            expected: peer.der().clone(),
            expected_fp: peer.fingerprint().to_string(),
            expected_source: peer.source().to_string(),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            return Ok(());
        }
        let mismatch = PinMismatch {
            expected_fp: self.expected_fp.clone(),
            got_fp: super::identity::fingerprint(end_entity),
            expected_source: self.expected_source.clone(),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // `cert` is the end-entity certificate already compared with the pinned one.
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not supported on the ppdenoise link".into())
}

impl ServerCertVerifier for PinnedPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedPeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations

fn config_error(e: rustls::Error) -> NetError {
    NetError::Handshake(format!("TLS configuration: {e}"))
}

/// Client side (party 1): TLS 1.3 only, pinned server, our certificate for client auth.
pub fn client_config(me: &Identity, peer: &PeerCert) -> Result<ClientConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(PinnedPeerVerifier::new(peer, &provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![me.cert_der().clone()], me.key_der())
        .map_err(config_error)?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Server side (party 0): TLS 1.3 only, mandatory client certificate, pinned.
pub fn server_config(me: &Identity, peer: &PeerCert) -> Result<ServerConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(PinnedPeerVerifier::new(peer, &provider));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![me.cert_der().clone()], me.key_der())
        .map_err(config_error)?;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Handshake

/// Which end of the TCP connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

const HELLO_CLIENT: &[u8; 24] = b"ppdenoise-link/1 client\n";
const HELLO_SERVER: &[u8; 24] = b"ppdenoise-link/1 server\n";

/// TLS record header length, largest plaintext and largest ciphertext a record may carry.
const HEADER_LEN: usize = 5;
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// Result of a successful handshake and confirmation, before the keys are taken out.
pub(crate) struct Handshaken {
    pub conn: Connection,
    pub stream: TcpStream,
    pub wire_sent: u64,
    pub wire_received: u64,
}

enum HsError {
    Io(io::Error),
    Tls(rustls::Error),
    Other(String),
}

impl From<io::Error> for HsError {
    fn from(e: io::Error) -> Self {
        HsError::Io(e)
    }
}

/// One side's rustls configuration, built once per listener (S0) or per connect (S1): a
/// storm of connections must not make S0 build a configuration, and parse its key, for each.
#[derive(Clone)]
pub(crate) enum Config {
    Client(Arc<ClientConfig>, ServerName<'static>),
    Server(Arc<ServerConfig>),
}

impl Config {
    pub(crate) fn new(role: Role, me: &Identity, peer: &PeerCert) -> Result<Config, NetError> {
        Ok(match role {
            Role::Client => {
                let name = ServerName::try_from(peer.name().to_string()).map_err(|_| {
                    NetError::Handshake(format!("peer name {:?} is not a DNS name", peer.name()))
                })?;
                Config::Client(Arc::new(client_config(me, peer)?), name)
            }
            Role::Server => Config::Server(Arc::new(server_config(me, peer)?)),
        })
    }
}

/// Run the TLS handshake on `stream` and exchange the confirmation messages.
/// `timeout` bounds the whole handshake (all its reads together: a peer trickling one byte
/// at a time cannot hold the listener longer) and each write.
#[cfg(test)]
pub(crate) fn handshake(
    stream: TcpStream,
    role: Role,
    me: &Identity,
    peer: &PeerCert,
    timeout: Duration,
) -> Result<Handshaken, NetError> {
    handshake_with(stream, &Config::new(role, me, peer)?, me, timeout)
}

/// [`handshake`] with a configuration built beforehand (`me`: for the error messages).
pub(crate) fn handshake_with(
    mut stream: TcpStream,
    config: &Config,
    me: &Identity,
    timeout: Duration,
) -> Result<Handshaken, NetError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let set = stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)));
    set.map_err(|e| NetError::io("setting the handshake timeout", e))?;
    let (mut conn, role): (Connection, Role) = match config {
        Config::Client(c, name) => (
            ClientConnection::new(Arc::clone(c), name.clone())
                .map_err(config_error)?
                .into(),
            Role::Client,
        ),
        Config::Server(c) => (
            ServerConnection::new(Arc::clone(c))
                .map_err(config_error)?
                .into(),
            Role::Server,
        ),
    };
    let mut sent = 0u64;
    let mut received = 0u64;
    let deadline = Instant::now() + timeout;
    let result = drive(
        &mut conn,
        &mut stream,
        role,
        deadline,
        &mut sent,
        &mut received,
    );
    match result {
        Ok(()) => Ok(Handshaken {
            conn,
            stream,
            wire_sent: sent,
            wire_received: received,
        }),
        Err(e) => Err(map_handshake_error(e, me, timeout)),
    }
}

fn drive(
    conn: &mut Connection,
    sock: &mut TcpStream,
    role: Role,
    deadline: Instant,
    sent: &mut u64,
    received: &mut u64,
) -> Result<(), HsError> {
    loop {
        write_pending(conn, sock, sent)?;
        if !conn.is_handshaking() {
            break;
        }
        read_record(conn, sock, deadline, received)?;
    }
    let (mine, theirs) = match role {
        Role::Client => (HELLO_CLIENT, HELLO_SERVER),
        Role::Server => (HELLO_SERVER, HELLO_CLIENT),
    };
    conn.writer().write_all(mine)?;
    write_pending(conn, sock, sent)?;
    let mut got = [0u8; 24];
    loop {
        let state = read_record(conn, sock, deadline, received)?;
        if state.peer_has_closed() {
            return Err(HsError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if state.plaintext_bytes_to_read() >= got.len() {
            conn.reader().read_exact(&mut got)?;
            if state.plaintext_bytes_to_read() != got.len() {
                return Err(HsError::Other(
                    "the peer sent data before confirming the handshake".into(),
                ));
            }
            break;
        }
    }
    if &got != theirs {
        return Err(HsError::Other(format!(
            "unexpected confirmation {:?} (expected {:?}): not a ppdenoise peer, or both ends \
             are configured as the same party",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(theirs)
        )));
    }
    write_pending(conn, sock, sent)?;
    Ok(())
}

/// Read exactly one TLS record from the socket and hand it to rustls. On a TLS error, send
/// rustls' alert to the peer before returning it.
fn read_record(
    conn: &mut Connection,
    sock: &mut TcpStream,
    deadline: Instant,
    received: &mut u64,
) -> Result<rustls::IoState, HsError> {
    let mut record = [0u8; HEADER_LEN + MAX_CIPHERTEXT];
    read_exact_by(sock, &mut record[..HEADER_LEN], deadline)?;
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    // Content types 20..=23, legacy version 3.x, length within TLS 1.3's limit (the only
    // version spoken), which is also what `record` holds: a longer claim is refused, never
    // sliced (a stray client must not be able to panic the listener).
    if !(20..=23).contains(&record[0]) || record[1] != 3 || len > MAX_CIPHERTEXT {
        return Err(HsError::Other(format!(
            "the peer does not speak TLS (it sent {:?})",
            String::from_utf8_lossy(&record[..HEADER_LEN])
        )));
    }
    read_exact_by(sock, &mut record[HEADER_LEN..HEADER_LEN + len], deadline)?;
    *received += (HEADER_LEN + len) as u64;
    let mut rest: &[u8] = &record[..HEADER_LEN + len];
    while !rest.is_empty() {
        conn.read_tls(&mut rest)?;
    }
    match conn.process_new_packets() {
        Ok(state) => Ok(state),
        Err(e) => {
            let mut ignored = 0;
            let _ = write_pending(conn, sock, &mut ignored);
            Err(HsError::Tls(e))
        }
    }
}

/// `read_exact` against an overall deadline: the socket's timeout is reset to the time left
/// before every read, so bytes arriving slowly cannot stretch it.
fn read_exact_by(sock: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        sock.set_read_timeout(Some(left))?;
        match sock.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn map_handshake_error(e: HsError, me: &Identity, timeout: Duration) -> NetError {
    match e {
        HsError::Io(e) => match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetError::Timeout(format!(
                "during the TLS handshake: the peer did not complete it within {timeout:?}"
            )),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => NetError::Cut(format!(
                "the peer closed the connection during the handshake ({e}); it may have \
                 refused our certificate {} (see its log), or it is not a ppdenoise peer",
                me.fingerprint()
            )),
            _ => NetError::io("during the TLS handshake", e),
        },
        HsError::Other(s) => NetError::Handshake(s),
        HsError::Tls(e) => {
            let pin_mismatch = match &e {
                rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                    other.0.downcast_ref::<PinMismatch>()
                }
                _ => None,
            };
            if let Some(m) = pin_mismatch {
                return NetError::PeerRejected {
                    expected_fp: m.expected_fp.clone(),
                    got_fp: m.got_fp.clone(),
                    expected_source: m.expected_source.clone(),
                };
            }
            match &e {
                rustls::Error::AlertReceived(
                    alert @ (AlertDescription::CertificateUnknown
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied
                    | AlertDescription::CertificateRequired
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked),
                ) => NetError::RejectedByPeer {
                    our_fp: me.fingerprint().to_string(),
                    alert: format!("{alert:?}"),
                },
                rustls::Error::NoCertificatesPresented => {
                    NetError::Handshake("the peer presented no certificate".into())
                }
                _ => NetError::Handshake(e.to_string()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records after the handshake: rustls's own record layer, one connection per direction

/// Bytes in a lane message: the lane (0 = up, client to server; 1 = down) and its binding.
pub(crate) const LANE_MSG: usize = 33;

/// Label of the keying material that binds the down lane to the up lane (RFC 8446 section 7.5).
const LANE_LABEL: &[u8] = b"EXPERIMENTAL-ppdenoise-link/2 lane binding";

/// The up lane's exported keying material: the down lane presents it, so the two TLS
/// connections of one link are provably the same peer's and the same run's.
pub(crate) fn lane_binding(h: &Handshaken) -> Result<[u8; 32], NetError> {
    h.conn
        .export_keying_material([0u8; 32], LANE_LABEL, None)
        .map_err(|e| NetError::Handshake(format!("exporting the lane binding: {e}")))
}

/// Client: send the lane message right after the confirmation (one record of its own).
pub(crate) fn send_lane(h: &mut Handshaken, msg: &[u8; LANE_MSG]) -> Result<(), NetError> {
    let Handshaken {
        conn,
        stream,
        wire_sent,
        ..
    } = h;
    conn.writer()
        .write_all(msg)
        .and_then(|()| write_pending(conn, stream, wire_sent))
        .map_err(|e| NetError::from_stream_io(e, "sending the lane message", None))
}

/// Server: read the client's lane message within `timeout`; nothing else may come first.
pub(crate) fn recv_lane(h: &mut Handshaken, timeout: Duration) -> Result<[u8; LANE_MSG], NetError> {
    let deadline = Instant::now() + timeout.max(Duration::from_millis(1));
    let mut got = [0u8; LANE_MSG];
    loop {
        let state = read_record(&mut h.conn, &mut h.stream, deadline, &mut h.wire_received)
            .map_err(|e| match e {
                HsError::Io(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    NetError::Timeout(format!("waiting for the peer's lane message ({timeout:?})"))
                }
                HsError::Io(e) => NetError::from_stream_io(e, "reading the lane message", None),
                HsError::Tls(e) => tls_error(e, &|| "in the lane message".into()),
                HsError::Other(s) => NetError::Handshake(s),
            })?;
        if state.peer_has_closed() {
            return Err(NetError::PeerClosed("(before its lane message)".into()));
        }
        let k = state.plaintext_bytes_to_read();
        if k >= LANE_MSG {
            if k != LANE_MSG {
                return Err(NetError::Handshake(format!(
                    "the peer's lane message has {k} bytes, expected {LANE_MSG}"
                )));
            }
            h.conn
                .reader()
                .read_exact(&mut got)
                .map_err(|e| NetError::Protocol(format!("reading the lane message: {e}")))?;
            return Ok(got);
        }
    }
}

/// Plaintext gathered into full 16 KiB records before rustls seals it, and sealed records
/// written to the socket at once (one `writev` of up to 64 records).
const OUT_BUFFER: usize = 1 << 20;

/// Sending half: the only user of its lane's rustls connection, so it seals without a lock
/// and rustls writes its queued records straight to the socket (no copy of ours). rustls
/// sends a KeyUpdate before a key reaches its AEAD limit (2^24 records for AES-GCM, RFC 8446
/// section 5.5), so a lane carries any amount of traffic. Nothing on this lane is read: the
/// peer's rustls owes an answering KeyUpdate only before data of its own, which it never
/// sends here (RFC 8446 section 4.6.3).
pub(crate) struct RecordWriter {
    sock: TcpStream,
    conn: Connection,
    /// Plaintext shorter than a record, not yet handed to rustls.
    plain: Vec<u8>,
    /// Sealed bytes rustls holds that are not written yet.
    queued: usize,
    /// Bytes written to / read from this lane's socket, handshake included.
    pub wire_sent: u64,
    pub wire_received: u64,
    pub timeout: Option<Duration>,
}

/// Receiving half: the only user of its lane's rustls connection. Ciphertext is read in
/// large chunks and handed to rustls as plaintext is wanted, so rustls never holds more than
/// one chunk's plaintext.
pub(crate) struct RecordReader {
    sock: TcpStream,
    conn: Connection,
    buf: Box<[u8]>,
    /// `buf[start..end]` is read from the socket but not yet given to rustls.
    start: usize,
    end: usize,
    closed: bool,
    pub wire_sent: u64,
    pub wire_received: u64,
    pub timeout: Option<Duration>,
}

/// Bytes read from the socket at a time (at most).
const IN_BUFFER: usize = 1 << 20;

impl RecordWriter {
    /// The sending half over a lane whose lane message has been exchanged.
    pub(crate) fn new(h: Handshaken) -> RecordWriter {
        let Handshaken {
            mut conn,
            stream,
            wire_sent,
            wire_received,
        } = h;
        // Bounded by OUT_BUFFER here instead.
        conn.set_buffer_limit(None);
        RecordWriter {
            sock: stream,
            conn,
            plain: Vec::with_capacity(MAX_PLAINTEXT),
            queued: 0,
            wire_sent,
            wire_received,
            timeout: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Queue `data`; full records are sealed at once and written as the queue fills.
    pub fn write_all(
        &mut self,
        mut data: &[u8],
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while !data.is_empty() {
            if self.plain.is_empty() && data.len() >= MAX_PLAINTEXT {
                // Whole records straight from the caller's buffer.
                let n = data.len().min(OUT_BUFFER) / MAX_PLAINTEXT * MAX_PLAINTEXT;
                self.seal(&data[..n], doing)?;
                data = &data[n..];
            } else {
                let n = (MAX_PLAINTEXT - self.plain.len()).min(data.len());
                self.plain.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.plain.len() == MAX_PLAINTEXT {
                    self.seal_plain(doing)?;
                }
            }
        }
        Ok(())
    }

    /// Seal and write everything queued.
    pub fn flush(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        self.seal_plain(doing)?;
        self.write_out(doing)
    }

    /// Send a TLS close_notify alert (after anything queued).
    pub fn close_notify(&mut self) -> Result<(), NetError> {
        let doing = || "sending close_notify".to_string();
        self.seal_plain(&doing)?;
        self.conn.send_close_notify();
        self.write_out(&doing)
    }

    fn seal_plain(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let plain = std::mem::take(&mut self.plain);
        let r = self.seal(&plain, doing);
        self.plain = plain;
        self.plain.clear();
        r
    }

    fn seal(&mut self, data: &[u8], doing: &dyn Fn() -> String) -> Result<(), NetError> {
        self.conn
            .writer()
            .write_all(data)
            .map_err(|e| NetError::Protocol(format!("sealing records: {e} {}", doing())))?;
        self.queued += data.len();
        if self.queued >= OUT_BUFFER {
            self.write_out(doing)?;
        }
        Ok(())
    }

    fn write_out(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        write_pending(&mut self.conn, &mut self.sock, &mut self.wire_sent)
            .map_err(|e| NetError::from_stream_io(e, &doing(), self.timeout))?;
        self.queued = 0;
        Ok(())
    }

    /// Starts a KeyUpdate now, as rustls does by itself at the key's limit.
    #[cfg(test)]
    fn refresh_keys(&mut self) {
        self.conn.refresh_traffic_keys().unwrap();
    }
}

impl RecordReader {
    /// The receiving half over a lane whose lane message has been exchanged.
    pub(crate) fn new(h: Handshaken) -> RecordReader {
        let Handshaken {
            conn,
            stream,
            wire_sent,
            wire_received,
        } = h;
        RecordReader {
            sock: stream,
            conn,
            buf: vec![0; IN_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            closed: false,
            wire_sent,
            wire_received,
            timeout: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Fill `dst` completely. A timeout leaves the reader consistent (what was read stays).
    pub fn read_exact(
        &mut self,
        mut dst: &mut [u8],
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while !dst.is_empty() {
            self.wait_plaintext(doing)?;
            let n = self.take(dst.len(), |p| dst[..p.len()].copy_from_slice(p));
            dst = &mut dst[n..];
        }
        Ok(())
    }

    /// Append exactly `n` bytes to `dst` (no zero-filling of the destination first).
    pub fn read_append(
        &mut self,
        dst: &mut Vec<u8>,
        mut n: usize,
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while n > 0 {
            self.wait_plaintext(doing)?;
            n -= self.take(n, |p| dst.extend_from_slice(p));
        }
        Ok(())
    }

    /// Hands at most `max` bytes of opened plaintext to `f`, consumes them, returns how many.
    fn take(&mut self, max: usize, f: impl FnOnce(&[u8])) -> usize {
        let mut reader = self.conn.reader();
        let chunk = match io::BufRead::fill_buf(&mut reader) {
            Ok(c) => c,
            Err(_) => return 0,
        };
        let k = chunk.len().min(max);
        f(&chunk[..k]);
        io::BufRead::consume(&mut reader, k);
        k
    }

    /// True when rustls holds opened plaintext not yet taken.
    fn has_plaintext(&mut self) -> bool {
        matches!(io::BufRead::fill_buf(&mut self.conn.reader()), Ok(c) if !c.is_empty())
    }

    /// Wait until some plaintext is available, consuming none of it. A timeout here leaves
    /// the stream intact, so the caller may simply wait again.
    pub fn wait_plaintext(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        while !self.has_plaintext() {
            self.next_records(doing)?;
        }
        Ok(())
    }

    /// Gives rustls the next ciphertext (reading the socket when none is left) until it has
    /// opened some plaintext or processed what it was given.
    fn next_records(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        if self.closed {
            return Err(NetError::PeerClosed(format!(
                "(it sent close_notify) {}",
                doing()
            )));
        }
        if self.start == self.end {
            let n = loop {
                match self.sock.read(&mut self.buf) {
                    Ok(0) => return Err(NetError::PeerClosed(format!("(EOF) {}", doing()))),
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(NetError::from_stream_io(e, &doing(), self.timeout)),
                }
            };
            self.wire_received += n as u64;
            (self.start, self.end) = (0, n);
        }
        // rustls takes a few KiB per call; its plaintext is taken before the next call, so
        // its buffer of opened plaintext never fills.
        let mut rest = &self.buf[self.start..self.end];
        let before = rest.len();
        self.conn
            .read_tls(&mut rest)
            .map_err(|e| NetError::Protocol(format!("reading records: {e} {}", doing())))?;
        self.start += before - rest.len();
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.closed |= state.peer_has_closed();
                // rustls's answer to a KeyUpdate waits for data of ours, which this lane never
                // carries, so there is nothing to write here.
                Ok(())
            }
            Err(e) => {
                // Best effort: rustls's alert tells the peer why (it may not be listening).
                let _ = write_pending(&mut self.conn, &mut self.sock, &mut self.wire_sent);
                Err(tls_error(e, doing))
            }
        }
    }
}

/// Writes every record rustls has queued; a socket that takes nothing is an error, not a spin.
fn write_pending(conn: &mut Connection, sock: &mut TcpStream, sent: &mut u64) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A record rustls refused, or an alert the peer sent.
fn tls_error(e: rustls::Error, doing: &dyn Fn() -> String) -> NetError {
    NetError::Protocol(match e {
        rustls::Error::DecryptError => format!(
            "a record failed authentication (corrupted or tampered stream) {}",
            doing()
        ),
        rustls::Error::AlertReceived(a) => format!("the peer sent TLS alert {a:?} {}", doing()),
        e => format!("TLS: {e} {}", doing()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::keygen;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    /// The records the link seals are read by rustls itself, and the other way round: the
    /// link speaks standard TLS 1.3 records after the handshake.
    #[test]
    fn records_interoperate_with_rustls() {
        let (client, mut server) = handshaken();
        // Client side switches to the link's sending half; server side stays on rustls.
        let mut w = RecordWriter::new(client);
        let doing = || "test".to_string();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        w.write_all(&msg[..5], &doing).unwrap();
        w.write_all(&msg[5..], &doing).unwrap();
        w.flush(&doing).unwrap();
        let mut got = vec![0u8; msg.len()];
        let mut filled = 0;
        while filled < got.len() {
            server.conn.read_tls(&mut server.stream).unwrap();
            server.conn.process_new_packets().unwrap();
            loop {
                match server.conn.reader().read(&mut got[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(got, msg);
        // close_notify from the link is understood by rustls.
        w.close_notify().unwrap();
        server.conn.read_tls(&mut server.stream).unwrap();
        let state = server.conn.process_new_packets().unwrap();
        assert!(state.peer_has_closed());

        // The receiving half opens what plain rustls seals.
        let (client, mut server) = handshaken();
        let mut r = RecordReader::new(client);
        let reply: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
        server.conn.writer().write_all(&reply).unwrap();
        while server.conn.wants_write() {
            server.conn.write_tls(&mut server.stream).unwrap();
        }
        let mut got = vec![0u8; 20_000];
        r.read_exact(&mut got, &doing).unwrap();
        let mut rest = Vec::new();
        r.read_append(&mut rest, 30_000, &doing).unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got, reply);
    }

    /// A handshaken pair: (client, server).
    fn handshaken() -> (Handshaken, Handshaken) {
        let s0 = keygen("ppdenoise-s0").unwrap();
        let s1 = keygen("ppdenoise-s1").unwrap();
        let (c, s) = pair();
        let t = Duration::from_secs(10);
        let (p0, p1) = (s1.peer_cert(), s0.peer_cert());
        let server = std::thread::spawn(move || handshake(s, Role::Server, &s0, &p0, t));
        let client = handshake(c, Role::Client, &s1, &p1, t).unwrap_or_else(|e| panic!("{e}"));
        let server = server.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        (client, server)
    }

    #[test]
    fn tampered_record_is_refused() {
        let (client, mut server) = handshaken();
        let mut r = RecordReader::new(client);
        // The server's rustls seals a record; one ciphertext bit flips on the way.
        server.conn.writer().write_all(b"hello").unwrap();
        let mut wire = Vec::new();
        while server.conn.wants_write() {
            server.conn.write_tls(&mut wire).unwrap();
        }
        let last = wire.len() - 1;
        wire[last] ^= 1;
        server.stream.write_all(&wire).unwrap();
        let mut got = [0u8; 5];
        let e = r.read_exact(&mut got, &|| "test".into()).unwrap_err();
        assert!(matches!(e, NetError::Protocol(_)), "{e}");
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }

    /// KeyUpdates (what rustls sends by itself before a key's limit) in the middle of
    /// traffic on both lanes of a link, while both halves of both ends run on their own
    /// threads: every byte arrives.
    #[test]
    fn traffic_goes_on_across_key_updates_in_both_directions() {
        let (up_c, up_s) = handshaken();
        let (down_c, down_s) = handshaken();
        let (mut cw, mut sr) = (RecordWriter::new(up_c), RecordReader::new(up_s));
        let (mut sw, mut cr) = (RecordWriter::new(down_s), RecordReader::new(down_c));
        let msg = |seed: u32| -> Vec<u8> {
            (0..3_000_000u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
                .collect()
        };
        let send = |w: &mut RecordWriter, seed: u32| {
            let doing = || "test".to_string();
            for round in 0..4 {
                w.write_all(&msg(seed + round), &doing).unwrap();
                w.flush(&doing).unwrap();
                // Refreshed keys mid-stream (the reader's answer waits for data it never sends).
                w.refresh_keys();
            }
        };
        let recv = |r: &mut RecordReader, seed: u32| {
            for round in 0..4 {
                let mut got = vec![0u8; 3_000_000];
                r.read_exact(&mut got, &|| "test".into()).unwrap();
                assert!(got == msg(seed + round), "round {round} differs");
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| send(&mut cw, 1));
            s.spawn(|| send(&mut sw, 100));
            s.spawn(|| recv(&mut sr, 1));
            recv(&mut cr, 100);
        });
        // Past the key updates the lanes still work.
        let doing = || "test".to_string();
        cw.write_all(b"done", &doing).unwrap();
        cw.flush(&doing).unwrap();
        let mut got = [0u8; 4];
        sr.read_exact(&mut got, &doing).unwrap();
        assert_eq!(&got, b"done");
    }
}
