//! Server identities: an ECDSA P-256 key pair with a self-signed certificate whose
//! subjectAltName is the server's name (e.g. `ppdenoise-s0`), and the peer's certificate that
//! the other server pins.
//!
//! Files: `<prefix>.key` holds the private key (PEM, PKCS#8, mode `0600`), `<prefix>.crt` the
//! certificate (PEM, mode `0644`). Both are written atomically (temporary file in the same
//! folder, then rename), so an interrupted `keygen` never leaves half a key behind.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName,
};
use rustls::sign::CertifiedKey;

use super::NetError;

/// The crypto provider used everywhere (keys here, the TLS connections of `tls`): rustls'
/// ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This server's own key pair and certificate.
pub struct Identity {
    name: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    fingerprint: String,
    source: String,
}

/// The one certificate this server accepts from its peer.
#[derive(Clone)]
pub struct PeerCert {
    name: String,
    der: CertificateDer<'static>,
    fingerprint: String,
    source: String,
}

/// Make a fresh identity: ECDSA P-256 key and a self-signed certificate for `name`.
///
/// `name` becomes the certificate's DNS subjectAltName and common name; it must be a valid
/// DNS name (letters, digits, `-`, `.`), e.g. `ppdenoise-s0`.
pub fn keygen(name: &str) -> Result<Identity, NetError> {
    if ServerName::try_from(name).is_err() || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(NetError::KeyGen(format!(
            "{name:?} is not a valid DNS name (use letters, digits, '-' and '.', e.g. ppdenoise-s0)"
        )));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| NetError::KeyGen(format!("generating an ECDSA P-256 key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| NetError::KeyGen(format!("certificate parameters for {name:?}: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params
        .self_signed(&key)
        .map_err(|e| NetError::KeyGen(format!("self-signing the certificate: {e}")))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Identity::from_der(cert.der().clone(), key_der, format!("new identity {name}"))
        .map_err(|e| NetError::KeyGen(e.to_string()))
}

/// Read the peer's certificate (PEM, exactly one certificate) that this server will pin.
pub fn load_peer_cert(path: &Path) -> Result<PeerCert, NetError> {
    let der = read_cert_file(path)?;
    PeerCert::from_der(der, path.display().to_string())
}

/// SHA-256 of the certificate's DER bytes, as `sha256:<64 hex digits>`; for logs and errors.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Identity {
    /// Build an identity from DER parts; checks that the key belongs to the certificate.
    /// `source` names where the parts came from, for error messages.
    pub fn from_der(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        source: impl Into<String>,
    ) -> Result<Identity, NetError> {
        let source = source.into();
        let fail = |problem: String| NetError::Identity {
            path: PathBuf::from(&source),
            problem,
        };
        let name = cert_dns_name(&cert).map_err(fail)?;
        let provider = provider();
        let signer = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| fail(format!("unusable private key: {e}")))?;
        CertifiedKey::new(vec![cert.clone()], signer)
            .keys_match()
            .map_err(|e| {
                fail(format!(
                    "the private key does not match the certificate ({e})"
                ))
            })?;
        let fingerprint = fingerprint(&cert);
        Ok(Identity {
            name,
            cert,
            key,
            fingerprint,
            source,
        })
    }

    /// Load `key_path` (PEM private key) and `cert_path` (PEM certificate) and check that
    /// they belong together.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Identity, NetError> {
        let key = read_key_file(key_path)?;
        let cert = read_cert_file(cert_path)?;
        let fail = |problem: String| NetError::Identity {
            path: key_path.to_path_buf(),
            problem,
        };
        let name = cert_dns_name(&cert).map_err(|problem| NetError::Identity {
            path: cert_path.to_path_buf(),
            problem,
        })?;
        let provider = provider();
        let signer = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| fail(format!("unusable private key: {e}")))?;
        CertifiedKey::new(vec![cert.clone()], signer)
            .keys_match()
            .map_err(|_| {
                fail(format!(
                    "this private key does not match the certificate {} ({})",
                    cert_path.display(),
                    fingerprint(&cert)
                ))
            })?;
        let fingerprint = fingerprint(&cert);
        Ok(Identity {
            name,
            cert,
            key,
            fingerprint,
            source: cert_path.display().to_string(),
        })
    }

    /// Write `<prefix>.key` (mode 0600) and `<prefix>.crt` (mode 0644), each atomically.
    /// With `overwrite == false` an existing file is an error and is left untouched.
    /// Returns the two paths (key, certificate).
    pub fn save(&self, prefix: &Path, overwrite: bool) -> Result<(PathBuf, PathBuf), NetError> {
        let key_path = with_suffix(prefix, ".key");
        let cert_path = with_suffix(prefix, ".crt");
        if !overwrite {
            for p in [&key_path, &cert_path] {
                if p.exists() {
                    return Err(NetError::Identity {
                        path: p.clone(),
                        problem: "already exists; refusing to overwrite it (remove it first)"
                            .into(),
                    });
                }
            }
        }
        write_atomic(&key_path, self.key_pem().as_bytes(), 0o600, overwrite)?;
        write_atomic(&cert_path, self.cert_pem().as_bytes(), 0o644, overwrite)?;
        Ok((key_path, cert_path))
    }

    /// The name in the certificate's subjectAltName.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 fingerprint of the certificate (see [`fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as PEM text.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.cert.as_ref())
    }

    /// Where this identity came from (certificate path, or `new identity NAME`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// This identity's certificate as the peer will pin it (for tests and in-process use).
    pub fn peer_cert(&self) -> PeerCert {
        PeerCert {
            name: self.name.clone(),
            der: self.cert.clone(),
            fingerprint: self.fingerprint.clone(),
            source: self.source.clone(),
        }
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            name: self.name.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint.clone(),
            source: self.source.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PeerCert {
    /// Wrap a DER certificate; `source` names where it came from, for error messages.
    pub fn from_der(
        der: CertificateDer<'static>,
        source: impl Into<String>,
    ) -> Result<PeerCert, NetError> {
        let source = source.into();
        let name = cert_dns_name(&der).map_err(|problem| NetError::Identity {
            path: PathBuf::from(&source),
            problem,
        })?;
        Ok(PeerCert {
            name,
            fingerprint: fingerprint(&der),
            der,
            source,
        })
    }

    /// The peer's name (the certificate's DNS subjectAltName), used as the TLS server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 fingerprint of the pinned certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the pinned certificate came from (its file).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pinned certificate (DER).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }
}

impl fmt::Debug for PeerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCert")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Files

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(prefix.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn ident_err(path: &Path, problem: impl Into<String>) -> NetError {
    NetError::Identity {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, NetError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ident_err(path, "file not found"),
        io::ErrorKind::PermissionDenied => ident_err(path, "permission denied"),
        _ => ident_err(path, format!("cannot read: {e}")),
    })
}

/// All PEM sections of `bytes`; an error names the file when there is none or one is broken.
fn pem_sections(path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, NetError> {
    let mut rd: &[u8] = bytes;
    let mut out = Vec::new();
    loop {
        match pem::from_buf(&mut rd) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => break,
            Err(e) => return Err(ident_err(path, format!("not a valid PEM file ({e})"))),
        }
    }
    if out.is_empty() {
        return Err(ident_err(
            path,
            "not a PEM file (no -----BEGIN ...----- section found)",
        ));
    }
    Ok(out)
}

fn kind_name(kind: SectionKind) -> String {
    match kind {
        SectionKind::Certificate => "a certificate".into(),
        SectionKind::PrivateKey | SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => {
            "a private key".into()
        }
        other => format!("a {other:?} section"),
    }
}

fn read_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    let bytes = read_file(path)?;
    warn_if_readable_by_others(path);
    let sections = pem_sections(path, &bytes)?;
    let mut keys = Vec::new();
    for (kind, der) in &sections {
        match kind {
            SectionKind::PrivateKey => {
                keys.push(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.clone())))
            }
            SectionKind::EcPrivateKey => {
                keys.push(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der.clone())))
            }
            SectionKind::RsaPrivateKey => {
                keys.push(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.clone())))
            }
            _ => {}
        }
    }
    match keys.len() {
        1 => Ok(keys.pop().expect("one key")),
        0 => Err(ident_err(
            path,
            format!(
                "contains {}, not a private key (did you swap the key and certificate files?)",
                kind_name(sections[0].0)
            ),
        )),
        n => Err(ident_err(
            path,
            format!("contains {n} private keys; expected exactly one"),
        )),
    }
}

fn read_cert_file(path: &Path) -> Result<CertificateDer<'static>, NetError> {
    let bytes = read_file(path)?;
    let sections = pem_sections(path, &bytes)?;
    let mut certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    match certs.len() {
        1 => Ok(certs.pop().expect("one certificate")),
        0 => Err(ident_err(
            path,
            format!(
                "contains {}, not a certificate (did you swap the key and certificate files?)",
                kind_name(sections[0].0)
            ),
        )),
        n => Err(ident_err(
            path,
            format!("contains {n} certificates; expected exactly one (made by keygen)"),
        )),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: private key {} has mode {mode:04o}; it should be 0600 (chmod 600 {})",
                path.display(),
                path.display()
            );
        }
    }
}

/// Write `bytes` to `path` through a temporary file in the same folder, with `mode`.
/// Without `overwrite`, an existing `path` is an error (checked atomically with a hard link).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), NetError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ident_err(path, "not a file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp);

    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if overwrite {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        match e.kind() {
            io::ErrorKind::AlreadyExists => ident_err(
                path,
                "already exists; refusing to overwrite it (remove it first)",
            ),
            _ => ident_err(path, format!("cannot write: {e}")),
        }
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        b64.push(ALPHABET[(v >> 18) as usize & 63]);
        b64.push(ALPHABET[(v >> 12) as usize & 63]);
        b64.push(if n > 1 {
            ALPHABET[(v >> 6) as usize & 63]
        } else {
            b'='
        });
        b64.push(if n > 2 {
            ALPHABET[v as usize & 63]
        } else {
            b'='
        });
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------------------------
// Just enough DER to read a certificate's DNS subjectAltNames.

/// One DER element: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT in TBSCertificate
const TAG_OID: u8 = 0x06;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_DNS_NAME: u8 = 0x82; // GeneralName dNSName [2] IMPLICIT IA5String
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17

/// The DNS names in the certificate's subjectAltName; `None` if the DER is malformed.
fn san_dns_names(cert: &[u8]) -> Option<Vec<String>> {
    let (tag, cert_body, _) = der_tlv(cert)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_tlv(cert_body)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    let mut names = Vec::new();
    let mut rest = tbs;
    while !rest.is_empty() {
        let (tag, body, r) = der_tlv(rest)?;
        rest = r;
        if tag != TAG_EXTENSIONS {
            continue;
        }
        let (tag, exts, _) = der_tlv(body)?;
        if tag != TAG_SEQUENCE {
            return None;
        }
        let mut exts = exts;
        while !exts.is_empty() {
            let (_, ext, r) = der_tlv(exts)?;
            exts = r;
            let (tag, oid, after_oid) = der_tlv(ext)?;
            if tag != TAG_OID || oid != OID_SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value, after) = der_tlv(after_oid)?;
            if tag == TAG_BOOLEAN {
                (tag, value, _) = der_tlv(after)?;
            }
            if tag != TAG_OCTET_STRING {
                return None;
            }
            let (tag, general_names, _) = der_tlv(value)?;
            if tag != TAG_SEQUENCE {
                return None;
            }
            let mut gn = general_names;
            while !gn.is_empty() {
                let (tag, v, r) = der_tlv(gn)?;
                gn = r;
                if tag == TAG_DNS_NAME {
                    names.push(String::from_utf8(v.to_vec()).ok()?);
                }
            }
        }
    }
    Some(names)
}

/// The first DNS subjectAltName, checked to be usable as a TLS server name.
fn cert_dns_name(cert: &CertificateDer<'_>) -> Result<String, String> {
    let names = san_dns_names(cert.as_ref())
        .ok_or_else(|| "not a well-formed X.509 certificate".to_string())?;
    let name = names.into_iter().next().ok_or_else(|| {
        "the certificate has no DNS subjectAltName (make identities with `ppdenoise keygen`)"
            .to_string()
    })?;
    ServerName::try_from(name.as_str())
        .map_err(|_| format!("the certificate's subjectAltName {name:?} is not a DNS name"))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ppdenoise-net-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keygen_names_and_fingerprints() {
        let id = keygen("ppdenoise-s0").unwrap();
        assert_eq!(id.name(), "ppdenoise-s0");
        assert!(id.fingerprint().starts_with("sha256:"));
        assert_eq!(id.fingerprint().len(), 7 + 64);
        assert_eq!(id.peer_cert().name(), "ppdenoise-s0");
        let other = keygen("ppdenoise-s0").unwrap();
        assert_ne!(id.fingerprint(), other.fingerprint());
        assert!(keygen("not a name!").is_err());
        assert!(keygen("127.0.0.1").is_err());
    }

    #[test]
    fn save_load_round_trip_and_permissions() {
        let dir = tempdir("save");
        let id = keygen("ppdenoise-s1").unwrap();
        let (key, crt) = id.save(&dir.join("s1"), false).unwrap();
        assert_eq!(key, dir.join("s1.key"));
        assert_eq!(crt, dir.join("s1.crt"));
        let key_mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600, "private key must be 0600");
        let crt_mode = fs::metadata(&crt).unwrap().permissions().mode() & 0o777;
        assert_eq!(crt_mode & 0o600, 0o600);
        assert_eq!(crt_mode & 0o022, 0, "certificate is not writable by others");
        assert!(fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));

        let loaded = Identity::load(&key, &crt).unwrap();
        assert_eq!(loaded.name(), "ppdenoise-s1");
        assert_eq!(loaded.fingerprint(), id.fingerprint());
        let peer = load_peer_cert(&crt).unwrap();
        assert_eq!(peer.fingerprint(), id.fingerprint());
        assert_eq!(peer.name(), "ppdenoise-s1");
        assert_eq!(peer.source(), crt.display().to_string());

        // No overwrite unless asked; no temporary files left behind.
        let err = id.save(&dir.join("s1"), false).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let id2 = keygen("ppdenoise-s1").unwrap();
        id2.save(&dir.join("s1"), true).unwrap();
        assert_eq!(
            Identity::load(&key, &crt).unwrap().fingerprint(),
            id2.fingerprint()
        );
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let dir = tempdir("errors");
        let a = keygen("ppdenoise-s0").unwrap();
        let b = keygen("ppdenoise-s1").unwrap();
        let (a_key, a_crt) = a.save(&dir.join("a"), false).unwrap();
        let (b_key, _) = b.save(&dir.join("b"), false).unwrap();

        let missing = dir.join("missing.crt");
        let e = load_peer_cert(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.crt") && e.contains("not found"), "{e}");

        let junk = dir.join("junk.crt");
        fs::write(&junk, b"\x00\x01 this is not pem").unwrap();
        let e = load_peer_cert(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.crt") && e.contains("not a PEM file"),
            "{e}"
        );

        // Key given where a certificate is expected, and the other way round.
        let e = load_peer_cert(&a_key).unwrap_err().to_string();
        assert!(
            e.contains("a.key") && e.contains("not a certificate"),
            "{e}"
        );
        let e = Identity::load(&a_crt, &a_crt).unwrap_err().to_string();
        assert!(
            e.contains("a.crt") && e.contains("not a private key"),
            "{e}"
        );

        // Key of one identity with the certificate of another.
        let e = Identity::load(&b_key, &a_crt).unwrap_err().to_string();
        assert!(e.contains("b.key") && e.contains("does not match"), "{e}");

        // Broken base64 inside a PEM section.
        let broken = dir.join("broken.crt");
        fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_peer_cert(&broken).unwrap_err().to_string();
        assert!(e.contains("broken.crt"), "{e}");

        // A PEM certificate section that holds no certificate.
        let fake = dir.join("fake.crt");
        fs::write(&fake, pem_encode("CERTIFICATE", b"0123456789")).unwrap();
        let e = load_peer_cert(&fake).unwrap_err().to_string();
        assert!(e.contains("fake.crt") && e.contains("X.509"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_encoding_matches_known_base64() {
        let p = pem_encode("X", b"Man is distinguished");
        assert_eq!(
            p,
            "-----BEGIN X-----\nTWFuIGlzIGRpc3Rpbmd1aXNoZWQ=\n-----END X-----\n"
        );
        assert_eq!(
            pem_encode("X", b"Ma"),
            "-----BEGIN X-----\nTWE=\n-----END X-----\n"
        );
    }
}
