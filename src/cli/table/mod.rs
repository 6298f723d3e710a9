//! `table`: the paper's evaluation (its Tables 2 and 3, Figs. 8-11) from real secure runs.
//!
//! For every image and noise level: add Gaussian noise with a fixed seed, run the whole secure
//! pipeline with two server processes (`pipeline::run`, as `demo` runs it), decode the servers' output
//! shares, run the plaintext float model (with the activation the model was trained with)
//! and the plaintext fixed-point oracle, and record PSNR/SSIM of each against the clean
//! image plus the time and traffic of the secure run. Writes `table.md`, `table.csv`,
//! `table.json` and the figures into `--out-dir`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::corr::engine_kind::EngineKind;
use crate::model::noise_map::PoissonGaussian;
use anyhow::{bail, Context, Result};
use clap::Args;
use ndarray::{s, Array2};
use serde::{Deserialize, Serialize};

use super::figures::{self, Average};
use super::inputs::{load_image, NoiseArgs};
use super::pipeline;
use super::Summary;
use crate::image::rgb::{load_stacked, save_stacked};
use crate::image::window::WindowChoice;
use crate::image::{quantize_u8, GrayImage};
use crate::job::progress::{Mode, Progress};
use crate::job::receiver::combine;
use crate::metrics::{psnr, ssim_planes};

mod models;
mod record;
mod report;
use models::{Models, Net, TableModel};
use record::{protocol_tag, recorded_pictures, recorded_run, RunRecord, RECORD_FORMAT};
use report::{csv, markdown, TableDoc};

#[derive(Args)]
pub struct TableArgs {
    /// Clean images: a directory (all its PNG, TIFF and DICOM files by extension, sorted by
    /// name), one image file (a multi-frame DICOM: every frame an image, `<name>-f<k>`), or
    /// builtin:phantom[:size].
    #[arg(long, default_value = "builtin:phantom:128")]
    pub images: String,
    /// Noise levels (0..255 scale, of the window for a DICOM), separated by spaces or commas.
    #[arg(long, default_value = "15 20 25 30 35")]
    pub sigmas: String,
    /// A DICOM's value window onto the model's 0..255 scale (as share-image's): the table's
    /// images, noise and PSNR are on that scale.
    #[command(flatten)]
    pub window: super::inputs::WindowArgs,
    /// Map the images with --window even though the models declare another window they
    /// were trained on; without it such a --window is refused.
    #[arg(long)]
    pub override_model_window: bool,
    /// Seed of the Gaussian noise (the same for every image and noise level).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where table.md, table.csv, table.json, the figures and the per-run files go.
    #[arg(long, default_value = "out/table")]
    pub out_dir: PathBuf,
    /// Trained model for every noise level; default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One model per noise level instead, for sigma-specific models such as DnCNN-S:
    /// SIGMA=PATH entries separated by commas, e.g. `15=s15.npz,25=s25.npz,50=s50.npz`.
    /// Every sigma of --sigmas needs one; entries for other sigmas are ignored.
    #[arg(long, conflicts_with = "model")]
    pub models: Option<String>,
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Patches per batch of an MLP's secure runs (default: the engine's); CNN runs use
    /// the engine's default ReLU batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Nonlinearity engine of the secure runs (gmw or gc); the result is the same bit for
    /// bit, time and traffic differ.
    #[arg(long, value_enum, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    /// Centre-crop images larger than NxN to (at most) NxN before adding noise.
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Signal-dependent noise instead of Gaussian noise, for a CNN with a noise map
    /// (FFDNet): `poisson-gaussian:A,B` (variance = A * pixel + B); the gateway computes the
    /// per-pixel map from each noisy image. Give one --sigmas value: it only labels the runs.
    #[arg(long)]
    pub noise: Option<String>,
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
    /// Show no progress (otherwise on stderr: a line per run, and the progress over all runs
    /// with an ETA, as a bar on a terminal or a line every few seconds elsewhere).
    #[arg(long)]
    pub quiet: bool,
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

struct Input {
    name: String,
    /// Its planes stacked, (colours h) x w.
    clean: GrayImage,
    /// 1 gray, 3 RGB.
    colours: usize,
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

/// The centre `n x n` (at most) of an image of `colours` planes stacked (every plane's).
fn centre_crop(img: &GrayImage, n: usize, colours: usize) -> GrayImage {
    let (h, w) = (img.pixels.nrows() / colours, img.pixels.ncols());
    let (ch, cw) = (h.min(n), w.min(n));
    let (y0, x0) = ((h - ch) / 2, (w - cw) / 2);
    let planes: Vec<Array2<f64>> = (0..colours)
        .map(|c| {
            let y = c * h + y0;
            img.pixels.slice(s![y..y + ch, x0..x0 + cw]).to_owned()
        })
        .collect();
    let views: Vec<_> = planes.iter().map(|p| p.view()).collect();
    GrayImage {
        pixels: ndarray::concatenate(ndarray::Axis(0), &views).expect("planes of one size"),
        bit_depth: img.bit_depth,
    }
}

/// The table's images; `model` names the table's model for a refusal of an image of the
/// wrong kind (gray for a colour model, colour for a gray one), before any run.
fn list_inputs(
    spec: &str,
    max_size: Option<usize>,
    window: &WindowChoice,
    colours: usize,
    model: &str,
) -> Result<Vec<Input>> {
    let path = Path::new(spec);
    let named: Vec<(String, GrayImage)> = if spec.starts_with("builtin:") {
        let name = spec.trim_start_matches("builtin:").replace(':', "_");
        if colours != 1 {
            bail!("{spec}: a gray image, and {model} is colour: give RGB images, or a gray model");
        }
        vec![(name, load_image(spec)?)]
    } else if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "tif", "tiff", "dcm"]
                        .iter()
                        .any(|x| e.eq_ignore_ascii_case(x))
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: no PNG, TIFF or DICOM images in this directory",
                path.display()
            );
        }
        let mut named = Vec::new();
        for f in &files {
            named.extend(named_frames(f, window, colours, model)?);
        }
        named
    } else {
        named_frames(path, window, colours, model)?
    };
    Ok(named
        .into_iter()
        .map(|(name, img)| {
            let dim = (img.pixels.nrows() / colours, img.pixels.ncols());
            match max_size {
                Some(n) if dim.0 > n || dim.1 > n => Input {
                    name,
                    clean: centre_crop(&img, n, colours),
                    colours,
                    cropped_from: Some(dim),
                },
                _ => Input {
                    name,
                    clean: img,
                    colours,
                    cropped_from: None,
                },
            }
        })
        .collect())
}

/// The images of a file: itself, or every frame of a multi-frame DICOM, named
/// `<stem>-f<k>` (each frame an image of the table), a DICOM's on the window `window`
/// resolves to; a colour model's: an RGB PNG or TIFF's planes stacked.
fn named_frames(
    f: &Path,
    window: &WindowChoice,
    colours: usize,
    model: &str,
) -> Result<Vec<(String, GrayImage)>> {
    let spec = f.display().to_string();
    if colours != 1 {
        if !matches!(window, WindowChoice::Default | WindowChoice::Full) {
            bail!("--window: a colour image takes its full range");
        }
        let c = super::colour::colour_input(&spec, model)?;
        return Ok(vec![(stem(f), GrayImage::new(c.planes, c.bit_depth))]);
    }
    if super::colour::is_colour_file(&spec) {
        // A PALETTE COLOR file is no colour image either: its loader says why (its values
        // are indices), which a colour model would not change.
        crate::image::load_picture(f)?;
        bail!(
            "{spec}: a colour image, and {model} is gray: give gray images, or a colour model \
             (a colour FFDNet)"
        );
    }
    let frames = crate::image::load_windowed(f, window, true)?.frames;
    if frames.len() == 1 {
        return Ok(vec![(
            stem(f),
            frames.into_iter().next().expect("one frame"),
        )]);
    }
    Ok(frames
        .into_iter()
        .enumerate()
        .map(|(k, img)| (format!("{}-f{k}", stem(f)), img))
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

/// The model owners' folders of one table invocation (keys and model shares), removed
/// before it starts and once it has finished.
fn remove_owners(owners: &Path) -> Result<()> {
    match std::fs::remove_dir_all(owners) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", owners.display()))
        }
        _ => Ok(()),
    }
}

/// Images of one run, kept for the figures.
struct Pictures {
    noisy: Array2<f64>,
    float: Array2<f64>,
    secure: Array2<f64>,
}

fn one_run(
    a: &TableArgs,
    model: &TableModel,
    input: &Input,
    input_png: &Path,
    sigma: f64,
    workdir: PathBuf,
    owner_dir: PathBuf,
) -> Result<(Run, Pictures)> {
    let d = pipeline::run(
        pipeline::SecureRun {
            image: input_png.display().to_string(),
            model: Some(model.path.clone()),
            sigma,
            seed: a.seed,
            noise: a.noise.clone(),
            noisy: None,
            stride: a.stride,
            batch: a.batch,
            engine: a.engine,
            workdir: workdir.clone(),
            no_compare: true,
            // One job per model setup here: the weights' opening stays in each run's traffic,
            // comparable with the tables recorded before model masks existed.
            weights_per_job: true,
            // The table measures the protocol, comparable with the tables recorded before files
            // were sealed at rest (`demo` seals them by default).
            plain_files: true,
            // The table shows its own progress, over all runs.
            quiet: true,
            keep_triplets: false,
            owner_dir: Some(owner_dir),
        },
        false,
    )
    .with_context(|| format!("secure run of {} at sigma {sigma}", input.name))?
    .json;
    // Exactly the images the pipeline saw: the clean input as it loaded it, the noisy PNG
    // it shared (planes stacked for colour).
    let colours = input.colours;
    let clean = load_stacked(input_png)?.0;
    let noisy = load_stacked(workdir.join("noisy.png"))?.0;
    // The pipeline's receiver step checked these shares' signatures and job.
    let (secure, share) = combine(
        &workdir.join("out.p0"),
        &workdir.join("out.p1"),
        None,
        &crate::job::receiver::Expect::unchecked(),
    )?;
    let (oracle, float, float_seconds) = model.net.plaintext(
        &noisy,
        &share.job.pre,
        a.stride,
        share.job.scale,
        // The map the gateway made, by the gateway's own rule.
        &NoiseArgs::signal_dependent(a.noise.clone()).level(
            sigma,
            &noisy.pixels,
            (colours, model.net.map_channels().max(1)),
        )?,
    )?;
    // A zip of arrays of other shapes would compare a prefix and pass: refused instead.
    if oracle.dim() != secure.pixels.dim() || float.dim() != secure.pixels.dim() {
        bail!(
            "{}: the secure output is {:?}, the oracle {:?} and the float model's {:?}",
            input.name,
            secure.pixels.dim(),
            oracle.dim(),
            float.dim()
        );
    }
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
    save_stacked(
        &GrayImage {
            pixels: float.clone(),
            bit_depth: 8,
        },
        colours,
        workdir.join("plaintext.png"),
        8,
    )?;
    let c = &clean.pixels;
    let srv = &d["servers"];
    let (h, w) = (c.nrows() / colours, c.ncols());
    // RGB: PSNR over the three channels' values together, SSIM the channels' mean (the
    // FFDNet paper's scoring; `ssim_planes` of one plane is plain SSIM).
    let ssim = |x: &Array2<f64>, y: &Array2<f64>| ssim_planes(x, y, colours);
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

fn write_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

pub fn table(a: TableArgs, json: bool) -> Result<Summary> {
    let t0 = Instant::now();
    let mode = Mode::new(a.quiet, json)?;
    if a.stride == 0 {
        bail!("--stride must be at least 1");
    }
    if a.max_size == Some(0) {
        bail!("--max-size must be at least 1");
    }
    let sigmas = parse_sigmas(&a.sigmas)?;
    // The models first: they may declare the window the images are mapped with.
    let models = Models::load(&a.model, a.models.as_deref(), &sigmas)?;
    let window = models.window(&a.window.window, a.override_model_window)?;
    let colours = models.colours()?;
    if colours != 1 && a.noise.is_some() {
        bail!(
            "--noise: {} is colour; the table adds Gaussian noise of one sigma to colour \
             images (signal-dependent noise on gray images only)",
            models.of(0).path.display()
        );
    }
    let inputs = list_inputs(
        &a.images,
        a.max_size,
        &window,
        colours,
        &models.of(0).path.display().to_string(),
    )?;
    for m in models.all() {
        for i in &inputs {
            let (h, w) = i.clean.pixels.dim();
            if let Some(why) = m.net.refuses(h / colours, w) {
                bail!("{}: {why} ({})", i.name, m.path.display());
            }
        }
    }
    if let Some(spec) = &a.noise {
        PoissonGaussian::parse(spec)?;
        if sigmas.len() != 1 {
            bail!("--noise: give one --sigmas value (it only labels the runs; every run would be the same)");
        }
        for m in models.all() {
            if !matches!(&m.net, Net::Cnn(c) if c.frame.noise_map) {
                bail!(
                    "--noise: {} has no noise-map channel (only a model like FFDNet takes a per-pixel noise level)",
                    m.path.display()
                );
            }
        }
    }
    if a.batch.is_some()
        && models
            .all()
            .iter()
            .all(|m| matches!(m.net, Net::Cnn(_) | Net::Graph(_)))
    {
        bail!("--batch sets an MLP's patches per batch; a CNN run uses the engine's ReLU batch");
    }
    let out = &a.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // The comparison figures draw gray panels: a colour table draws none (its PNGs are in
    // the runs' folders).
    if colours != 1 && !matches!(a.figures.as_deref(), None | Some("none") | Some("")) {
        bail!("--figures: comparison figures are gray; a colour table draws none (--figures none)");
    }
    let fig_names: Vec<String> = match a.figures.as_deref() {
        None if colours != 1 => vec![],
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
    // Shares of another build's format or another run's keys are never picked up.
    let owners = out.join("owner");
    remove_owners(&owners)?;
    let mut resumed = 0usize;
    // Every image's run directory and clean input first; with --resume, every existing record
    // is checked now (a foreign or damaged one is refused before hours of new runs).
    let mut recorded = std::collections::HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let dir = out.join("runs").join(&input.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let input_png = dir.join("clean-input.png");
        save_stacked(
            &input.clean,
            input.colours,
            &input_png,
            input.clean.bit_depth,
        )?;
        if a.resume {
            // The clean image exactly as the pipeline reads it (rounded to its PNG).
            let clean_input = load_stacked(&input_png)?.0.pixels;
            for (j, &sigma) in sigmas.iter().enumerate() {
                let workdir = dir.join(format!("sigma{}", sigma_tag(sigma)));
                if let Some(run) =
                    recorded_run(&workdir, input, &clean_input, sigma, &a, models.of(j))?
                {
                    recorded.insert((i, j), run);
                }
            }
        }
    }
    // Resumed runs count as done from the start (and not in the ETA's rate).
    let resumed_total = recorded.len() as u64;
    let progress = Progress::resumed(mode, "table", total as u64, "runs", resumed_total);
    let mut fresh = 0u64;
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
                    let model = models.of(j);
                    // The model is shared once per table, by its owner, as in a deployment.
                    let owner_dir = owners.join(&model.blake3);
                    let (run, pics) = one_run(
                        &a,
                        model,
                        input,
                        &input_png,
                        sigma,
                        workdir.clone(),
                        owner_dir,
                    )?;
                    if !a.keep_work {
                        remove_bulky(&workdir);
                    }
                    let rec = RunRecord {
                        format: RECORD_FORMAT.into(),
                        protocol: protocol_tag(),
                        seed: a.seed,
                        stride: a.stride,
                        model_blake3: model.blake3.clone(),
                        batch: match model.net {
                            Net::Mlp(_) => a.batch.unwrap_or(a.engine.default_batch()),
                            Net::Cnn(_) | Net::Graph(_) => a.engine.default_relu_batch(),
                        },
                        engine: a.engine,
                        cnn: model.cnn_settings(),
                        noise: a.noise.clone(),
                        run,
                    };
                    write_file(
                        &workdir.join("run.json"),
                        &serde_json::to_string_pretty(&rec)?,
                    )?;
                    fresh += 1;
                    (rec.run, pics)
                }
            };
            progress.println(&format!(
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
            ));
            progress.set(resumed_total + fresh);
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
    progress.finish();
    if !a.keep_work {
        remove_owners(&owners)?;
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
        match (&models.spec, &a.model) {
            (Some(list), _) => format!(" --models \"{list}\""),
            (None, Some(p)) => format!(" --model {}", p.display()),
            (None, None) => String::new(),
        },
        out.display()
    );
    let ctx = TableDoc {
        resumed,
        a: &a,
        sigmas: &sigmas,
        inputs: &inputs,
        runs: &runs,
        avgs: &avgs,
        models: &models,
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
        "crop": crop_note(&inputs, a.max_size), "model": if models.per_sigma() { serde_json::Value::Null } else { models.of(0).info.clone() },
        "models": sigmas.iter().enumerate().map(|(j, s)| serde_json::json!({"sigma": s, "model": models.of(j).info})).collect::<Vec<_>>(),
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
        let c = centre_crop(&img, 3, 1);
        assert_eq!(c.pixels.dim(), (3, 3));
        assert_eq!(c.pixels[[0, 0]], 11.0);
        assert_eq!(centre_crop(&img, 10, 1).pixels, img.pixels);
        // Two planes of 3x5 stacked: each plane's centre, stacked again.
        let two = GrayImage {
            pixels: Array2::from_shape_fn((6, 5), |(y, x)| (10 * y + x) as f64),
            bit_depth: 8,
        };
        let c = centre_crop(&two, 1, 2);
        assert_eq!(c.pixels.dim(), (2, 1));
        assert_eq!((c.pixels[[0, 0]], c.pixels[[1, 0]]), (12.0, 42.0));
    }
}
