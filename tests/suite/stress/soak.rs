//! The soak (issue 30, item 4; `make soak`): `PPDENOISE_SOAK_JOBS` (default 200) consecutive
//! small jobs through one server pair's state directories, both engines and both model
//! families in turn, every process real, S1 reaching S0 through a relay in this process.
//! One job in ten meets a fault, in turn: a server killed mid-run, the link cut mid-run, or
//! a disk that fills up under one server in the middle of a line of its record of consumed
//! triplets (the line must be undone, the record left whole lines only). Every finished job
//! must reconstruct to the plaintext fixed-point oracle's image exactly; every failed job must
//! fail cleanly (non-zero exit, no output) and is re-run to completion with fresh triplets.
//! Across the run the servers' peak memory (each finished server must report it) and open
//! files and this process's open files must not grow (printed), and the state directories must hold nothing stranded: no temporary file, no claim still
//! held, and claims left only by the servers the soak killed. Fresh server processes per job
//! would hide a per-job leak: at the end one server pair runs a study of
//! `PPDENOISE_SOAK_SLICES` (default 30) slices, one process each, and each server's resident
//! memory as its slices complete must not grow.

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{bin, ok, start_pair};

/// A server's `--timeout`, and the longest a job may take.
const TIMEOUT: &str = "10";
const LIMIT: Duration = Duration::from_secs(60);

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Open file descriptors of process `pid` (`self` for this one).
fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// A relay between S1 and S0 that counts bytes and can cut the link

struct Relay {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    held: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay to `to` that stops forwarding, in both directions, once `hold_at` bytes have
    /// passed: the servers then wait for data that never comes, so a fault injected after
    /// that always strikes mid-run (a 2 ms poll could miss the end of a small job).
    fn start(to: SocketAddr, hold_at: u64) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (b, h, st, cs, ts) = (
            bytes.clone(),
            held.clone(),
            stop.clone(),
            conns.clone(),
            threads.clone(),
        );
        let acceptor = thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                // S0 may not listen yet: the relay retries for a while, as S1 would.
                let t = Instant::now();
                let up = loop {
                    match TcpStream::connect(to) {
                        Ok(up) => break Some(up),
                        Err(_) if t.elapsed() < Duration::from_secs(5) => {
                            thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => break None,
                    }
                };
                let Some(up) = up else { continue };
                let mut list = cs.lock().unwrap();
                list.extend([c.try_clone().unwrap(), up.try_clone().unwrap()]);
                let mut t = ts.lock().unwrap();
                for (src, dst) in [(c.try_clone().unwrap(), up.try_clone().unwrap()), (up, c)] {
                    let (b, h) = (b.clone(), h.clone());
                    t.push(thread::spawn(move || pump(src, dst, &b, &h, hold_at)));
                }
            }
        });
        Relay {
            addr,
            bytes,
            held,
            stop,
            conns,
            threads,
            acceptor: Some(acceptor),
        }
    }

    fn total(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Cuts every connection, as a network failure would.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
        self.conns.lock().unwrap().clear();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

fn pump(mut src: TcpStream, mut dst: TcpStream, bytes: &AtomicU64, held: &AtomicBool, at: u64) {
    let mut buf = [0u8; 16 << 10];
    loop {
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if held.load(Ordering::SeqCst)
                    || bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > at
                {
                    // Held: nothing more passes, and the connection stays open (a closed
                    // one would end the job before the fault is injected).
                    held.store(true, Ordering::SeqCst);
                    return;
                }
                if dst.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------------------------------
// The four kinds of job and their files

#[derive(Clone, Copy, PartialEq, Debug)]
enum Family {
    Mlp,
    Cnn,
}

#[derive(Clone, Copy, Debug)]
struct JobKind {
    family: Family,
    engine: &'static str,
}

const KINDS: [JobKind; 4] = [
    JobKind {
        family: Family::Mlp,
        engine: "gmw",
    },
    JobKind {
        family: Family::Cnn,
        engine: "gc",
    },
    JobKind {
        family: Family::Mlp,
        engine: "gc",
    },
    JobKind {
        family: Family::Cnn,
        engine: "gmw",
    },
];

impl JobKind {
    fn name(self) -> String {
        format!("{:?}/{}", self.family, self.engine).to_lowercase()
    }

    fn fam(self) -> &'static str {
        match self.family {
            Family::Mlp => "mlp",
            Family::Cnn => "cnn",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    KillS0,
    KillS1,
    CutLink,
    DiskFullS0,
    DiskFullS1,
}

/// The fault of the `k`-th faulty job: kills, cuts and full disks in turn, on both sides.
fn fault(k: usize) -> Fault {
    [
        Fault::KillS0,
        Fault::CutLink,
        Fault::DiskFullS1,
        Fault::KillS1,
        Fault::CutLink,
        Fault::DiskFullS0,
    ][k % 6]
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl World {
    fn p(&self, rel: &str) -> String {
        s(&self.dir.join(rel))
    }

    /// Keys (TLS for the servers, signing for the makers, a trust file), an MLP and a CNN
    /// with their shares, one noisy image shared for each, and each one's oracle image.
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let w = World {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        common::party_keys(
            &w.dir.join("keys"),
            &["s0", "s1"],
            &["dealer", "owner", "gateway"],
        );
        use ppdenoise::model::cnn::{random_cnn, CnnMeta};
        use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
        let meta = ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: true,
            activation: Activation::TanhStar,
            aggregation_sigma: 4.0,
        };
        random_model(&[49, 8, 9], 11, meta)
            .save(&w.dir.join("mlp.npz"))
            .unwrap();
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        random_cnn(&[1, 4, 4, 1], 3, 12, meta)
            .save(&w.dir.join("cnn.npz"))
            .unwrap();
        ok(&[
            "add-noise",
            "--image",
            "builtin:phantom:16",
            "--sigma",
            "25",
            "--seed",
            "5",
            "--out",
            &w.p("noisy.png"),
        ]);
        for fam in ["mlp", "cnn"] {
            ok(&[
                "share-model",
                "--model",
                &w.p(&format!("{fam}.npz")),
                "--out",
                &w.p(&format!("{fam}-model")),
                "--sign-key",
                &w.p("keys/owner.sign-key"),
            ]);
            let mut share = vec![
                "share-image".to_string(),
                "--image".into(),
                w.p("noisy.png"),
                "--sigma".into(),
                "25".into(),
                "--out".into(),
                w.p(&format!("{fam}-image")),
                "--sign-key".into(),
                w.p("keys/gateway.sign-key"),
            ];
            let mut oracle = vec![
                "denoise".to_string(),
                "--model".into(),
                w.p(&format!("{fam}.npz")),
                "--image".into(),
                w.p("noisy.png"),
                "--sigma".into(),
                "25".into(),
                "--arith".into(),
                "fixed".into(),
                "--out".into(),
                w.p(&format!("{fam}-oracle.png")),
            ];
            if fam == "mlp" {
                share.extend(["--stride".into(), "3".into()]);
                oracle.extend(["--stride".into(), "3".into()]);
            } else {
                share.extend(["--model".into(), w.p("cnn-model.pub")]);
                share.extend(["--trust".into(), w.p("keys/trust")]);
            }
            ok(&strs(&share));
            ok(&strs(&oracle));
        }
        w
    }

    /// Fresh triplets for a job of `kind`, `<dir>/<name>.pN`.
    fn deal(&self, kind: JobKind, name: &str) {
        let f = kind.fam();
        ok(&[
            "gen-triplets",
            "--model",
            &self.p(&format!("{f}-model.pub")),
            "--image",
            &self.p(&format!("{f}-image.pub")),
            "--engine",
            kind.engine,
            "--out",
            &self.p(&format!("jobs/{name}")),
            "--sign-key",
            &self.p("keys/dealer.sign-key"),
        ]);
    }

    /// `serve --party p` for the job `name`: the one state dir of each server throughout.
    /// `full`: a limit in bytes on the size of any file the server writes.
    fn serve(&self, kind: JobKind, name: &str, p: u8, addr: &[String], full: Option<u64>) -> Child {
        let f = kind.fam();
        let a: Vec<String> = [
            "--json",
            "serve",
            "--quiet",
            "--party",
            &p.to_string(),
            "--model",
            &self.p(&format!("{f}-model.p{p}")),
            "--image",
            &self.p(&format!("{f}-image.p{p}")),
            "--triplets",
            &self.p(&format!("jobs/{name}.p{p}")),
            "--key",
            &self.p(&format!("keys/s{p}.key")),
            "--cert",
            &self.p(&format!("keys/s{p}.crt")),
            "--peer-cert",
            &self.p(&format!("keys/s{}.crt", 1 - p)),
            "--trust",
            &self.p("keys/trust"),
            "--timeout",
            TIMEOUT,
            "--state-dir",
            &self.p(&format!("state{p}")),
            "--out",
            &self.p(&format!("out{p}/{name}.p{p}")),
        ]
        .iter()
        .map(|x| x.to_string())
        .chain(addr.iter().cloned())
        .collect();
        let mut c = Command::new(bin());
        c.args(&a);
        if let Some(limit) = full {
            // A disk that fills up at `limit` bytes of any one file: a write past it is cut
            // there and the rest fails (EFBIG; SIGXFSZ ignored, which exec keeps).
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What one run of a pair gave: each server's output, peak RSS (from its summary) and the
/// most open files seen.
struct Run {
    out: [Output; 2],
    rss: [u64; 2],
    fds: [usize; 2],
    bytes: u64,
}

/// Runs the pair on job `name`, injecting `fault` once the relay has carried `at` bytes.
fn run(w: &World, kind: JobKind, name: &str, fault: Option<Fault>, at: u64) -> Run {
    let hold_at = match fault {
        Some(Fault::KillS0 | Fault::KillS1 | Fault::CutLink) => at,
        _ => u64::MAX,
    };
    // The disk fills up in the middle of the record of consumed triplets: its next line is
    // cut after a few bytes (the claim file, written before it, is smaller).
    let full = |p: u8| match (fault, p) {
        (Some(Fault::DiskFullS0), 0) | (Some(Fault::DiskFullS1), 1) => Some(record_len(w, p) + 10),
        _ => None,
    };
    // S0 binds a port the system picks and says which; S1 reaches it through the relay.
    let pf = w.dir.join("s0-port");
    let _ = std::fs::remove_file(&pf);
    let mut c0 = w.serve(kind, name, 0, &common::s0_listen_args(&pf), full(0));
    let s0 = SocketAddr::from(([127, 0, 0, 1], common::s0_port(&pf, &mut c0)));
    let relay = Relay::start(s0, hold_at);
    let to_relay = ["--addr".to_string(), relay.addr.to_string()];
    let mut c = [Some(c0), Some(w.serve(kind, name, 1, &to_relay, full(1)))];
    let mut fds_max = [0usize; 2];
    let mut outs: [Option<Output>; 2] = [None, None];
    let mut injected = false;
    let t = Instant::now();
    while outs.iter().any(Option::is_none) {
        for p in 0..2 {
            let Some(child) = c[p].as_mut() else { continue };
            fds_max[p] = fds_max[p].max(fds(&child.id().to_string()));
            if child.try_wait().unwrap().is_some() || t.elapsed() > LIMIT {
                let mut child = c[p].take().unwrap();
                let _ = child.kill();
                outs[p] = Some(child.wait_with_output().unwrap());
            }
        }
        if !injected && relay.held() {
            match fault {
                Some(Fault::KillS0) | Some(Fault::KillS1) => {
                    let v = if fault == Some(Fault::KillS0) { 0 } else { 1 };
                    if let Some(child) = c[v].as_mut() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    // The killed server's end closes, as the kernel would close it.
                    relay.cut();
                    injected = true;
                }
                Some(Fault::CutLink) => {
                    relay.cut();
                    injected = true;
                }
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    let bytes = relay.total();
    drop(relay);
    let out = outs.map(Option::unwrap);
    // A server that finished must report its peak memory: a missing figure would read as
    // no growth.
    let rss = std::array::from_fn(|p| {
        if !out[p].status.success() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_slice(&out[p].stdout)
            .unwrap_or_else(|e| panic!("{name} S{p}: no JSON summary ({e})"));
        match v["peak_rss_bytes"].as_u64() {
            Some(b) if b > 0 => b,
            _ => panic!("{name} S{p}: no non-zero peak_rss_bytes in its summary: {v}"),
        }
    });
    Run {
        out,
        rss,
        fds: fds_max,
        bytes,
    }
}

/// The job's output shares reconstruct to its kind's oracle image, exactly.
fn check_exact(w: &World, kind: JobKind, name: &str) {
    let png = w.p(&format!("jobs/{name}.png"));
    ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &w.p(&format!("out0/{name}.p0")),
        "--share1",
        &w.p(&format!("out1/{name}.p1")),
        "--out",
        &png,
    ]);
    let oracle = w.dir.join(format!("{}-oracle.png", kind.fam()));
    assert!(
        std::fs::read(&png).unwrap() == std::fs::read(&oracle).unwrap(),
        "{name} ({}): the secure image differs from the oracle's",
        kind.name()
    );
    // Shares and image are not kept: 200 jobs' worth would only fill the disk.
    for f in [
        png,
        w.p(&format!("out0/{name}.p0")),
        w.p(&format!("out1/{name}.p1")),
    ] {
        std::fs::remove_file(f).unwrap();
    }
}

/// A failed run failed cleanly: every server that was not killed exited non-zero with one
/// `error:` line and no panic, the victim by SIGKILL, and neither wrote its output.
fn check_failed(w: &World, r: &Run, name: &str, f: Fault) {
    for p in 0..2u8 {
        let o = &r.out[p as usize];
        let err = String::from_utf8_lossy(&o.stderr);
        let victim = matches!((f, p), (Fault::KillS0, 0) | (Fault::KillS1, 1));
        if victim {
            assert_eq!(o.status.signal(), Some(9), "{name} S{p}: {:?}", o.status);
        } else {
            assert!(
                o.status.code().is_some_and(|c| c != 0),
                "{name} S{p} ({f:?}): expected an error exit, got {:?}: {err}",
                o.status
            );
            assert!(!err.contains("panicked"), "{name} S{p}: {err}");
            let n = err.lines().filter(|l| l.starts_with("error:")).count();
            assert_eq!(n, 1, "{name} S{p}: {err}");
        }
        if matches!((f, p), (Fault::DiskFullS0, 0) | (Fault::DiskFullS1, 1)) {
            // The disk filled up within the record's line: the server says so, and the
            // record holds whole lines only (the cut one undone).
            assert!(
                err.contains("cannot record consumed randomness"),
                "{name} S{p} ({f:?}): the disk did not fill up at the record: {err}"
            );
            let rec = std::fs::read_to_string(record(w, p)).unwrap();
            assert!(
                rec.ends_with('\n')
                    && rec.lines().all(|l| {
                        let mut it = l.split(' ');
                        let id = it.next().unwrap_or("");
                        let t = it.next().unwrap_or("");
                        id.len() == 32
                            && id.bytes().all(|b| b.is_ascii_hexdigit())
                            && !t.is_empty()
                            && t.bytes().all(|b| b.is_ascii_digit())
                            && it.next().is_none()
                    }),
                "{name} S{p}: a cut line left in the record:\n{rec}"
            );
        }
        let out = w.dir.join(format!("out{p}/{name}.p{p}"));
        assert!(
            !out.exists(),
            "{name} S{p} ({f:?}): wrote {}",
            out.display()
        );
    }
}

/// Every file in the state and output folders: no temporary file, no claim still held, and
/// claims only of triplets dealt to a job whose server the soak killed. Returns the claims.
fn stranded(w: &World, killed: &[String], names: &HashMap<String, String>) -> usize {
    let mut claims = 0;
    for d in ["state0", "state1", "out0", "out1"] {
        for e in std::fs::read_dir(w.dir.join(d)).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().to_string();
            assert!(!n.contains(".tmp"), "{d}/{n}: a temporary file left behind");
            if n.starts_with("consumed-triplets-p") {
                continue;
            }
            let Some(id) = n.strip_prefix("claim-p0-").or(n.strip_prefix("claim-p1-")) else {
                panic!("{d}/{n}: an unexpected file");
            };
            let f = std::fs::File::open(e.path()).unwrap();
            assert!(f.try_lock().is_ok(), "{d}/{n}: a claim still held");
            assert!(
                killed.iter().any(|k| k == id),
                "{d}/{n}: a claim left by a server the soak did not kill (job {})",
                names.get(id).map_or("?", |s| s.as_str())
            );
            claims += 1;
        }
    }
    claims
}

/// The servers' error lines of a failed run, cut short: what the fault looked like to them.
fn why(r: &Run) -> String {
    let line = |p: usize| {
        let err = String::from_utf8_lossy(&r.out[p].stderr).to_string();
        let l = err.lines().find(|l| l.starts_with("error:")).map(|l| {
            let l = l.trim_start_matches("error:").trim();
            l.chars().take(70).collect::<String>()
        });
        format!("S{p}: {}", l.unwrap_or_else(|| "killed".into()))
    };
    format!("{}; {}", line(0), line(1))
}

/// Means of the first and last `n` of `v`.
fn ends(v: &[f64], n: usize) -> (f64, f64) {
    let n = n.min(v.len() / 2).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&v[..n]), mean(&v[v.len() - n..]))
}

#[test]
#[ignore = "about a minute of jobs: `make soak` runs it"]
fn soak_jobs_with_faults() {
    let jobs: usize = std::env::var("PPDENOISE_SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let t0 = Instant::now();
    let w = World::new();
    for d in ["jobs", "out0", "out1", "state0", "state1"] {
        std::fs::create_dir_all(w.dir.join(d)).unwrap();
    }
    let me_fds0 = fds("self");
    // Per kind: the bytes of a clean run (faults strike at half of it), and per job the
    // servers' peak RSS and most open files.
    let mut clean_bytes = [0u64; 4];
    let mut rss: Vec<f64> = Vec::new();
    let mut srv_fds: Vec<f64> = Vec::new();
    let mut me_fds: Vec<f64> = Vec::new();
    let (mut faults, mut reruns) = (0usize, 0usize);
    let mut killed: Vec<String> = Vec::new();
    // Triplet id -> job, to name the job behind a stranded claim.
    let mut names: HashMap<String, String> = HashMap::new();
    for j in 0..jobs {
        // The kinds in turn, shifted every ten jobs so that the faults fall on each kind.
        let ki = (j + j / 10) % KINDS.len();
        let kind = KINDS[ki];
        let name = format!("job{j:03}");
        w.deal(kind, &name);
        names.insert(triplet_id(&w, &name), name.clone());
        // One job in ten meets a fault (never a kind's first, whose bytes are measured).
        let f = (j % 10 == 9 && clean_bytes[ki] > 0).then(|| fault(faults));
        let r = run(&w, kind, &name, f, clean_bytes[ki] / 2);
        let r = match f {
            None => r,
            Some(f) => {
                faults += 1;
                check_failed(&w, &r, &name, f);
                let failed = r;
                if matches!(f, Fault::KillS0 | Fault::KillS1) {
                    killed.push(triplet_id(&w, &name));
                }
                // The re-run: fresh triplets, the same state dirs.
                reruns += 1;
                let again = format!("{name}-rerun");
                w.deal(kind, &again);
                names.insert(triplet_id(&w, &again), again.clone());
                let r = run(&w, kind, &again, None, 0);
                check_ok(&r, &again);
                check_exact(&w, kind, &again);
                println!(
                    "job {j:3} {:8} {f:?}: failed cleanly ({}), re-run with fresh triplets: exact",
                    kind.name(),
                    why(&failed)
                );
                r
            }
        };
        if f.is_none() {
            check_ok(&r, &name);
            check_exact(&w, kind, &name);
            if clean_bytes[ki] == 0 {
                clean_bytes[ki] = r.bytes;
            }
        }
        rss.push(r.rss.iter().copied().max().unwrap() as f64);
        srv_fds.push(*r.fds.iter().max().unwrap() as f64);
        me_fds.push(fds("self") as f64);
        // The dealt files are not needed any more (S1's holds its triple shares).
        for p in 0..2 {
            for n in [&name, &format!("{name}-rerun")] {
                let _ = std::fs::remove_file(w.dir.join(format!("jobs/{n}.p{p}")));
            }
        }
    }
    let claims = stranded(&w, &killed, &names);
    let window = 20;
    let (r0, r1) = ends(&rss, window);
    let (f0, f1) = ends(&srv_fds, window);
    let (m0, m1) = ends(&me_fds, window);
    let mib = |b: f64| b / (1u64 << 20) as f64;
    println!(
        "soak: {jobs} jobs ({} kinds), {faults} faults, {reruns} re-runs, all exact, in {:.0} s",
        KINDS.len(),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "soak: server peak RSS, mean of the first / last {window} jobs: {:.1} / {:.1} MiB",
        mib(r0),
        mib(r1)
    );
    println!("soak: server open files (most seen), first / last {window}: {f0:.1} / {f1:.1}");
    println!(
        "soak: this process's open files: {me_fds0} at the start, first / last {window}: {m0:.1} / {m1:.1}"
    );
    println!(
        "soak: state dirs: {} consumed records; {claims} claims left (by killed servers only), none held",
        count_consumed(&w)
    );
    assert!(
        r1 <= r0 * 1.10 + 2.0 * (1u64 << 20) as f64,
        "the servers' memory grew"
    );
    assert!(f1 <= f0 + 1.0, "the servers' open files grew");
    // PPDENOISE_SOAK_SLICES: the study's slices (a long one shows a slow leak).
    let slices = std::env::var("PPDENOISE_SOAK_SLICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    long_lived_servers(&w, slices);
    assert!(m1 <= m0 + 1.0, "this process's open files grew");
    assert!(
        m1 <= me_fds0 as f64 + 2.0,
        "open files left in this process"
    );
}

fn check_ok(r: &Run, name: &str) {
    let err = |p: usize| String::from_utf8_lossy(&r.out[p].stderr).to_string();
    assert!(
        r.out.iter().all(|o| o.status.success()),
        "{name}: S0: {}\nS1: {}",
        err(0),
        err(1)
    );
}

/// The triplet id of job `name`'s files.
fn triplet_id(w: &World, name: &str) -> String {
    let h =
        ppdenoise::formats::container::read_header(&w.dir.join(format!("jobs/{name}.p0"))).unwrap();
    ppdenoise::formats::container::id_hex(&h.triplet_id.unwrap())
}

/// Server `p`'s record of consumed triplets.
fn record(w: &World, p: u8) -> PathBuf {
    w.dir.join(format!("state{p}/consumed-triplets-p{p}"))
}

/// Its size now.
fn record_len(w: &World, p: u8) -> u64 {
    std::fs::metadata(record(w, p)).map_or(0, |m| m.len())
}

fn count_consumed(w: &World) -> usize {
    (0..2)
        .map(|p| {
            std::fs::read_to_string(w.dir.join(format!("state{p}/consumed-triplets-p{p}")))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum()
}

/// A per-job leak, which fresh server processes per job would hide: one server pair runs
/// `slices` slices of a study (`serve --study`, one process each throughout), each server's
/// resident memory read as each of its slices completes; the last slices' must be the
/// first ones' (after two to warm up), within 10% and 2 MiB.
fn long_lived_servers(w: &World, slices: usize) {
    let t = Instant::now();
    std::fs::create_dir_all(w.dir.join("series")).unwrap();
    for i in 0..slices {
        std::fs::copy(
            w.dir.join("noisy.png"),
            w.dir.join(format!("series/im{i}.png")),
        )
        .unwrap();
    }
    let study = w.p("study");
    ok(&[
        "share-study",
        "--quiet",
        "--sigma",
        "25",
        "--in",
        &w.p("series"),
        "--out",
        &study,
        "--model",
        &w.p("cnn-model.pub"),
    ]);
    ok(&[
        "gen-triplets",
        "--study",
        &study,
        "--model",
        &w.p("cnn-model.pub"),
        "--engine",
        "gc",
    ]);
    // S0 binds once for every slice, on a port the system picks.
    let pair = start_pair(&w.dir, |p, addr| {
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &w.p(&format!("cnn-model.p{p}"))])
            .args(["--study", &study])
            .args(["--key", &w.p(&format!("keys/s{p}.key"))])
            .args(["--cert", &w.p(&format!("keys/s{p}.crt"))])
            .args(["--peer-cert", &w.p(&format!("keys/s{}.crt", 1 - p))])
            .args(addr)
            .args(["--timeout", TIMEOUT])
            .args(["--state-dir", &w.p(&format!("study-state{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve --study")
    });
    let mut c: Vec<Option<Child>> = pair.map(Some).into();
    // Per server: its resident memory when each of its slices was done.
    let mut rss: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut outs: [Option<Output>; 2] = [None, None];
    while outs.iter().any(Option::is_none) {
        for p in 0..2 {
            let Some(child) = c[p].as_mut() else { continue };
            let pid = child.id();
            let done = (0..slices)
                .filter(|i| {
                    Path::new(&study)
                        .join(format!("slice{i}/done.p{p}"))
                        .exists()
                })
                .count();
            if done > rss[p].len() {
                if let Some(b) = vm_rss(pid) {
                    rss[p].resize(done, b as f64);
                }
            }
            if child.try_wait().unwrap().is_some() || t.elapsed() > LIMIT * 3 {
                let mut child = c[p].take().unwrap();
                let _ = child.kill();
                outs[p] = Some(child.wait_with_output().unwrap());
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mib = |b: f64| b / (1u64 << 20) as f64;
    for (p, o) in outs.iter().enumerate() {
        let o = o.as_ref().unwrap();
        assert!(
            o.status.success(),
            "serve --study S{p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Slices missed by the 5 ms poll take the next one's figure (resize above).
        assert!(
            rss[p].len() >= slices - 1,
            "S{p}: memory read at {} of {slices} slices",
            rss[p].len()
        );
        let (r0, r1) = ends(&rss[p][2..], 5);
        println!(
            "soak: one S{p} process over {slices} study slices: resident memory, mean of the first / last 5: {:.1} / {:.1} MiB",
            mib(r0),
            mib(r1)
        );
        assert!(
            r1 <= r0 * 1.10 + 2.0 * (1u64 << 20) as f64,
            "S{p}'s memory grew from slice to slice in one process (MiB, per slice: {:?})",
            rss[p]
                .iter()
                .map(|b| (mib(*b) * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
    }
    println!(
        "soak: the study's {slices} slices in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Resident memory of process `pid` now (VmRSS), in bytes.
fn vm_rss(pid: u32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = st
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
