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
//! KeyUpdates, so the link has no record code of its own and no traffic limit. The sending
//! half ([`RecordWriter`]) and the receiving half ([`RecordReader`]) run on different threads
//! and share the rustls connection under a lock that is never held across socket I/O.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
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

use super::identity::{Identity, PeerCert};
use super::NetError;

/// The crypto provider used everywhere: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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

/// Run the TLS handshake on `stream` and exchange the confirmation messages.
/// `timeout` bounds the whole handshake (all its reads together: a peer trickling one byte
/// at a time cannot hold the listener longer) and each write.
pub(crate) fn handshake(
    mut stream: TcpStream,
    role: Role,
    me: &Identity,
    peer: &PeerCert,
    timeout: Duration,
) -> Result<Handshaken, NetError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let set = stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)));
    set.map_err(|e| NetError::io("setting the handshake timeout", e))?;
    let mut conn: Connection = match role {
        Role::Client => {
            let name = ServerName::try_from(peer.name().to_string()).map_err(|_| {
                NetError::Handshake(format!("peer name {:?} is not a DNS name", peer.name()))
            })?;
            ClientConnection::new(Arc::new(client_config(me, peer)?), name)
                .map_err(config_error)?
                .into()
        }
        Role::Server => ServerConnection::new(Arc::new(server_config(me, peer)?))
            .map_err(config_error)?
            .into(),
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
        flush_tls(conn, sock, sent)?;
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
    flush_tls(conn, sock, sent)?;
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
    flush_tls(conn, sock, sent)?;
    Ok(())
}

fn flush_tls(conn: &mut Connection, sock: &mut TcpStream, sent: &mut u64) -> io::Result<()> {
    while conn.wants_write() {
        *sent += conn.write_tls(sock)? as u64;
    }
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
            let _ = flush_tls(conn, sock, &mut ignored);
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
            | io::ErrorKind::BrokenPipe => NetError::Handshake(format!(
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
// Records after the handshake: rustls's own record layer, shared by the two halves

/// The connection both halves use. rustls seals and opens every record, and before a key
/// reaches its AEAD limit (2^24 records for AES-GCM, RFC 8446 section 5.5) it sends a
/// KeyUpdate and the peer's rustls answers with one, so a link carries any amount of traffic.
/// The lock is held only to hand plaintext to rustls and take records out, or the reverse,
/// never across a socket read or write: a writer blocked on a full socket never stalls the
/// reader, whose progress is what empties the peer's side.
type Shared = Arc<Mutex<Connection>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Connection> {
    // A panic elsewhere while holding it leaves rustls consistent (each call is atomic).
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Split a confirmed connection into its sending and receiving halves.
pub(crate) fn into_records(h: Handshaken) -> Result<(RecordWriter, RecordReader), NetError> {
    let Handshaken {
        mut conn,
        stream,
        wire_sent,
        wire_received,
    } = h;
    // The halves bound what they hand rustls at once (OUT_BUFFER, IN_BUFFER).
    conn.set_buffer_limit(None);
    let conn = Arc::new(Mutex::new(conn));
    let write_stream = stream
        .try_clone()
        .map_err(|e| NetError::io("duplicating the socket", e))?;
    let writer = RecordWriter {
        sock: write_stream,
        conn: conn.clone(),
        plain: Vec::with_capacity(OUT_BUFFER),
        out: Vec::with_capacity(OUT_BUFFER + OUT_BUFFER / 32),
        wire_bytes: wire_sent,
        timeout: None,
    };
    let reader = RecordReader {
        sock: stream,
        conn,
        buf: vec![0; IN_BUFFER].into_boxed_slice(),
        plain: Vec::with_capacity(IN_BUFFER),
        plain_start: 0,
        closed: false,
        wire_bytes: wire_received,
        timeout: None,
    };
    Ok((writer, reader))
}

/// Plaintext gathered before it goes to rustls (in full 16 KiB records) and the socket.
const OUT_BUFFER: usize = 1 << 20;

/// Sending half: gathers plaintext, has rustls seal it, writes the records in large batches.
pub(crate) struct RecordWriter {
    sock: TcpStream,
    conn: Shared,
    /// Plaintext not yet handed to rustls.
    plain: Vec<u8>,
    /// Records taken out of rustls, being written.
    out: Vec<u8>,
    /// Bytes written to the socket, handshake included.
    pub wire_bytes: u64,
    pub timeout: Option<Duration>,
}

impl RecordWriter {
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Queue `data`; batches are sealed and written as they fill.
    pub fn write_all(
        &mut self,
        mut data: &[u8],
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while !data.is_empty() {
            let n = (OUT_BUFFER - self.plain.len()).min(data.len());
            self.plain.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.plain.len() == OUT_BUFFER {
                self.write_out(doing)?;
            }
        }
        Ok(())
    }

    /// Seal and write everything queued.
    pub fn flush(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        self.write_out(doing)
    }

    /// Send a TLS close_notify alert (after anything queued).
    pub fn close_notify(&mut self) -> Result<(), NetError> {
        let doing = || "sending close_notify".to_string();
        self.seal()?;
        lock(&self.conn).send_close_notify();
        self.write_out(&doing)
    }

    /// Hands the queued plaintext to rustls and takes out every record it has to send (the
    /// reader's replies, such as a KeyUpdate, included).
    fn seal(&mut self) -> Result<(), NetError> {
        let mut c = lock(&self.conn);
        if !self.plain.is_empty() {
            c.writer()
                .write_all(&self.plain)
                .map_err(|e| NetError::Protocol(format!("sealing records: {e}")))?;
            self.plain.clear();
        }
        while c.wants_write() {
            c.write_tls(&mut self.out)
                .map_err(|e| NetError::Protocol(format!("sealing records: {e}")))?;
        }
        Ok(())
    }

    fn write_out(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        self.seal()?;
        if self.out.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.sock.write_all(&self.out) {
            return Err(NetError::from_stream_io(e, &doing(), self.timeout));
        }
        self.wire_bytes += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }

    /// Starts a KeyUpdate now, as rustls does by itself at the key's limit.
    #[cfg(test)]
    fn refresh_keys(&mut self) {
        lock(&self.conn).refresh_traffic_keys().unwrap();
    }
}

/// Bytes read from the socket at a time (at most).
const IN_BUFFER: usize = 1 << 20;

/// Receiving half: reads large chunks from the socket and has rustls open them.
pub(crate) struct RecordReader {
    sock: TcpStream,
    conn: Shared,
    buf: Box<[u8]>,
    /// Opened plaintext; `plain[plain_start..]` is not consumed yet.
    plain: Vec<u8>,
    plain_start: usize,
    closed: bool,
    /// Bytes read from the socket, handshake included.
    pub wire_bytes: u64,
    pub timeout: Option<Duration>,
}

impl RecordReader {
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn pending(&self) -> &[u8] {
        &self.plain[self.plain_start..]
    }

    /// Fill `dst` completely. A timeout leaves the reader consistent (what was read stays).
    pub fn read_exact(
        &mut self,
        mut dst: &mut [u8],
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while !dst.is_empty() {
            if self.pending().is_empty() {
                self.next_records(doing)?;
                continue;
            }
            let n = self.pending().len().min(dst.len());
            dst[..n].copy_from_slice(&self.pending()[..n]);
            self.plain_start += n;
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
            if self.pending().is_empty() {
                self.next_records(doing)?;
                continue;
            }
            let k = self.pending().len().min(n);
            dst.extend_from_slice(&self.pending()[..k]);
            self.plain_start += k;
            n -= k;
        }
        Ok(())
    }

    /// Wait until some plaintext is available, consuming none of it. A timeout here leaves
    /// the stream intact, so the caller may simply wait again.
    pub fn wait_plaintext(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        while self.pending().is_empty() {
            self.next_records(doing)?;
        }
        Ok(())
    }

    /// Reads from the socket until rustls has opened some plaintext; only called when none
    /// is pending.
    fn next_records(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        self.plain.clear();
        self.plain_start = 0;
        loop {
            if self.closed {
                return Err(NetError::PeerClosed(format!(
                    "(it sent close_notify) {}",
                    doing()
                )));
            }
            let n = match self.sock.read(&mut self.buf) {
                Ok(0) => return Err(NetError::PeerClosed(format!("(EOF) {}", doing()))),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetError::from_stream_io(e, &doing(), self.timeout)),
            };
            self.wire_bytes += n as u64;
            let mut c = lock(&self.conn);
            let mut rest = &self.buf[..n];
            while !rest.is_empty() {
                c.read_tls(&mut rest)
                    .map_err(|e| NetError::Protocol(format!("reading records: {e} {}", doing())))?;
                let state = c.process_new_packets().map_err(|e| tls_error(e, doing))?;
                // Taken out as it is opened, so rustls' own buffer never fills.
                let k = state.plaintext_bytes_to_read();
                if k > 0 {
                    let at = self.plain.len();
                    self.plain.resize(at + k, 0);
                    c.reader()
                        .read_exact(&mut self.plain[at..])
                        .map_err(|e| NetError::Protocol(format!("reading records: {e}")))?;
                }
                if state.peer_has_closed() {
                    self.closed = true;
                }
            }
            drop(c);
            if !self.plain.is_empty() {
                return Ok(());
            }
        }
    }
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
        let s0 = keygen("ppdenoise-s0").unwrap();
        let s1 = keygen("ppdenoise-s1").unwrap();
        let (c, s) = pair();
        let t = Duration::from_secs(10);
        let (p0, p1) = (s1.peer_cert(), s0.peer_cert());
        let server = std::thread::spawn(move || handshake(s, Role::Server, &s0, &p0, t));
        let client = handshake(c, Role::Client, &s1, &p1, t).unwrap_or_else(|e| panic!("{e}"));
        let mut server = server.join().unwrap().unwrap_or_else(|e| panic!("{e}"));

        // Client side switches to the link's record layer; server side stays on rustls.
        let (mut w, mut r) = into_records(client).unwrap();
        let doing = || "test".to_string();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        w.write_all(&msg, &doing).unwrap();
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

        let reply: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
        server.conn.writer().write_all(&reply).unwrap();
        while server.conn.wants_write() {
            server.conn.write_tls(&mut server.stream).unwrap();
        }
        let mut got = vec![0u8; reply.len()];
        r.read_exact(&mut got, &doing).unwrap();
        assert_eq!(got, reply);

        // close_notify from the link is understood by rustls.
        w.close_notify().unwrap();
        server.conn.read_tls(&mut server.stream).unwrap();
        let state = server.conn.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
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
        let (_w, mut r) = into_records(client).unwrap();
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
    /// traffic both ways, while both halves of both ends run on their own threads: every byte
    /// arrives, and the key updates are counted on the wire.
    #[test]
    fn traffic_goes_on_across_key_updates_in_both_directions() {
        let (client, server) = handshaken();
        let (mut cw, mut cr) = into_records(client).unwrap();
        let (mut sw, mut sr) = into_records(server).unwrap();
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
                // Refreshed keys mid-stream, and the peer's reply in its own direction.
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
        // Past the key updates the link still works: a last exchange.
        let doing = || "test".to_string();
        cw.write_all(b"done", &doing).unwrap();
        cw.flush(&doing).unwrap();
        let mut got = [0u8; 4];
        sr.read_exact(&mut got, &doing).unwrap();
        assert_eq!(&got, b"done");
    }
}
