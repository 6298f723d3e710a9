//! Real CT and MR intensities through the secure path (issue 44).
//!
//! pydicom's CT_small (signed 16-bit, HU = stored - 1024) and MR_small (signed 16-bit, no
//! rescale) become short noisy series (scripts/noisy-series.py: Gaussian noise of a realistic
//! size in their own units); each goes through `share-study`, `gen-triplets --study`, two
//! `serve --study` processes over TLS and `reconstruct --study`, with the shipped MLP and the
//! default window and the sigma in the image's units. Every slice must equal the plaintext
//! fixed-point oracle (`denoise --arith fixed` on the same series) and come back closer to
//! the clean slice, in HU or stored values as pydicom reads them, than its noisy input.
//! Before windows, the CT at 20 HU came back with 76% of its pixels at -32768.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, ok, run, start_pair, wait_limit};

use crate::common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    root().join(".venv-dicom/bin/python")
}

/// One of pydicom's test files, from `make dicom-testdata`'s venv (PyPI's pydicom wheel).
fn pydicom_file(name: &str) -> PathBuf {
    let o = Command::new(python())
        .args([
            "-c",
            &format!("from pydicom.data import get_testdata_file as g; print(g({name:?}))"),
        ])
        .output()
        .expect("run .venv-dicom/bin/python (make dicom-testdata)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn script(name: &str, args: &[&str]) -> Output {
    let o = Command::new(python())
        .arg(root().join("scripts").join(name))
        .args(args)
        .output()
        .expect("run a script in .venv-dicom");
    assert!(
        o.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// RMSE of each of `files` against `clean`, in the image's own units, as pydicom reads them.
fn rmse(clean: &Path, files: &[PathBuf]) -> Vec<f64> {
    let mut args = vec![clean.display().to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = script("dicom-rmse.py", &args);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    files
        .iter()
        .map(|f| j[f.display().to_string()].as_f64().unwrap())
        .collect()
}

/// What pydicom reads of `path` (scripts/read-dicom.py's JSON).
fn pydicom_reads(path: &Path) -> serde_json::Value {
    let o = script("read-dicom.py", &[&s(path)]);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn slices(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// `serve --study` of party `p` in `dir` (model shares `model.p<p>`).
/// `serve --study` of party `p`; `addr`: its `--addr` (and S0's `--port-file`), from
/// [`start_pair`].
fn serve(dir: &Path, study: &Path, p: u8, addr: &[String]) -> Child {
    let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
    let f = |n: &str| s(&dir.join(n));
    Command::new(bin())
        .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
        .arg("--insecure-unsigned")
        .args(["--model", &f(&format!("model.p{p}"))])
        .args(["--study", &s(study)])
        .args(["--key", &f(&format!("keys/{me}.key"))])
        .args(["--cert", &f(&format!("keys/{me}.crt"))])
        .args(["--peer-cert", &f(&format!("keys/{peer}.crt"))])
        .args(addr)
        .args(["--timeout", "60"])
        .args([
            "--state-dir",
            &f(&format!("state-{}{p}", study_name(study))),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve")
}

fn study_name(study: &Path) -> String {
    study.file_name().unwrap().to_string_lossy().into_owned()
}

/// Keys for both servers and the shipped MLP shared, in a new folder.
fn setup() -> tempfile::TempDir {
    setup_with(&s(&root().join("fixtures/default-model.npz")))
}

/// Keys for both servers and the model file `model` shared (as `model.*`), in a new folder.
fn setup_with(model: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &s(&d.join("keys"))]);
    }
    ok(&[
        "share-model",
        "--model",
        model,
        "--out",
        &s(&d.join("model")),
    ]);
    tmp
}

/// The series `series` (noisy slices of `clean`) through the whole secure path at `sigma`:
/// checks every slice against the oracle and returns the noisy and denoised RMSEs.
fn secure_series(
    d: &Path,
    clean: &Path,
    series: &Path,
    sigma: &str,
    window: &str,
    out_opts: &[&str],
) -> Vec<(f64, f64)> {
    secure_series_dealt(
        d,
        (clean, series),
        (sigma, window),
        out_opts,
        Dealing::Dealer,
    )
}

/// Who deals a study's slices.
enum Dealing<'a> {
    /// The dealer, for the shipped MLP (`model.pub` of [`setup`]).
    Dealer,
    /// The two servers between themselves, no dealer (`gen-triplets --party`, the gc
    /// engine), for the model whose file `model` was shared as `model.pub`.
    Servers { model: &'a str },
}

/// [`secure_series`], the slices dealt as `dealing` says.
fn secure_series_dealt(
    d: &Path,
    (clean, series): (&Path, &Path),
    (sigma, window): (&str, &str),
    out_opts: &[&str],
    dealing: Dealing,
) -> Vec<(f64, f64)> {
    let tag = sigma.replace('.', "_");
    let (study, out, oracle) = (
        d.join(format!("study-{tag}")),
        d.join(format!("denoised-{tag}")),
        d.join(format!("oracle-{tag}")),
    );
    let model = s(&d.join("model.pub"));
    let j = ok(&[
        "share-study",
        "--in",
        &s(series),
        "--out",
        &s(&study),
        "--sigma",
        sigma,
        "--model",
        &model,
        "--window",
        window,
        "--quiet",
    ]);
    if window == "default" {
        assert_eq!(j["clipped"], 0, "{j}");
    }
    let mut oracle_model = Vec::new();
    match dealing {
        Dealing::Dealer => {
            ok(&["gen-triplets", "--study", &s(&study), "--model", &model]);
        }
        Dealing::Servers { model: file } => {
            oracle_model = vec!["--model", file];
            let deal = start_pair(d, |p, addr| {
                let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
                let f = |n: &str| s(&d.join(n));
                Command::new(bin())
                    .args(["gen-triplets", "--quiet", "--party", &p.to_string()])
                    .args(["--engine", "gc", "--study", &s(&study), "--model", &model])
                    .args(["--key", &f(&format!("keys/{me}.key"))])
                    .args(["--cert", &f(&format!("keys/{me}.crt"))])
                    .args(["--peer-cert", &f(&format!("keys/{peer}.crt"))])
                    .args(addr)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start gen-triplets --party")
            });
            for o in deal.map(|c| wait_limit(c, Duration::from_secs(900))) {
                assert!(
                    o.status.success(),
                    "gen-triplets --study --party: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            for f in ["slice0/triplets.p0", "slice0/triplets.p1"] {
                assert!(study.join(f).exists(), "{f}: not written");
            }
        }
    }
    let pair = start_pair(d, |p, addr| serve(d, &study, p, addr));
    for o in pair.map(|c| wait_limit(c, Duration::from_secs(600))) {
        assert!(
            o.status.success(),
            "serve --study: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut args = vec![
        "reconstruct",
        "--insecure-unsigned",
        "--study",
        study.to_str().unwrap(),
        "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(out_opts);
    ok(&args);
    let (noisy_in, oracle_out) = (s(series), s(&oracle));
    let mut args = vec!["denoise", "--image", &noisy_in, "--arith", "fixed"];
    args.extend(oracle_model);
    args.extend(["--sigma", sigma, "--window", window, "--out", &oracle_out]);
    ok(&args);
    let noisy = slices(series);
    let names: Vec<_> = noisy.iter().map(|p| p.file_name().unwrap()).collect();
    let denoised: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
    for (n, got) in names.iter().zip(&denoised) {
        let (a, b) = (
            ppdenoise::image::load(got).unwrap(),
            ppdenoise::image::load(oracle.join(n)).unwrap(),
        );
        assert_eq!(a, b, "{n:?}: the secure slice differs from the oracle");
    }
    let before = rmse(clean, &noisy);
    let after = rmse(clean, &denoised);
    before.into_iter().zip(after).collect()
}

#[test]
fn a_signed_16_bit_ct_series_comes_back_better_than_it_went_in() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let clean = pydicom_file("CT_small.dcm");
    // 10 HU is 0.62 levels of the model's scale in the default window, below what the MLP's
    // fixed point holds for on CT_small's span (refused: see the refusals test); in a
    // soft-tissue window it is 6.4 levels, and bone and air are written back unchanged.
    for (sigma, window) in [(10u32, "-160:240"), (20, "default"), (40, "default")] {
        let series = d.join(format!("ct-{sigma}"));
        script(
            "noisy-series.py",
            &[
                &s(&clean),
                &s(&series),
                "--slices",
                "2",
                "--sigma",
                &sigma.to_string(),
            ],
        );
        let r = secure_series(d, &clean, &series, &format!("{sigma}HU"), window, &[]);
        for (i, (noisy, denoised)) in r.iter().enumerate() {
            eprintln!(
                "CT_small, sigma {sigma} HU, slice {i}: RMSE {noisy:.2} HU -> {denoised:.2} HU"
            );
            assert!((noisy - f64::from(sigma)).abs() < 0.1 * f64::from(sigma));
            assert!(
                denoised < &(0.97 * noisy),
                "sigma {sigma} HU, slice {i}: denoised RMSE {denoised:.2} HU, noisy {noisy:.2}"
            );
        }
    }
}

#[test]
fn a_signed_16_bit_mr_series_comes_back_better_than_it_went_in() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let clean = pydicom_file("MR_small.dcm");
    // MR_small's values span 127..2145: 2% and 5% of that range, in stored values.
    for sigma in [40u32, 100] {
        let series = d.join(format!("mr-{sigma}"));
        script(
            "noisy-series.py",
            &[
                &s(&clean),
                &s(&series),
                "--slices",
                "2",
                "--sigma",
                &sigma.to_string(),
            ],
        );
        // The derived series compressed losslessly (issue 44, item 5): ppdenoise's own
        // reading equals the oracle (in secure_series), and so does pydicom's.
        let syntax = if sigma == 40 {
            "j2k-lossless"
        } else {
            "jpeg-ls-lossless"
        };
        let opts = ["--transfer-syntax", syntax, "--series-number", "901"];
        let r = secure_series(d, &clean, &series, &format!("{sigma}SV"), "default", &opts);
        for name in slices(&series).iter().map(|p| p.file_name().unwrap()) {
            let tag = format!("{sigma}SV");
            let got = pydicom_reads(&d.join(format!("denoised-{tag}")).join(name));
            let want = pydicom_reads(&d.join(format!("oracle-{tag}")).join(name));
            let uid = got["TransferSyntaxUID"].as_str().unwrap();
            assert!(
                uid.ends_with(if sigma == 40 { ".90" } else { ".80" }),
                "{uid}"
            );
            assert!(
                got["pixels"] == want["pixels"],
                "{name:?}: pydicom's values differ from the oracle's"
            );
            assert_eq!(got["SeriesNumber"], "901");
            assert_eq!(got["Equipment"][0][0], "ppdenoise");
            assert!(
                got["DerivationDescription"]
                    .as_str()
                    .unwrap()
                    .contains("model id "),
                "{got}"
            );
        }
        for (i, (noisy, denoised)) in r.iter().enumerate() {
            eprintln!("MR_small, sigma {sigma} SV, slice {i}: RMSE {noisy:.2} -> {denoised:.2}");
            assert!(
                denoised < &(0.97 * noisy),
                "sigma {sigma} SV, slice {i}: denoised RMSE {denoised:.2}, noisy {noisy:.2}"
            );
        }
    }
}

/// `--sigma auto`: the gateway's estimate of each slice, in the image's units, within 15%
/// of the noise added (the clean slices carry some noise of their own, which it counts too).
#[test]
fn sigma_auto_estimates_the_noise_of_real_slices() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (file, sigmas, unit) in [
        ("CT_small.dcm", &[10.0, 20.0, 40.0][..], "HU"),
        ("MR_small.dcm", &[40.0, 100.0][..], "SV"),
    ] {
        let clean = pydicom_file(file);
        for &sigma in sigmas {
            let series = d.join(format!("{file}-{sigma}"));
            script(
                "noisy-series.py",
                &[
                    &s(&clean),
                    &s(&series),
                    "--slices",
                    "3",
                    "--sigma",
                    &sigma.to_string(),
                ],
            );
            for slice in slices(&series) {
                // What --sigma auto takes, as inspect shows it.
                let j = ok(&["inspect", &s(&slice)]);
                let got = j["noise_estimate"].as_f64().unwrap();
                eprintln!("{file} sigma {sigma} {unit}: estimated {got:.2}");
                assert!(
                    (got - sigma).abs() <= 0.15 * sigma,
                    "{file} at {sigma} {unit}: estimated {got:.2}"
                );
            }
        }
    }
}

/// A noise level is required and must be one the image's units can state; a window is
/// stated in a DICOM's units. Each refusal names the option and the choices.
#[test]
fn sigma_and_window_mistakes_are_refused_by_name() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mr = s(&pydicom_file("MR_small.dcm"));
    let refused = |args: &[&str], needles: &[&str]| {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should be refused");
        for n in needles {
            assert!(err.contains(n), "{args:?}: error lacks {n:?}: {err}");
        }
    };
    refused(&["denoise", "--image", &mr], &["--sigma"]);
    refused(
        &["share-image", "--image", &mr, "--out", &s(&d.join("x"))],
        &["--sigma"],
    );
    refused(
        &["denoise", "--image", &mr, "--sigma", "20HU"],
        &["not a CT", "SV"],
    );
    refused(
        &["denoise", "--image", &mr, "--sigma", "20XY"],
        &["--sigma", "HU", "SV", "auto"],
    );
    refused(&["denoise", "--image", &mr, "--sigma", "0"], &["positive"]);
    refused(
        &[
            "denoise",
            "--image",
            "builtin:phantom:64",
            "--sigma",
            "25",
            "--window",
            "0:100",
        ],
        &["--window", "full range"],
    );
    refused(
        &[
            "denoise", "--image", &mr, "--sigma", "25", "--window", "300:100",
        ],
        &["LO below HI"],
    );
    assert!(!d.join("x.p0").exists());
}

/// A noise level past what the model's fixed point holds for (its owner's sweep, in
/// model.pub) is refused before anything is shared, saying what would take it; inside, it
/// is shared. Before, the shipped MLP took a CT at 5 HU and came back worse than its input.
#[test]
fn a_level_past_the_models_fixed_point_is_refused_up_front() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let clean = pydicom_file("CT_small.dcm");
    let series = d.join("ct-5");
    script(
        "noisy-series.py",
        &[&s(&clean), &s(&series), "--slices", "1", "--sigma", "5"],
    );
    let slice = s(&series.join("slice001.dcm"));
    let model = s(&d.join("model.pub"));
    for sigma in ["5HU", "10HU"] {
        let o = run(&[
            "share-image",
            "--image",
            &slice,
            "--sigma",
            sigma,
            "--model",
            &model,
            "--out",
            &s(&d.join("img")),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{sigma}: shared");
        for n in [
            "fixed point holds for",
            "default-model",
            "--window",
            "FFDNet",
        ] {
            assert!(err.contains(n), "{sigma}: error lacks {n:?}: {err}");
        }
        assert!(!d.join("img.p0").exists(), "nothing shared");
    }
    ok(&[
        "share-image",
        "--image",
        &slice,
        "--sigma",
        "20HU",
        "--model",
        &model,
        "--out",
        &s(&d.join("img")),
    ]);
}

/// `--sigma auto` on an MR (auto window): the level and scaling come from the pixels, so the
/// job's public header holds stand-ins (the model's sigma*, no scaling) and the servers never
/// see them; the receiver decodes with share-image's `<out>.rx.json`, and is refused without
/// it. The result equals the fixed-point oracle at the estimated level.
#[test]
fn a_pixel_derived_noise_level_never_reaches_a_server() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let p = |n: &str| s(&d.join(n));
    let clean = pydicom_file("MR_small.dcm");
    let series = d.join("mr");
    script(
        "noisy-series.py",
        &[&s(&clean), &s(&series), "--slices", "1", "--sigma", "60"],
    );
    let slice = s(&series.join("slice001.dcm"));
    let j = ok(&[
        "share-image",
        "--image",
        &slice,
        "--sigma",
        "auto",
        "--model",
        &p("model.pub"),
        "--out",
        &p("image"),
    ]);
    let level = j["sigma"].as_f64().unwrap();
    assert!(
        (j["sigma_in_units"].as_f64().unwrap() - 60.0).abs() < 9.0,
        "{j}"
    );
    // What the dealer and the servers read of the job: stand-ins, not the estimate.
    for f in ["image.pub", "image.p0", "image.p1"] {
        let h = ok(&["inspect", &p(f)]);
        let job: serde_json::Value =
            serde_json::from_str(h["info"]["job"].as_str().unwrap_or_else(|| panic!("{h}")))
                .unwrap();
        assert_eq!(job["sigma"], 25.0, "{f}: {job}");
        assert_eq!(job["pre"]["noise_scale"], 1.0, "{f}: {job}");
        assert_eq!(job["private_pre"], true, "{f}: {job}");
        let text = h.to_string();
        assert!(
            !text.contains(&level.to_string()),
            "{f} holds the level: {text}"
        );
    }
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("image.rx.json")).unwrap()).unwrap();
    assert_eq!(facts["sigma"], level);
    ok(&[
        "gen-triplets",
        "--model",
        &p("model.pub"),
        "--image",
        &p("image.pub"),
        "--out",
        &p("triplets"),
    ]);
    let spawn = |q: u8, addr: &[String]| {
        let (me, peer) = (format!("s{q}"), format!("s{}", 1 - q));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &q.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &p(&format!("model.p{q}"))])
            .args(["--image", &p(&format!("image.p{q}"))])
            .args(["--triplets", &p(&format!("triplets.p{q}"))])
            .args(["--key", &p(&format!("keys/{me}.key"))])
            .args(["--cert", &p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "60"])
            .args(["--state-dir", &p(&format!("state{q}"))])
            .args(["--out", &p(&format!("out.p{q}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for o in start_pair(d, spawn).map(|c| wait_limit(c, Duration::from_secs(120))) {
        assert!(
            o.status.success(),
            "serve: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let rec = |extra: &[&str]| {
        let mut args = vec![
            "reconstruct",
            "--insecure-unsigned",
            "--share0",
            &p("out.p0"),
            "--share1",
            &p("out.p1"),
            "--like",
            &slice,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|x| x.to_string()));
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = p("den.dcm");
    let o = rec(&["--out", &out]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--job-facts"));
    assert!(!d.join("den.dcm").exists());
    let o = rec(&["--out", &out, "--job-facts", &p("image.rx.json")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(&[
        "denoise",
        "--image",
        &slice,
        "--sigma",
        "auto",
        "--arith",
        "fixed",
        "--out",
        &p("oracle.dcm"),
    ]);
    assert_eq!(
        ppdenoise::image::load(&out).unwrap(),
        ppdenoise::image::load(p("oracle.dcm")).unwrap(),
        "the secure result differs from the oracle"
    );
    let r = rmse(&clean, &[series.join("slice001.dcm"), d.join("den.dcm")]);
    assert!(r[1] < 0.97 * r[0], "RMSE {:.2} -> {:.2}", r[0], r[1]);
}

/// A model that declares the window it was trained on (here the shipped MLP declared for a
/// CT's soft tissue, -160:240 HU, a `.npz` setting) has images mapped with it: share-model
/// carries it into model.pub, share-image and denoise use it when --window says nothing, a
/// conflicting --window is refused by name, an image in other units is refused, and
/// --override-model-window maps it anyway. Through the secure path, a slice shared on the
/// declared window equals the oracle and comes back better. The other readers' settings
/// (safetensors, ONNX metadata) are unit-tested beside them.
#[test]
fn a_models_declared_window_is_used_and_a_conflicting_one_refused() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let p = |n: &str| s(&d.join(n));
    let mut m =
        ppdenoise::model::mlp::Model::load(&root().join("fixtures/default-model.npz")).unwrap();
    m.window = Some("-160:240 HU".parse().unwrap());
    m.save(&d.join("ct-soft.npz")).unwrap();
    // The declared model replaces the default one in setup()'s `model` files.
    let j = ok(&[
        "share-model",
        "--model",
        &p("ct-soft.npz"),
        "--out",
        &p("model"),
    ]);
    assert_eq!(j["window"], "-160:240 HU", "{j}");
    let h = ok(&["inspect", &p("model.pub")]);
    assert!(h.to_string().contains("-160:240 HU"), "{h}");
    assert_eq!(ok(&["inspect", &p("ct-soft.npz")])["window"], "-160:240 HU");

    let clean = pydicom_file("CT_small.dcm");
    let series = d.join("ct-10");
    script(
        "noisy-series.py",
        &[&s(&clean), &s(&series), "--slices", "1", "--sigma", "10"],
    );
    let slice = s(&series.join("slice001.dcm"));
    let share = |extra: &[&str]| {
        let mut args = vec![
            "share-image",
            "--image",
            &slice,
            "--sigma",
            "10HU",
            "--model",
            d.join("model.pub").to_str().unwrap(),
            "--out",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.push(p("img"));
        args.extend(extra.iter().map(|x| x.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };
    // No --window: the model's. The receiver's facts say which window was used.
    let o = share(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("img.rx.json")).unwrap()).unwrap();
    assert!(
        facts.to_string().contains("-160.0") && facts.to_string().contains("240.0"),
        "{facts}"
    );
    // Another window is refused by name, before anything is shared.
    std::fs::remove_file(d.join("img.p0")).unwrap();
    for w in ["-1024:3071", "auto", "full"] {
        let o = share(&["--window", w]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--window {w} shared");
        for n in ["ct-soft", "-160:240 HU", "--override-model-window"] {
            assert!(err.contains(n), "--window {w}: error lacks {n:?}: {err}");
        }
        assert!(!d.join("img.p0").exists());
    }
    // The same window given again is the model's; an override takes another.
    assert!(share(&["--window", "-160:240"]).status.success());
    let o = share(&["--window", "-300:300", "--override-model-window"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An image in other units is not one the model was trained for.
    let mr = s(&pydicom_file("MR_small.dcm"));
    for image in [mr.as_str(), "builtin:phantom:64"] {
        let o = run(&[
            "share-image",
            "--image",
            image,
            "--sigma",
            "20",
            "--model",
            &p("model.pub"),
            "--out",
            &p("other"),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{image} shared");
        assert!(
            err.contains("-160:240 HU") && err.contains("not a model for"),
            "{image}: {err}"
        );
    }
    // denoise reads the window from the model file: the same pixels as the plain model on
    // that window given by hand.
    let den = |model: &str, extra: &[&str], out: &str| {
        let mut args = vec![
            "denoise", "--image", &slice, "--arith", "fixed", "--sigma", "10HU", "--model", model,
            "--out",
        ];
        let out = p(out);
        args.push(&out);
        args.extend_from_slice(extra);
        ok(&args);
        ppdenoise::image::load(&out).unwrap()
    };
    let declared = den(&p("ct-soft.npz"), &[], "declared.dcm");
    let by_hand = den(
        &s(&root().join("fixtures/default-model.npz")),
        &["--window", "-160:240"],
        "by-hand.dcm",
    );
    assert_eq!(declared, by_hand);
    let o = run(&[
        "denoise",
        "--image",
        &slice,
        "--sigma",
        "10HU",
        "--model",
        &p("ct-soft.npz"),
        "--window",
        "auto",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--override-model-window"));
    // The secure path on the declared window (the oracle: the plain model on it by hand).
    let r = secure_series(d, &clean, &series, "10HU", "-160:240", &[]);
    let (noisy, denoised) = r[0];
    eprintln!("CT_small, 10 HU, declared soft-tissue window: {noisy:.2} HU -> {denoised:.2} HU");
    assert!(denoised < 0.97 * noisy, "{noisy:.2} -> {denoised:.2}");
}

/// Issue 71's CT: `--sigma 20` (no unit) was read on the model's 0..255 scale, 321 HU in the
/// default window, against 20 HU of noise; the secure result (RMSE 53 HU against 20 noisy)
/// was reconstructed and filed as "sigma 321.176 HU". Now the bare number is refused with
/// the fix; the 321 HU stated in units is refused beside the slice's own estimate without
/// --force; and with --force, the secure result is refused by the receiver, who holds the
/// noisy slice, as over-smoothed before anything is written.
#[test]
fn a_unitless_or_implausible_ct_sigma_is_refused_and_an_over_smoothed_result_caught() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let clean = pydicom_file("CT_small.dcm");
    let series = d.join("ct-20");
    script(
        "noisy-series.py",
        &[&s(&clean), &s(&series), "--slices", "1", "--sigma", "20"],
    );
    let model = s(&d.join("model.pub"));
    let share = |sigma: &str, extra: &[&str]| {
        let study = d.join(format!("study-{}", sigma.replace('.', "_")));
        let (input, output) = (s(&series), s(&study));
        let mut args = vec!["share-study", "--in", &input, "--out", &output];
        args.extend(["--sigma", sigma, "--model", &model, "--quiet"]);
        args.extend_from_slice(extra);
        (run(&args), study)
    };
    let refused = |o: &Output, needles: &[&str]| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "should be refused");
        for n in needles {
            assert!(err.contains(n), "error lacks {n:?}: {err}");
        }
    };
    let (o, study) = share("20", &[]);
    refused(
        &o,
        &["--sigma 20:", "321.2 HU", "--sigma 20HU", "--sigma auto"],
    );
    assert!(!study.exists(), "a refused study wrote {study:?}");
    let (o, study) = share("321.176HU", &[]);
    refused(&o, &["times the noise the image holds", "--force", " HU"]);
    assert!(!study.exists(), "a refused study wrote {study:?}");
    // In its own units and plausible, the same slice is taken.
    let (o, _) = share("20HU", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (o, study) = share("321.176HU", &["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(&["gen-triplets", "--study", &s(&study), "--model", &model]);
    let pair = start_pair(d, |p, addr| serve(d, &study, p, addr));
    for o in pair.map(|c| wait_limit(c, Duration::from_secs(300))) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = d.join("denoised");
    let rx = |extra: &[&str]| {
        let (input, output) = (s(&study), s(&out));
        let mut args = vec!["reconstruct", "--insecure-unsigned", "--study", &input];
        args.extend(["--out", &output]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = rx(&[]);
    refused(&o, &["over-smoothed", "--accept-suspect"]);
    assert!(
        !out.exists() || slices(&out).is_empty(),
        "a refused result was written"
    );
    // Written when asked, it is indeed worse than the noisy slice it came from.
    let o = rx(&["--accept-suspect"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = rmse(&clean, &slices(&series));
    let after = rmse(&clean, &slices(&out));
    eprintln!("CT_small at 20 HU told 321 HU: RMSE {before:?} HU -> {after:?} HU");
    assert!(after[0] > before[0], "{before:?} -> {after:?}");
}

/// Issue 74's "done when", for a CT study: pydicom's CT_small with Gaussian noise of 20 HU,
/// denoised by FFDNet (the authors' weights, `make out/ffdnet/clip.npz`, a chain CNN run as a
/// graph) with no dealer: `share-study`, each server's `gen-triplets --study --party` (the
/// two deal every slice between themselves over their pinned link), `serve --study`,
/// `reconstruct --study`. Every slice equals the plaintext fixed-point oracle and comes back
/// closer to the clean slice, in HU, than it went in.
#[test]
fn a_ct_series_comes_back_better_with_no_dealer() {
    if !common::have_dicom_testdata() {
        return;
    }
    let weights = root().join("../shared/models/ffdnet/FFDNet_Clip_gray.mat");
    assert!(
        weights.exists(),
        "{}: absent (the authors' weights, beside the repository in CI)",
        weights.display()
    );
    let ffdnet = s(&common::make_target("out/ffdnet/clip.npz"));
    let tmp = setup_with(&ffdnet);
    let d = tmp.path();
    let clean = pydicom_file("CT_small.dcm");
    let series = d.join("ct-20");
    let args = [&s(&clean), &s(&series), "--slices", "1", "--sigma", "20"];
    script("noisy-series.py", &args);
    let dealing = Dealing::Servers { model: &ffdnet };
    let r = secure_series_dealt(d, (&clean, &series), ("20HU", "default"), &[], dealing);
    for (i, (noisy, denoised)) in r.iter().enumerate() {
        eprintln!(
            "CT_small, 20 HU, FFDNet, no dealer, slice {i}: RMSE {noisy:.2} HU -> {denoised:.2} HU"
        );
        assert!(
            *denoised < 0.97 * noisy,
            "slice {i}: denoised RMSE {denoised:.2} HU, noisy {noisy:.2}"
        );
    }
}
