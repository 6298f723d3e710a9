//! A study's parties through the real binary (tests/suite/studies/study.rs, tests/suite/studies/colour_study.rs): keys
//! for the servers and every signer, the model shared, and the commands of each party over
//! the study folder `study/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{bin, ok, run, share_study, start_pair, summary, wait_limit};

/// A fixture's path (`fixtures/NAME`), or `name` itself when it is an absolute path (a model
/// a test made).
pub fn fixture(name: &str) -> String {
    if Path::new(name).is_absolute() {
        return name.to_string();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

pub fn refused(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a refusal naming {needles:?}");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
}

pub fn wait(c: Child) -> Output {
    wait_limit(c, Duration::from_secs(180))
}

pub struct Dir {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    /// The study id share-study printed: the one the receiver expects (`--study-id`).
    pub study_id: std::cell::RefCell<String>,
}

impl Dir {
    /// Keys for both servers and the model `model` shared.
    pub fn new(model: &str) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let d = Dir {
            _tmp: tmp,
            dir,
            study_id: Default::default(),
        };
        for n in ["s0", "s1"] {
            ok(&["keygen", "--name", n, "--out-dir", &d.p("keys")]);
        }
        // Signing keys: the makers' (every input the servers take is signed), and each
        // server's (output shares and completion records are signed); the trust file names
        // them all, for the servers and the receiver.
        let mut trust = String::new();
        for n in ["dealer", "owner", "gateway", "s0", "s1"] {
            let v = ok(&[
                "keygen",
                "--signing",
                "--name",
                n,
                "--out-dir",
                &d.p("keys"),
            ]);
            trust.push_str(&format!("{n} {}\n", v["public_key"].as_str().unwrap()));
        }
        std::fs::write(d.path("keys/trust"), trust).unwrap();
        ok(&[
            "share-model",
            "--model",
            &fixture(model),
            "--out",
            &d.p("model"),
            "--sign-key",
            &d.p("keys/owner.sign-key"),
        ]);
        d
    }

    /// share-study's JSON summary `j`, its study id kept as the one the receiver expects.
    pub fn shared(&self, j: serde_json::Value) -> serde_json::Value {
        *self.study_id.borrow_mut() = j["study_id"].as_str().expect("a study id").into();
        j
    }

    /// A signing key of a forger's own, made now, signing as S0.
    pub fn planter(&self) -> ppdenoise::formats::signing::Signer {
        let s0 = ppdenoise::formats::signing::Role::S0;
        super::own_signer(&self.path("keys"), "planter", s0)
    }

    /// The gateway's signing key, for `share-study --sign-key`.
    pub fn gateway_key(&self) -> String {
        self.p("keys/gateway.sign-key")
    }

    /// The images of `in/` shared by the gateway as the study `study/`: its JSON summary.
    pub fn share_images(&self) -> serde_json::Value {
        let o = share_study(
            &self.dir,
            "25",
            "in",
            "study",
            &[
                "--sign-key",
                &self.gateway_key(),
                "--trust",
                &self.p("keys/trust"),
            ],
        );
        summary(&o, "share-study")
    }

    pub fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `serve --study` of party `p`, with `extra` flags; `addr`: its `--addr` (and S0's
    /// `--port-file`), from [`start_pair`] or [`no_link_addr`].
    pub fn serve(&self, p: u8, addr: &[String], timeout: &str, extra: &[&str]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .args(["--trust", &self.p("keys/trust")])
            .args(["--model", &self.p(&format!("model.p{p}"))])
            .args(["--study", &self.p("study")])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", timeout])
            .args(["--state-dir", &self.p(&format!("state{p}"))])
            .args(["--sign-key", &self.p(&format!("keys/{me}.sign-key"))])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }

    /// Both servers over the study (`extra`: e.g. `--slices`); their JSON summaries.
    pub fn serve_pair(&self, extra: &[&str]) -> [serde_json::Value; 2] {
        start_pair(&self.dir, |p, addr| self.serve(p, addr, "60", extra)).map(|c| {
            let o = wait(c);
            assert!(
                o.status.success(),
                "serve --study {extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            serde_json::from_slice(&o.stdout).expect("one JSON summary")
        })
    }

    pub fn status(&self) -> serde_json::Value {
        ok(&["study-status", "--study", &self.p("study")])
    }

    /// `reconstruct --study` into the new folder `out`: its JSON summary.
    pub fn reconstruct(&self, out: &str) -> serde_json::Value {
        let a = self.reconstruct_args(out);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `reconstruct --study` into `out` as the receiver runs it: both servers' keys pinned.
    pub fn reconstruct_args(&self, out: &str) -> Vec<String> {
        [
            "reconstruct",
            "--study",
            &self.p("study"),
            "--out",
            &self.p(out),
            "--s0-key",
            &self.p("keys/s0.sign-pub"),
            "--s1-key",
            &self.p("keys/s1.sign-pub"),
            "--gateway-key",
            &self.p("keys/gateway.sign-pub"),
            "--study-id",
            &self.study_id.borrow(),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    }

    /// [`Dir::reconstruct`]'s run, its outcome as it is.
    pub fn try_reconstruct(&self, out: &str) -> Output {
        let a = self.reconstruct_args(out);
        run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn deal(&self, extra: &[&str]) -> serde_json::Value {
        let (s, m) = (self.p("study"), self.p("model.pub"));
        let k = self.p("keys/dealer.sign-key");
        let mut args = vec![
            "gen-triplets",
            "--study",
            &s,
            "--model",
            &m,
            "--sign-key",
            &k,
        ];
        args.extend(extra);
        ok(&args)
    }
}

pub fn list(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// The plaintext fixed-point oracle of `input` for `model`, written like it (`out`).
pub fn oracle(d: &Dir, input: &Path, model: &str, out: &str) -> PathBuf {
    oracle_at(d, input, model, out, "25")
}

/// [`oracle`] at noise level `sigma` (a gray DICOM takes it in its own units).
pub fn oracle_at(d: &Dir, input: &Path, model: &str, out: &str, sigma: &str) -> PathBuf {
    let mut args = vec![
        "denoise".to_string(),
        "--sigma".into(),
        sigma.into(),
        "--image".into(),
        input.display().to_string(),
        "--model".into(),
        fixture(model),
        "--arith".into(),
        "fixed".into(),
        "--out".into(),
        d.p(out),
    ];
    if out.ends_with(".dcm") {
        args.extend(["--like".into(), input.display().to_string()]);
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    d.path(out)
}
