//! Progress where a person waits (issue 13): `demo` and `table` through the real binary with
//! stderr piped (not a terminal), so progress comes as plain lines; `PPDENOISE_PROGRESS_SECS=0`
//! prints one at every update. `--quiet` and `--json` print none, and with `--json` stdout
//! is exactly one JSON line.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use ppdenoise::model::cnn::{random_cnn, CnnMeta};
use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};

const IMAGE: &str = "builtin:phantom:24";

fn ppd(args: &[&str]) -> Output {
    let o = Command::cargo_bin("ppdenoise")
        .unwrap()
        .env("PPDENOISE_PROGRESS_SECS", "0")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ppdenoise {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `label: pos/len unit (pct%), ...` lines of one progress display, as (pos, len, line).
fn progress_lines(err: &str, label: &str, unit: &str) -> Vec<(u64, u64, String)> {
    err.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{label}: "))?;
            let (frac, tail) = rest.split_once(&format!(" {unit} ("))?;
            let (pos, len) = frac.split_once('/')?;
            let pct: u64 = tail.split_once("%)")?.0.parse().ok()?;
            let (pos, len): (u64, u64) = (pos.parse().ok()?, len.parse().ok()?);
            assert_eq!(pct, pos * 100 / len, "{l}");
            Some((pos, len, l.to_string()))
        })
        .collect()
}

/// Progress lines that move forward, all but the last with an ETA, the last at 100% "done".
fn assert_advances(lines: &[(u64, u64, String)], err: &str) {
    assert!(lines.len() >= 2, "too few progress lines:\n{err}");
    assert!(
        lines.windows(2).all(|w| w[0].0 < w[1].0),
        "progress does not advance:\n{err}"
    );
    let (last, rest) = lines.split_last().unwrap();
    assert!(rest.iter().all(|(_, _, l)| l.contains(", ETA ")), "{err}");
    assert_eq!(last.0, last.1, "{err}");
    assert!(last.2.ends_with(", done"), "{err}");
}

#[test]
fn demo_says_each_step_and_shows_the_servers_progress() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("demo");
    let o = ppd(&["demo", "--image", IMAGE, "--workdir", &s(&w)]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    let steps: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    let want = [
        "keys",
        "sharing the model",
        "model set-up",
        "sharing the noisy image",
        "dealer: triplets for",
        "servers S0 and S1",
        "reconstructing",
        "comparing",
    ];
    assert_eq!(steps.len(), want.len(), "{err}");
    for (i, (line, what)) in steps.iter().zip(want).enumerate() {
        assert!(
            line.starts_with(&format!("[{}/{}] ", i + 1, want.len())) && line.contains(what),
            "step {i}: {line:?} (want {what:?})\n{err}"
        );
    }
    // One server's progress only, between the servers' step and the receiver's.
    let p = progress_lines(&err, "serve S0", "patches");
    assert_advances(&p, &err);
    assert!(!err.contains("serve S1"), "{err}");
    let at = |needle: &str| err.find(needle).unwrap();
    assert!(at("[6/8]") < at("serve S0: ") && at(&p.last().unwrap().2) < at("[7/8]"));
    // The result on stdout, progress never.
    assert!(out.contains("PSNR secure"), "{out}");
    assert!(!out.contains("serve S0") && !out.contains("[1/8]"), "{out}");
}

#[test]
fn demo_quiet_and_json_print_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let w = s(&dir.path().join("demo"));
    let o = ppd(&["demo", "--quiet", "--image", IMAGE, "--workdir", &w]);
    assert_eq!(text(&o.stderr), "", "--quiet printed on stderr");
    assert!(text(&o.stdout).contains("PSNR secure"));

    let o = ppd(&["--json", "demo", "--image", IMAGE, "--workdir", &w]);
    assert_eq!(text(&o.stderr), "", "--json printed on stderr");
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "not one line: {out}");
    assert!(out.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["max_abs_diff_secure_oracle"], 0.0, "{v}");
}

/// A chain CNN runs as its graph: the servers count its steps (each convolution, ReLU and
/// the residual subtraction), as for any graph.
#[test]
fn a_cnn_demo_counts_every_step_of_its_graph() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cnn.npz");
    let meta = CnnMeta {
        sigma: 25.0,
        residual: true,
    };
    let m = random_cnn(&[1, 4, 4, 1], 3, 5, meta);
    m.save(&model).unwrap();
    let g = ppdenoise::model::graph::Graph::from_cnn(&m).unwrap();
    let plan = ppdenoise::ring::graph::GraphPlan::from_graph(&g, Default::default()).unwrap();
    let w = s(&dir.path().join("demo"));
    let args = [
        "demo",
        "--model",
        &s(&model),
        "--image",
        "builtin:phantom:16",
    ];
    let o = ppd(&[&args[..], &["--workdir", &w, "--no-compare"]].concat());
    let err = text(&o.stderr);
    assert!(err.contains("[4/6] dealer: triplets for 3 convolutions over 16x16"));
    let p = progress_lines(&err, "serve S0", "steps");
    assert_advances(&p, &err);
    assert_eq!(p.last().unwrap().1, plan.steps.len() as u64 - 1, "{err}");
}

#[test]
fn table_shows_progress_over_its_runs_and_counts_resumed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.npz");
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 4.0,
    };
    random_model(&[1521, 12, 289], 7, meta)
        .save(&model)
        .unwrap();
    let out = dir.path().join("table");
    let table = |extra: &[&str]| {
        let base = [
            "table",
            "--images",
            "builtin:phantom:32",
            "--sigmas",
            "20 25 30",
            "--figures",
            "none",
        ];
        let paths = ["--model", &s(&model), "--out-dir", &s(&out)];
        ppd(&[&base[..], &paths, extra].concat())
    };
    let err = text(&table(&[]).stderr);
    let p = progress_lines(&err, "table", "runs");
    assert_eq!(
        p.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        [(1, 3), (2, 3), (3, 3)],
        "{err}"
    );
    assert_advances(&p, &err);
    // The inner demos and servers stay quiet.
    assert!(!err.contains("serve S0") && !err.contains("[1/8]"), "{err}");

    // Two of three recorded: they count as done from the start.
    std::fs::remove_file(out.join("runs/phantom_32/sigma25/run.json")).unwrap();
    let err = text(&table(&["--resume"]).stderr);
    assert_eq!(
        err.matches("(recorded earlier, --resume)").count(),
        2,
        "{err}"
    );
    let p = progress_lines(&err, "table", "runs");
    assert_eq!(p.len(), 1, "{err}");
    assert!(p[0].2.starts_with("table: 3/3 runs (100%), ") && p[0].2.ends_with("done"));

    // --json: one line on stdout, nothing on stderr.
    let o = table(&["--resume", "--json"]);
    assert_eq!(text(&o.stderr), "");
    assert_eq!(text(&o.stdout).lines().count(), 1);
    let o = table(&["--resume", "--quiet"]);
    assert_eq!(text(&o.stderr), "");
}
