//! `table`: the paper's evaluation (its Tables 2 and 3, Figs. 8-11) from real secure runs.
//!
//! For every image and noise level: add Gaussian noise with a fixed seed, run the whole secure
//! pipeline with two server processes (the `demo` machinery), decode the servers' output
//! shares, run the plaintext float model (with the activation the model was trained with)
//! and the plaintext fixed-point oracle, and record PSNR/SSIM of each against the clean
//! image plus the time and traffic of the secure run. Writes `table.md`, `table.csv`,
//! `table.json` and the figures into `--out-dir`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::twopc::engines::EngineKind;
use anyhow::{bail, Context, Result};
use clap::Args;
use ndarray::{s, Array2};
use serde::{Deserialize, Serialize};

use super::demo::{demo, DemoArgs};
use super::figures;
use super::inputs::{load_image, model_or_default};
use super::receiver::combine;
use super::tools::{run_cnn, run_denoise, Arith};
use super::Summary;
use crate::plain::cnn::Cnn;
use crate::plain::image::{load as load_png, quantize_u8, save_png, GrayImage};
use crate::plain::metrics::{psnr, ssim};
use crate::plain::model::Model;
use crate::plain::preprocess::Preprocess;
use crate::ring::cnn::CnnFixed;
use crate::ring::plan::FixedParams;

#[derive(Args)]
pub struct TableArgs {
    /// Clean images: a directory (all its *.png, sorted by name), one PNG, or
    /// builtin:phantom[:size].
    #[arg(long, default_value = "builtin:phantom:128")]
    pub images: String,
    /// Noise levels (0..255 scale), separated by spaces or commas.
    #[arg(long, default_value = "15 20 25 30 35")]
    pub sigmas: String,
    /// Seed of the Gaussian noise (the same for every image and noise level).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where table.md, table.csv, table.json, the figures and the per-run files go.
    #[arg(long, default_value = "out/table")]
    pub out_dir: PathBuf,
    /// Trained model; default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Patches per batch of the secure protocol (default: the engine's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Nonlinearity engine of the secure runs (gmw or gc); the result is the same bit for
    /// bit, time and traffic differ.
    #[arg(long, value_enum, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    /// Centre-crop images larger than NxN to (at most) NxN before adding noise.
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Images to draw comparison figures for: names (file stems, e.g. 01,05), comma-separated;
    /// default: the first image; `none`: no comparison figures.
    #[arg(long)]
    pub figures: Option<String>,
    /// Keep the bulky files of every secure run (shares, triplets, keys).
    #[arg(long)]
    pub keep_work: bool,
    /// Reuse the runs an earlier (possibly interrupted) invocation finished in --out-dir
    /// (each leaves runs/IMAGE/sigmaS/run.json) instead of running them again. A record made
    /// with another model, seed, stride or image is an error, not silently reused.
    #[arg(long)]
    pub resume: bool,
}

/// One image at one noise level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub image: String,
    pub height: usize,
    pub width: usize,
    /// Original size when the image was centre-cropped.
    pub cropped_from: Option<(usize, usize)>,
    pub sigma: f64,
    pub psnr_noisy: f64,
    pub psnr_float: f64,
    pub ssim_float: f64,
    pub psnr_oracle: f64,
    pub ssim_oracle: f64,
    pub psnr_secure: f64,
    pub ssim_secure: f64,
    /// The decoded secure image equals the fixed-point oracle's bit for bit.
    pub secure_equals_oracle: bool,
    pub max_abs_diff_secure_oracle: f64,
    /// Wall time of the two server processes (both run at once).
    pub serve_seconds: f64,
    /// The servers' own protocol time (S0's report).
    pub protocol_seconds: f64,
    pub s0_bytes_sent: u64,
    pub s1_bytes_sent: u64,
    pub and_gates: u64,
    pub patches: u64,
    pub gateway_upload_bytes: u64,
    pub receiver_download_bytes: u64,
    /// Plaintext float inference time (in this process).
    pub float_seconds: f64,
}

/// Per-sigma averages over the images.
#[derive(Clone, Debug, Serialize)]
pub struct Average {
    pub sigma: f64,
    pub images: usize,
    pub psnr_noisy: f64,
    pub psnr_float: f64,
    pub ssim_float: f64,
    pub psnr_oracle: f64,
    pub ssim_oracle: f64,
    pub psnr_secure: f64,
    pub ssim_secure: f64,
    /// mean(secure - float) PSNR, dB.
    pub gap_db: f64,
    /// max over images of |secure - float| PSNR, dB.
    pub max_abs_gap_db: f64,
    pub serve_seconds: f64,
    pub bytes_total: f64,
}

struct Input {
    name: String,
    clean: GrayImage,
    cropped_from: Option<(usize, usize)>,
}

fn parse_sigmas(s: &str) -> Result<Vec<f64>> {
    let v: Vec<f64> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .with_context(|| format!("--sigmas: {t:?} is not a positive number"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("--sigmas: no noise level given");
    }
    Ok(v)
}

/// The centre `n x n` (at most) of an image.
fn centre_crop(img: &GrayImage, n: usize) -> GrayImage {
    let (h, w) = img.pixels.dim();
    let (ch, cw) = (h.min(n), w.min(n));
    let (y0, x0) = ((h - ch) / 2, (w - cw) / 2);
    GrayImage {
        pixels: img.pixels.slice(s![y0..y0 + ch, x0..x0 + cw]).to_owned(),
        bit_depth: img.bit_depth,
    }
}

fn list_inputs(spec: &str, max_size: Option<usize>) -> Result<Vec<Input>> {
    let path = Path::new(spec);
    let named: Vec<(String, GrayImage)> = if spec.starts_with("builtin:") {
        let name = spec.trim_start_matches("builtin:").replace(':', "_");
        vec![(name, load_image(spec)?)]
    } else if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no PNG images in this directory", path.display());
        }
        files
            .iter()
            .map(|f| Ok((stem(f), load_png(f)?)))
            .collect::<Result<_>>()?
    } else {
        vec![(stem(path), load_png(path)?)]
    };
    Ok(named
        .into_iter()
        .map(|(name, img)| {
            let dim = img.pixels.dim();
            match max_size {
                Some(n) if dim.0 > n || dim.1 > n => Input {
                    name,
                    clean: centre_crop(&img, n),
                    cropped_from: Some(dim),
                },
                _ => Input {
                    name,
                    clean: img,
                    cropped_from: None,
                },
            }
        })
        .collect())
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

fn sigma_tag(sigma: f64) -> String {
    format!("{sigma}").replace('.', "p")
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Files of a secure run that are only needed while it runs.
fn remove_bulky(w: &Path) {
    for f in [
        "model.p0",
        "model.p1",
        "image.p0",
        "image.p1",
        "triplets.p0",
        "triplets.p1",
        "out.p0",
        "out.p1",
    ] {
        let _ = std::fs::remove_file(w.join(f));
    }
    for d in ["keys", "state"] {
        let _ = std::fs::remove_dir_all(w.join(d));
    }
}

/// Images of one run, kept for the figures.
struct Pictures {
    noisy: Array2<f64>,
    float: Array2<f64>,
    secure: Array2<f64>,
}

#[allow(clippy::too_many_arguments)]
/// The table's model: the shipped kind (an MLP) or a CNN.
enum Net {
    Mlp(Model),
    Cnn(Cnn),
}

impl Net {
    fn load(path: &Path) -> Result<Net> {
        Ok(if Cnn::is_cnn_file(path)? {
            Net::Cnn(Cnn::load(path)?)
        } else {
            Net::Mlp(Model::load(path)?)
        })
    }

    /// (fixed-point oracle, float) images of `noisy`, as the secure run was set up.
    fn plaintext(
        &self,
        noisy: &GrayImage,
        pre: &Preprocess,
        stride: usize,
        scale: u32,
    ) -> Result<(Array2<f64>, Array2<f64>, f64)> {
        let (oracle, float, float_seconds) = match self {
            Net::Mlp(m) => {
                let (oracle, _) = run_denoise(m, noisy, pre, stride, Arith::Fixed, scale)?;
                let tf = Instant::now();
                let (float, _) = run_denoise(m, noisy, pre, stride, Arith::Float, scale)?;
                (oracle, float, tf.elapsed().as_secs_f64())
            }
            Net::Cnn(m) => {
                let params = CnnFixed {
                    s: scale,
                    ..Default::default()
                };
                let (oracle, _) = run_cnn(m, noisy, pre, Arith::Fixed, params)?;
                let tf = Instant::now();
                let (float, _) = run_cnn(m, noisy, pre, Arith::Float, params)?;
                (oracle, float, tf.elapsed().as_secs_f64())
            }
        };
        Ok((oracle, float, float_seconds))
    }
}

fn one_run(
    a: &TableArgs,
    model_path: &Path,
    model: &Net,
    input: &Input,
    input_png: &Path,
    sigma: f64,
    workdir: PathBuf,
) -> Result<(Run, Pictures)> {
    let d = demo(DemoArgs {
        image: input_png.display().to_string(),
        model: Some(model_path.to_path_buf()),
        sigma,
        seed: a.seed,
        stride: a.stride,
        batch: a.batch,
        engine: a.engine,
        workdir: workdir.clone(),
        no_compare: true,
        // One job per model setup here: the weights' opening stays in each run's traffic,
        // comparable with the tables recorded before model masks existed.
        weights_per_job: true,
    })
    .with_context(|| format!("secure run of {} at sigma {sigma}", input.name))?
    .json;
    // Exactly the images the pipeline saw: the clean input as demo loaded it, the noisy PNG
    // it shared.
    let clean = load_image(&input_png.display().to_string())?;
    let noisy = load_png(workdir.join("noisy.png"))?;
    let (secure, share) = combine(&workdir.join("out.p0"), &workdir.join("out.p1"))?;
    let (oracle, float, float_seconds) =
        model.plaintext(&noisy, &share.job.pre, a.stride, share.job.scale)?;
    let max_diff = oracle
        .iter()
        .zip(secure.pixels.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f64, f64::max);
    let (qf, qo, qs) = (
        quantize_u8(&float),
        quantize_u8(&oracle),
        quantize_u8(&secure.pixels),
    );
    save_png(
        &GrayImage {
            pixels: float.clone(),
            bit_depth: 8,
        },
        workdir.join("plaintext.png"),
        8,
    )?;
    let c = &clean.pixels;
    let srv = &d["servers"];
    let (h, w) = c.dim();
    let run = Run {
        image: input.name.clone(),
        height: h,
        width: w,
        cropped_from: input.cropped_from,
        sigma,
        psnr_noisy: psnr(c, &noisy.pixels, 255.0),
        psnr_float: psnr(c, &qf, 255.0),
        ssim_float: ssim(c, &qf),
        psnr_oracle: psnr(c, &qo, 255.0),
        ssim_oracle: ssim(c, &qo),
        psnr_secure: psnr(c, &qs, 255.0),
        ssim_secure: ssim(c, &qs),
        secure_equals_oracle: max_diff == 0.0,
        max_abs_diff_secure_oracle: max_diff,
        serve_seconds: d["serve_seconds"].as_f64().unwrap_or(f64::NAN),
        protocol_seconds: srv[0]["report"]["seconds_total"]
            .as_f64()
            .unwrap_or(f64::NAN),
        s0_bytes_sent: u(&srv[0]["report"]["link"]["bytes_sent"]),
        s1_bytes_sent: u(&srv[1]["report"]["link"]["bytes_sent"]),
        and_gates: u(&srv[0]["report"]["engine"]["and_gates"]),
        patches: u(&srv[0]["report"]["patches"]),
        gateway_upload_bytes: u(&d["gateway"]["upload_bytes"]),
        receiver_download_bytes: u(&d["receiver"]["download_bytes"]),
        float_seconds,
    };
    Ok((
        run,
        Pictures {
            noisy: noisy.pixels,
            float: qf,
            secure: qs,
        },
    ))
}

/// What a finished run leaves in its directory (`run.json`) so that `--resume` can reuse it:
/// the run plus everything its numbers depend on besides the image and sigma.
#[derive(Serialize, Deserialize)]
struct RunRecord {
    format: String,
    /// Tool version and fixed-point settings the run was made with ([`protocol_tag`]).
    #[serde(default)]
    protocol: String,
    seed: u64,
    stride: usize,
    model_blake3: String,
    /// Patches per batch: no effect on the (bit-exact) result, only on time and memory.
    #[serde(default)]
    batch: usize,
    /// The engine of the secure run (records without one were made by the GC engine).
    #[serde(default = "engine_of_old_records")]
    engine: EngineKind,
    run: Run,
}

fn engine_of_old_records() -> EngineKind {
    EngineKind::Gc
}

const RECORD_FORMAT: &str = "ppdenoise-table-run/1";

/// What a run's numbers depend on besides its inputs: the tool version and the fixed-point
/// settings the secure pipeline uses (the `demo` defaults).
fn protocol_tag() -> String {
    let f = FixedParams::default();
    format!(
        "ppdenoise {} s={} q={} cs={} zbits={} out_bits={}",
        env!("CARGO_PKG_VERSION"),
        f.s,
        f.q,
        f.cs,
        f.zbits,
        f.out_bits
    )
}

/// The earlier run of `input` at `sigma` recorded in `workdir`, when there is one; an error
/// when the record exists but was made under other settings or its images are missing.
fn recorded_run(
    workdir: &Path,
    input: &Input,
    clean_input: &Array2<f64>,
    sigma: f64,
    a: &TableArgs,
    model_blake3: &str,
) -> Result<Option<Run>> {
    let (seed, stride, engine) = (a.seed, a.stride, a.engine);
    let path = workdir.join("run.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let rec: RunRecord = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a table run record (corrupted?); delete it to run again",
            path.display()
        )
    })?;
    let mismatch = |what: &str, then: String, now: String| {
        anyhow::anyhow!(
            "{}: made with {what} {then}, this table uses {now}; use another --out-dir or drop --resume",
            path.display()
        )
    };
    if rec.format != RECORD_FORMAT {
        return Err(mismatch("format", rec.format, RECORD_FORMAT.into()));
    }
    if rec.protocol != protocol_tag() {
        let then = if rec.protocol.is_empty() {
            "an older ppdenoise (no settings recorded)".to_string()
        } else {
            format!("{:?}", rec.protocol)
        };
        return Err(mismatch(
            "tool/fixed point",
            then,
            format!("{:?}", protocol_tag()),
        ));
    }
    if rec.seed != seed {
        return Err(mismatch("seed", rec.seed.to_string(), seed.to_string()));
    }
    // Same images either way, but the recorded time and traffic are the engine's.
    if rec.engine != engine {
        return Err(mismatch(
            "engine",
            rec.engine.to_string(),
            engine.to_string(),
        ));
    }
    if rec.stride != stride {
        return Err(mismatch(
            "stride",
            rec.stride.to_string(),
            stride.to_string(),
        ));
    }
    if rec.model_blake3 != model_blake3 {
        return Err(mismatch(
            "model blake3",
            rec.model_blake3,
            model_blake3.to_string(),
        ));
    }
    if rec.run.image != input.name || rec.run.sigma != sigma {
        return Err(mismatch(
            "image/sigma",
            format!("{} / {}", rec.run.image, rec.run.sigma),
            format!("{} / {sigma}", input.name),
        ));
    }
    if recorded_png(workdir, "clean.png")?.pixels != *clean_input {
        bail!(
            "{}: recorded for a different {} image (its clean.png differs); use another --out-dir or drop --resume",
            path.display(),
            input.name
        );
    }
    for f in ["noisy.png", "plaintext.png", "denoised.png"] {
        if !workdir.join(f).exists() {
            bail!(
                "{}: recorded run is missing {f}; delete run.json to run again",
                workdir.display()
            );
        }
    }
    Ok(Some(rec.run))
}

fn recorded_png(workdir: &Path, f: &str) -> Result<GrayImage> {
    load_png(workdir.join(f)).with_context(|| {
        format!(
            "{}: recorded run is missing {f}; delete run.json to run again",
            workdir.display()
        )
    })
}

/// The images of a recorded run, for the figures.
fn recorded_pictures(workdir: &Path) -> Result<Pictures> {
    Ok(Pictures {
        noisy: recorded_png(workdir, "noisy.png")?.pixels,
        float: recorded_png(workdir, "plaintext.png")?.pixels,
        secure: recorded_png(workdir, "denoised.png")?.pixels,
    })
}

fn averages(runs: &[Run], sigmas: &[f64]) -> Vec<Average> {
    sigmas
        .iter()
        .map(|&sg| {
            let r: Vec<&Run> = runs.iter().filter(|r| r.sigma == sg).collect();
            let m = |f: &dyn Fn(&Run) -> f64| mean(r.iter().map(|x| f(x)));
            Average {
                sigma: sg,
                images: r.len(),
                psnr_noisy: m(&|x| x.psnr_noisy),
                psnr_float: m(&|x| x.psnr_float),
                ssim_float: m(&|x| x.ssim_float),
                psnr_oracle: m(&|x| x.psnr_oracle),
                ssim_oracle: m(&|x| x.ssim_oracle),
                psnr_secure: m(&|x| x.psnr_secure),
                ssim_secure: m(&|x| x.ssim_secure),
                gap_db: m(&|x| x.psnr_secure - x.psnr_float),
                max_abs_gap_db: r
                    .iter()
                    .map(|x| (x.psnr_secure - x.psnr_float).abs())
                    .fold(0.0, f64::max),
                serve_seconds: m(&|x| x.serve_seconds),
                bytes_total: m(&|x| (x.s0_bytes_sent + x.s1_bytes_sent) as f64),
            }
        })
        .collect()
}

/// Describes the model: its path, content hash and (when present) its JSON card.
fn model_info(path: &Path, model: &Net) -> serde_json::Value {
    let hash = std::fs::read(path)
        .map(|b| blake3::hash(&b).to_hex().to_string())
        .unwrap_or_default();
    let card_path = path.with_extension("json");
    let card: serde_json::Value = std::fs::read_to_string(&card_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let (widths, meta) = match model {
        Net::Mlp(m) => (m.widths(), serde_json::json!(m.meta)),
        // A CNN's channels stand where an MLP's widths do; its activation is ReLU.
        Net::Cnn(m) => (
            m.channels(),
            serde_json::json!({"sigma": m.meta.sigma, "residual": m.meta.residual, "activation": "ReLU"}),
        ),
    };
    serde_json::json!({
        "path": path, "blake3": hash, "widths": widths, "meta": meta,
        "card_path": if card.is_null() { serde_json::Value::Null } else { serde_json::json!(card_path) },
        "card": card,
    })
}

fn crop_note(inputs: &[Input], max_size: Option<usize>) -> String {
    let n = inputs.iter().filter(|i| i.cropped_from.is_some()).count();
    match max_size {
        Some(m) if n > 0 => format!(
            "{n} of {} images centre-cropped to at most {m}x{m} before adding noise (`--max-size {m}`); \
             the numbers are for the crops, not the full images",
            inputs.len()
        ),
        Some(m) => format!("no image larger than {m}x{m}: full images"),
        None => "full images (no crop)".into(),
    }
}

struct TableDoc<'a> {
    /// Runs taken from an earlier invocation (`--resume`).
    resumed: usize,
    a: &'a TableArgs,
    sigmas: &'a [f64],
    inputs: &'a [Input],
    runs: &'a [Run],
    avgs: &'a [Average],
    model: &'a serde_json::Value,
    command: &'a str,
    figures: &'a [PathBuf],
}

fn markdown(c: &TableDoc) -> String {
    let mut m = String::new();
    let card = &c.model["card"];
    let exact = c.runs.iter().filter(|r| r.secure_equals_oracle).count();
    let _ = writeln!(m, "# ppdenoise evaluation table\n");
    let _ = writeln!(m, "Command: `{}`\n", c.command);
    let _ = writeln!(
        m,
        "- Images: `{}` ({} image(s)); {}.",
        c.a.images,
        c.inputs.len(),
        crop_note(c.inputs, c.a.max_size)
    );
    let sizes: Vec<String> = c
        .inputs
        .iter()
        .map(|i| {
            let (h, w) = i.clean.pixels.dim();
            match i.cropped_from {
                Some((oh, ow)) => format!("{} {h}x{w} (of {oh}x{ow})", i.name),
                None => format!("{} {h}x{w}", i.name),
            }
        })
        .collect();
    let _ = writeln!(m, "- Sizes: {}.", sizes.join(", "));
    let _ = writeln!(
        m,
        "- Noise: white Gaussian, seed {}, rounded and clipped to 8 bits; stride {}.",
        c.a.seed, c.a.stride
    );
    let hash: String = c.model["blake3"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(16)
        .collect();
    let _ = writeln!(
        m,
        "- Model: `{}` (blake3 {hash}…), layers {}, activation {}, sigma* {}{}.",
        c.model["path"].as_str().unwrap_or(""),
        c.model["widths"],
        c.model["meta"]["activation"].as_str().unwrap_or("?"),
        c.model["meta"]["sigma"],
        if card.is_null() {
            String::new()
        } else {
            format!(
                "; card `{}`: {}, {} patches seen, trained {} min",
                c.model["card_path"].as_str().unwrap_or(""),
                card["name"].as_str().unwrap_or("?"),
                card["patches_seen"],
                card["training_minutes"]
            )
        }
    );
    let _ = writeln!(
        m,
        "- Plaintext = the float model with the activation it was trained with (the paper's baseline); \
         Secure = the full two-server protocol (separate server processes, TLS on localhost), decoded \
         from the servers' output shares. Secure equals the plaintext fixed-point oracle bit for bit \
         in {exact} of {} runs.",
        c.runs.len()
    );
    if c.resumed > 0 {
        let _ = writeln!(
            m,
            "- {} of the {} runs were recorded by earlier invocations into the same --out-dir and \
             reused (`--resume`); their time and traffic are as measured then.",
            c.resumed,
            c.runs.len()
        );
    }
    let _ = writeln!(m);

    let _ = writeln!(m, "## PSNR (dB) and SSIM\n");
    let mut head = String::from("| Image | Method |");
    let mut rule = String::from("|---|---|");
    for sg in c.sigmas {
        let _ = write!(head, " σ={sg} PSNR | σ={sg} SSIM |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(m, "{head}\n{rule}");
    let cell = |r: Option<&Run>, f: &dyn Fn(&Run) -> (f64, f64)| match r {
        Some(r) => {
            let (p, s) = f(r);
            format!(" {p:.2} | {s:.3} |")
        }
        None => " – | – |".into(),
    };
    for i in c.inputs {
        let find = |sg: f64| c.runs.iter().find(|r| r.image == i.name && r.sigma == sg);
        let mut l1 = format!("| {} | Plaintext |", i.name);
        let mut l2 = String::from("| | Secure |");
        for &sg in c.sigmas {
            l1.push_str(&cell(find(sg), &|r| (r.psnr_float, r.ssim_float)));
            l2.push_str(&cell(find(sg), &|r| (r.psnr_secure, r.ssim_secure)));
        }
        let _ = writeln!(m, "{l1}\n{l2}");
    }
    let mut a1 = String::from("| **Average** | Plaintext |");
    let mut a2 = String::from("| | Secure |");
    let mut a3 = String::from("| | Secure − plaintext |");
    let mut a4 = String::from("| | Noisy input |");
    for a in c.avgs {
        let _ = write!(a1, " {:.2} | {:.3} |", a.psnr_float, a.ssim_float);
        let _ = write!(a2, " {:.2} | {:.3} |", a.psnr_secure, a.ssim_secure);
        let _ = write!(
            a3,
            " {:+.4} | {:+.4} |",
            a.gap_db,
            a.ssim_secure - a.ssim_float
        );
        let _ = write!(a4, " {:.2} | |", a.psnr_noisy);
    }
    let _ = writeln!(m, "{a1}\n{a2}\n{a3}\n{a4}\n");
    let worst = c.avgs.iter().map(|a| a.max_abs_gap_db).fold(0.0, f64::max);
    let overall = mean(c.runs.iter().map(|r| r.psnr_secure - r.psnr_float));
    let _ = writeln!(
        m,
        "Secure − plaintext PSNR over all runs: mean {overall:+.4} dB, largest on one image {worst:.4} dB.\n"
    );

    let _ = writeln!(m, "## Secure runs: time and traffic\n");
    let _ = writeln!(
        m,
        "Servers = wall time of the two server processes running together; traffic = application \
         bytes each server sent to the other (TLS records add a little); AND gates = AND \
         gates of the tanh* comparisons (garbled, or on boolean shares with dealer triples).\n"
    );
    let _ = writeln!(
        m,
        "| Image | Size | σ | Patches | Servers (s) | S0→S1 (MB) | S1→S0 (MB) | AND gates | secure = oracle |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in c.runs {
        let _ = writeln!(
            m,
            "| {} | {}x{} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.image,
            r.height,
            r.width,
            r.sigma,
            r.patches,
            r.serve_seconds,
            r.s0_bytes_sent as f64 / 1e6,
            r.s1_bytes_sent as f64 / 1e6,
            r.and_gates,
            if r.secure_equals_oracle {
                "yes (bit-exact)".to_string()
            } else {
                format!("NO (max diff {:.3e})", r.max_abs_diff_secure_oracle)
            }
        );
    }
    let tot_s: f64 = c.runs.iter().map(|r| r.serve_seconds).sum();
    let tot_b: f64 = c
        .runs
        .iter()
        .map(|r| (r.s0_bytes_sent + r.s1_bytes_sent) as f64)
        .sum();
    let _ = writeln!(
        m,
        "\nTotal: {} secure runs, {tot_s:.0} s of server time, {:.2} GB of S0<->S1 traffic.\n",
        c.runs.len(),
        tot_b / 1e9
    );
    if !c.figures.is_empty() {
        let _ = writeln!(m, "## Figures\n");
        for f in c.figures {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            let _ = writeln!(m, "![{name}]({name})\n");
        }
    }
    m
}

fn csv(runs: &[Run]) -> String {
    let mut out = String::from(
        "image,height,width,cropped_from,sigma,psnr_noisy,psnr_float,ssim_float,psnr_oracle,ssim_oracle,\
psnr_secure,ssim_secure,secure_equals_oracle,max_abs_diff_secure_oracle,serve_seconds,protocol_seconds,\
s0_bytes_sent,s1_bytes_sent,and_gates,patches,gateway_upload_bytes,receiver_download_bytes,float_seconds\n",
    );
    for r in runs {
        let crop = r
            .cropped_from
            .map(|(h, w)| format!("{h}x{w}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.4},{:.4},{:.5},{:.4},{:.5},{:.4},{:.5},{},{:e},{:.3},{:.3},{},{},{},{},{},{},{:.3}",
            r.image,
            r.height,
            r.width,
            crop,
            r.sigma,
            r.psnr_noisy,
            r.psnr_float,
            r.ssim_float,
            r.psnr_oracle,
            r.ssim_oracle,
            r.psnr_secure,
            r.ssim_secure,
            r.secure_equals_oracle,
            r.max_abs_diff_secure_oracle,
            r.serve_seconds,
            r.protocol_seconds,
            r.s0_bytes_sent,
            r.s1_bytes_sent,
            r.and_gates,
            r.patches,
            r.gateway_upload_bytes,
            r.receiver_download_bytes,
            r.float_seconds
        );
    }
    out
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

pub fn table(a: TableArgs) -> Result<Summary> {
    let t0 = Instant::now();
    if a.stride == 0 {
        bail!("--stride must be at least 1");
    }
    if a.max_size == Some(0) {
        bail!("--max-size must be at least 1");
    }
    let sigmas = parse_sigmas(&a.sigmas)?;
    let inputs = list_inputs(&a.images, a.max_size)?;
    let model_path = model_or_default(&a.model);
    let model = Net::load(&model_path)?;
    let patch = match &model {
        Net::Mlp(m) => m.patch_shape().output,
        Net::Cnn(_) => 1,
    };
    for i in &inputs {
        let (h, w) = i.clean.pixels.dim();
        if h < patch || w < patch {
            bail!(
                "{}: {h}x{w} is smaller than the model's {patch}x{patch} output patch",
                i.name
            );
        }
    }
    let out = &a.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let fig_names: Vec<String> = match a.figures.as_deref() {
        None => inputs.iter().take(1).map(|i| i.name.clone()).collect(),
        Some("none") | Some("") => vec![],
        Some(list) => list
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    for f in &fig_names {
        if !inputs.iter().any(|i| &i.name == f) {
            bail!(
                "--figures: no image named {f:?} (images: {})",
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    let total = inputs.len() * sigmas.len();
    let minfo = model_info(&model_path, &model);
    let model_hash = minfo["blake3"].as_str().unwrap_or_default().to_string();
    let mut resumed = 0usize;
    // Every image's run directory and clean input first; with --resume, every existing record
    // is checked now (a foreign or damaged one is refused before hours of new runs).
    let mut recorded = std::collections::HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let dir = out.join("runs").join(&input.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let input_png = dir.join("clean-input.png");
        save_png(&input.clean, &input_png, input.clean.bit_depth)?;
        if a.resume {
            // The clean image exactly as the pipeline reads it (rounded to its PNG).
            let clean_input = load_png(&input_png)?.pixels;
            for (j, &sigma) in sigmas.iter().enumerate() {
                let workdir = dir.join(format!("sigma{}", sigma_tag(sigma)));
                if let Some(run) =
                    recorded_run(&workdir, input, &clean_input, sigma, &a, &model_hash)?
                {
                    recorded.insert((i, j), run);
                }
            }
        }
    }
    let mut runs = Vec::with_capacity(total);
    let mut figures_written = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let dir = out.join("runs").join(&input.name);
        let input_png = dir.join("clean-input.png");
        for (j, &sigma) in sigmas.iter().enumerate() {
            let t = Instant::now();
            let workdir = dir.join(format!("sigma{}", sigma_tag(sigma)));
            let earlier = match recorded.remove(&(i, j)) {
                Some(run) => Some((run, recorded_pictures(&workdir)?)),
                None => None,
            };
            let from_earlier = earlier.is_some();
            let (run, pics) = match earlier {
                Some(r) => {
                    resumed += 1;
                    r
                }
                None => {
                    // A stale record must not outlive the files this run overwrites.
                    match std::fs::remove_file(workdir.join("run.json")) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).with_context(|| {
                                format!("cannot remove {}", workdir.join("run.json").display())
                            });
                        }
                        _ => {}
                    }
                    let (run, pics) = one_run(
                        &a,
                        &model_path,
                        &model,
                        input,
                        &input_png,
                        sigma,
                        workdir.clone(),
                    )?;
                    if !a.keep_work {
                        remove_bulky(&workdir);
                    }
                    let rec = RunRecord {
                        format: RECORD_FORMAT.into(),
                        protocol: protocol_tag(),
                        seed: a.seed,
                        stride: a.stride,
                        model_blake3: model_hash.clone(),
                        batch: a.batch.unwrap_or(a.engine.default_batch()),
                        engine: a.engine,
                        run,
                    };
                    write_file(
                        &workdir.join("run.json"),
                        &serde_json::to_string_pretty(&rec)?,
                    )?;
                    (rec.run, pics)
                }
            };
            eprintln!(
                "[{}/{total}] {} {}x{} sigma {sigma}: noisy {:.2} dB, plaintext {:.2} dB, secure {:.2} dB ({}), servers {:.1} s, {:.1} MB; {:.1} s{}",
                runs.len() + 1,
                input.name,
                run.height,
                run.width,
                run.psnr_noisy,
                run.psnr_float,
                run.psnr_secure,
                if run.secure_equals_oracle { "= oracle" } else { "!= ORACLE" },
                run.serve_seconds,
                (run.s0_bytes_sent + run.s1_bytes_sent) as f64 / 1e6,
                t.elapsed().as_secs_f64(),
                if from_earlier { " (recorded earlier, --resume)" } else { "" }
            );
            if fig_names.contains(&input.name) {
                let p = out.join(format!("fig_{}_sigma{}.png", input.name, sigma_tag(sigma)));
                figures::comparison(
                    &[
                        (&input.clean.pixels, "Original".to_string()),
                        (
                            &pics.noisy,
                            format!("Noisy σ={sigma} ({:.2} dB)", run.psnr_noisy),
                        ),
                        (
                            &pics.float,
                            format!("Plaintext {:.2} dB / {:.3}", run.psnr_float, run.ssim_float),
                        ),
                        (
                            &pics.secure,
                            format!("Secure {:.2} dB / {:.3}", run.psnr_secure, run.ssim_secure),
                        ),
                    ],
                    &p,
                )?;
                figures_written.push(p);
            }
            runs.push(run);
        }
    }
    let avgs = averages(&runs, &sigmas);
    let plot = out.join("psnr_vs_sigma.png");
    let crop = match a.max_size {
        Some(n) if inputs.iter().any(|i| i.cropped_from.is_some()) => {
            format!(", centre crops <= {n}x{n}")
        }
        _ => String::new(),
    };
    figures::psnr_plot(
        &avgs,
        &format!("Average PSNR, {} image(s){crop}", inputs.len()),
        &plot,
    )?;
    figures_written.insert(0, plot);

    let command = format!(
        "ppdenoise table --images {} --sigmas \"{}\" --seed {} --stride {}{}{} --out-dir {}",
        a.images,
        sigmas
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        a.seed,
        a.stride,
        a.max_size
            .map(|n| format!(" --max-size {n}"))
            .unwrap_or_default(),
        a.model
            .as_ref()
            .map(|p| format!(" --model {}", p.display()))
            .unwrap_or_default(),
        out.display()
    );
    let ctx = TableDoc {
        resumed,
        a: &a,
        sigmas: &sigmas,
        inputs: &inputs,
        runs: &runs,
        avgs: &avgs,
        model: &minfo,
        command: &command,
        figures: &figures_written,
    };
    let md_path = out.join("table.md");
    write_file(&md_path, &markdown(&ctx))?;
    let csv_path = out.join("table.csv");
    write_file(&csv_path, &csv(&runs))?;
    let exact = runs.iter().all(|r| r.secure_equals_oracle);
    let json = serde_json::json!({
        "ok": true, "command": "table", "invocation": command, "images": a.images,
        "sigmas": sigmas, "seed": a.seed, "stride": a.stride, "max_size": a.max_size,
        "crop": crop_note(&inputs, a.max_size), "model": minfo,
        "secure_equals_oracle": exact, "runs": runs, "averages": avgs,
        "figures": figures_written, "resumed_runs": resumed, "seconds": t0.elapsed().as_secs_f64(),
    });
    let json_path = out.join("table.json");
    write_file(&json_path, &serde_json::to_string_pretty(&json)?)?;

    let mut lines: Vec<String> = avgs
        .iter()
        .map(|v| {
            format!(
                "sigma {:>4}: plaintext {:.2} dB / {:.3}, secure {:.2} dB / {:.3} (gap {:+.3} dB, max {:.3}), {} image(s)",
                v.sigma, v.psnr_float, v.ssim_float, v.psnr_secure, v.ssim_secure, v.gap_db, v.max_abs_gap_db, v.images
            )
        })
        .collect();
    lines.push(format!(
        "secure == oracle bit for bit in {} of {} runs; {}",
        runs.iter().filter(|r| r.secure_equals_oracle).count(),
        runs.len(),
        crop_note(&inputs, a.max_size)
    ));
    lines.push(format!(
        "wrote {}, {}, {} and {} figure(s) in {:.1} s",
        md_path.display(),
        csv_path.display(),
        json_path.display(),
        figures_written.len(),
        t0.elapsed().as_secs_f64()
    ));
    let summary = serde_json::json!({
        "ok": exact, "command": "table", "out_dir": out, "table_md": md_path, "table_csv": csv_path,
        "table_json": json_path, "runs": runs.len(), "secure_equals_oracle": exact,
        "averages": avgs, "figures": figures_written, "resumed_runs": resumed,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if !exact {
        bail!(
            "secure result differs from the fixed-point oracle in some runs (see {})",
            md_path.display()
        );
    }
    Ok(Summary {
        lines,
        json: summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmas_parse() {
        assert_eq!(parse_sigmas("15 20,25").unwrap(), vec![15.0, 20.0, 25.0]);
        assert!(parse_sigmas("").is_err());
        assert!(parse_sigmas("x").is_err());
        assert!(parse_sigmas("-3").is_err());
    }

    #[test]
    fn crop_is_centred() {
        let img = GrayImage {
            pixels: Array2::from_shape_fn((6, 5), |(y, x)| (10 * y + x) as f64),
            bit_depth: 8,
        };
        let c = centre_crop(&img, 3);
        assert_eq!(c.pixels.dim(), (3, 3));
        assert_eq!(c.pixels[[0, 0]], 11.0);
        assert_eq!(centre_crop(&img, 10).pixels, img.pixels);
    }
}
