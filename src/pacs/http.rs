//! The one HTTP client the archive commands use: ureq over rustls (the project's TLS, with
//! its ring provider), the system's roots or a given CA, HTTP basic or bearer credentials
//! from a file or an environment variable, a timeout per request, bounded retries with
//! back-off on what may pass (a dropped connection, a timeout, 408, 429, 5xx), bodies read
//! up to a bound, no redirect followed (it would carry the credentials elsewhere), and errors
//! that name the URL and the HTTP status.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::ArchiveUrl;

/// Credentials for the archive: `basic:USER:PASSWORD` or `bearer:TOKEN`, read from a file
/// or an environment variable (never the command line, which other users' `ps` shows).
#[derive(Clone)]
pub struct Auth {
    header: String,
}

impl Auth {
    /// Parses the secret `s`; `from` names where it was read (the secret itself is never
    /// shown).
    pub fn parse(s: &str, from: &str) -> Result<Auth> {
        let s = s.trim_end_matches(['\r', '\n']);
        let header = if let Some(up) = s.strip_prefix("basic:") {
            if !up.contains(':') || up.starts_with(':') {
                bail!("{from}: basic credentials are basic:USER:PASSWORD");
            }
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up.as_bytes())
            )
        } else if let Some(t) = s.strip_prefix("bearer:") {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("{from}: a bearer token is one word, without spaces");
            }
            format!("Bearer {t}")
        } else {
            bail!("{from}: credentials are basic:USER:PASSWORD or bearer:TOKEN");
        };
        if header.chars().any(|c| c.is_control()) {
            bail!("{from}: the credentials hold a control character");
        }
        Ok(Auth { header })
    }

    /// The credentials in the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Auth> {
        let v = std::env::var(var).map_err(|_| {
            anyhow!("--archive-auth-env {var}: the variable is not set (or not UTF-8)")
        })?;
        Auth::parse(&v, &format!("--archive-auth-env {var}"))
    }

    /// The credentials in the file `path` (its first line).
    pub fn from_file(path: &Path) -> Result<Auth> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("--archive-auth-file {}: cannot read", path.display()))?;
        if bytes.len() > 64 * 1024 {
            bail!(
                "--archive-auth-file {}: too large for credentials",
                path.display()
            );
        }
        let s = String::from_utf8(bytes)
            .map_err(|_| anyhow!("--archive-auth-file {}: not UTF-8", path.display()))?;
        warn_if_readable(path);
        let line = s.lines().next().unwrap_or("");
        Auth::parse(line, &format!("--archive-auth-file {}", path.display()))
    }
}

/// Warns when the credentials file is readable by others than its owner.
fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: --archive-auth-file {}: the archive's credentials are readable \
                     by others (mode {mode:o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
}

/// How to reach the archive.
#[derive(Clone)]
pub struct Options {
    pub auth: Option<Auth>,
    /// A PEM file of the CA certificates to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// The limit of one request, connection to last byte.
    pub timeout: Duration,
    /// How many times a request that may pass is tried again.
    pub retries: u32,
    /// Whether plain http to another machine is allowed (patient data in the clear).
    pub insecure_http: bool,
}

/// An answer: its status, content type and body (read up to the request's bound).
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The client of one archive.
pub struct Client {
    agent: ureq::Agent,
    auth: Option<String>,
    retries: u32,
    pub url: ArchiveUrl,
}

/// The TLS roots: the CA file given, or the system's.
fn roots(ca: Option<&Path>) -> Result<RootCerts> {
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    match ca {
        Some(p) => {
            let pem = std::fs::read(p)
                .with_context(|| format!("--archive-ca {}: cannot read", p.display()))?;
            for item in ureq::tls::parse_pem(&pem) {
                if let PemItem::Certificate(c) =
                    item.map_err(|e| anyhow!("--archive-ca {}: {e}", p.display()))?
                {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                bail!("--archive-ca {}: holds no PEM certificate", p.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                certs.push(Certificate::from_der(c.as_ref()).to_owned());
            }
            if certs.is_empty() {
                bail!(
                    "no system CA certificates found to check the archive's TLS certificate \
                     (give its CA with --archive-ca){}",
                    found
                        .errors
                        .first()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

impl Client {
    pub fn new(url: ArchiveUrl, o: &Options) -> Result<Client> {
        if o.auth.is_some() && !url.tls() && !url.loopback() {
            bail!(
                "{url}: credentials would cross the network in the clear; use https (or an \
                 archive on this machine)"
            );
        }
        if !url.tls() && !url.loopback() && !o.insecure_http {
            bail!(
                "{url}: patient data would cross the network in the clear; use https (or give \
                 --archive-insecure-http, for a network where that is allowed)"
            );
        }
        if o.ca.is_some() && !url.tls() {
            bail!("--archive-ca: {url} is not https");
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(o.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("ppdenoise/", env!("CARGO_PKG_VERSION")))
            // No proxy from the environment (ALL_PROXY, HTTPS_PROXY, HTTP_PROXY): a hospital
            // proxy would see the patient's data and, over http, the credentials.
            .proxy(None);
        if url.tls() {
            let tls = TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(roots(o.ca.as_deref())?)
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Client {
            agent: config.build().into(),
            auth: o.auth.as_ref().map(|a| a.header.clone()),
            retries: o.retries,
            url,
        })
    }

    /// `GET url` accepting `accept`, its body bounded by `limit` bytes.
    pub fn get(&self, url: &str, accept: &str, limit: u64) -> Result<Reply> {
        self.call("GET", url, limit, || {
            let mut r = self.agent.get(url).header("Accept", accept);
            if let Some(a) = &self.auth {
                r = r.header("Authorization", a);
            }
            r.call()
        })
    }

    /// `POST url` with `body` of `content_type`, the answer's body bounded by `limit` bytes.
    pub fn post(&self, url: &str, content_type: &str, body: &[u8], limit: u64) -> Result<Reply> {
        self.call("POST", url, limit, || {
            let mut r = self
                .agent
                .post(url)
                .header("Content-Type", content_type)
                .header("Accept", "application/dicom+json");
            if let Some(a) = &self.auth {
                r = r.header("Authorization", a);
            }
            r.send(body)
        })
    }

    fn call(
        &self,
        method: &str,
        url: &str,
        limit: u64,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            let last = attempt >= self.retries;
            let res = send().and_then(|mut resp| {
                let status = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = resp.body_mut().with_config().limit(limit).read_to_vec()?;
                Ok((status, content_type, body, location))
            });
            match res {
                Ok((status, content_type, body, location)) => {
                    let transient = matches!(status, 408 | 429 | 500..=599);
                    if transient && !last {
                        backoff(attempt);
                        attempt += 1;
                        continue;
                    }
                    if (300..400).contains(&status) {
                        bail!(
                            "{method} {url}: HTTP {status}, redirected to {}: not followed (it \
                             would carry the credentials elsewhere); give the archive's own URL",
                            location.as_deref().unwrap_or("nowhere said")
                        );
                    }
                    return Ok(Reply {
                        status,
                        content_type,
                        body,
                    });
                }
                Err(ureq::Error::BodyExceedsLimit(n)) => {
                    return Err(OverBound {
                        method: method.to_string(),
                        url: url.to_string(),
                        limit: n,
                    }
                    .into())
                }
                Err(e) => {
                    let transient = matches!(
                        e,
                        ureq::Error::Io(_)
                            | ureq::Error::Timeout(_)
                            | ureq::Error::ConnectionFailed
                            | ureq::Error::HostNotFound
                    );
                    if transient && !last {
                        backoff(attempt);
                        attempt += 1;
                        continue;
                    }
                    let tries = if attempt > 0 {
                        format!(" (after {} tries)", attempt + 1)
                    } else {
                        String::new()
                    };
                    if transient {
                        return Err(NoAnswer(format!("{method} {url}: {e}{tries}")).into());
                    }
                    bail!("{method} {url}: {e}{tries}");
                }
            }
        }
    }
}

/// An answer's body past the bound its request gave: typed, so that a caller with a bound of
/// its own (a command's total of list answers) can say which it passed.
#[derive(Debug)]
pub struct OverBound {
    pub method: String,
    pub url: String,
    pub limit: u64,
}

impl std::fmt::Display for OverBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: the answer is larger than the bound of {} bytes",
            self.method, self.url, self.limit
        )
    }
}

impl std::error::Error for OverBound {}

/// The archive not reached or not answering (refused, unresolved, timed out, cut), after
/// the request's retries: typed, so that a caller sending many requests stops at the first
/// rather than waiting out the same retries for each.
#[derive(Debug)]
pub struct NoAnswer(pub String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// Waits before try `attempt + 2`: 0.25 s, doubled each time, at most 4 s.
fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
}

/// The error for an answer `r` to `method url` that is not what was asked: its status and
/// what it usually means, and the start of what the archive said.
pub fn status_error(method: &str, url: &str, r: &Reply) -> anyhow::Error {
    let meaning = match r.status {
        401 => " (unauthorized: wrong or missing credentials, --archive-auth-file or --archive-auth-env)",
        403 => " (forbidden: these credentials may not do this)",
        404 => " (not found)",
        406 => " (the archive cannot answer in the form asked)",
        409 => " (conflict)",
        413 => " (too large for the archive)",
        415 => " (the archive does not take this media type)",
        _ => "",
    };
    let said: String = String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let said = said.trim();
    anyhow!(
        "{method} {url}: HTTP {}{meaning}{}",
        r.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_basic_or_bearer_and_never_shown() {
        let b = Auth::parse("basic:alice:s3cr:et\n", "f").unwrap();
        assert_eq!(
            b.header,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et")
            )
        );
        assert_eq!(Auth::parse("bearer:tok", "f").unwrap().header, "Bearer tok");
        for bad in [
            "alice:pw",
            "basic:alice",
            "basic::pw",
            "bearer:",
            "bearer:a b",
        ] {
            let e = Auth::parse(bad, "FILE").err().unwrap().to_string();
            assert!(e.starts_with("FILE:"), "{e}");
            assert!(!e.contains("pw") && !e.contains("x y"), "{e}");
        }
    }

    #[test]
    fn credentials_never_go_over_plain_http_to_another_machine() {
        let mut o = Options {
            auth: Some(Auth::parse("basic:a:b", "f").unwrap()),
            ca: None,
            timeout: Duration::from_secs(1),
            retries: 0,
            insecure_http: true,
        };
        let far = ArchiveUrl::parse("dicomweb:http://pacs.example/dw", "--from").unwrap();
        let e = Client::new(far.clone(), &o).err().unwrap().to_string();
        assert!(e.contains("credentials would cross"), "{e}");
        let fake = ArchiveUrl::parse("dicomweb:http://127.example.org/dw", "--from").unwrap();
        assert!(Client::new(fake, &o).is_err());
        // Without credentials: plain http to another machine only when asked for.
        o.auth = None;
        assert!(Client::new(far.clone(), &o).is_ok());
        o.insecure_http = false;
        let e = Client::new(far, &o).err().unwrap().to_string();
        assert!(e.contains("--archive-insecure-http"), "{e}");
        o.auth = Some(Auth::parse("basic:a:b", "f").unwrap());
        let near = ArchiveUrl::parse("dicomweb:http://127.0.0.1:1/dw", "--from").unwrap();
        assert!(Client::new(near, &o).is_ok());
    }

    /// A port where nothing listens: the error names the URL, after the retries.
    #[test]
    fn an_unreachable_archive_is_named_after_bounded_retries() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url =
            ArchiveUrl::parse(&format!("dicomweb:http://127.0.0.1:{port}/dw"), "--from").unwrap();
        let o = Options {
            auth: None,
            ca: None,
            timeout: Duration::from_secs(2),
            retries: 2,
            insecure_http: false,
        };
        let c = Client::new(url, &o).unwrap();
        let u = format!("http://127.0.0.1:{port}/dw/studies");
        let t = std::time::Instant::now();
        let e = c
            .get(&u, "application/dicom+json", 1024)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&u) && e.contains("after 3 tries"), "{e}");
        // 0.25 s then 0.5 s of back-off.
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "{:?}",
            t.elapsed()
        );
    }
}
