//! The archive's mistakes against a fake DICOMweb archive (a small HTTP server in the test,
//! std::net only; issue 49's target row): an archive that does not answer, wrong credentials
//! (401), a study the archive does not hold (an empty QIDO-RS answer, 204 or 404), an
//! instance that is not a DICOM file, a series with no image in it. Each is refused with an
//! error naming the URL and the cause; nothing is shared (no study folder, no sources file,
//! no fetched copy) and nothing is filed (the archive saw no POST). And QIDO-RS paging: an
//! archive that answers a few instances a page (or ignores `offset`) still gives the whole
//! series, once each. And what a hostile or broken archive may try: a redirect elsewhere
//! (refused, nothing asked there), an answer past its bound (refused as it arrives), pages
//! for ever (refused at the command's one bound on its lists), an archive nobody answers
//! while a series is filed (given up once, not per instance), and the hint after a second
//! `reconstruct --to` (its credentials' option). No Orthanc needed: these run in every
//! `cargo test`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dicom_slice, ok, run};

use crate::common;

const STUDY: &str = "1.2.826.0.1.3680043.8.498.7";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.71";

/// An answer: status, content type, body.
type Answer = (u16, &'static str, Vec<u8>);

/// A fake archive on a free port of 127.0.0.1: `answer` is given each request's method and
/// target (path and query); every request is kept, in order, for the test to read.
struct Fake {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start(answer: impl Fn(&str, &str) -> Answer + Send + 'static) -> Fake {
        Fake::start_with(move |method, target| {
            let (status, ct, body) = answer(method, target);
            (status, format!("Content-Type: {ct}\r\n"), body)
        })
    }

    /// As [`Fake::start`], `answer` giving the status, the header lines (each ending CRLF)
    /// before Content-Length, and the body.
    fn start_with(answer: impl Fn(&str, &str) -> (u16, String, Vec<u8>) + Send + 'static) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        // The thread ends with the test's process: it only ever waits on accept.
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; length];
                let _ = r.read_exact(&mut body);
                seen.lock().unwrap().push(format!("{method} {target}"));
                let (status, headers, body) = answer(&method, &target);
                let head = format!(
                    "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        Fake { port, requests }
    }

    fn root(&self) -> String {
        format!("http://127.0.0.1:{}/dw", self.port)
    }

    fn dicomweb(&self) -> String {
        format!("dicomweb:{}", self.root())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(v: serde_json::Value) -> Answer {
    (200, "application/dicom+json", v.to_string().into_bytes())
}

/// QIDO-RS's item for a series or an instance.
fn series_item() -> serde_json::Value {
    serde_json::json!({
        "0020000E": {"vr": "UI", "Value": [SERIES]},
        "00200011": {"vr": "IS", "Value": [1]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    })
}

fn instance_item(sop: &str) -> serde_json::Value {
    serde_json::json!({"00080018": {"vr": "UI", "Value": [sop]}})
}

/// The `limit` and `offset` of a request target's query (none: 0 and unlimited).
fn paging(target: &str) -> (usize, usize) {
    let q = target.split_once('?').map_or("", |(_, q)| q);
    let get = |k: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    (
        get("limit").unwrap_or(usize::MAX),
        get("offset").unwrap_or(0),
    )
}

/// An archive holding the study's one series of `files` (SOP Instance UID, file bytes):
/// QIDO-RS answers at most `cap` items a page, and, when `offsets`, honours `offset`.
fn archive(files: Vec<(String, Vec<u8>)>, cap: usize, offsets: bool) -> Fake {
    let series_url = format!("/dw/studies/{STUDY}/series");
    let inst_url = format!("{series_url}/{SERIES}/instances");
    Fake::start(move |method, target| {
        if method != "GET" {
            return (405, "text/plain", b"read only".to_vec());
        }
        let path = target.split('?').next().unwrap();
        let (limit, offset) = paging(target);
        let offset = if offsets { offset } else { 0 };
        let page = |all: Vec<serde_json::Value>| {
            let v: Vec<_> = all.into_iter().skip(offset).take(limit.min(cap)).collect();
            json(serde_json::Value::Array(v))
        };
        if path == series_url {
            return page(vec![series_item()]);
        }
        if path == inst_url {
            return page(files.iter().map(|(u, _)| instance_item(u)).collect());
        }
        if let Some(sop) = path.strip_prefix(&format!("{inst_url}/")) {
            if let Some((_, f)) = files.iter().find(|(u, _)| u == sop) {
                return (200, "application/dicom", f.clone());
            }
        }
        (404, "text/plain", b"no such resource".to_vec())
    })
}

/// `n` slices of the series, as (SOP Instance UID, file).
fn slices(dir: &Path, n: usize) -> Vec<(String, Vec<u8>)> {
    (1..=n)
        .map(|k| {
            let p = dir.join(format!("src{k}.dcm"));
            dicom_slice(&p, SERIES, k as i32, k as f64, 16, k as u64);
            (format!("{SERIES}.{k}"), std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A structured report of the series (no pixel module): a DICOM object that is no image.
fn report(path: &Path) -> (String, Vec<u8>) {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let sop = format!("{SERIES}.99");
    let e = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    InMemDicomObject::from_element_iter([
        e(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.11"),
        e(tags::SOP_INSTANCE_UID, VR::UI, &sop),
        e(tags::MODALITY, VR::CS, "SR"),
        e(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
        e(tags::SERIES_INSTANCE_UID, VR::UI, SERIES),
    ])
    .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
    .unwrap()
    .write_to_file(path)
    .unwrap();
    (sop, std::fs::read(path).unwrap())
}

/// `share-study --from ARCHIVE --study UID` into `<dir>/study`, no retries.
fn share(dir: &Path, from: &str, study: &str) -> std::process::Output {
    run(&[
        "share-study",
        "--from",
        from,
        "--study",
        study,
        "--archive-retries",
        "0",
        "--archive-timeout",
        "10",
        "--out",
        &s(&dir.join("study")),
        "--sigma",
        "321.176HU",
        "--quiet",
    ])
}

/// Nothing of a share in `dir`: no study folder, no sources file, no fetched copy.
fn nothing_shared(dir: &Path, what: &str) {
    for p in ["study", "study.fetched", "study.sources.json"] {
        assert!(!dir.join(p).exists(), "{what}: {p} was written");
    }
}

#[test]
fn the_archives_mistakes_are_refused_naming_the_url_and_the_cause_with_nothing_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let good = slices(&src, 2);
    let series_url = |f: &Fake| format!("{}/studies/{STUDY}/series", f.root());

    // A port where nothing listens.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{p}/dw")
    };
    let unauthorized = Fake::start(|_, _| (401, "text/plain", b"Unauthorized".to_vec()));
    let empty = Fake::start(|_, _| json(serde_json::json!([])));
    let no_content = Fake::start(|_, _| (204, "application/dicom+json", Vec::new()));
    let not_found = Fake::start(|_, _| (404, "text/plain", b"Unknown resource".to_vec()));
    // An instance whose answer is not a DICOM file (an error page served as a file).
    let mut broken = good.clone();
    broken[1].1 = b"<html>Internal error</html>".to_vec();
    let not_dicom = archive(broken, 100, true);
    // The series holds a report and no image.
    let only_report = archive(vec![report(&src.join("sr.dcm"))], 100, true);
    let inst = |f: &Fake, k: usize| {
        format!(
            "{}/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.{k}",
            f.root()
        )
    };
    let cases: Vec<(&str, String, Vec<String>, Option<&Fake>)> = vec![
        (
            "unreachable",
            format!("dicomweb:{closed}"),
            vec![closed.clone(), "Connection refused".into()],
            None,
        ),
        (
            "wrong credentials",
            unauthorized.dicomweb(),
            vec![
                series_url(&unauthorized),
                "HTTP 401".into(),
                "credentials".into(),
            ],
            Some(&unauthorized),
        ),
        (
            "empty QIDO-RS answer",
            empty.dicomweb(),
            vec![series_url(&empty), "no such study".into()],
            Some(&empty),
        ),
        (
            "204 No Content",
            no_content.dicomweb(),
            vec![series_url(&no_content), "no such study".into()],
            Some(&no_content),
        ),
        (
            "404",
            not_found.dicomweb(),
            vec![series_url(&not_found), "no such study".into()],
            Some(&not_found),
        ),
        (
            "an instance that is not DICOM",
            not_dicom.dicomweb(),
            vec![inst(&not_dicom, 2), "not a DICOM file".into()],
            Some(&not_dicom),
        ),
        (
            "a series with no image",
            only_report.dicomweb(),
            vec![
                only_report.root(),
                format!("series {SERIES}"),
                "no image".into(),
            ],
            Some(&only_report),
        ),
    ];
    for (what, from, says, fake) in cases {
        let d = tempfile::tempdir().unwrap();
        let o = share(d.path(), &from, STUDY);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: accepted");
        for w in &says {
            assert!(e.contains(w.as_str()), "{what}: {w:?} not in {e}");
        }
        assert!(e.contains("nothing shared"), "{what}: {e}");
        assert!(!e.contains("panicked"), "{what}: {e}");
        nothing_shared(d.path(), what);
        // Nothing filed: the archive was only read.
        if let Some(f) = fake {
            let r = f.requests();
            assert!(!r.is_empty(), "{what}: the archive was never asked");
            assert!(r.iter().all(|x| x.starts_with("GET ")), "{what}: {r:?}");
        }
    }

    // A study UID that would add a path segment is refused before any request.
    let d = tempfile::tempdir().unwrap();
    let o = share(d.path(), &empty.dicomweb(), "1.2/../x");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a DICOM UID"));
    nothing_shared(d.path(), "a UID with a path");
}

/// Filing into an archive that refuses (401) or fails an instance (the STOW-RS answer's
/// Failed SOP Sequence): an error naming the URL, the instance and the cause.
#[test]
fn filing_refused_by_the_archive_names_the_url_and_each_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let series = tmp.path().join("series");
    std::fs::create_dir(&series).unwrap();
    slices(&series, 2);
    let file = |f: &Fake| {
        run(&[
            "file-series",
            "--in",
            &s(&series),
            "--to",
            &f.dicomweb(),
            "--archive-retries",
            "0",
        ])
    };
    let unauthorized = Fake::start(|_, _| (401, "text/plain", b"Unauthorized".to_vec()));
    let o = file(&unauthorized);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let url = format!("{}/studies/{STUDY}", unauthorized.root());
    assert!(
        e.contains(&url) && e.contains("HTTP 401") && e.contains("2 of 2 instances not filed"),
        "{e}"
    );
    // The archive fails the second instance (reason 0xA700, out of resources).
    let failing = Fake::start(|_, _| {
        (
            202,
            "application/dicom+json",
            serde_json::json!({"00081198": {"vr": "SQ", "Value": [{
                "00081155": {"vr": "UI", "Value": [format!("{SERIES}.2")]},
                "00081197": {"vr": "US", "Value": [42752]}}]}})
            .to_string()
            .into_bytes(),
        )
    });
    let o = file(&failing);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains(&format!("SOP Instance UID {SERIES}.2")) && e.contains("reason 42752"),
        "{e}"
    );
    // The first instance: stored? The answer does not name it as stored, so it failed too.
    assert!(e.contains("2 of 2 instances not filed"), "{e}");
}

/// QIDO-RS paging: an archive that answers two items a page gives all five instances, in
/// five fetches; one that ignores `offset` (the whole list each time) gives each once.
#[test]
fn a_series_longer_than_the_archives_page_is_fetched_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let files = slices(&src, 5);
    for (what, fake) in [
        ("two a page", archive(files.clone(), 2, true)),
        ("offset ignored", archive(files.clone(), 100, false)),
    ] {
        let d = tempfile::tempdir().unwrap();
        let j = ok(&[
            "share-study",
            "--from",
            &fake.dicomweb(),
            "--study",
            STUDY,
            "--archive-retries",
            "0",
            "--out",
            &s(&d.path().join("study")),
            "--sigma",
            "321.176HU",
            "--quiet",
        ]);
        assert_eq!(j["slices"], 5, "{what}: {j}");
        assert_eq!(j["archive"]["instances"], 5, "{what}: {j}");
        let r = fake.requests();
        let fetches = r
            .iter()
            .filter(|x| x.contains("/instances/") && x.starts_with("GET "))
            .count();
        assert_eq!(fetches, 5, "{what}: {r:?}");
        let fetched = std::fs::read_dir(d.path().join("study.fetched"))
            .unwrap()
            .count();
        assert_eq!(fetched, 5, "{what}");
    }
}

/// `share-study --from ARCHIVE --study STUDY` as [`share`], with `extra` options and the
/// environment `env`.
fn share_with(dir: &Path, from: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    share_command(dir, from, extra, env)
        .output()
        .expect("run ppdenoise")
}

/// The command [`share_with`] runs.
fn share_command(dir: &Path, from: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let out = s(&dir.join("study"));
    let mut c = Command::new(common::bin());
    c.arg("--json").args([
        "share-study",
        "--from",
        from,
        "--study",
        STUDY,
        "--archive-retries",
        "0",
        "--archive-timeout",
        "10",
        "--out",
        &out,
        "--sigma",
        "20HU",
        "--quiet",
    ]);
    c.args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An archive answering 302 with a Location at a second server: refused, naming both, and
/// nothing (least of all the credentials) is asked of the second server; the first is asked
/// once (a redirect is no transient failure to retry).
#[test]
fn a_redirect_is_refused_and_nothing_is_asked_where_it_points() {
    let elsewhere = Fake::start(|_, _| json(serde_json::json!([series_item()])));
    let target = format!("{}/studies/{STUDY}/series", elsewhere.root());
    let location = target.clone();
    let redirecting =
        Fake::start_with(move |_, _| (302, format!("Location: {location}\r\n"), Vec::new()));
    let d = tempfile::tempdir().unwrap();
    let o = share_with(
        d.path(),
        &redirecting.dicomweb(),
        &["--archive-auth-env", "PPD_FAKE_ARCHIVE_AUTH"],
        &[("PPD_FAKE_ARCHIVE_AUTH", "basic:gateway:not-for-elsewhere")],
    );
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert!(
        e.contains(&format!("{}/studies/{STUDY}/series", redirecting.root()))
            && e.contains("HTTP 302")
            && e.contains(&format!("redirected to {target}"))
            && e.contains("not followed"),
        "{e}"
    );
    assert_eq!(elsewhere.requests(), Vec::<String>::new());
    assert_eq!(
        redirecting.requests().len(),
        1,
        "{:?}",
        redirecting.requests()
    );
    nothing_shared(d.path(), "a redirect");
}

/// A server on a free port of 127.0.0.1 answering every request 200 with a body of `len`
/// bytes (spaces, which a JSON reader would take for an empty answer), written as fast as
/// the client reads: its port, and the bytes written (counted as each MiB is taken).
fn endless(len: u64) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n\
                     Content-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                let mut sent = 0u64;
                while sent < len {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                    count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (port, written)
}

/// An answer longer than its bound (a QIDO-RS page: 64 MiB) is refused as it arrives, within
/// a time limit, the archive having served little more than the bound.
#[test]
fn an_answer_past_its_bound_is_refused_as_it_arrives() {
    let (port, written) = endless(300 << 20);
    let root = format!("http://127.0.0.1:{port}/dw");
    let d = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = share(d.path(), &format!("dicomweb:{root}"), STUDY);
    let took = t.elapsed();
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert!(
        e.contains(&format!("{root}/studies/{STUDY}/series"))
            && e.contains("larger than the bound of 67108864 bytes"),
        "{e}"
    );
    assert!(took < Duration::from_secs(30), "refused after {took:?}");
    std::thread::sleep(Duration::from_millis(200));
    let n = written.load(Ordering::SeqCst);
    assert!(
        n < (64 << 20) + (32 << 20),
        "the archive wrote {n} bytes before the client stopped"
    );
    nothing_shared(d.path(), "an answer past its bound");
}

/// A hostile archive paging on for ever (pages of 1000 instances, each carrying 16 KB of an
/// attribute nobody uses, 16 MB a page, every instance new): refused at the one bound of
/// all the command's lists (256 MiB), naming the URL and the bound, with nothing fetched or
/// shared; the archive served little more than the bound. (The fake ends its list after 40
/// pages, 640 MB, so that a client without the bound ends too.)
#[test]
fn an_archive_paging_on_for_ever_is_refused_at_the_commands_bound() {
    let series_url = format!("/dw/studies/{STUDY}/series");
    let inst_url = format!("{series_url}/{SERIES}/instances");
    let served = Arc::new(AtomicU64::new(0));
    let pages = Arc::new(AtomicU64::new(0));
    let (count, paged) = (served.clone(), pages.clone());
    let junk = "x".repeat(16_000);
    let (su, iu) = (series_url.clone(), inst_url.clone());
    let fake = Fake::start(move |_, target| {
        let path = target.split('?').next().unwrap();
        let (_, offset) = paging(target);
        if path == su {
            let v: Vec<_> = [series_item()].into_iter().skip(offset).collect();
            return json(serde_json::Value::Array(v));
        }
        if path != iu {
            return (404, "text/plain", b"no such resource".to_vec());
        }
        if paged.fetch_add(1, Ordering::SeqCst) >= 40 {
            return json(serde_json::json!([]));
        }
        let items: Vec<String> = (0..1000)
            .map(|k| {
                format!(
                    "{{\"00080018\":{{\"vr\":\"UI\",\"Value\":[\"{SERIES}.{}\"]}},\
                     \"00081030\":{{\"vr\":\"LO\",\"Value\":[\"{junk}\"]}}}}",
                    offset + k + 1
                )
            })
            .collect();
        let body = format!("[{}]", items.join(",")).into_bytes();
        count.fetch_add(body.len() as u64, Ordering::SeqCst);
        (200, "application/dicom+json", body)
    });
    let d = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = share(d.path(), &fake.dicomweb(), STUDY);
    let took = t.elapsed();
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert!(
        e.contains(&format!(
            "GET {}{inst_url}?limit=",
            fake.root().trim_end_matches("/dw")
        )) && e.contains("passed this command's bound (268435456 bytes"),
        "{e}"
    );
    let (n, p) = (served.load(Ordering::SeqCst), pages.load(Ordering::SeqCst));
    assert!(
        n <= (256 << 20) + (40 << 20) && p < 40,
        "{p} pages, {n} bytes served before the client stopped"
    );
    assert!(took < Duration::from_secs(60), "refused after {took:?}");
    let fetched = fake
        .requests()
        .iter()
        .filter(|r| r.contains("/instances/"))
        .count();
    assert_eq!(fetched, 0);
    nothing_shared(d.path(), "an archive paging on for ever");
}

/// A hostile archive answering one page of 21 million empty objects (`[{},{},...]`, 63 MB,
/// inside a page's 64 MiB bound): refused at the command's item bound as the page is parsed,
/// never held whole (gigabytes of items when it was parsed before being counted). The
/// command's peak resident memory, read from /proc while it runs, stays under 512 MB.
#[test]
fn a_page_of_millions_of_empty_items_is_refused_as_it_is_parsed() {
    let series_url = format!("/dw/studies/{STUDY}/series");
    let inst_url = format!("{series_url}/{SERIES}/instances");
    let mut page = Vec::with_capacity(3 * 21_000_000 + 2);
    page.push(b'[');
    for k in 0..21_000_000 {
        if k > 0 {
            page.push(b',');
        }
        page.extend_from_slice(b"{}");
    }
    page.push(b']');
    let page = Arc::new(page);
    let (su, iu) = (series_url.clone(), inst_url.clone());
    let fake = Fake::start(move |_, target| {
        let path = target.split('?').next().unwrap();
        let (_, offset) = paging(target);
        if path == su {
            let v: Vec<_> = [series_item()].into_iter().skip(offset).collect();
            return (
                200,
                "application/dicom+json",
                serde_json::Value::Array(v).to_string().into_bytes(),
            );
        }
        if path == iu {
            return (200, "application/dicom+json", page.to_vec());
        }
        (404, "text/plain", b"no such resource".to_vec())
    });
    let d = tempfile::tempdir().unwrap();
    let mut child = share_command(d.path(), &fake.dicomweb(), &[], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ppdenoise");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        let hwm = std::fs::read_to_string(&status).unwrap_or_default();
        if let Some(kb) = hwm
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut e = String::new();
    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert!(!code.success(), "accepted: {e}");
    assert!(
        e.contains(&format!(
            "GET {}{inst_url}?limit=",
            fake.root().trim_end_matches("/dw")
        )) && e.contains("passed this command's bound")
            && e.contains("110000 items"),
        "{e}"
    );
    assert!(peak_kb > 0, "the command's memory was never read");
    assert!(
        peak_kb < 512 * 1024,
        "the command held {} MB at its peak for one page of empty items",
        peak_kb / 1024
    );
    nothing_shared(d.path(), "a page of millions of empty items");
}

/// Filing six instances into an archive nobody answers (a closed port), with the default
/// retries: the command gives up at the first instance, after its retries only (0.25 + 0.5 +
/// 1 s), with one line naming the archive, not the same error for each instance in turn.
#[test]
fn an_unreachable_archive_stops_a_filing_at_once_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let series = tmp.path().join("series");
    std::fs::create_dir(&series).unwrap();
    slices(&series, 6);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{p}/dw")
    };
    let t = Instant::now();
    let o = run(&[
        "file-series",
        "--in",
        &s(&series),
        "--to",
        &format!("dicomweb:{closed}"),
    ]);
    let took = t.elapsed();
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert_eq!(e.matches("Connection refused").count(), 1, "{e}");
    assert!(
        e.contains("filing stopped at instance 1 of 6") && e.contains("the rest not sent"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_secs(6),
        "gave up after {took:?}"
    );
}

/// A second `reconstruct --to` into a folder that already holds the derived series is
/// refused with the `file-series` line to finish filing: with the credentials' option given
/// (without it the archive answers 401), never the credentials themselves.
#[test]
fn the_hint_after_a_second_reconstruct_names_the_credentials_option() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("denoised");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("IM0001"), b"written before").unwrap();
    let to = "dicomweb:http://127.0.0.1:9/dw";
    for (opt, val, env) in [
        ("--archive-auth-env", "PPD_FAKE_ARCHIVE_AUTH", true),
        ("--archive-auth-file", "", false),
    ] {
        let file = tmp.path().join("archive.auth");
        std::fs::write(&file, "basic:gateway:hunter2\n").unwrap();
        let val = if env { val.to_string() } else { s(&file) };
        let o = Command::new(common::bin())
            .args([
                "reconstruct",
                "--study",
                &s(&tmp.path().join("study")),
                "--out",
                &s(&out),
                "--to",
                to,
                "--insecure-unsigned",
                opt,
                &val,
            ])
            .env("PPD_FAKE_ARCHIVE_AUTH", "basic:gateway:hunter2")
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(!o.status.success(), "{e}");
        let want = format!("`file-series --in {} --to {to} {opt} {val}`", s(&out));
        assert!(e.contains(&want), "{want} not in {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
