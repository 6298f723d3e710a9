//! A long study shows where it is (issue 44, item 7): `gen-triplets --study` and
//! `serve --study` print each slice's line as it finishes with the study's position and ETA;
//! `serve --study --keep-going` goes past a failed slice and lists every failure with the
//! slices to redo; a consumed triplet file is cut to its header (unless --keep-triplets),
//! and a second run is still refused by name; the dealer refuses, with the numbers, a
//! dealing its disk cannot hold.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, ok, run, share_study, start_pair, summary, wait_limit};

use crate::common;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dir {
    /// Keys, the tiny MLP shared, and a study of three 16x16 phantoms shared.
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let d = Dir { _tmp: tmp, dir };
        for n in ["s0", "s1"] {
            ok(&["keygen", "--name", n, "--out-dir", &d.p("keys")]);
        }
        ok(&[
            "share-model",
            "--model",
            &fixture("tiny-mlp.npz"),
            "--out",
            &d.p("model"),
        ]);
        std::fs::create_dir_all(d.path("in")).unwrap();
        for k in 0..3 {
            ok(&[
                "add-noise",
                "--sigma",
                "25",
                "--seed",
                &k.to_string(),
                "--image",
                "builtin:phantom:16",
                "--out",
                &d.p(&format!("in/im{k}.png")),
            ]);
        }
        summary(
            &share_study(&d.dir, "25", "in", "study", &["--quiet"]),
            "share-study",
        );
        d
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn deal(&self, extra: &[&str], env: Option<&str>) -> Output {
        let mut c = Command::new(bin());
        c.args(["--json", "gen-triplets", "--engine", "gc", "--study"])
            .arg(self.p("study"))
            .args(["--model", &self.p("model.pub")])
            .args(extra);
        if let Some(v) = env {
            c.env("PPDENOISE_FREE_BYTES", v);
        }
        c.output().unwrap()
    }

    /// `serve --study` of party `p`; `addr`: its `--addr` (and S0's `--port-file`), from
    /// [`start_pair`].
    fn serve(&self, p: u8, addr: &[String], extra: &[&str]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--progress", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&format!("model.p{p}"))])
            .args(["--study", &self.p("study")])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "20"])
            .args(["--state-dir", &self.p(&format!("state{p}"))])
            .args(extra)
            .env("PPDENOISE_PROGRESS_SECS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }

    fn serve_pair(&self, extra: &[&str]) -> [Output; 2] {
        start_pair(&self.dir, |p, addr| self.serve(p, addr, extra))
            .map(|c| wait_limit(c, Duration::from_secs(180)))
    }

    fn size(&self, name: &str) -> u64 {
        std::fs::metadata(self.path(name)).unwrap().len()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_study_says_each_slice_goes_past_a_failed_one_and_spends_its_triplets() {
    let d = Dir::new();
    // Slices 0 and 2 dealt, slice 1 not: it fails on both servers.
    let o = d.deal(&["--slices", "0,2"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    for l in ["slice 1/2 (slice0): dealt", "slice 2/2 (slice2): dealt"] {
        assert!(e.contains(l), "{l}: {e}");
    }
    assert!(
        e.contains("study: 1/2 slices (50%)") && e.contains("ETA"),
        "{e}"
    );
    assert!(
        e.contains("study: 2/2 slices (100%)") && e.contains("done"),
        "{e}"
    );
    let full = d.size("study/slice0/triplets.p1");

    let [o0, o1] = d.serve_pair(&["--keep-going"]);
    for (p, o) in [(0, &o0), (1, &o1)] {
        let e = stderr(o);
        assert!(!o.status.success(), "S{p}: a failed slice fails the run");
        for want in [
            "slice 0: S".to_string(),
            format!("serve S{p} slice 1/3 (slice0)"),
            format!("S{p} study: 1/3 slices (33%)"),
            "ETA".into(),
            "slice 1: FAILED (going on: --keep-going)".into(),
            "slice 2: S".into(),
            format!("S{p} study: 3/3 slices (100%)"),
            "1 of 3 slice(s) failed (1); ran 2 (0,2)".into(),
            "triplets.p".into(),
            "to redo them: gen-triplets --study".into(),
            "--slices 1, then serve --study".into(),
        ] {
            assert!(e.contains(&want), "S{p} lacks {want:?}: {e}");
        }
        // Each finished slice's line came before the failure was listed.
        let (a, b) = (
            e.find("slice 2: S").unwrap(),
            e.find("to redo them").unwrap(),
        );
        assert!(a < b, "{e}");
        for i in [0, 2] {
            assert!(d.path(&format!("study/slice{i}/done.p{p}")).exists());
        }
    }
    // The spent files keep their header alone: S1's values are gone.
    for i in [0, 2] {
        let n = d.size(&format!("study/slice{i}/triplets.p1"));
        assert!(
            n < full / 2,
            "slice{i}/triplets.p1: {n} of {full} bytes left"
        );
    }
    // The header still names the dealing: study-status sees both finished, and a second run
    // of the cut file is refused as consumed, by name.
    let st = ok(&["study-status", "--study", &d.p("study")]);
    assert_eq!(st["left"], serde_json::json!([1]));
    let out = run(&[
        "serve",
        "--party",
        "0",
        "--insecure-unsigned",
        "--model",
        &d.p("model.p0"),
        "--image",
        &d.p("study/slice0/image.p0"),
        "--triplets",
        &d.p("study/slice0/triplets.p0"),
        "--out",
        &d.p("again.p0"),
        "--key",
        &d.p("keys/s0.key"),
        "--cert",
        &d.p("keys/s0.crt"),
        "--peer-cert",
        &d.p("keys/s1.crt"),
        "--state-dir",
        &d.p("state0"),
    ]);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("triplets.p0") && e.contains("already consumed"),
        "{e}"
    );

    // The failed slice dealt and run again (kept whole with --keep-triplets).
    let o = d.deal(&["--slices", "1", "--quiet"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("dealt"), "--quiet: {}", stderr(&o));
    let before = d.size("study/slice1/triplets.p1");
    let [o0, o1] = d.serve_pair(&["--keep-going", "--keep-triplets"]);
    for o in [&o0, &o1] {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(stderr(o).contains("serve S"), "{}", stderr(o));
    }
    let j: serde_json::Value = serde_json::from_slice(&o0.stdout).unwrap();
    assert_eq!(j["ran"], serde_json::json!([1]));
    assert_eq!(d.size("study/slice1/triplets.p1"), before);
}

#[test]
fn the_dealer_refuses_a_dealing_its_disk_cannot_hold() {
    let d = Dir::new();
    let o = d.deal(&["--slices", "0"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bytes = j["dealer_bytes"].as_u64().unwrap();
    // One byte short of what the files really took: the estimate is never below it.
    let o = d.deal(&["--slices", "1"], Some(&(bytes - 1).to_string()));
    let e = stderr(&o);
    assert!(!o.status.success(), "refused");
    for n in [
        "slice 1",
        "triplets",
        "needs about",
        "are free there",
        &(bytes - 1).to_string(),
    ] {
        assert!(e.contains(n), "{n}: {e}");
    }
    assert!(
        !d.path("study/slice1/triplets.p1").exists(),
        "nothing written"
    );
    assert!(
        !d.path("study/slice1/triplets.p0").exists(),
        "nothing written"
    );
    // With room (the estimate's slack included), it deals.
    let o = d.deal(&["--slices", "1"], Some(&(bytes + (1 << 20)).to_string()));
    assert!(o.status.success(), "{}", stderr(&o));
}
