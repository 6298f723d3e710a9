//! The audit trail (issue 49, item 4): every command of a party (`--audit FILE`, or the
//! file PPDENOISE_AUDIT names) appends one JSON line: when, which command, which party, the
//! job, study and slice ids, the hashes of its input and output files, the signing keys and
//! TLS certificates it used or pinned, the archive and study it reached, and whether it
//! succeeded. Never a path (a DICOM export's folders and files are often named for the
//! patient), a header, an error message (they name files) or a pixel: what identifies a file
//! is its blake3, which the party can match against its own files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::formats::signing::{PublicKey, Role, Signer, Trust};

/// The options whose values are input files or folders, by role in the line.
const INPUTS: &[&str] = &[
    "in",
    "image",
    "model",
    "study",
    "sources",
    "binding",
    "share0",
    "share1",
    "like",
    "job",
    "s0-dir",
    "s1-dir",
    "triplets",
    "alpha",
    "job-facts",
    "noise-map",
    "clean",
];
/// Public signing keys (`ed25519:<hex>` or a .sign-pub file).
const PUBLIC_KEYS: &[&str] = &["s0-key", "s1-key", "gateway-key", "owner-key", "dealer-key"];
/// TLS certificates (PEM): their SHA-256 fingerprints.
const CERTS: &[&str] = &["cert", "peer-cert"];
/// What a summary says that the line may carry as ids: text of UID and hex characters only.
const IDS: &[&str] = &["study_id", "job_id", "model_id", "series_uid"];
/// ... and as numbers: a count, or a list of slice indices; any other list (share-study's
/// `skipped` is one line per object skipped, naming its file) is written as its length.
const COUNTS: &[&str] = &["slices", "ran", "skipped"];
/// The most files of a folder hashed (a study folder holds a few per slice).
const MAX_FILES: usize = 1_000_000;
/// The most bytes of a folder's files hashed (a study of the most slices, each its shares).
const MAX_BYTES: u64 = 1 << 40;

/// One command line, read before the command runs: its name and its options' values.
pub struct Plan {
    command: String,
    options: Vec<(String, String)>,
    /// The input files' hashes, taken before the command ran (a server adds its outputs to
    /// the study folder it reads).
    inputs: Vec<Value>,
}

impl Plan {
    /// The command line `args` (the program's name first).
    pub fn of(args: &[String]) -> Plan {
        let mut command = String::new();
        let mut options = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let a = &args[i];
            if let Some(name) = a.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                // Every value of an option (--share0 a b c), up to the next option.
                let mut values = Vec::new();
                if let Some(v) = value {
                    values.push(v);
                } else if command.is_empty() {
                    // Before the command only --audit takes a value, one (--json, --quiet,
                    // --as-gray are switches): the next word after it is the command.
                    if name == "audit" && i + 1 < args.len() {
                        values.push(args[i + 1].clone());
                        i += 1;
                    }
                } else {
                    while i + 1 < args.len() && !args[i + 1].starts_with("--") {
                        values.push(args[i + 1].clone());
                        i += 1;
                    }
                }
                if values.is_empty() {
                    values.push(String::new());
                }
                for v in values {
                    options.push((name.clone(), v));
                }
            } else if command.is_empty() {
                command = a.clone();
            }
            i += 1;
        }
        let mut p = Plan {
            command,
            options,
            inputs: Vec::new(),
        };
        p.inputs = p.hash_inputs();
        p
    }

    fn hash_inputs(&self) -> Vec<Value> {
        let mut inputs = Vec::new();
        for role in INPUTS {
            // share-study's --study is the archive's Study Instance UID, not a folder.
            if *role == "study" && self.command == "share-study" {
                continue;
            }
            for v in self.values(role) {
                if let Some(h) = hash(Path::new(v)) {
                    inputs.push(json!({"role": role, "blake3": h}));
                }
            }
        }
        inputs
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn value<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    /// The party the command runs as.
    fn party(&self) -> String {
        match self.command.as_str() {
            "share-image" | "share-study" | "add-noise" | "receive" => "gateway".into(),
            // `gen-triplets --party N`: a server dealing with its peer, no dealer.
            "gen-triplets" | "serve" if self.value("party").is_some() => {
                format!("s{}", self.value("party").unwrap_or("?"))
            }
            "gen-triplets" | "gen-model-mask" => "dealer".into(),
            "serve" => "s?".into(),
            "reconstruct" | "file-series" => "receiver".into(),
            "share-model" | "open-weights" => "model owner".into(),
            _ => "tool".into(),
        }
    }
}

/// blake3 of a file, or of a folder: of its files' relative names and blake3s, in order. In
/// a folder, a symbolic link is not followed (a link to `.`, or out of the folder, would
/// have the hash read the same files again and again, or files that are not the input's):
/// it counts as its target's text, and a link to a regular file also as that file's blake3
/// (the input walk reads through it). At most [`MAX_FILES`] files and [`MAX_BYTES`] bytes are
/// read; past either, the folder has no hash in the line.
fn hash(path: &Path) -> Option<String> {
    if path.is_file() {
        return hash_file(path);
    }
    if !path.is_dir() {
        return None;
    }
    // (relative name, what it is: a file's blake3 or a link's target)
    let mut found: Vec<(String, String)> = Vec::new();
    let mut bytes = 0u64;
    // Counts `len` more bytes to read: false past the bound.
    let mut within = |len: u64| {
        bytes = bytes.saturating_add(len);
        bytes <= MAX_BYTES
    };
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let p = e.path();
            // The entry itself, never what a link points to.
            let t = e.file_type().ok()?;
            let rel = || Some(p.strip_prefix(path).ok()?.to_string_lossy().into_owned());
            if t.is_dir() {
                stack.push(p);
                continue;
            }
            if t.is_symlink() {
                let to = std::fs::read_link(&p).ok()?;
                // A link to a regular file is read as the input's own (series walks read
                // through file links, as PACS exports make them): its content is pinned too,
                // within the same byte bound. A link to a folder is never entered.
                let what = match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => {
                        if !within(m.len()) {
                            return None;
                        }
                        format!("link:{}:{}", to.to_string_lossy(), hash_file(&p)?)
                    }
                    _ => format!("link:{}", to.to_string_lossy()),
                };
                found.push((rel()?, what));
            } else if t.is_file() {
                if !within(e.metadata().ok()?.len()) {
                    return None;
                }
                found.push((rel()?, hash_file(&p)?));
            }
            if found.len() > MAX_FILES {
                return None;
            }
        }
    }
    found.sort();
    let mut h = blake3::Hasher::new();
    for (rel, what) in found {
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(what.as_bytes());
        h.update(&[0]);
    }
    Some(format!("tree:{}", h.finalize().to_hex()))
}

/// blake3 of the file at `path`.
fn hash_file(path: &Path) -> Option<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).ok()?).ok()?;
    Some(h.finalize().to_hex().to_string())
}

/// The SHA-256 fingerprint of a PEM certificate file's first certificate.
fn cert_fingerprint(path: &Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    for item in ureq::tls::parse_pem(&pem) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            let d = ring::digest::digest(&ring::digest::SHA256, c.der());
            return Some(format!("sha256:{}", hex::encode(d.as_ref())));
        }
    }
    None
}

/// Whether `v` reads as an id (hex, a UID): nothing that could be a path or a name.
fn id_like(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// A summary's count as the line carries it: a number, a list of numbers, or a list's length.
fn count(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::Array(a) if a.iter().all(Value::is_number) => Some(v.clone()),
        Value::Array(a) => Some(a.len().into()),
        _ => None,
    }
}

/// The line for `plan`, run with the result `outcome` (the summary's JSON).
pub fn line(plan: &Plan, outcome: std::result::Result<&Value, ()>) -> Value {
    let mut inputs = plan.inputs.clone();
    let mut keys = Vec::new();
    for flag in PUBLIC_KEYS {
        for v in plan.values(flag) {
            if let Ok(k) = PublicKey::parse(v) {
                keys.push(json!({"role": flag, "key": k.to_string()}));
            }
        }
    }
    for v in plan.values("trust") {
        for (role, k) in Trust::parse_file(Path::new(v)).unwrap_or_default() {
            keys.push(json!({"role": format!("trust {}", role.name()), "key": k.to_string()}));
        }
    }
    if let Some(v) = plan.value("sign-key") {
        // The signer's public key: what others pin (the private key is never written).
        if let Ok(s) = Signer::load(Path::new(v), Role::Gateway) {
            keys.push(json!({"role": "sign-key", "key": s.public().to_string()}));
        }
    }
    let mut certs = Vec::new();
    for flag in CERTS {
        for v in plan.values(flag) {
            if let Some(f) = cert_fingerprint(Path::new(v)) {
                certs.push(json!({"role": flag, "fingerprint": f}));
            }
        }
    }
    let mut l = Map::new();
    l.insert("time".into(), chrono::Utc::now().to_rfc3339().into());
    l.insert("command".into(), plan.command.clone().into());
    l.insert("party".into(), plan.party().into());
    let mut outputs = Vec::new();
    match outcome {
        Ok(s) => {
            l.insert("result".into(), "ok".into());
            for k in IDS {
                if let Some(v) = s.get(k).and_then(Value::as_str).filter(|v| id_like(v)) {
                    l.insert((*k).into(), v.into());
                }
            }
            for k in COUNTS {
                if let Some(v) = s.get(k).and_then(count) {
                    l.insert((*k).into(), v);
                }
            }
            // The archive reached: its URL and the study's UIDs (never the fetched folder).
            for (k, url) in [("archive", "url"), ("filed", "archive")] {
                if let Some(a) = s.get(k) {
                    let mut e = json!({"url": a[url], "study_uid": a["study_uid"],
                            "series_uid": a["series_uid"], "instances": a["instances"]});
                    // Instances the archive kept with a warning status (UIDs and codes).
                    if let Some(w) = a.get("warnings").filter(|w| !w.is_null()) {
                        e["warnings"] = w.clone();
                    }
                    l.insert(k.into(), e);
                }
            }
            if let Some(f) = s.get("archive").and_then(|a| a["fetched"].as_str()) {
                if let Some(h) = hash(Path::new(f)) {
                    inputs.push(json!({"role": "fetched", "blake3": h}));
                }
            }
            let mut named: Vec<(&str, &str)> = Vec::new();
            for k in ["out", "sources", "binding"] {
                if let Some(p) = s.get(k).and_then(Value::as_str) {
                    named.push((k, p));
                }
            }
            if let Some(fs) = s.get("files").and_then(Value::as_array) {
                named.extend(fs.iter().filter_map(Value::as_str).map(|p| ("file", p)));
            }
            for (role, p) in named {
                if let Some(h) = hash(Path::new(p)) {
                    outputs.push(json!({"role": role, "blake3": h}));
                }
            }
        }
        // The message is on the console: it names files, which the line never does.
        Err(()) => {
            l.insert("result".into(), "error".into());
        }
    }
    l.insert("inputs".into(), inputs.into());
    l.insert("outputs".into(), outputs.into());
    l.insert("keys".into(), keys.into());
    l.insert("certificates".into(), certs.into());
    Value::Object(l)
}

/// The audit file, open to append (made with mode 600).
pub struct Trail {
    file: std::fs::File,
    path: PathBuf,
}

impl Trail {
    /// Opens (or makes) the audit file `path`, before the command runs.
    pub fn open(path: &Path) -> Result<Trail> {
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o
            .open(path)
            .with_context(|| format!("--audit {}: cannot open to append", path.display()))?;
        Ok(Trail {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `line`, as one write.
    pub fn append(&mut self, line: &Value) -> Result<()> {
        let mut text = line.to_string();
        text.push('\n');
        let path = self.path.display();
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("--audit {path}: cannot append"))?;
        self.file
            .sync_data()
            .with_context(|| format!("--audit {path}: cannot sync"))
    }
}

/// The audit file: `--audit`'s, else PPDENOISE_AUDIT's, else none.
pub fn file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("PPDENOISE_AUDIT").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_is_read_into_its_command_and_options() {
        let args: Vec<String> = [
            "ppdenoise",
            "--json",
            "reconstruct",
            "--share0",
            "a",
            "b",
            "--out=c",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = Plan::of(&args);
        assert_eq!(p.command, "reconstruct");
        assert_eq!(p.values("share0").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.value("out"), Some("c"));
        assert_eq!(p.party(), "receiver");
        // --audit before the command takes its one value; the next word is the command.
        let args: Vec<String> = ["ppdenoise", "--audit", "a.jsonl", "receive", "--aet", "RX"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = Plan::of(&args);
        assert_eq!(p.command, "receive");
        assert_eq!(p.value("aet"), Some("RX"));
        assert_eq!(p.party(), "gateway");
    }

    /// The receiver's own files (an RGBA image's alpha, the job's facts) are inputs like the
    /// shares: hashed by role, never named.
    #[test]
    fn the_receivers_alpha_and_job_facts_are_hashed_inputs() {
        let d = tempfile::tempdir().unwrap();
        let (alpha, facts) = (d.path().join("x.alpha"), d.path().join("x.rx.json"));
        std::fs::write(&alpha, b"alpha").unwrap();
        std::fs::write(&facts, b"facts").unwrap();
        let args: Vec<String> = [
            "ppdenoise",
            "reconstruct",
            "--alpha",
            &alpha.display().to_string(),
            "--job-facts",
            &facts.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = Plan::of(&args);
        let roles: Vec<(&str, &str)> = p
            .inputs
            .iter()
            .map(|v| (v["role"].as_str().unwrap(), v["blake3"].as_str().unwrap()))
            .collect();
        let h = |b: &[u8]| blake3::hash(b).to_hex().to_string();
        assert_eq!(
            roles,
            [
                ("alpha", h(b"alpha").as_str()),
                ("job-facts", h(b"facts").as_str())
            ]
        );
    }

    #[test]
    fn a_summary_gives_the_line_ids_and_counts_never_a_path() {
        let p = Plan::of(&["ppdenoise".into(), "share-study".into()]);
        let summary = json!({"ok": true, "study_id": "ab12", "series_uid": "1.2.3",
            "job_id": "../x/y", "slices": 3, "ran": [0, 2],
            "skipped": ["skipped /data/PATIENT^NAME/sr.dcm: not an image"]});
        let l = line(&p, Ok(&summary));
        assert_eq!(l["study_id"], "ab12");
        assert_eq!(l["series_uid"], "1.2.3");
        assert_eq!(l["slices"], 3);
        assert_eq!(l["ran"], json!([0, 2]));
        assert_eq!(l["skipped"], 1, "{l}");
        assert!(l.get("job_id").is_none(), "{l}");
        let text = l.to_string();
        assert!(!text.contains('/'), "{text}");
        assert!(!text.contains("PATIENT"), "{text}");
    }

    /// What the archive kept with a warning status is in the line with the filed series;
    /// a series filed without warnings has no such entry.
    #[test]
    fn instances_filed_with_a_warning_are_in_the_line() {
        let p = Plan::of(&["ppdenoise".into(), "reconstruct".into()]);
        let w = json!([{"sop_instance_uid": "1.2.3.4", "status": 0xB000}]);
        let summary = json!({"ok": true, "filed": {"archive": "dimse:PACS@h:104",
            "study_uid": "1.2", "series_uid": "1.2.3", "instances": 2, "warnings": w}});
        let l = line(&p, Ok(&summary));
        assert_eq!(l["filed"]["warnings"], w, "{l}");
        assert_eq!(l["filed"]["instances"], 2);
        let mut plain = summary.clone();
        plain["filed"].as_object_mut().unwrap().remove("warnings");
        assert!(line(&p, Ok(&plain))["filed"].get("warnings").is_none());
    }

    #[test]
    fn a_folder_hash_covers_its_files_names_and_contents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("s")).unwrap();
        std::fs::write(d.path().join("s/a"), b"1").unwrap();
        let h1 = hash(d.path()).unwrap();
        std::fs::write(d.path().join("s/a"), b"2").unwrap();
        let h2 = hash(d.path()).unwrap();
        std::fs::rename(d.path().join("s/a"), d.path().join("s/b")).unwrap();
        let h3 = hash(d.path()).unwrap();
        assert!(h1 != h2 && h2 != h3 && h1.starts_with("tree:"));
        assert_eq!(
            hash(&d.path().join("s/b")).unwrap(),
            blake3::hash(b"2").to_hex().to_string()
        );
    }
}
