//! Issue 46, item 1: a file is read once into a typed value. `serve` (both parties, an MLP
//! job and a CNN job) and `reconstruct` run under `strace`, with signed and sealed files as
//! a deployment has them, and each input path must be opened for reading exactly once per
//! process: its header check, its pinned-key check, its body and its checksum come from one
//! handle, so that no file swapped in at the path is read unchecked, and nothing is decided
//! by reopening a path (whether an input was sealed, for instance).
//!
//! `strace` is required (the Makefile's `tools` installs it): without it this test fails,
//! saying so, rather than passing unchecked.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, job_id_of, ok, start_pair, wait_limit};

const LIMIT: Duration = Duration::from_secs(120);

struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dir {
    /// Keys for both servers, the receiver and the three makers, and a trust file.
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dir {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        let keys = d.p("keys");
        for n in ["s0", "s1", "rx"] {
            ok(&["keygen", "--name", n, "--out-dir", &keys]);
        }
        let mut trust = String::new();
        for role in ["dealer", "owner", "gateway", "s0", "s1"] {
            let v = ok(&["keygen", "--signing", "--name", role, "--out-dir", &keys]);
            trust.push_str(&format!("{role} {}\n", v["public_key"].as_str().unwrap()));
        }
        std::fs::write(d.dir.join("keys/trust"), trust).unwrap();
        d
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn key(&self, name: &str) -> String {
        self.p(&format!("keys/{name}"))
    }

    /// Sealed to both servers, signed by `signer`.
    fn to_servers(&self, signer: &str) -> Vec<String> {
        vec![
            "--to-s0".into(),
            self.key("s0.age-recipient"),
            "--to-s1".into(),
            self.key("s1.age-recipient"),
            "--sign-key".into(),
            self.key(&format!("{signer}.sign-key")),
        ]
    }

    fn run_ok(&self, args: &[&str], extra: &[String]) {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().cloned());
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Shares `npz` (an MLP's or a CNN's), a noisy phantom of side `side` shared for it, and
    /// the dealer's triplets: every file sealed and signed.
    fn deal(&self, npz: &str, side: usize) {
        self.run_ok(
            &[
                "share-model",
                "--model",
                &self.p(npz),
                "--out",
                &self.p("model"),
            ],
            &self.to_servers("owner"),
        );
        ok(&[
            "add-noise",
            "--image",
            &format!("builtin:phantom:{side}"),
            "--sigma",
            "25",
            "--seed",
            "3",
            "--out",
            &self.p("noisy.png"),
        ]);
        self.run_ok(
            &[
                "share-image",
                "--image",
                &self.p("noisy.png"),
                "--model",
                &self.p("model.pub"),
                "--sigma",
                "25",
                "--trust",
                &self.key("trust"),
                "--out",
                &self.p("image"),
            ],
            &self.to_servers("gateway"),
        );
        self.run_ok(
            &[
                "gen-triplets",
                "--model",
                &self.p("model.pub"),
                "--image",
                &self.p("image.pub"),
                "--batch",
                "64",
                "--out",
                &self.p("triplets"),
            ],
            &self.to_servers("dealer"),
        );
    }

    /// `ppdenoise <args>` under strace, its trace written to `trace`.
    fn traced(&self, trace: &str, args: &[String]) -> Command {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=openat,open", "-o", &self.p(trace)])
            .arg(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn inputs(&self, p: u8) -> [String; 3] {
        ["model", "image", "triplets"].map(|f| self.p(&format!("{f}.p{p}")))
    }

    fn spawn_serve(&self, p: u8, addr: &[String]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        let [model, image, triplets] = self.inputs(p);
        let mut a: Vec<String> = ["--json", "serve", "--quiet", "--party", &p.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (flag, v) in [
            ("--model", model),
            ("--image", image),
            ("--triplets", triplets),
            ("--key", self.key(&format!("{me}.key"))),
            ("--cert", self.key(&format!("{me}.crt"))),
            ("--peer-cert", self.key(&format!("{peer}.crt"))),
            ("--identity", self.key(&format!("{me}.age-identity"))),
            ("--trust", self.key("trust")),
            ("--sign-key", self.key(&format!("{me}.sign-key"))),
            ("--out-to", self.key("rx.age-recipient")),
            ("--state-dir", self.p(&format!("state{p}"))),
            ("--timeout", "30".into()),
            ("--out", self.p(&format!("out.p{p}"))),
        ] {
            a.extend([flag.to_string(), v]);
        }
        a.extend(addr.iter().cloned());
        self.traced(&format!("serve{p}.trace"), &a)
            .spawn()
            .expect("start strace")
    }

    /// Both servers, then the receiver, each under strace; checks every input's opens.
    fn serve_and_reconstruct(&self) {
        let outs = start_pair(&self.dir, |p, addr| self.spawn_serve(p, addr))
            .map(|c| wait_limit(c, LIMIT));
        for (p, o) in outs.iter().enumerate() {
            succeeded(o, &format!("serve S{p}"));
            let [m, i, t] = self.inputs(p as u8);
            // A consumed triplet file is spent afterwards (a sealed one removed, unopened).
            opened_once(&self.p(&format!("serve{p}.trace")), &[&m, &i, &t]);
        }
        let shares = [self.p("out.p0"), self.p("out.p1")];
        let mut a: Vec<String> = ["--json", "reconstruct", "--share0", &shares[0]]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (flag, v) in [
            ("--share1", shares[1].clone()),
            ("--out", self.p("out.png")),
            ("--identity", self.key("rx.age-identity")),
            ("--trust", self.key("trust")),
            ("--job-id", job_id_of(Path::new(&self.p("image.pub")))),
            ("--job", self.p("image.pub")),
        ] {
            a.extend([flag.to_string(), v]);
        }
        let o = self.traced("rx.trace", &a).output().expect("run strace");
        succeeded(&o, "reconstruct");
        let job = self.p("image.pub");
        opened_once(&self.p("rx.trace"), &[&shares[0], &shares[1], &job]);
    }
}

fn succeeded(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Each of `paths` is opened exactly once, for reading, in the trace at `trace` (all the
/// traced process's threads and children together); the failure lists every path's opens.
fn opened_once(trace: &str, paths: &[&String]) {
    let text = std::fs::read_to_string(trace).unwrap_or_else(|e| panic!("{trace}: {e}"));
    let mut wrong = Vec::new();
    for path in paths {
        let quoted = format!("\"{path}\"");
        let opens: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&quoted) && (l.contains("openat(") || l.contains("open(")))
            .collect();
        let reads = opens
            .iter()
            .filter(|l| !l.contains("O_WRONLY") && !l.contains("O_RDWR"))
            .count();
        if (reads, opens.len()) != (1, 1) {
            wrong.push(format!(
                "{path}: opened {} times ({reads} for reading)",
                opens.len()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "each input should be opened once, for reading; {trace}:\n{}",
        wrong.join("\n")
    );
}

fn strace_present() {
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "strace is needed to count the opens of each input (`make tools` installs it: apt-get install strace)"
    );
}

#[test]
fn serve_and_reconstruct_open_each_input_once_mlp() {
    strace_present();
    let d = Dir::new();
    use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 4.0,
    };
    random_model(&[49, 8, 9], 7, meta)
        .save(&d.dir.join("mlp.npz"))
        .unwrap();
    d.deal("mlp.npz", 24);
    d.serve_and_reconstruct();
}

#[test]
fn serve_and_reconstruct_open_each_input_once_cnn() {
    strace_present();
    let d = Dir::new();
    use ppdenoise::model::cnn::{random_cnn, CnnMeta};
    let meta = CnnMeta {
        sigma: 25.0,
        residual: true,
    };
    random_cnn(&[1, 6, 5, 1], 3, 77, meta)
        .save(&d.dir.join("cnn.npz"))
        .unwrap();
    d.deal("cnn.npz", 21);
    d.serve_and_reconstruct();
}
