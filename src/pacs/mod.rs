//! The hospital's archive (a PACS) through DICOMweb and DIMSE (`dimse/`, picked by
//! `archive.rs`). DICOMweb: a study's series pulled with QIDO-RS and
//! WADO-RS for `share-study --from` (`pull.rs`), a derived series filed back with STOW-RS for
//! `reconstruct --to` and `file-series` (`push.rs`), over one HTTP client with its
//! authentication, TLS roots, timeout, retries and size bounds (`http.rs`), and the
//! multipart/related bodies both directions carry (`multipart.rs`). Only whole DICOM files
//! travel here, between the hospital's own archive and its gateway or receiver: nothing of
//! this reaches a server or the dealer.

pub mod archive;
pub mod dimse;
pub mod http;
pub mod multipart;
pub mod pull;
pub mod push;

use anyhow::{bail, Result};

/// An archive as the command line names it: `dicomweb:URL`, URL the DICOMweb root (the one
/// under which `studies/` answers), http or https.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveUrl {
    /// The root, without a trailing slash.
    pub root: String,
}

impl ArchiveUrl {
    /// Parses `dicomweb:URL`; `what` names the option in errors.
    pub fn parse(s: &str, what: &str) -> Result<ArchiveUrl> {
        // Credentials go in a file or a variable (--archive-auth-*), never in a URL that a
        // process list, a shell history or an error shows: refused before anything echoes the
        // option (an `@` anywhere, so that a password holding `/` is caught too).
        if s.contains('@') && !s.starts_with("dimse:") {
            bail!(
                "{what}: the URL carries credentials (an `@`); give them with \
                 --archive-auth-file or --archive-auth-env instead"
            );
        }
        let Some(url) = s.strip_prefix("dicomweb:") else {
            if s.starts_with("dimse:") {
                bail!("{what} {s}: a DIMSE archive where a DICOMweb root is wanted (dicomweb:URL)");
            }
            bail!("{what} {s}: not an archive; give dicomweb:URL (the archive's DICOMweb root)");
        };
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let Some(rest) = rest else {
            bail!("{what} {s}: the DICOMweb root must be an http:// or https:// URL");
        };
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            bail!("{what} {s}: no host in the URL");
        }
        if url.contains('?') || url.contains('#') {
            bail!("{what} {s}: the DICOMweb root takes no query or fragment");
        }
        Ok(ArchiveUrl {
            root: url.trim_end_matches('/').to_string(),
        })
    }

    /// Whether the URL is https.
    pub fn tls(&self) -> bool {
        self.root.starts_with("https://")
    }

    /// The host: a name, an IPv4 address, or an IPv6 address without its brackets.
    fn host(&self) -> &str {
        let rest = self.root.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        match authority.strip_prefix('[') {
            Some(h) => h.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        }
    }

    /// Whether the host is this machine: `localhost` or a loopback address (a name that
    /// merely starts with `127.` is another machine).
    pub fn loopback(&self) -> bool {
        let host = self.host();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    }
}

impl std::fmt::Display for ArchiveUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dicomweb:{}", self.root)
    }
}

/// The most bytes of list answers (QIDO-RS pages, C-FIND identifiers) one command reads
/// from an archive, all its lists together: a hostile archive could otherwise page on for
/// ever, each page within its own bound. A real study's lists are far below it (a QIDO-RS
/// instance item is about 1 KB: 100,000 instances make about 100 MB).
pub const ANSWER_BYTES: u64 = 256 << 20;
/// The most items of those lists one command takes: a study's most instances, and its series.
pub const ANSWER_ITEMS: usize = crate::formats::study::MAX_SLICES + 10_000;
/// The longest text kept of an attribute of an archive's answer: a UID is at most 64
/// characters, and so is what else is kept of an answer (a Series Number, a modality).
const KEPT_TEXT: usize = 64;

/// What one command has taken from an archive's list answers, against [`ANSWER_BYTES`] and
/// [`ANSWER_ITEMS`]. Each answer is reduced to the few attributes used as it arrives, so
/// that what is held stays small; this bounds what is read.
pub struct AnswerBudget {
    bytes: u64,
    items: usize,
    max_bytes: u64,
    max_items: usize,
}

impl Default for AnswerBudget {
    fn default() -> AnswerBudget {
        AnswerBudget::new(ANSWER_BYTES, ANSWER_ITEMS)
    }
}

impl AnswerBudget {
    pub fn new(max_bytes: u64, max_items: usize) -> AnswerBudget {
        AnswerBudget {
            bytes: 0,
            items: 0,
            max_bytes,
            max_items,
        }
    }

    /// The bytes still allowed.
    pub fn bytes_left(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// The items still allowed.
    pub fn items_left(&self) -> usize {
        self.max_items.saturating_sub(self.items)
    }

    /// The error for answers from `at` past the command's bound.
    pub fn over(&self, at: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{at}: the archive's list answers passed this command's bound ({} bytes, {} \
             items for all its lists together; {} bytes and {} items read): a hostile or \
             misconfigured archive? Nothing taken",
            self.max_bytes,
            self.max_items,
            self.bytes,
            self.items
        )
    }

    /// Takes `bytes` and `items` more from `at`'s answers, or refuses past the bound.
    pub fn take(&mut self, bytes: u64, items: usize, at: &str) -> Result<()> {
        self.bytes = self.bytes.saturating_add(bytes);
        self.items = self.items.saturating_add(items);
        if self.bytes > self.max_bytes || self.items > self.max_items {
            return Err(self.over(at));
        }
        Ok(())
    }
}

/// `s` as kept of an archive's answer: at most [`KEPT_TEXT`] characters, a longer one cut and
/// marked (`...`), which no UID check passes.
pub fn kept_text(s: &str) -> String {
    match s.char_indices().nth(KEPT_TEXT) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Most of an archive's items an error message lists.
pub const LISTED: usize = 20;

/// The first `most` of `items`, joined, and how many more there are.
pub fn first_of(items: &[String], most: usize) -> String {
    let shown = items[..items.len().min(most)].join("; ");
    match items.len().saturating_sub(most) {
        0 => shown,
        more => format!("{shown}; and {more} more"),
    }
}

/// Text from a peer for a terminal or a log: printable ASCII as it is, anything else (an
/// escape sequence, a control character) escaped, so that a peer's AE title cannot move the
/// cursor, recolour or rewrite what the operator reads.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let plain = (' '..='~').contains(&c) && c != '\\';
            let escaped: Vec<char> = if plain {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            escaped
        })
        .collect()
}

/// A UID that goes into a URL's path: checked first, so that a UID from the command line or
/// an archive's answer never adds a path segment or a query.
pub fn checked_uid<'a>(uid: &'a str, what: &str) -> Result<&'a str> {
    if !crate::image::dicom::valid_uid(uid) {
        bail!(
            "{what} {uid:?}: not a DICOM UID (digits and dots, at most 64 characters, no \
             empty or zero-led component)"
        );
    }
    Ok(uid)
}

/// The one study and series of the files to file (file, study UID, series UID), or an
/// error naming a file of another: one series is filed at a time.
pub fn one_series<'a>(
    mut files: impl Iterator<Item = (&'a std::path::PathBuf, &'a String, &'a String)>,
) -> Result<(String, String)> {
    let Some((first, study, series)) = files.next() else {
        bail!("no file to file");
    };
    for (file, st, se) in files {
        if st != study || se != series {
            bail!(
                "{}: of study {st} series {se}, but {} of study {study} series {series}: one \
                 series is filed at a time",
                file.display(),
                first.display()
            );
        }
    }
    Ok((study.clone(), series.clone()))
}

/// The series of study `study` at the archive `at` that `--series` (a UID or a Series
/// Number; none: the only one) names, among the archive's `found` (UID, number, modality),
/// its UID checked; an error listing them when it names none or several.
pub fn pick_series(
    found: &[(String, Option<String>, String)],
    series: Option<&str>,
    study: &str,
    at: &dyn std::fmt::Display,
) -> Result<String> {
    // The archive's strings, escaped (they reach the operator's terminal), and at most
    // LISTED of them: a hostile archive may answer with thousands.
    let listing = || {
        let all: Vec<String> = found
            .iter()
            .map(|(u, n, m)| {
                let n = n.as_deref().map_or("none".into(), printable);
                format!("{} (number {n}, {})", printable(u), printable(m))
            })
            .collect();
        first_of(&all, LISTED)
    };
    let picked: Vec<&(String, Option<String>, String)> = match series {
        Some(want) => found
            .iter()
            .filter(|(u, n, _)| u == want || n.as_deref() == Some(want))
            .collect(),
        None => found.iter().collect(),
    };
    let uid = match (picked.as_slice(), series) {
        ([one], _) => &one.0,
        ([], Some(want)) => bail!(
            "--series {want}: study {study} at {at} has no such series; it has: {}",
            listing()
        ),
        (_, Some(want)) => bail!(
            "--series {want}: names several series of study {study}; give a Series Instance \
             UID: {}",
            listing()
        ),
        (_, None) => bail!(
            "study {study} at {at} has {} series: pick one with --series UID|NUMBER: {}",
            found.len(),
            listing()
        ),
    };
    Ok(checked_uid(uid, "the archive's Series Instance UID")?.to_string())
}

/// The first value of attribute `tag` (8 hex digits) in a DICOM JSON object, as text.
pub fn json_value(obj: &serde_json::Value, tag: &str) -> Option<String> {
    match obj.get(tag)?.get("Value")?.get(0)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile archive's series listing reaches the terminal escaped and capped: escape
    /// sequences in a UID, a number and a modality come out as text, and thousands of series
    /// are listed as the first LISTED and a count.
    #[test]
    fn an_archive_s_series_listing_is_escaped_and_capped() {
        let found: Vec<(String, Option<String>, String)> = (0..5000)
            .map(|i| {
                (
                    format!("1.2.{i}\x1b[2J"),
                    Some(format!("{i}\x07")),
                    "CT\x1b]0;owned\x07".to_string(),
                )
            })
            .collect();
        let e = pick_series(&found, None, "1.2.3", &"archive")
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.contains("\\u{1b}[2J"), "{e}");
        assert!(e.contains("and 4980 more"), "{e}");
        assert!(e.len() < 4000, "{} bytes", e.len());
        let e = pick_series(&found, Some("x"), "1.2.3", &"archive")
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(|c| c.is_control()) && e.contains("and 4980 more"));
    }

    #[test]
    fn archive_urls_are_dicomweb_roots_without_credentials() {
        let a = ArchiveUrl::parse("dicomweb:http://127.0.0.1:8042/dicom-web/", "--from").unwrap();
        assert_eq!(a.root, "http://127.0.0.1:8042/dicom-web");
        assert!(a.loopback() && !a.tls());
        let b = ArchiveUrl::parse("dicomweb:https://pacs.example:443/wado", "--to").unwrap();
        assert!(!b.loopback() && b.tls());
        assert!(ArchiveUrl::parse("dicomweb:http://[::1]:80/x", "--to")
            .unwrap()
            .loopback());
        for near in [
            "http://localhost:8042/x",
            "http://127.0.0.1/x",
            "http://127.1.2.3:80/x",
            "http://[::1]/x",
        ] {
            let u = ArchiveUrl::parse(&format!("dicomweb:{near}"), "--to").unwrap();
            assert!(u.loopback(), "{near}");
        }
        for far in [
            "http://127.example.org/x",
            "http://127.0.0.1.example.org:80/x",
            "http://localhost.example.org/x",
            "http://[::2]/x",
            "http://10.0.0.1/x",
        ] {
            let u = ArchiveUrl::parse(&format!("dicomweb:{far}"), "--to").unwrap();
            assert!(!u.loopback(), "{far}");
        }
        for (bad, says) in [
            ("dicomweb:http://u:p/q@h/x", "carries credentials"),
            ("http://h/x", "not an archive"),
            ("dimse:AE@h:104", "DIMSE"),
            ("dicomweb:ftp://h/x", "http:// or https://"),
            ("dicomweb:http://u:p@h/x", "carries credentials"),
            ("dicomweb:http:///x", "no host"),
            ("dicomweb:http://h/x?y=1", "no query"),
        ] {
            let e = ArchiveUrl::parse(bad, "--from").unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            // A password given in a URL is never echoed.
            assert!(!e.contains("u:p"), "{e}");
            assert!(!e.contains("q@h"), "{e}");
        }
    }

    #[test]
    fn uids_going_into_paths_are_checked() {
        assert!(checked_uid("1.2.840.113619.2.1", "--study").is_ok());
        for bad in ["1.2/../x", "1.2?a", "", "1..2", "1.02"] {
            assert!(checked_uid(bad, "--study").is_err(), "{bad}");
        }
    }
}
