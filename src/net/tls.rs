//! TLS 1.3 with one pinned peer certificate on each side, and the record protection used
//! once the handshake is over.
//!
//! Handshake: rustls (ring provider, TLS 1.3 only, client authentication mandatory). Both
//! sides install [`PinnedPeerVerifier`], which accepts exactly the peer certificate that the
//! operator configured (compared byte for byte) and then checks the handshake signature with
//! the provider's algorithms. After the handshake each side sends a short confirmation message
//! (`HELLO_*`) through rustls and waits for the peer's: the client's handshake finishes before
//! the server has judged the client's certificate, so only the server's confirmation proves
//! that the server accepted it.
//!
//! Records: after the confirmation, the traffic keys are extracted from rustls and the link
//! seals and opens standard TLS 1.3 application-data records itself (`RecordWriter`,
//! `RecordReader`): nonce = IV xor sequence number, the record header as associated data,
//! the inner content type after the data. The two directions have separate keys and sequence
//! numbers, so the sending half and the receiving half of a link can run on different threads.
//! During the handshake the socket is read one whole record at a time, so rustls never buffers
//! bytes that belong to the records that follow.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::aead;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection,
    ConnectionTrafficSecrets, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    ServerConnection, SignatureScheme,
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
    config.enable_secret_extraction = true;
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
    config.enable_secret_extraction = true;
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
const TAG_LEN: usize = 16;
const CT_APPLICATION_DATA: u8 = 0x17;
const CT_ALERT: u8 = 0x15;
const CT_HANDSHAKE: u8 = 0x16;

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
// Record protection after the handshake

/// Records per direction before the link refuses to go on: RFC 8446 section 5.5 allows
/// 2^24.5 full-size records per AES-GCM key. 2^24 records of 16 KiB is 256 GiB per direction.
const RECORD_LIMIT: u64 = 1 << 24;

struct RecordKey {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl RecordKey {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<RecordKey, NetError> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(NetError::Protocol(
                    "negotiated cipher suite is not supported by the link".into(),
                ));
            }
        };
        let unbound = aead::UnboundKey::new(alg, key.as_ref())
            .map_err(|_| NetError::Protocol("bad traffic key length".into()))?;
        let iv: [u8; aead::NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| NetError::Protocol("bad traffic IV length".into()))?;
        Ok(RecordKey {
            key: aead::LessSafeKey::new(unbound),
            iv,
            seq,
        })
    }

    fn next_nonce(&mut self) -> Result<aead::Nonce, NetError> {
        if self.seq >= RECORD_LIMIT {
            return Err(NetError::Protocol(format!(
                "the traffic key reached its usage limit ({RECORD_LIMIT} records); reconnect"
            )));
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }
}

/// Take the traffic keys out of a confirmed connection and build the two record halves.
pub(crate) fn into_records(h: Handshaken) -> Result<(RecordWriter, RecordReader), NetError> {
    let Handshaken {
        conn,
        stream,
        wire_sent,
        wire_received,
    } = h;
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| NetError::Handshake(format!("taking over the traffic keys: {e}")))?;
    let tx = RecordKey::new(secrets.tx.0, secrets.tx.1)?;
    let rx = RecordKey::new(secrets.rx.0, secrets.rx.1)?;
    let write_stream = stream
        .try_clone()
        .map_err(|e| NetError::io("duplicating the socket", e))?;
    let mut writer = RecordWriter::new(write_stream, tx);
    writer.wire_bytes = wire_sent;
    let mut reader = RecordReader::new(stream, rx);
    reader.wire_bytes = wire_received;
    Ok((writer, reader))
}

/// Bytes gathered before one `write` to the socket.
const OUT_BUFFER: usize = 1 << 20;

/// Sealing half: gathers plaintext into TLS records and writes them in large batches.
pub(crate) struct RecordWriter {
    sock: TcpStream,
    key: RecordKey,
    /// Sealed records, then the open record: a reserved header slot followed by its plaintext.
    buf: Vec<u8>,
    open: Option<usize>,
    /// Bytes written to the socket, handshake included.
    pub wire_bytes: u64,
    pub timeout: Option<Duration>,
}

impl RecordWriter {
    fn new(sock: TcpStream, key: RecordKey) -> Self {
        RecordWriter {
            sock,
            key,
            buf: Vec::with_capacity(OUT_BUFFER + HEADER_LEN + MAX_PLAINTEXT + 1 + TAG_LEN),
            open: None,
            wire_bytes: 0,
            timeout: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Queue `data`; full records are sealed as they fill, batches written as they fill.
    pub fn write_all(
        &mut self,
        mut data: &[u8],
        doing: &dyn Fn() -> String,
    ) -> Result<(), NetError> {
        while !data.is_empty() {
            let start = match self.open {
                Some(start) => start,
                None => {
                    if self.buf.len() >= OUT_BUFFER {
                        self.write_out(doing)?;
                    }
                    let start = self.buf.len();
                    self.buf.extend_from_slice(&[0; HEADER_LEN]);
                    self.open = Some(start);
                    start
                }
            };
            let used = self.buf.len() - start - HEADER_LEN;
            let n = (MAX_PLAINTEXT - used).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if used + n == MAX_PLAINTEXT {
                self.seal(CT_APPLICATION_DATA)?;
            }
        }
        Ok(())
    }

    /// Seal the open record and write everything queued.
    pub fn flush(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        if self.open.is_some() {
            self.seal(CT_APPLICATION_DATA)?;
        }
        self.write_out(doing)
    }

    /// Send a TLS close_notify alert (after anything queued).
    pub fn close_notify(&mut self) -> Result<(), NetError> {
        let doing = || "sending close_notify".to_string();
        if self.open.is_some() {
            self.seal(CT_APPLICATION_DATA)?;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        self.buf.extend_from_slice(&[1, 0]); // warning, close_notify
        self.open = Some(start);
        self.seal(CT_ALERT)?;
        self.write_out(&doing)
    }

    fn seal(&mut self, content_type: u8) -> Result<(), NetError> {
        let Some(start) = self.open else {
            return Ok(());
        };
        // The nonce first: if the record limit is reached, the open record is dropped, so no
        // later write can send its plaintext.
        let nonce = match self.key.next_nonce() {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(start);
                self.open = None;
                return Err(e);
            }
        };
        self.open = None;
        self.buf.push(content_type);
        let ciphertext_len = self.buf.len() - start - HEADER_LEN + TAG_LEN;
        let len = u16::try_from(ciphertext_len).expect("record length fits u16");
        let [hi, lo] = len.to_be_bytes();
        let header = [CT_APPLICATION_DATA, 3, 3, hi, lo];
        self.buf[start..start + HEADER_LEN].copy_from_slice(&header);
        let tag = self
            .key
            .key
            .seal_in_place_separate_tag(
                nonce,
                aead::Aad::from(header),
                &mut self.buf[start + HEADER_LEN..],
            )
            .map_err(|_| NetError::Protocol("sealing a record failed".into()))?;
        self.buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn write_out(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        let end = self.open.unwrap_or(self.buf.len());
        if end == 0 {
            return Ok(());
        }
        if let Err(e) = self.sock.write_all(&self.buf[..end]) {
            return Err(NetError::from_stream_io(e, &doing(), self.timeout));
        }
        self.wire_bytes += end as u64;
        self.buf.drain(..end);
        if let Some(start) = self.open.as_mut() {
            *start -= end;
        }
        Ok(())
    }
}

/// Bytes read from the socket at a time (at most).
const IN_BUFFER: usize = 1 << 20;

/// Opening half: reads large chunks from the socket, opens records in place.
pub(crate) struct RecordReader {
    sock: TcpStream,
    key: RecordKey,
    buf: Box<[u8]>,
    /// Received bytes not yet opened: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Opened plaintext not yet consumed: `buf[plain_start..plain_end]`.
    plain_start: usize,
    plain_end: usize,
    closed: bool,
    /// Bytes read from the socket, handshake included.
    pub wire_bytes: u64,
    pub timeout: Option<Duration>,
}

impl RecordReader {
    fn new(sock: TcpStream, key: RecordKey) -> Self {
        RecordReader {
            sock,
            key,
            buf: vec![0; IN_BUFFER + HEADER_LEN + MAX_CIPHERTEXT].into_boxed_slice(),
            start: 0,
            end: 0,
            plain_start: 0,
            plain_end: 0,
            closed: false,
            wire_bytes: 0,
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
            if self.plain_start == self.plain_end {
                self.next_record(doing)?;
                continue;
            }
            let n = (self.plain_end - self.plain_start).min(dst.len());
            dst[..n].copy_from_slice(&self.buf[self.plain_start..self.plain_start + n]);
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
            if self.plain_start == self.plain_end {
                self.next_record(doing)?;
                continue;
            }
            let k = (self.plain_end - self.plain_start).min(n);
            dst.extend_from_slice(&self.buf[self.plain_start..self.plain_start + k]);
            self.plain_start += k;
            n -= k;
        }
        Ok(())
    }

    /// Wait until some plaintext is available, consuming none of it. A timeout here leaves
    /// the stream intact, so the caller may simply wait again.
    pub fn wait_plaintext(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        while self.plain_start == self.plain_end {
            self.next_record(doing)?;
        }
        Ok(())
    }

    /// Open the next record; only called when no plaintext is pending.
    fn next_record(&mut self, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        if self.closed {
            return Err(NetError::PeerClosed(format!(
                "(it sent close_notify) {}",
                doing()
            )));
        }
        loop {
            self.fill(HEADER_LEN, doing)?;
            let h = &self.buf[self.start..self.start + HEADER_LEN];
            let header: [u8; HEADER_LEN] = [h[0], h[1], h[2], h[3], h[4]];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != CT_APPLICATION_DATA || header[1..3] != [3, 3] {
                return Err(NetError::Protocol(format!(
                    "unexpected record header {header:02x?} {}",
                    doing()
                )));
            }
            if !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
                return Err(NetError::Protocol(format!(
                    "record of {len} bytes is outside the TLS limits {}",
                    doing()
                )));
            }
            self.fill(HEADER_LEN + len, doing)?;
            let body_start = self.start + HEADER_LEN;
            let nonce = self.key.next_nonce()?;
            let plain_len = self
                .key
                .key
                .open_in_place(
                    nonce,
                    aead::Aad::from(header),
                    &mut self.buf[body_start..body_start + len],
                )
                .map_err(|_| {
                    NetError::Protocol(format!(
                        "a record failed authentication (corrupted or tampered stream) {}",
                        doing()
                    ))
                })?
                .len();
            self.start += HEADER_LEN + len;
            // RFC 8446 5.4: the inner plaintext is at most 2^14 + 1 bytes.
            if plain_len > MAX_PLAINTEXT + 1 {
                return Err(NetError::Protocol(format!(
                    "a record of {plain_len} plaintext bytes exceeds TLS 1.3's limit {}",
                    doing()
                )));
            }
            // Inner plaintext: content, content type, zero padding.
            let inner = &self.buf[body_start..body_start + plain_len];
            let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
                return Err(NetError::Protocol("a record has no content type".into()));
            };
            match inner[type_at] {
                CT_APPLICATION_DATA => {
                    if type_at > 0 {
                        self.plain_start = body_start;
                        self.plain_end = body_start + type_at;
                        return Ok(());
                    }
                }
                CT_ALERT => {
                    if inner[..type_at] == [1, 0] {
                        self.closed = true;
                        return Err(NetError::PeerClosed(format!(
                            "(it sent close_notify) {}",
                            doing()
                        )));
                    }
                    // An alert body is exactly level and description.
                    return Err(NetError::Protocol(match inner[..type_at] {
                        [_, alert] => format!(
                            "the peer sent TLS alert {:?} {}",
                            AlertDescription::from(alert),
                            doing()
                        ),
                        _ => format!("the peer sent a malformed TLS alert {}", doing()),
                    }));
                }
                CT_HANDSHAKE => {
                    return Err(NetError::Protocol(
                        "the peer sent a post-handshake message (key update or ticket), \
                         which the link does not support"
                            .into(),
                    ));
                }
                other => {
                    return Err(NetError::Protocol(format!(
                        "a record has unknown content type {other}"
                    )));
                }
            }
        }
    }

    /// Make sure at least `need` unopened bytes are buffered.
    fn fill(&mut self, need: usize, doing: &dyn Fn() -> String) -> Result<(), NetError> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.plain_start = 0;
            self.plain_end = 0;
        }
        while self.end - self.start < need {
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    let detail = if self.end == self.start {
                        doing()
                    } else {
                        format!("in the middle of a TLS record, {}", doing())
                    };
                    return Err(NetError::PeerClosed(format!("(EOF) {detail}")));
                }
                Ok(n) => {
                    self.end += n;
                    self.wire_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetError::from_stream_io(e, &doing(), self.timeout)),
            }
        }
        Ok(())
    }
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

    #[test]
    fn tampered_record_is_refused() {
        let s0 = keygen("ppdenoise-s0").unwrap();
        let s1 = keygen("ppdenoise-s1").unwrap();
        let (c, s) = pair();
        let t = Duration::from_secs(10);
        let (p0, p1) = (s1.peer_cert(), s0.peer_cert());
        let server = std::thread::spawn(move || handshake(s, Role::Server, &s0, &p0, t));
        let client = handshake(c, Role::Client, &s1, &p1, t).unwrap_or_else(|e| panic!("{e}"));
        let server = server.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        let (mut w, _r) = into_records(client).unwrap();
        let (_w2, mut r2) = into_records(server).unwrap();
        let doing = || "test".to_string();
        // Seal a record, flip one ciphertext bit on the way out.
        w.write_all(b"hello", &doing).unwrap();
        w.seal(CT_APPLICATION_DATA).unwrap();
        let last = w.buf.len() - 1;
        w.buf[last] ^= 1;
        w.flush(&doing).unwrap();
        let mut got = [0u8; 5];
        let e = r2.read_exact(&mut got, &doing).unwrap_err();
        assert!(matches!(e, NetError::Protocol(_)), "{e}");
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }
}
