//! The secure pipeline through the real binary: keygen, share-model, share-image,
//! gen-triplets, two `serve` processes on localhost over the authenticated TLS link, and
//! reconstruct. (a) The output shares add up to the plaintext fixed-point oracle bit for bit
//! (a tiny random model, and the shipped default model). (b) Every refusal of the issue:
//! non-zero exit, a clear message, and no output file.

use ppdenoise::ring::Party;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::{no_link_addr, s0_listen_args, start_pair, start_s0};
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::formats::bodies::{load, ImageShare, ModelShare, OutputShare};
use ppdenoise::formats::container::{Header, Kind};
use ppdenoise::model::geometry::Geometry;
use ppdenoise::model::mlp::{random_model, Activation, Model, ModelMeta};
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::Plan;
use ppdenoise::ring::share::Stream;

/// Every test runs once per engine.
const ENGINES: [EngineKind; 2] = [EngineKind::Gc, EngineKind::Gmw];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs ppdenoise with `--json`; returns the output.
fn ppd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .arg("--json")
        .args(args)
        .output()
        .expect("run ppdenoise")
}

/// Runs a step that must succeed; returns its JSON summary.
fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> serde_json::Value {
    let o = ppd(args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "ppdenoise {args:?} failed: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one line of JSON");
    assert_eq!(v["ok"], true);
    v
}

/// Asserts a refusal: non-zero exit, `"ok": false` JSON, and an error text containing all of
/// `needles` (case-insensitive). Returns the error text.
fn refused(o: &Output, needles: &[&str]) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "expected a refusal, got success: {out} {err}"
    );
    assert_ne!(o.status.code(), Some(0));
    let text = format!("{out}\n{err}");
    let lower = text.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "error does not mention {n:?}: {text}"
        );
    }
    text
}

/// No file under `dir` whose name starts with `prefix`, and no temporary file left behind.
fn assert_nothing_written(dir: &Path, out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".tmp"),
            "temporary file {name} left in {}",
            dir.display()
        );
    }
}

/// One working directory with identities, a model share, an image share and triplets.
struct Job {
    engine: EngineKind,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: Model,
    model_npz: PathBuf,
}

impl Job {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn p(&self, name: &str) -> String {
        s(&self.path(name))
    }

    /// Identities s0, s1, a model (random with `widths`, or the shipped one), its shares
    /// `model.p*`, an image share `image.p*` of `image` and triplets `triplets.p*`.
    fn new(
        engine: EngineKind,
        widths: Option<&[usize]>,
        image: &str,
        stride: usize,
        batch: usize,
    ) -> Job {
        Job::new_with(engine, widths, image, stride, batch, &[])
    }

    /// [`Job::new`] with extra `share-model` flags (fixed-point settings); the image is then
    /// shared as the model's public header says (`share-image --model model.pub`).
    fn new_with(
        engine: EngineKind,
        widths: Option<&[usize]>,
        image: &str,
        stride: usize,
        batch: usize,
        model_flags: &[&str],
    ) -> Job {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (model, model_npz) = match widths {
            Some(w) => {
                let m = random_model(
                    w,
                    1234,
                    ModelMeta {
                        sigma: 25.0,
                        mean_shift: true,
                        residual: true,
                        activation: Activation::TanhStar,
                        aggregation_sigma: 4.0,
                    },
                );
                let p = dir.join("model.npz");
                m.save(&p).unwrap();
                (m, p)
            }
            None => {
                let p = PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/fixtures/default-model.npz"
                ));
                (Model::load(&p).unwrap(), p)
            }
        };
        let job = Job {
            _tmp: tmp,
            engine,
            dir,
            model,
            model_npz,
        };
        for n in ["s0", "s1"] {
            job.keygen(n);
        }
        let mut share_model = vec![
            "share-model".to_string(),
            "--model".into(),
            s(&job.model_npz),
            "--out".into(),
            job.p("model"),
        ];
        share_model.extend(model_flags.iter().map(|f| f.to_string()));
        ok(&share_model);
        ok(&[
            "add-noise",
            "--image",
            image,
            "--sigma",
            "25",
            "--seed",
            "3",
            "--out",
            &job.p("noisy.png"),
        ]);
        if model_flags.is_empty() {
            job.share_image("image", stride);
        } else {
            let pubf = job.p("model.pub");
            job.share_image_with("image", stride, &["--model", &pubf]);
        }
        job.gen_triplets("model", "image", "triplets", batch);
        job
    }

    /// The small job most refusal tests use: a random 49-8-9 model on a 24x24 phantom.
    fn tiny(engine: EngineKind) -> Job {
        Job::new(engine, Some(&[49, 8, 9]), "builtin:phantom:24", 3, 64)
    }

    fn keygen(&self, name: &str) {
        ok(&["keygen", "--name", name, "--out-dir", &self.p("keys")]);
    }

    fn share_image(&self, out: &str, stride: usize) -> serde_json::Value {
        self.share_image_with(out, stride, &[])
    }

    fn share_image_with(&self, out: &str, stride: usize, flags: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "share-image".to_string(),
            "--image".into(),
            self.p("noisy.png"),
            "--sigma".into(),
            "25".into(),
            "--stride".into(),
            stride.to_string(),
            "--out".into(),
            self.p(out),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        ok(&args)
    }

    fn gen_triplets(&self, model: &str, image: &str, out: &str, batch: usize) -> serde_json::Value {
        ok(&self.gen_triplets_args(model, image, out, batch, None))
    }

    /// `gen-triplets` arguments; `mask`: the prefix of a `gen-model-mask` output, whose
    /// dealer record the triples are then made against.
    fn gen_triplets_args(
        &self,
        model: &str,
        image: &str,
        out: &str,
        batch: usize,
        mask: Option<&str>,
    ) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "gen-triplets".into(),
            "--model".into(),
            self.p(&format!("{model}.pub")),
            "--image".into(),
            self.p(&format!("{image}.pub")),
            "--batch".into(),
            batch.to_string(),
            "--engine".into(),
            self.engine.name().into(),
            "--out".into(),
            self.p(out),
        ];
        if let Some(m) = mask {
            v.extend(["--model-mask".into(), self.p(&format!("{m}.dealer"))]);
        }
        v
    }

    /// Starts `open-weights --party p` on `model`.pN with `mask`.pN, writing `out`.pN.
    /// `addr`: its `--addr` (and S0's `--port-file`), from [`start_pair`] or [`no_link_addr`].
    fn spawn_open(&self, p: u8, model: &str, mask: &str, out: &str, addr: &[String]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "open-weights", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&format!("{model}.p{p}"))])
            .args(["--mask", &self.p(&format!("{mask}.p{p}"))])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "30"])
            .args(["--state-dir", &self.p("state")])
            .args(["--out", &self.p(&format!("{out}.p{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start open-weights")
    }

    /// Runs `open-weights` on both servers; `mask[p]` is party p's mask prefix.
    fn open_both(&self, model: &str, mask: [&str; 2], out: &str) -> [Output; 2] {
        start_pair(&self.dir, |p, addr| {
            self.spawn_open(p, model, mask[p as usize], out, addr)
        })
        .map(|c| wait_limit(c, LIMIT))
    }

    /// Starts `serve --party p`; `addr`: its `--addr` (and S0's `--port-file`), from
    /// [`start_pair`] or [`no_link_addr`].
    fn spawn(&self, p: u8, f: &ServeFiles, addr: &[String]) -> Child {
        let (me, peer) = (&f.me[p as usize], &f.peer[p as usize]);
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&f.model[p as usize])])
            .args(["--image", &self.p(&f.image[p as usize])])
            .args(["--triplets", &self.p(&f.triplets[p as usize])])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", &f.timeout.to_string()])
            .args(["--state-dir", &self.p(&f.state)])
            .args([
                "--engine",
                f.engine[p as usize].unwrap_or(self.engine).name(),
            ])
            .args(["--out", &self.p(&f.out[p as usize])])
            .args(
                f.weights
                    .as_ref()
                    .map(|w| vec!["--weights".to_string(), self.p(&w[p as usize])])
                    .unwrap_or_default(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }

    /// Runs both servers to completion (killed after `limit`).
    fn serve_both(&self, f: &ServeFiles, limit: Duration) -> [Output; 2] {
        start_pair(&self.dir, |p, addr| self.spawn(p, f, addr)).map(|c| wait_limit(c, limit))
    }
}

/// The files and options of one pair of `serve` runs (paths relative to the job dir).
#[derive(Clone)]
struct ServeFiles {
    model: [String; 2],
    image: [String; 2],
    triplets: [String; 2],
    out: [String; 2],
    me: [String; 2],
    peer: [String; 2],
    state: String,
    timeout: u64,
    /// `--engine` per party when it differs from the job's.
    engine: [Option<EngineKind>; 2],
    /// `--weights` (opened once for the model) per party, if any.
    weights: Option<[String; 2]>,
}

impl ServeFiles {
    fn standard() -> ServeFiles {
        let pair = |b: &str| [format!("{b}.p0"), format!("{b}.p1")];
        ServeFiles {
            model: pair("model"),
            image: pair("image"),
            triplets: pair("triplets"),
            out: pair("out"),
            me: ["s0".into(), "s1".into()],
            peer: ["s1".into(), "s0".into()],
            state: "state".into(),
            timeout: 30,
            engine: [None, None],
            weights: None,
        }
    }
}

fn wait_limit(mut c: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            return c.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!(
                "process did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_success(o: &Output, who: &str) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{who} failed: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.trim()).expect("serve prints one line of JSON")
}

/// Output canvas sums from out.p0 + out.p1, and the oracle's canvas on the gateway's encoded
/// image (reconstructed from image.p0 + the expansion of image.p1's seed: the test plays all
/// parties).
fn secure_and_oracle(
    job: &Job,
    out: [&str; 2],
    image: [&str; 2],
) -> (Vec<u64>, Vec<u64>, Geometry) {
    let (h0, o0): (Header, OutputShare) =
        load(&job.path(out[0]), Kind::OutputShare, Some(Party::S0)).unwrap();
    let (h1, o1): (Header, OutputShare) =
        load(&job.path(out[1]), Kind::OutputShare, Some(Party::S1)).unwrap();
    assert_eq!(h0.job_id, h1.job_id);
    assert_eq!(o0.geometry, o1.geometry);
    let secure: Vec<u64> = o0
        .canvas
        .iter()
        .zip(&o1.canvas)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let (ih0, i0): (Header, ImageShare) =
        load(&job.path(image[0]), Kind::ImageShare, Some(Party::S0)).unwrap();
    let (ih1, i1): (Header, ImageShare) =
        load(&job.path(image[1]), Kind::ImageShare, Some(Party::S1)).unwrap();
    assert_eq!(ih0.job_id, ih1.job_id);
    assert_eq!(ih0.job_id, h0.job_id, "output belongs to this image's job");
    let n = i0.job.height * i0.job.width;
    let e0 = i0.data.materialise(Stream::ImageShare, n).unwrap();
    let e1 = i1.data.materialise(Stream::ImageShare, n).unwrap();
    let enc: Vec<u64> = e0
        .iter()
        .zip(&e1)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    // The gateway encoded exactly the noisy PNG.
    let noisy = ppdenoise::image::load(job.path("noisy.png")).unwrap();
    assert_eq!(
        enc,
        oracle::encode_image(&noisy.pixels, &i0.job.pre, i0.job.scale),
        "image shares do not reconstruct the encoded noisy image"
    );
    // The fixed-point parameters the owner chose are public, in the model share's plan.
    let (_, ms): (Header, ModelShare) =
        load(&job.path("model.p0"), Kind::ModelShare, Some(Party::S0)).unwrap();
    assert_eq!(ms.plan.params.s, i0.job.scale);
    let plan = Plan::from_model(&job.model, ms.plan.params).unwrap();
    assert_eq!(plan.acts, ms.plan.acts);
    let geo = Geometry::new(i0.job.height, i0.job.width, plan.patch, i0.job.stride);
    assert_eq!(geo, o0.geometry);
    assert_eq!(o0.scale, plan.out_scale);
    assert_eq!(o1.scale, plan.out_scale);
    let orc = oracle::run(&plan, &geo, &enc, 64);
    (secure, orc.canvas, geo)
}

fn assert_canvas_equal(secure: &[u64], oracle: &[u64], what: &str) {
    assert_eq!(secure.len(), oracle.len());
    let diff = secure.iter().zip(oracle).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff,
        0,
        "{what}: {diff} of {} canvas values differ from the oracle",
        secure.len()
    );
    assert!(oracle.iter().any(|&v| v != 0));
}

const LIMIT: Duration = Duration::from_secs(120);
const SMALL: &[usize] = &[81, 16, 16, 25];

// ------------------------------------------------------------------------------------------
// (a) bit-exact end to end

#[test]
fn pipeline_random_model_bit_exact_with_oracle() {
    for engine in ENGINES {
        pipeline_random_model_bit_exact_with_oracle_with(engine);
    }
}

fn pipeline_random_model_bit_exact_with_oracle_with(engine: EngineKind) {
    let job = Job::new(engine, Some(SMALL), "builtin:phantom:24", 2, 50);
    let f = ServeFiles::standard();
    let [o0, o1] = job.serve_both(&f, LIMIT);
    let j0 = assert_success(&o0, "S0");
    let j1 = assert_success(&o1, "S1");
    // Traffic is reported (issue 3 item 6).
    for j in [&j0, &j1] {
        assert!(j["report"]["link"]["bytes_sent"].as_u64().unwrap() > 0);
        assert!(j["download_bytes"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        j0["report"]["link"]["bytes_sent"], j1["report"]["link"]["bytes_received"],
        "S0 sent what S1 received"
    );
    let (secure, orc, geo) =
        secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "random model");

    // The receiver's PNG is the decoded canvas.
    let rec = ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &job.p("out.p0"),
        "--share1",
        &job.p("out.p1"),
        "--out",
        &job.p("denoised.png"),
        "--clean",
        "builtin:phantom:24",
    ]);
    assert!(rec["psnr"].as_f64().unwrap().is_finite());
    let png = ppdenoise::image::load(job.path("denoised.png")).unwrap();
    let pre = ppdenoise::model::preprocess::Preprocess::new(25.0, 25.0, false);
    let (_, o0): (Header, OutputShare) =
        load(&job.path("out.p0"), Kind::OutputShare, Some(Party::S0)).unwrap();
    let dec = oracle::decode_canvas(&orc, &geo, &pre, o0.scale);
    let q = ppdenoise::image::quantize_u8(&dec);
    assert_eq!(
        png.pixels, q,
        "reconstructed PNG differs from the oracle's decoded image"
    );
}

#[test]
fn pipeline_shipped_model_bit_exact_with_oracle() {
    for engine in ENGINES {
        pipeline_shipped_model_bit_exact_with_oracle_with(engine);
    }
}

fn pipeline_shipped_model_bit_exact_with_oracle_with(engine: EngineKind) {
    let job = Job::new(engine, None, "builtin:phantom:32", 3, 128);
    let f = ServeFiles::standard();
    let [o0, o1] = job.serve_both(&f, LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "shipped model");
}

/// Issue 14 item 6: bit-exact at fixed-point settings other than the defaults the other tests
/// use: s = 18, q = 12, cs = 8 and owner-chosen tanh* constants (d1 = 0, so tanh*(0) = 0, and other
/// breakpoints). The settings must reach the model share as given, and must matter: the
/// oracle with the paper's constants gives another canvas.
#[test]
fn pipeline_non_default_fixed_point_bit_exact_with_oracle() {
    for engine in ENGINES {
        pipeline_non_default_fixed_point_bit_exact_with_oracle_with(engine);
    }
}

fn pipeline_non_default_fixed_point_bit_exact_with_oracle_with(engine: EngineKind) {
    use ppdenoise::model::tanhstar::TanhStar;
    use ppdenoise::ring::plan::FixedParams;
    let tanh = TanhStar {
        n1: -0.25,
        c1: 0.98,
        d1: 0.0,
        n2: -0.09,
        c2: 0.45,
        d2: 0.43,
        a: 1.4,
        b: 2.4,
    };
    let consts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(consts.path(), serde_json::to_string(&tanh).unwrap()).unwrap();
    let cpath = s(consts.path());
    // cs = 8: with the default cs = 10 the output scale (s + 2q + cs = 52) leaves no room for
    // the canvas sums, which share-model refuses.
    let flags = [
        "--scale",
        "18",
        "--act-bits",
        "12",
        "--coef-bits",
        "8",
        "--tanh-constants",
        &cpath,
    ];
    let job = Job::new_with(engine, Some(SMALL), "builtin:phantom:24", 2, 50, &flags);
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (_, ms): (Header, ModelShare) =
        load(&job.path("model.p0"), Kind::ModelShare, Some(Party::S0)).unwrap();
    let want = FixedParams {
        s: 18,
        q: 12,
        cs: 8,
        tanh,
        ..FixedParams::default()
    };
    assert_eq!(ms.plan.params, want, "share-model did not take the flags");
    let (secure, orc, geo) =
        secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "s = 18, q = 12, cs = 8, custom tanh*");
    let paper = Plan::from_model(
        &job.model,
        FixedParams {
            tanh: TanhStar::PAPER,
            ..want
        },
    )
    .unwrap();
    let (_, i0): (Header, ImageShare) =
        load(&job.path("image.p0"), Kind::ImageShare, Some(Party::S0)).unwrap();
    assert_eq!(
        i0.job.scale, 18,
        "the image was not encoded at the model's scale"
    );
    let noisy = ppdenoise::image::load(job.path("noisy.png")).unwrap();
    let enc = oracle::encode_image(&noisy.pixels, &i0.job.pre, 18);
    assert_ne!(
        oracle::run(&paper, &geo, &enc, 64).canvas,
        secure,
        "the tanh* constants made no difference: the test would not see them ignored"
    );
}

// ------------------------------------------------------------------------------------------
// (b) refusals. Those detected from the files alone stop before any network activity.

/// `open-weights --party p` alone (its refusals happen before the link comes up).
fn open_one(job: &Job, p: u8, model: &str, mask: &str, out: &str) -> Output {
    wait_limit(job.spawn_open(p, model, mask, out, &no_link_addr()), LIMIT)
}

fn serve_one(job: &Job, p: u8, f: &ServeFiles) -> Output {
    let c = job.spawn(p, f, &no_link_addr());
    wait_limit(c, LIMIT)
}

#[test]
fn refuses_files_of_the_other_party() {
    for engine in ENGINES {
        refuses_files_of_the_other_party_with(engine);
    }
}

fn refuses_files_of_the_other_party_with(engine: EngineKind) {
    let job = Job::tiny(engine);
    for (what, needle_file) in [
        ("model", "model.p1"),
        ("image", "image.p1"),
        ("triplets", "triplets.p1"),
    ] {
        let mut f = ServeFiles::standard();
        match what {
            "model" => f.model[0] = "model.p1".into(),
            "image" => f.image[0] = "image.p1".into(),
            _ => f.triplets[0] = "triplets.p1".into(),
        }
        let o = serve_one(&job, 0, &f);
        refused(&o, &[needle_file, "party 1", "party 0"]);
        assert_nothing_written(&job.dir, &job.path("out.p0"));
    }
    // And S1 given S0's files.
    let mut f = ServeFiles::standard();
    f.image[1] = "image.p0".into();
    let o = serve_one(&job, 1, &f);
    refused(&o, &["image.p0", "party 0"]);
    assert_nothing_written(&job.dir, &job.path("out.p1"));
    // The refusals consumed nothing and left no claim: the same triplets then run.
    assert_no_state_records(&job);
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0 after the refusals");
    assert_success(&o1, "S1 after the refusals");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "after the refusals");
}

#[test]
fn refuses_another_jobs_image_and_another_models_share() {
    for engine in ENGINES {
        refuses_another_jobs_image_and_another_models_share_with(engine);
    }
}

fn refuses_another_jobs_image_and_another_models_share_with(engine: EngineKind) {
    let job = Job::tiny(engine);
    // Another job: the same noisy image shared again gets a fresh job id.
    job.share_image("image2", 3);
    // Another model share: the same model shared again gets a fresh model id.
    ok(&[
        "share-model",
        "--model",
        &s(&job.model_npz),
        "--out",
        &job.p("model2"),
    ]);
    for p in [0u8, 1] {
        let mut f = ServeFiles::standard();
        f.image[p as usize] = format!("image2.p{p}");
        let o = serve_one(&job, p, &f);
        refused(&o, &[&format!("triplets.p{p}"), "job"]);
        assert_nothing_written(&job.dir, &job.path(&format!("out.p{p}")));

        let mut f = ServeFiles::standard();
        f.model[p as usize] = format!("model2.p{p}");
        let o = serve_one(&job, p, &f);
        refused(&o, &[&format!("triplets.p{p}"), "model"]);
        assert_nothing_written(&job.dir, &job.path(&format!("out.p{p}")));
    }
    // The refusals did not consume the randomness: the proper files still run.
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
}

#[test]
fn mixed_jobs_between_the_servers_are_refused_by_the_session_check() {
    for engine in ENGINES {
        mixed_jobs_between_the_servers_are_refused_by_the_session_check_with(engine);
    }
}

fn mixed_jobs_between_the_servers_are_refused_by_the_session_check_with(engine: EngineKind) {
    // S0 holds job A's files, S1 holds job B's (each consistent on its own): the servers
    // compare job, model and triplet ids before anything is opened and both stop.
    let job = Job::tiny(engine);
    job.share_image("imageB", 3);
    job.gen_triplets("model", "imageB", "tripletsB", 64);
    let mut f = ServeFiles::standard();
    f.image[1] = "imageB.p1".into();
    f.triplets[1] = "tripletsB.p1".into();
    let [o0, o1] = job.serve_both(&f, LIMIT);
    refused(&o0, &["different job"]);
    refused(&o1, &["different job"]);
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));
}

#[test]
fn refuses_reused_triplets_and_accepts_fresh_ones() {
    for engine in ENGINES {
        refuses_reused_triplets_and_accepts_fresh_ones_with(engine);
    }
}

fn refuses_reused_triplets_and_accepts_fresh_ones_with(engine: EngineKind) {
    let job = Job::tiny(engine);
    let f = ServeFiles::standard();
    let [o0, o1] = job.serve_both(&f, LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let first = [
        std::fs::read(job.path("out.p0")).unwrap(),
        std::fs::read(job.path("out.p1")).unwrap(),
    ];
    // Rerun with the same triplets and state dir, to new outputs: both refuse.
    let mut again = f.clone();
    again.out = ["again.p0".into(), "again.p1".into()];
    let [r0, r1] = job.serve_both(&again, LIMIT);
    for (p, o) in [(0, &r0), (1, &r1)] {
        refused(o, &[&format!("triplets.p{p}"), "already consumed"]);
        assert_nothing_written(&job.dir, &job.path(&format!("again.p{p}")));
    }
    // The same, writing over the first outputs: they are left untouched.
    let [r0, r1] = job.serve_both(&f, LIMIT);
    refused(&r0, &["already consumed"]);
    refused(&r1, &["already consumed"]);
    assert_eq!(std::fs::read(job.path("out.p0")).unwrap(), first[0]);
    assert_eq!(std::fs::read(job.path("out.p1")).unwrap(), first[1]);
    // Fresh triplets from the dealer: accepted, and the result is again the oracle's.
    job.gen_triplets("model", "image", "fresh", 50);
    let mut fresh = f.clone();
    fresh.triplets = ["fresh.p0".into(), "fresh.p1".into()];
    fresh.out = ["fresh-out.p0".into(), "fresh-out.p1".into()];
    let [o0, o1] = job.serve_both(&fresh, LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(
        &job,
        ["fresh-out.p0", "fresh-out.p1"],
        ["image.p0", "image.p1"],
    );
    assert_canvas_equal(&secure, &orc, "fresh triplets");

    // Two runs of one job: the receiver refuses to add shares across runs (the sum would be
    // a wrong image), accepts the pair in either order, and refuses one server's share twice.
    let rec = |a: &str, b: &str, out: &str| {
        ppd(&[
            "reconstruct",
            "--insecure-unsigned",
            "--share0",
            &job.p(a),
            "--share1",
            &job.p(b),
            "--out",
            &job.p(out),
        ])
    };
    for (a, b) in [("out.p0", "fresh-out.p1"), ("fresh-out.p0", "out.p1")] {
        refused(&rec(a, b, "mixed.png"), &["different runs", a, b]);
        assert_nothing_written(&job.dir, &job.path("mixed.png"));
    }
    refused(&rec("out.p0", "fresh-out.p0", "same.png"), &["both S0's"]);
    assert_nothing_written(&job.dir, &job.path("same.png"));
    // A reference image of another size: refused before the result is written (it used to
    // panic in the metrics after writing).
    let o = ppd(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &job.p("fresh-out.p0"),
        "--share1",
        &job.p("fresh-out.p1"),
        "--out",
        &job.p("ref.png"),
        "--clean",
        "builtin:phantom:32",
    ]);
    refused(&o, &["--clean builtin:phantom:32", "32x32", "24x24"]);
    assert_nothing_written(&job.dir, &job.path("ref.png"));
    let o = rec("fresh-out.p0", "fresh-out.p1", "in-order.png");
    assert!(o.status.success());
    let o = rec("fresh-out.p1", "fresh-out.p0", "swapped.png");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(job.path("in-order.png")).unwrap(),
        std::fs::read(job.path("swapped.png")).unwrap(),
        "swapped shares give another image"
    );
}

#[test]
fn refuses_engine_mismatches_without_consuming_randomness() {
    let job = Job::tiny(EngineKind::Gmw);
    // 1. A server told to run the other engine than its triplet file's: refused from the
    //    files alone, before any network activity.
    for p in [0u8, 1] {
        let mut f = ServeFiles::standard();
        f.engine[p as usize] = Some(EngineKind::Gc);
        let o = serve_one(&job, p, &f);
        refused(
            &o,
            &[&format!("triplets.p{p}"), "gmw engine", "--engine gc"],
        );
        assert_nothing_written(&job.dir, &job.path(&format!("out.p{p}")));
    }
    // 2. The two servers run different engines (each consistent with its own triplets):
    //    both stop at the session check, naming the engines, before anything is consumed.
    ok(&[
        "gen-triplets",
        "--model",
        &job.p("model.p1"),
        "--image",
        &job.p("image.p1"),
        "--engine",
        "gc",
        "--out",
        &job.p("gc-triplets"),
    ]);
    let mut f = ServeFiles::standard();
    f.triplets[1] = "gc-triplets.p1".into();
    f.engine[1] = Some(EngineKind::Gc);
    let [o0, o1] = job.serve_both(&f, LIMIT);
    refused(
        &o0,
        &["peer server runs the gc engine", "nothing was consumed"],
    );
    refused(
        &o1,
        &["peer server runs the gmw engine", "nothing was consumed"],
    );
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));
    // Nothing was marked consumed: the matching files still run, bit-exact.
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "after engine refusals");
    // And the GC pair runs too, to the same canvas.
    let mut g = ServeFiles::standard();
    g.triplets = ["gc-triplets.p0".into(), "gc-triplets.p1".into()];
    g.engine = [Some(EngineKind::Gc), Some(EngineKind::Gc)];
    g.out = ["gc-out.p0".into(), "gc-out.p1".into()];
    let [o0, o1] = job.serve_both(&g, LIMIT);
    assert_success(&o0, "S0 (gc)");
    assert_success(&o1, "S1 (gc)");
    let (gc, _, _) = secure_and_oracle(&job, ["gc-out.p0", "gc-out.p1"], ["image.p0", "image.p1"]);
    assert_eq!(gc, secure, "the two engines' canvases differ");
}

fn flip_byte(path: &Path, at_fraction: f64) {
    let mut b = std::fs::read(path).unwrap();
    let i = ((b.len() as f64) * at_fraction) as usize;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn refuses_tampered_files() {
    for engine in ENGINES {
        refuses_tampered_files_with(engine);
    }
}

fn refuses_tampered_files_with(engine: EngineKind) {
    let job = Job::tiny(engine);
    for (p, file) in [
        (0u8, "image.p0"),
        (0, "model.p0"),
        (1, "triplets.p1"),
        (1, "model.p1"),
    ] {
        let orig = std::fs::read(job.path(file)).unwrap();
        flip_byte(&job.path(file), 0.6);
        let o = serve_one(&job, p, &ServeFiles::standard());
        refused(&o, &[file, "integrity check failed"]);
        assert_nothing_written(&job.dir, &job.path(&format!("out.p{p}")));
        std::fs::write(job.path(file), orig).unwrap();
    }
    // Tampered output shares are refused by the receiver, which writes nothing.
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    flip_byte(&job.path("out.p1"), 0.5);
    let o = ppd(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &job.p("out.p0"),
        "--share1",
        &job.p("out.p1"),
        "--out",
        &job.p("denoised.png"),
    ]);
    refused(&o, &["out.p1", "integrity check failed"]);
    assert_nothing_written(&job.dir, &job.path("denoised.png"));
}

#[test]
fn refuses_an_unknown_peer() {
    for engine in ENGINES {
        refuses_an_unknown_peer_with(engine);
    }
}

fn refuses_an_unknown_peer_with(engine: EngineKind) {
    let job = Job::tiny(engine);
    job.keygen("mallory");
    // S1 runs with a third identity's key and certificate; S0 pins s1.crt.
    let mut f = ServeFiles::standard();
    f.me[1] = "mallory".into();
    f.timeout = 5;
    let t = Instant::now();
    let [o0, o1] = job.serve_both(&f, Duration::from_secs(60));
    let secs = t.elapsed().as_secs_f64();
    let e0 = refused(&o0, &["certificate"]);
    let e1 = refused(&o1, &["certificate"]);
    // S0 names the certificate it got and the one it expected; S1 learns it was refused.
    eprintln!("unknown peer: S0: {e0}\nS1: {e1}");
    assert!(e0.contains("expected"), "S0: {e0}");
    // Either the peer's alert arrived ("the peer refused our certificate ...") or the peer
    // closed first ("... it may have refused our certificate ...").
    assert!(e1.contains("refused our certificate"), "S1: {e1}");
    assert!(secs < 30.0, "servers took {secs:.1} s to give up");
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));

    // S0 pinning the wrong certificate for S1 is refused just the same.
    let mut f = ServeFiles::standard();
    f.peer[0] = "mallory".into();
    f.timeout = 5;
    let [o0, o1] = job.serve_both(&f, Duration::from_secs(60));
    refused(&o0, &["certificate"]);
    refused(&o1, &["certificate"]);
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));

    // The failed handshakes consumed nothing and left no claim: the same triplets then run.
    assert_no_state_records(&job);
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    assert_success(&o0, "S0 after refused handshakes");
    assert_success(&o1, "S1 after refused handshakes");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "after refused handshakes");
}

/// No consumed record and no claim in the job's state directory.
fn assert_no_state_records(job: &Job) {
    if let Ok(rd) = std::fs::read_dir(job.path("state")) {
        let names: Vec<String> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("claim-") && !n.starts_with("consumed-")),
            "records left by refused runs: {names:?}"
        );
    }
}

#[test]
fn two_servers_given_the_same_triplets_at_once_exactly_one_runs() {
    // Two S0 processes started together on the same files and state directory: the claim is
    // atomic, so exactly one gets the randomness and runs with S1; the other is refused
    // before it listens, saying the randomness is in use.
    let job = Job::tiny(EngineKind::Gmw);
    let f = ServeFiles::standard();
    let mut g = f.clone();
    g.out = ["other.p0".into(), "other.p1".into()];
    // Each S0 on a port the system picks, written to its own file: S1 goes to the one that
    // listens.
    let pf = [job.path("s0-port-a"), job.path("s0-port-b")];
    let (mut a, mut b) = (
        job.spawn(0, &f, &s0_listen_args(&pf[0])),
        job.spawn(0, &g, &s0_listen_args(&pf[1])),
    );
    let t = Instant::now();
    let port = loop {
        let read = |f: &Path| std::fs::read_to_string(f).ok()?.trim().parse::<u16>().ok();
        if let Some(port) = read(&pf[0]).or_else(|| read(&pf[1])) {
            break port;
        }
        let ended = a.try_wait().unwrap().is_some() && b.try_wait().unwrap().is_some();
        assert!(!ended && t.elapsed() < LIMIT, "neither S0 listened");
        std::thread::sleep(Duration::from_millis(10));
    };
    let c = job.spawn(1, &f, &["--addr".into(), format!("127.0.0.1:{port}")]);
    let (oa, ob, oc) = (
        wait_limit(a, LIMIT),
        wait_limit(b, LIMIT),
        wait_limit(c, LIMIT),
    );
    assert_success(&oc, "S1");
    let (won, lost) = match (oa.status.success(), ob.status.success()) {
        (true, false) => (("out.p0", &oa), &ob),
        (false, true) => (("other.p0", &ob), &oa),
        (x, y) => panic!("exactly one S0 must run (first {x}, second {y})"),
    };
    // Refused on the claim ("in use"), or, had it started only after the winner finished,
    // on the consumed record: either way before it listens.
    let e = refused(lost, &["triplets.p0"]);
    assert!(
        e.contains("in use or was used by another run") || e.contains("already consumed"),
        "{e}"
    );
    assert_success(won.1, "the S0 that claimed the randomness");
    let (secure, orc, _) = secure_and_oracle(&job, [won.0, "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "the one S0 that ran");
}

/// Waits until both servers recorded their randomness as consumed, i.e. the link is up and
/// the protocol has begun.
fn wait_started(job: &Job, state: &str, limit: Duration) {
    let t = Instant::now();
    while !(job.path(state).join("consumed-triplets-p0").exists()
        && job.path(state).join("consumed-triplets-p1").exists())
    {
        assert!(t.elapsed() < limit, "servers did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `child` has written more than `bytes` (its link traffic, through
/// /proc/<pid>/io's `wchar`): the run is then inside the protocol, whatever the machine's
/// speed, where a fixed sleep would guess.
fn wait_written(child: &Child, bytes: u64, limit: Duration) {
    let t = Instant::now();
    let io = format!("/proc/{}/io", child.id());
    loop {
        let written = std::fs::read_to_string(&io)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("wchar: ").map(|v| v.trim().parse::<u64>()))
            })
            .and_then(Result::ok)
            .unwrap_or(0);
        if written > bytes {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "the server wrote {written} bytes in {limit:?}, not {bytes}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Bytes a server has written once its job is well under way: past the handshake, the
/// session tag and the image's opening (tens of KB), far from the end (many MB).
const MID_RUN_BYTES: u64 = 1 << 20;

/// A job long enough (several seconds) to interrupt: stride 1, many patches.
fn long_job(engine: EngineKind) -> Job {
    match engine {
        EngineKind::Gc => Job::new(
            engine,
            Some(&[81, 24, 24, 25]),
            "builtin:phantom:64",
            1,
            256,
        ),
        // The boolean engine is faster: a larger image in small batches (many rounds).
        EngineKind::Gmw => Job::new(engine, Some(&[81, 24, 24, 25]), "builtin:phantom:96", 1, 16),
    }
}

#[test]
fn peer_that_dies_mid_run_stops_the_other_and_a_rerun_succeeds() {
    for engine in ENGINES {
        peer_that_dies_mid_run_stops_the_other_and_a_rerun_succeeds_with(engine);
    }
}

fn peer_that_dies_mid_run_stops_the_other_and_a_rerun_succeeds_with(engine: EngineKind) {
    let job = long_job(engine);
    let mut f = ServeFiles::standard();
    f.timeout = 5;
    let [c0, mut c1] = start_pair(&job.dir, |p, addr| job.spawn(p, &f, addr));
    wait_started(&job, "state", Duration::from_secs(30));
    wait_written(&c1, MID_RUN_BYTES, Duration::from_secs(30));
    c1.kill().unwrap();
    let killed = Instant::now();
    let o1 = c1.wait_with_output().unwrap();
    assert!(!o1.status.success());
    let o0 = wait_limit(c0, Duration::from_secs(60));
    let secs = killed.elapsed().as_secs_f64();
    // The survivor says what happened: the connection was closed (not a timeout, not a
    // protocol error).
    let e0 = refused(&o0, &["the peer closed the connection"]);
    eprintln!("S0 stopped {secs:.2} s after S1 was killed: {e0}");
    assert!(
        secs < 5.0 + 5.0,
        "S0 stopped {secs:.1} s after S1 died: {e0}"
    );
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));

    // The interrupted triplets count as consumed; a rerun with fresh ones succeeds.
    let [r0, _] = job.serve_both(&f, LIMIT);
    refused(&r0, &["already consumed"]);
    job.gen_triplets("model", "image", "fresh", 64);
    let mut fresh = f.clone();
    fresh.triplets = ["fresh.p0".into(), "fresh.p1".into()];
    let t = Instant::now();
    let [o0, o1] = job.serve_both(&fresh, LIMIT);
    eprintln!(
        "full run of the long job: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "rerun after a dead peer");
}

#[test]
fn peer_that_hangs_mid_run_times_out_on_both_sides() {
    for engine in ENGINES {
        peer_that_hangs_mid_run_times_out_on_both_sides_with(engine);
    }
}

fn peer_that_hangs_mid_run_times_out_on_both_sides_with(engine: EngineKind) {
    let job = long_job(engine);
    let mut f = ServeFiles::standard();
    f.timeout = 4;
    let [c0, c1] = start_pair(&job.dir, |p, addr| job.spawn(p, &f, addr));
    wait_started(&job, "state", Duration::from_secs(30));
    wait_written(&c1, MID_RUN_BYTES, Duration::from_secs(30));
    // S1 stops responding without closing its connection.
    signal(&c1, "-STOP");
    let stopped = Instant::now();
    let o0 = wait_limit(c0, Duration::from_secs(60));
    let secs = stopped.elapsed().as_secs_f64();
    // The waiting side reports the timeout itself.
    let e0 = refused(&o0, &["timed out"]);
    eprintln!("S0 stopped {secs:.2} s after S1 hung: {e0}");
    assert!(
        secs < 4.0 + 6.0,
        "S0 waited {secs:.1} s for a hung peer with --timeout 4: {e0}"
    );
    // S1 resumes and finds S0 gone: it stops too.
    signal(&c1, "-CONT");
    let o1 = wait_limit(c1, Duration::from_secs(30));
    let e1 = refused(&o1, &[]);
    eprintln!("S1 after resuming: {e1}");
    // Its own deadline passed while it was stopped, or it finds S0's end closed.
    assert!(
        e1.contains("timed out") || e1.contains("the peer closed the connection"),
        "S1: {e1}"
    );
    assert_nothing_written(&job.dir, &job.path("out.p0"));
    assert_nothing_written(&job.dir, &job.path("out.p1"));
}

// ------------------------------------------------------------------------------------------
// (c) weights opened once per model: `gen-model-mask`, `open-weights`, then jobs with
// `gen-triplets --model-mask` and `serve --weights`.

fn pair(b: &str) -> [String; 2] {
    [format!("{b}.p0"), format!("{b}.p1")]
}

fn weight_count(widths: &[usize]) -> u64 {
    widths.windows(2).map(|w| (w[0] * w[1]) as u64).sum()
}

#[test]
fn weights_opened_once_serve_several_jobs_bit_exact() {
    for engine in ENGINES {
        weights_opened_once_serve_several_jobs_bit_exact_with(engine);
    }
}

fn weights_opened_once_serve_several_jobs_bit_exact_with(engine: EngineKind) {
    let job = Job::new(engine, Some(SMALL), "builtin:phantom:24", 2, 50);
    // A job that opens the weights itself, for comparison.
    let [o0, o1] = job.serve_both(&ServeFiles::standard(), LIMIT);
    let per_job = assert_success(&o0, "S0 (weights per job)");
    assert_success(&o1, "S1 (weights per job)");

    // Once per model.
    ok(&[
        "gen-model-mask",
        "--model",
        &job.p("model.p1"),
        "--out",
        &job.p("mask"),
    ]);
    let [w0, w1] = job.open_both("model", ["mask", "mask"], "weights");
    let (w0, w1) = (
        assert_success(&w0, "S0 open-weights"),
        assert_success(&w1, "S1 open-weights"),
    );
    let n = weight_count(SMALL);
    for w in [&w0, &w1] {
        assert_eq!(w["weights"].as_u64(), Some(n));
        assert!(w["bytes_sent"].as_u64().unwrap() >= 8 * n);
    }
    assert_eq!(w0["model_mask"], w1["model_mask"]);

    // Two jobs of the model, each with fresh triplets made against the mask.
    job.share_image("image2", 3);
    for (image, trip, out) in [("image", "mtrip", "mout"), ("image2", "mtrip2", "mout2")] {
        ok(&job.gen_triplets_args("model", image, trip, 50, Some("mask")));
        let mut f = ServeFiles::standard();
        f.image = pair(image);
        f.triplets = pair(trip);
        f.out = pair(out);
        f.weights = Some(pair("weights"));
        let [o0, o1] = job.serve_both(&f, LIMIT);
        let j0 = assert_success(&o0, "S0 (weights opened once)");
        assert_success(&o1, "S1 (weights opened once)");
        let outs = pair(out);
        let imgs = pair(image);
        let (secure, orc, _) = secure_and_oracle(&job, [&outs[0], &outs[1]], [&imgs[0], &imgs[1]]);
        assert_canvas_equal(
            &secure,
            &orc,
            &format!("{engine}: {image}, weights opened once"),
        );
        if image == "image" {
            // Same job as the per-job run: the masked weights fewer bytes, give or take the
            // link's framing of that message and the longer session tags (the mask id).
            let sent = |j: &serde_json::Value| j["report"]["link"]["bytes_sent"].as_u64().unwrap();
            let saved = sent(&per_job) - sent(&j0);
            assert!(
                (8 * n - 128..8 * n + 128).contains(&saved),
                "{engine}: a job with opened weights saved {saved} bytes, expected 8 x {n} plus framing"
            );
            let (first, _, _) =
                secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
            assert_eq!(
                first, secure,
                "{engine}: per-job and opened-once canvases differ"
            );
        }
    }
}

#[test]
fn model_mask_refusals_consume_nothing() {
    let job = Job::tiny(EngineKind::Gmw);
    let mask = |out: &str, model: &str| {
        ok(&[
            "gen-model-mask",
            "--model",
            &job.p(&format!("{model}.p1")),
            "--out",
            &job.p(out),
        ])
    };
    mask("mask", "model");
    mask("mask-b", "model");
    // The dealer's record is not overwritten by accident (the opened weights would be
    // stranded); --force does it.
    let again = ppd(&[
        "gen-model-mask",
        "--model",
        &job.p("model.p1"),
        "--out",
        &job.p("mask-b"),
    ]);
    refused(&again, &["mask-b.dealer", "--force"]);
    ok(&[
        "gen-model-mask",
        "--model",
        &job.p("model.p1"),
        "--out",
        &job.p("mask-b"),
        "--force",
    ]);

    // 0. An output that cannot be written, or that would overwrite an input: refused before
    //    the mask is claimed (the opening below then succeeds).
    for (out, why) in [
        ("no-such-dir/weights", "does not exist"),
        ("model", "overwrite the input"),
    ] {
        let o = open_one(&job, 0, "model", "mask", out);
        refused(&o, &[why]);
    }

    // 1. The servers hold different masks of the model: both stop at the session check,
    //    nothing is consumed, and each mask then opens normally.
    let [o0, o1] = job.open_both("model", ["mask", "mask-b"], "weights");
    for (p, o) in [(0, &o0), (1, &o1)] {
        refused(o, &["another model mask", "nothing was consumed"]);
        assert_nothing_written(&job.dir, &job.path(&format!("weights.p{p}")));
    }
    for (m, out) in [("mask", "weights"), ("mask-b", "weights-b")] {
        let [o0, o1] = job.open_both("model", [m, m], out);
        assert_success(&o0, "S0 open-weights");
        assert_success(&o1, "S1 open-weights");
    }

    // 2. A mask opens once: a second opening is refused from the files alone.
    for p in [0u8, 1] {
        let o = open_one(&job, p, "model", "mask", "again");
        refused(
            &o,
            &[&format!("mask.p{p}"), "already consumed", "gen-model-mask"],
        );
        assert_nothing_written(&job.dir, &job.path(&format!("again.p{p}")));
    }

    // 3. Another model's mask: refused by open-weights and by the dealer.
    ok(&[
        "share-model",
        "--model",
        &s(&job.model_npz),
        "--out",
        &job.p("model2"),
    ]);
    let o = open_one(&job, 0, "model2", "mask-b", "w2");
    refused(&o, &["mask-b.p0", "made for model"]);
    let args = job.gen_triplets_args("model2", "image", "t2", 64, Some("mask"));
    refused(&ppd(&args), &["mask.dealer", "made for model"]);
    assert_nothing_written(&job.dir, &job.path("t2.p1"));

    // 4. serve: triplets made against a mask but no --weights; --weights with triplets made
    //    without a mask; weights opened under another mask. All refused from the files.
    ok(&job.gen_triplets_args("model", "image", "mtrip", 64, Some("mask")));
    let mut f = ServeFiles::standard();
    f.triplets = pair("mtrip");
    for p in [0u8, 1] {
        refused(
            &serve_one(&job, p, &f),
            &[&format!("mtrip.p{p}"), "--weights", "open-weights"],
        );
    }
    let mut g = ServeFiles::standard();
    g.weights = Some(pair("weights"));
    for p in [0u8, 1] {
        refused(
            &serve_one(&job, p, &g),
            &[&format!("weights.p{p}"), "without a model mask"],
        );
    }
    let mut h = f.clone();
    h.weights = Some(pair("weights-b"));
    for p in [0u8, 1] {
        refused(
            &serve_one(&job, p, &h),
            &[&format!("weights-b.p{p}"), "opened under model mask"],
        );
        assert_nothing_written(&job.dir, &job.path(&format!("out.p{p}")));
    }

    // 5. One server with opened weights, the other opening them in the job: both stop at the
    //    session check, saying so, and nothing is consumed.
    let mut mixed = f.clone();
    mixed.weights = Some(pair("weights"));
    mixed.triplets[1] = "triplets.p1".into();
    let [o0, o1] = {
        let mut g = mixed.clone();
        g.weights = None;
        let spawn = |p, addr: &[String]| job.spawn(p, if p == 0 { &mixed } else { &g }, addr);
        start_pair(&job.dir, spawn).map(|c| wait_limit(c, LIMIT))
    };
    refused(
        &o0,
        &[
            "peer server opens the weights in the job",
            "nothing was consumed",
        ],
    );
    refused(
        &o1,
        &[
            "peer server uses the weights opened under model mask",
            "nothing was consumed",
        ],
    );

    // 6. Nothing was consumed: the matching files run, bit-exact.
    f.weights = Some(pair("weights"));
    let [o0, o1] = job.serve_both(&f, LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "after model mask refusals");
}

#[test]
fn the_dealer_needs_only_the_public_headers() {
    // The dealer works from `model.pub` and `image.pub` alone, in a folder with no share;
    // given a share instead it still works (reading only the header) but says it should not
    // hold one; a share of the wrong kind is refused by name.
    let job = Job::tiny(EngineKind::Gmw);
    let dealer = job.path("dealer");
    std::fs::create_dir(&dealer).unwrap();
    for f in ["model.pub", "image.pub"] {
        std::fs::copy(job.path(f), dealer.join(f)).unwrap();
    }
    let d = |f: &str| s(&dealer.join(f));
    ok(&[
        "gen-model-mask",
        "--model",
        &d("model.pub"),
        "--out",
        &d("mask"),
    ]);
    let o = ppd(&[
        "gen-triplets",
        "--model",
        &d("model.pub"),
        "--image",
        &d("image.pub"),
        "--model-mask",
        &d("mask.dealer"),
        "--out",
        &d("triplets"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    // The servers run on what the dealer made from public headers only.
    for f in ["mask.p0", "mask.p1", "triplets.p0", "triplets.p1"] {
        std::fs::copy(dealer.join(f), job.path(f)).unwrap();
    }
    let [w0, w1] = job.open_both("model", ["mask", "mask"], "weights");
    assert_success(&w0, "S0 open-weights");
    assert_success(&w1, "S1 open-weights");
    let mut f = ServeFiles::standard();
    f.weights = Some(pair("weights"));
    let [o0, o1] = job.serve_both(&f, LIMIT);
    assert_success(&o0, "S0");
    assert_success(&o1, "S1");
    let (secure, orc, _) = secure_and_oracle(&job, ["out.p0", "out.p1"], ["image.p0", "image.p1"]);
    assert_canvas_equal(&secure, &orc, "dealer from public headers");

    // A share still works, with a warning.
    let o = ppd(&[
        "gen-triplets",
        "--model",
        &job.p("model.p1"),
        "--image",
        &job.p("image.p0"),
        "--out",
        &job.p("t-share"),
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model.p1 is S1's share") && err.contains(".pub"),
        "{err}"
    );
    // The job's header where the model's is expected: refused, naming the file.
    let o = ppd(&[
        "gen-triplets",
        "--model",
        &job.p("image.pub"),
        "--image",
        &job.p("image.pub"),
        "--out",
        &job.p("t-bad"),
    ]);
    refused(
        &o,
        &["image.pub", "public model header", "public job header"],
    );
    assert_nothing_written(&job.dir, &job.path("t-bad.p1"));
}

// ------------------------------------------------------------------------------------------
// Issue 31, item 7: the ordering of consumption and protocol, seen on the wire

/// What [`through_proxy`] saw: the bytes each server sent (index = party), and for each
/// server whose threshold was given, whether its consumption record existed when the first
/// byte beyond the threshold reached the proxy (checked before that byte was passed on).
struct Probe {
    sent: [u64; 2],
    /// At S_p's first threshold: S_p's record held the id.
    own_recorded: [Option<bool>; 2],
    /// At S_p's second threshold: both servers' records held it.
    both_recorded: [Option<bool>; 2],
}

/// Runs both servers with S1 connected to S0 through a forwarding proxy (each of the link's
/// two TLS connections, its lanes, through one pair of forwarders). `threshold[p]`: the bytes
/// of S_p's, counted over both lanes, that may pass before its consumption record must hold
/// `id` (the job's triplet id), and those that may pass before both servers' records must.
fn through_proxy(
    job: &Job,
    f: &ServeFiles,
    threshold: [Option<(u64, u64)>; 2],
    id: &str,
) -> (Probe, [Output; 2]) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    // S0 first, on a port the system picks: listening before the relay ever connects to it.
    let (c0, p0) = start_s0(&job.dir, |a| job.spawn(0, f, a));
    let p0 = p0.expect("S0 listens");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let px = listener.local_addr().unwrap().port();
    let sent = [AtomicU64::new(0), AtomicU64::new(0)];
    let seen = Mutex::new(([None, None], [None, None]));
    let stop = AtomicBool::new(false);
    let recorded = |p: usize| {
        std::fs::read_to_string(job.path(&format!("{}/consumed-triplets-p{p}", f.state)))
            .is_ok_and(|s| s.lines().any(|l| l.split(' ').next() == Some(id)))
    };
    // Forwards what S_p sends on `src` to `dst`; checks S_p's record before passing on the
    // chunk that crosses its threshold.
    let forward = |p: usize, mut src: TcpStream, mut dst: TcpStream| {
        src.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = sent[p].fetch_add(n as u64, Ordering::SeqCst);
            if let Some((own, both)) = threshold[p] {
                let crosses = |l: u64| before <= l && before + n as u64 > l;
                if crosses(own) {
                    seen.lock().unwrap().0[p] = Some(recorded(p));
                }
                if crosses(both) {
                    seen.lock().unwrap().1[p] = Some(recorded(0) && recorded(1));
                }
            }
            if dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = dst.shutdown(Shutdown::Write);
    };
    let outs = std::thread::scope(|sc| {
        let (forward, stop, listener) = (&forward, &stop, &listener);
        sc.spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(from1) = conn else { continue };
                let t0 = Instant::now();
                let from0 = loop {
                    match TcpStream::connect(("127.0.0.1", p0)) {
                        Ok(s) => break s,
                        Err(e) if t0.elapsed() > Duration::from_secs(20) => panic!("S0: {e}"),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                };
                let (a, b) = (from0.try_clone().unwrap(), from1.try_clone().unwrap());
                sc.spawn(move || forward(0, a, b));
                sc.spawn(move || forward(1, from1, from0));
            }
        });
        // Wakes the acceptor when the servers are done, or when waiting for them panics, so
        // that a failure ends the test instead of leaving the scope waiting.
        struct Wake<'a>(&'a AtomicBool, u16);
        impl Drop for Wake<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
                let _ = TcpStream::connect(("127.0.0.1", self.1));
            }
        }
        let _wake = Wake(stop, px);
        let c1 = job.spawn(1, f, &["--addr".into(), format!("127.0.0.1:{px}")]);
        [wait_limit(c0, LIMIT), wait_limit(c1, LIMIT)]
    });
    let (own_recorded, both_recorded) = seen.into_inner().unwrap();
    let probe = Probe {
        sent: sent.map(|a| a.into_inner()),
        own_recorded,
        both_recorded,
    };
    (probe, outs)
}

/// No byte of the protocol leaves a server before its record of the consumed randomness
/// exists, and no byte of data (anything after the session tags' second exchange, which
/// open every job: `twopc::job::same_session`) before both servers' records exist. A calibration run with another
/// dealer run's triplets at S1 (so the session tags differ, and both servers stop after
/// exchanging them) gives the bytes each server sends for the TLS handshakes, the lane
/// messages and the tag, with the closes (2 x 24 bytes). In the real job the first byte
/// beyond that count (plus 8, for a signature a byte longer) is protocol, since the first
/// protocol record, the tag again, is about 120 bytes; 256 bytes further on is data (the
/// masked weights). The proxy checks the records (a line with this job's triplet id) before
/// passing on the chunk that crosses each threshold. Both records precede any data because
/// each server records its consumption before it sends its tag again, and sends data only
/// after it has the peer's. A server that recorded only after a round trip of the protocol
/// is caught every time (its peer cannot answer before that chunk passes); one that recorded
/// a moment after its first send would be caught only if the proxy read first. At byte 0
/// (the calibration's check, the negative control) no record exists: the probe can fail.
#[test]
fn no_protocol_byte_leaves_a_server_before_its_consumption_record() {
    let job = Job::tiny(EngineKind::Gmw);
    job.gen_triplets("model", "image", "other", 64);
    let id = |t: &str| {
        let h = ppdenoise::formats::container::read_header(&job.path(t)).unwrap();
        ppdenoise::formats::container::id_hex(&h.triplet_id.unwrap())
    };
    let (ours, theirs) = (id("triplets.p0"), id("other.p1"));
    let mut cal = ServeFiles::standard();
    cal.triplets[1] = "other.p1".into();
    // The negative control rides on the calibration: at its first byte, no record exists.
    let (c, outs) = through_proxy(&job, &cal, [Some((0, 0)), Some((0, 0))], &theirs);
    for (o, who) in outs.iter().zip(["S0", "S1"]) {
        assert!(!o.status.success(), "{who}: a mismatched tag must stop it");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("nothing was consumed"), "{who}: {err}");
    }
    assert_eq!(c.own_recorded, [Some(false), Some(false)]);
    assert_eq!(c.both_recorded, [Some(false), Some(false)]);
    assert!(!job.path("state/consumed-triplets-p0").exists());
    assert!(!job.path("state/consumed-triplets-p1").exists());
    let f = ServeFiles::standard();
    let (p, outs) = through_proxy(&job, &f, c.sent.map(|b| Some((b + 8, b + 264))), &ours);
    assert_success(&outs[0], "S0");
    assert_success(&outs[1], "S1");
    for s in 0..2 {
        assert!(
            p.sent[s] > c.sent[s] + 264,
            "S{s} sent {} bytes, the handshake and tag {}",
            p.sent[s],
            c.sent[s]
        );
    }
    eprintln!(
        "handshake and tag: {:?} bytes; the job: {:?} bytes; own record at the first protocol \
         byte: {:?}; both records at the first data byte: {:?}",
        c.sent, p.sent, p.own_recorded, p.both_recorded
    );
    assert_eq!(p.own_recorded, [Some(true), Some(true)]);
    assert_eq!(p.both_recorded, [Some(true), Some(true)]);
}
