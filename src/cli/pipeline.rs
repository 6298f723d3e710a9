//! The whole secure pipeline on one machine, every party as its own process (the two servers
//! talk over authenticated TLS on localhost), then the secure result compared with the
//! plaintext fixed-point oracle and the float model: the `demo` command runs it once, the
//! `table` command once per image and noise level. An MLP, a CNN or a CNN graph.

use std::path::PathBuf;
use std::time::Instant;

use crate::corr::engine_kind::EngineKind;
use anyhow::{Context, Result};
use clap::Args;

use super::inputs::{load_image, model_or_default, ModelFile, NoiseArgs};
use super::procs::{
    model_setup, receiver_checks, receiver_trust, run_servers, s, signed_as, signing_keys, step,
};
use super::Summary;
use crate::formats::bodies::OutputShare;
use crate::formats::signing::Role;
use crate::image::rgb::save_stacked;
use crate::image::{add_noise, quantize_u8, save_png, GrayImage};
use crate::job::plain::{run_cnn, run_denoise, run_graph, Arith};
use crate::job::progress::{Mode, Steps};
use crate::job::receiver::combine;
use crate::metrics::{psnr, ssim, ssim_planes};
use crate::model::cnn::Cnn;
use crate::model::geometry::Geometry;
use crate::model::graph::Graph;
use crate::model::noise_map::PoissonGaussian;
use crate::model::preprocess::Preprocess;

/// One secure run of the whole pipeline, every party its own process: `demo`'s flags, which
/// `demo` runs once and `table` runs per image and noise level.
#[derive(Args)]
pub struct SecureRun {
    /// Clean image (PNG) or builtin:phantom[:size].
    #[arg(long, default_value = "builtin:phantom:256")]
    pub image: String,
    /// Trained model (an MLP or a CNN: .npz, .safetensors or .onnx; a CNN graph: .onnx);
    /// default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Noise level (0..255 scale) added to --image, or the level of --noisy.
    #[arg(long, default_value_t = 25.0)]
    pub sigma: f64,
    /// Seed of the Gaussian noise added to --image.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Signal-dependent noise instead of --sigma, for a CNN with a noise map (FFDNet):
    /// `poisson-gaussian:A,B` (variance = A * pixel + B) is added to --image, and the
    /// gateway computes the per-pixel map from the noisy image and shares it with it.
    #[arg(long)]
    pub noise: Option<String>,
    /// A noisy image to denoise instead of adding noise to --image, which is then only the
    /// clean reference (same size): to compare with other tools on the very same inputs.
    #[arg(long)]
    pub noisy: Option<String>,
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Patches per batch (default: the engine's, 128 for gc and 2048 for gmw).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Nonlinearity engine: gmw (boolean shares, dealer AND triples) or gc (garbled circuits).
    #[arg(long, value_enum, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    /// Working directory for all the files of the run.
    #[arg(long, default_value = "out/demo")]
    pub workdir: PathBuf,
    /// Skip the float and oracle comparisons.
    #[arg(long)]
    pub no_compare: bool,
    /// Open the masked weights inside the job (a one-off job) instead of once for the model
    /// beforehand (`gen-model-mask`, `open-weights`, as a deployment does).
    #[arg(long)]
    pub weights_per_job: bool,
    /// Leave every party's files unencrypted (by default each server's files are sealed to
    /// it and the output shares to the receiver, as a deployment keeps them at rest).
    #[arg(long)]
    pub plain_files: bool,
    /// Show no steps and no progress (otherwise on stderr: a line per step, and the servers'
    /// progress as a bar on a terminal or a line every few seconds elsewhere).
    #[arg(long)]
    pub quiet: bool,
    /// Keep the servers' spent triplet files in the work folder (`serve --keep-triplets`),
    /// to inspect them; by default a server cuts them once consumed.
    #[arg(long)]
    pub keep_triplets: bool,
    /// A folder holding the keys and the model's shares of an earlier run of the same model
    /// (`table`: the model owner shares a model once, as a deployment does, where sharing
    /// it again per run measured its noise-range sweep each time, 7 s of a 64x64 run's 8 s).
    /// The first run with an empty folder fills it; the job's own files stay fresh.
    #[arg(skip)]
    pub owner_dir: Option<PathBuf>,
}

pub fn run(a: SecureRun, json: bool) -> Result<Summary> {
    let t0 = Instant::now();
    let mode = Mode::new(a.quiet, json)?;
    let w = &a.workdir;
    std::fs::create_dir_all(w).with_context(|| format!("cannot create {}", w.display()))?;
    let model_path = model_or_default(&a.model);
    let whole = |net: Whole| {
        let steps = Steps::new(mode, 6 + usize::from(!a.no_compare));
        demo_cnn(&a, &model_path, net, t0, steps)
    };
    let model = match ModelFile::load(&model_path)? {
        ModelFile::Mlp(m) => *m,
        ModelFile::Cnn(c) => return whole(Whole::Cnn(c)),
        ModelFile::Graph(g) => return whole(Whole::Graph(g)),
    };
    if a.noise.is_some() {
        anyhow::bail!("--noise applies to CNNs with a noise map (FFDNet), not to MLPs");
    }
    let mut steps = Steps::new(
        mode,
        6 + usize::from(!a.weights_per_job) + usize::from(!a.no_compare),
    );
    let Prepared {
        clean,
        noisy,
        noisy_png,
        keys,
        seal,
        out_to,
    } = prepare(&a, &model_path, 1, &mut steps)?;
    // Once per model: the dealer's weight mask and the servers' opening of the weights.
    let setup = if a.weights_per_job {
        None
    } else {
        steps.start(
            "model set-up, once per model: the dealer masks the weights, the servers open them",
        );
        Some(model_setup(w, &keys, None, &seal)?)
    };
    steps.start(&sharing_image(&noisy));
    let gw = step(
        &[
            "share-image".into(),
            "--image".into(),
            s(&noisy_png),
            "--sigma".into(),
            a.sigma.to_string(),
            // Shared for this model (its sigma*, its id: the job runs with no other), as the
            // pinned owner signed it.
            "--model".into(),
            s(&w.join("model.pub")),
            "--trust".into(),
            s(&keys.join("trust")),
            "--stride".into(),
            a.stride.to_string(),
            "--out".into(),
            s(&w.join("image")),
        ]
        .into_iter()
        .chain(seal.iter().cloned())
        .chain(signed_as(&keys, Role::Gateway))
        .collect::<Vec<_>>(),
    )?;
    let patches = Geometry::new(
        noisy.pixels.nrows(),
        noisy.pixels.ncols(),
        model.patch_shape(),
        a.stride,
    )
    .num_patches();
    steps.start(&format!(
        "dealer: triplets for {patches} patches ({} engine)",
        a.engine
    ));
    let mut dealer_args = vec![
        "gen-triplets".into(),
        "--model".into(),
        s(&w.join("model.pub")),
        "--image".into(),
        s(&w.join("image.pub")),
        "--batch".into(),
        a.batch.unwrap_or(a.engine.default_batch()).to_string(),
        "--engine".into(),
        a.engine.name().into(),
        "--out".into(),
        s(&w.join("triplets")),
    ];
    dealer_args.extend(seal.iter().cloned());
    dealer_args.extend(signed_as(&keys, Role::Dealer));
    if setup.is_some() {
        dealer_args.extend(["--model-mask".into(), s(&w.join("mask.dealer"))]);
    }
    let dealer = step(&dealer_args)?;
    let extra: Vec<&str> = ["--engine", a.engine.name()]
        .into_iter()
        .chain(out_to.iter().map(String::as_str))
        .chain(a.keep_triplets.then_some("--keep-triplets"))
        .collect();
    let (serve_secs, reports) = servers(&mut steps, w, &keys, &extra, setup.is_some())?;
    let (rec, out_png, secure, share) = receive(&mut steps, w, &keys, &gw, !out_to.is_empty())?;
    let secure_q = quantize_u8(&secure.pixels);
    let p_noisy = psnr(&clean.pixels, &noisy.pixels, 255.0);
    let p_secure = psnr(&clean.pixels, &secure_q, 255.0);
    let s_secure = ssim(&clean.pixels, &secure_q);
    let figure = w.join(BEFORE_AFTER);
    save_png(&before_after(&noisy.pixels, &secure_q), &figure, 8)?;
    let mut lines = vec![
        format!(
            "image {} ({}x{}), sigma {}, model {}",
            a.image,
            clean.pixels.nrows(),
            clean.pixels.ncols(),
            a.sigma,
            model_path.display()
        ),
        format!("PSNR noisy     {p_noisy:.2} dB"),
        format!(
            "PSNR secure    {p_secure:.2} dB (SSIM {s_secure:.4})  -> {}",
            out_png.display()
        ),
        format!("noisy | secure result side by side -> {}", figure.display()),
    ];
    let mut json = serde_json::json!({
        "ok": true, "command": "demo", "engine": a.engine.name(), "psnr_noisy": p_noisy, "psnr_secure": p_secure, "ssim_secure": s_secure,
        "serve_seconds": serve_secs, "gateway": gw, "dealer": dealer, "servers": reports, "receiver": rec,
        "model_setup": setup,
    });
    if !a.no_compare {
        steps.start(COMPARING);
        let pre: Preprocess = share.job.pre;
        let (oracle, _) = run_denoise(
            &model,
            &noisy,
            &pre,
            a.stride,
            Arith::Fixed,
            share.job.scale,
        )?;
        let (float, _) = run_denoise(
            &model,
            &noisy,
            &pre,
            a.stride,
            Arith::Float,
            share.job.scale,
        )?;
        compare(&mut lines, &mut json, &clean, &secure, &oracle, &float);
    }
    if let Some(m) = &setup {
        lines.push(format!(
            "model setup, once per model (gen-model-mask, open-weights): {:.1} s, S0<->S1 traffic {:.1} MB",
            m["seconds"]["gen_model_mask"].as_f64().unwrap_or(0.0)
                + m["seconds"]["open_weights"].as_f64().unwrap_or(0.0),
            m["bytes"]["s0_s1"].as_f64().unwrap_or(0.0) / 1e6
        ));
    }
    let sent: u64 = reports
        .iter()
        .filter_map(|r| r["report"]["link"]["bytes_sent"].as_u64())
        .sum();
    lines.push(format!(
        "job, servers ({} engine): {serve_secs:.1} s, S0<->S1 traffic {:.1} MB; gateway upload {} bytes; receiver download {} bytes; total {:.1} s",
        a.engine,
        sent as f64 / 1e6,
        gw["upload_bytes"],
        rec["download_bytes"],
        t0.elapsed().as_secs_f64()
    ));
    Ok(Summary { lines, json })
}

/// A network run as one whole-image job, its image shared for it and its weights opened in
/// the job (model masks are not supported for either yet): a CNN or a CNN graph.
enum Whole {
    Cnn(Box<Cnn>),
    Graph(Box<Graph>),
}

impl Whole {
    fn colours(&self) -> usize {
        match self {
            Whole::Cnn(m) => m.colours,
            Whole::Graph(_) => 1,
        }
    }

    /// What the dealer deals for, counted.
    fn parts(&self) -> String {
        match self {
            Whole::Cnn(m) => format!("{} convolutions", m.convs.len()),
            Whole::Graph(g) => format!("the {} nodes of a CNN graph", g.nodes.len()),
        }
    }
}

/// The demo with a CNN or a CNN graph: the same parties as real processes, compared with
/// the network's oracle and float inference.
fn demo_cnn(
    a: &SecureRun,
    model_path: &std::path::Path,
    net: Whole,
    t0: Instant,
    mut steps: Steps,
) -> Result<Summary> {
    let w = &a.workdir;
    // A colour model takes colour images (issue 48): their planes stacked, (3h) x w, all
    // along; share-image and reconstruct tell colour from the files themselves.
    let colours = net.colours();
    if a.noise.is_some() {
        match &net {
            Whole::Graph(_) => anyhow::bail!(
                "--noise: {} is a CNN graph, which takes no noise map (one --sigma for the \
                 whole image; docs/graph.md)",
                model_path.display()
            ),
            Whole::Cnn(model) if model.is_colour() => anyhow::bail!(
                "--noise: {} is colour; demo adds signal-dependent noise to gray images only \
                 (share-image takes --noise for a colour model with a map per colour)",
                model_path.display()
            ),
            Whole::Cnn(model) if !model.frame.noise_map => anyhow::bail!(
                "--noise: {} has no noise-map channel (only a model like FFDNet takes a per-pixel noise level)",
                model_path.display()
            ),
            Whole::Cnn(_) => {}
        }
    }
    let Prepared {
        clean,
        noisy,
        noisy_png,
        keys,
        seal,
        out_to,
    } = prepare(a, model_path, colours, &mut steps)?;
    // Sealed to the servers, signed by the step's maker.
    let with_seal = |role: Role, args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|x| x.to_string())
            .chain(seal.iter().cloned())
            .chain(signed_as(&keys, role))
            .collect()
    };
    steps.start(&sharing_image(&noisy));
    let noise_args: Vec<&str> = match &a.noise {
        Some(spec) => vec!["--noise", spec],
        None => Vec::new(),
    };
    let sigma = a.sigma.to_string();
    // The gateway takes model.pub only as the pinned owner signed it.
    let trust = s(&keys.join("trust"));
    let gw = step(&with_seal(
        Role::Gateway,
        &[
            "share-image",
            "--trust",
            &trust,
            "--image",
            &s(&noisy_png),
            "--sigma",
            &sigma,
            "--model",
            &s(&w.join("model.pub")),
            "--out",
            &s(&w.join("image")),
        ]
        .into_iter()
        .chain(noise_args)
        .collect::<Vec<_>>(),
    ))?;
    steps.start(&format!(
        "dealer: triplets for {} over {}x{} pixels ({} engine)",
        net.parts(),
        noisy.pixels.nrows(),
        noisy.pixels.ncols(),
        a.engine
    ));
    let dealer = step(&with_seal(
        Role::Dealer,
        &[
            "gen-triplets",
            "--model",
            &s(&w.join("model.pub")),
            "--image",
            &s(&w.join("image.pub")),
            "--engine",
            a.engine.name(),
            "--out",
            &s(&w.join("triplets")),
        ],
    ))?;
    let extra: Vec<&str> = ["--engine", a.engine.name()]
        .into_iter()
        .chain(out_to.iter().map(String::as_str))
        .chain(a.keep_triplets.then_some("--keep-triplets"))
        .collect();
    let (serve_secs, reports) = servers(&mut steps, w, &keys, &extra, false)?;
    let (rec, out_png, secure, share) = receive(&mut steps, w, &keys, &gw, !out_to.is_empty())?;
    let secure_q = quantize_u8(&secure.pixels);
    // PSNR over every value of every plane; SSIM the planes' mean (docs/results-colour.md).
    let p_noisy = psnr(&clean.pixels, &noisy.pixels, 255.0);
    let p_secure = psnr(&clean.pixels, &secure_q, 255.0);
    let s_secure = ssim_planes(&clean.pixels, &secure_q, colours);
    let figure = w.join(BEFORE_AFTER);
    save_stacked(
        &before_after_planes(&noisy.pixels, &secure_q, colours),
        colours,
        &figure,
        8,
    )?;
    let mut lines = vec![
        format!(
            "image {} ({}x{}{}), {}, CNN {} ({})",
            a.image,
            clean.pixels.nrows() / colours,
            clean.pixels.ncols(),
            if colours == 3 { ", RGB" } else { "" },
            match &a.noise {
                Some(spec) => format!("noise {spec} (a per-pixel map, shared)"),
                None => format!("sigma {}", a.sigma),
            },
            model_path.display(),
            net.parts()
        ),
        format!("PSNR noisy     {p_noisy:.2} dB"),
        format!(
            "PSNR secure    {p_secure:.2} dB (SSIM {s_secure:.4})  -> {}",
            out_png.display()
        ),
        format!("noisy | secure result side by side -> {}", figure.display()),
    ];
    let mut json = serde_json::json!({
        "ok": true, "command": "demo", "network": match net { Whole::Cnn(_) => "cnn", Whole::Graph(_) => "graph" },
        "engine": a.engine.name(), "psnr_noisy": p_noisy,
        "psnr_secure": p_secure, "ssim_secure": s_secure, "serve_seconds": serve_secs, "gateway": gw,
        "dealer": dealer, "servers": reports, "receiver": rec,
    });
    if !a.no_compare {
        steps.start(COMPARING);
        let pre = share.job.pre;
        let (oracle, float) = match &net {
            Whole::Cnn(model) => {
                let params = crate::ring::cnn::CnnFixed {
                    s: share.job.scale,
                    ..crate::ring::cnn::CnnFixed::for_model(model)
                };
                // The map the gateway made, by the gateway's own rule.
                let noise = NoiseArgs::signal_dependent(a.noise.clone()).level(
                    a.sigma,
                    &noisy.pixels,
                    (model.colours, model.map_channels().max(1)),
                )?;
                let (oracle, _) = run_cnn(model, &noisy, &pre, Arith::Fixed, params, &noise)?;
                let (float, _) = run_cnn(model, &noisy, &pre, Arith::Float, params, &noise)?;
                (oracle, float)
            }
            // At the settings share-model shared it at (the file's, else the defaults).
            Whole::Graph(g) => {
                let params = crate::ring::cnn::CnnFixed {
                    s: share.job.scale,
                    ..crate::ring::cnn::CnnFixed::for_graph(g)
                };
                let (oracle, _) = run_graph(g, &noisy, &pre, Arith::Fixed, params)?;
                let (float, _) = run_graph(g, &noisy, &pre, Arith::Float, params)?;
                (oracle, float)
            }
        };
        compare(&mut lines, &mut json, &clean, &secure, &oracle, &float);
    }
    let sent: u64 = reports
        .iter()
        .filter_map(|r| r["report"]["link"]["bytes_sent"].as_u64())
        .sum();
    lines.push(format!(
        "job, servers ({} engine): {serve_secs:.1} s, S0<->S1 traffic {:.1} MB; dealer {} bytes; gateway upload {} bytes; receiver download {} bytes; total {:.1} s",
        a.engine,
        sent as f64 / 1e6,
        dealer["dealer_bytes"],
        gw["upload_bytes"],
        rec["download_bytes"],
        t0.elapsed().as_secs_f64()
    ));
    Ok(Summary { lines, json })
}

/// The inputs every demo starts from: the clean and noisy images (saved in the work folder),
/// the parties' keys, and the model's shares.
struct Prepared {
    clean: GrayImage,
    noisy: GrayImage,
    noisy_png: PathBuf,
    keys: PathBuf,
    /// `--to-s0 .. --to-s1 ..` for every step that writes the servers' files (or nothing).
    seal: Vec<String>,
    /// `--out-to ..` for the servers' output shares (or nothing).
    out_to: Vec<String>,
}

/// `colours`: the model's planes (1 gray, 3 RGB); the images are held as planes stacked.
fn prepare(
    a: &SecureRun,
    model_path: &std::path::Path,
    colours: usize,
    steps: &mut Steps,
) -> Result<Prepared> {
    let w = &a.workdir;
    let name = model_path.display().to_string();
    let load = |spec: &str| -> Result<GrayImage> {
        if colours == 1 {
            return load_image(spec);
        }
        let c = super::colour::colour_input(spec, &name)?;
        Ok(GrayImage::new(c.planes, c.bit_depth))
    };
    let clean = load(&a.image)?;
    let noisy = match &a.noisy {
        None => {
            // On stacked planes: every value of every plane its own normal sample, as
            // `add-noise` adds colour noise (image::rgb::add_noise).
            let n = match &a.noise {
                Some(spec) => PoissonGaussian::parse(spec)?.add_to(&clean, a.seed),
                None => add_noise(&clean, a.sigma, a.seed),
            };
            GrayImage {
                pixels: quantize_u8(&n.pixels),
                bit_depth: 8,
            }
        }
        Some(spec) => {
            let n = load(spec)?;
            if n.pixels.dim() != clean.pixels.dim() {
                anyhow::bail!(
                    "{spec}: the noisy image is {}x{} but the clean image {} is {}x{}",
                    n.pixels.nrows(),
                    n.pixels.ncols(),
                    a.image,
                    clean.pixels.nrows(),
                    clean.pixels.ncols()
                );
            }
            n
        }
    };
    let noisy_png = w.join("noisy.png");
    save_stacked(&noisy, colours, &noisy_png, noisy.bit_depth)?;
    save_stacked(&clean, colours, w.join("clean.png"), clean.bit_depth)?;
    let keys = w.join("keys");
    steps.start("keys for S0, S1, the receiver and the files' makers (keygen)");
    let reused = match &a.owner_dir {
        Some(d) if d.join(OWNER_DONE).exists() => {
            copy_owner_files(d, w)?;
            true
        }
        _ => false,
    };
    if !reused {
        // The servers' keys, and the receiver's file-encryption identity (keygen makes it a
        // link key too, unused here).
        for n in ["s0", "s1", "rx"] {
            step(&[
                "keygen".into(),
                "--force".into(),
                "--name".into(),
                n.into(),
                "--out-dir".into(),
                s(&keys),
            ])?;
        }
        // The makers' signing keys (dealer, owner, gateway) and the servers' trust file.
        signing_keys(&keys)?;
    }
    // Each server's files sealed to it, the output shares to the receiver.
    let (seal, out_to) = if a.plain_files {
        (vec![], vec![])
    } else {
        let rec = |n: &str| s(&keys.join(format!("{n}.age-recipient")));
        (
            vec!["--to-s0".into(), rec("s0"), "--to-s1".into(), rec("s1")],
            vec!["--out-to".into(), rec("rx")],
        )
    };
    steps.start("model owner: sharing the model");
    let mut owner = vec![
        "share-model".into(),
        "--model".into(),
        s(model_path),
        "--out".into(),
        s(&w.join("model")),
    ];
    owner.extend(seal.iter().cloned());
    owner.extend(signed_as(&keys, Role::Owner));
    if !reused {
        step(&owner)?;
        if let Some(d) = &a.owner_dir {
            // Marked complete only once every file is there.
            copy_owner_files(w, d)?;
            crate::fileio::atomic::write_bytes(&d.join(OWNER_DONE), b"")?;
        }
    }
    Ok(Prepared {
        clean,
        noisy,
        noisy_png,
        keys,
        seal,
        out_to,
    })
}

/// Marks an owner folder (`SecureRun::owner_dir`) as complete.
const OWNER_DONE: &str = "complete";

/// The model owner's files of a run: the shares and public header `share-model` wrote.
const OWNER_FILES: [&str; 3] = ["model.p0", "model.p1", "model.pub"];

/// Copies the keys and the model's shares of folder `from` into folder `to`, each written
/// atomically over what a run before left there.
fn copy_owner_files(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let (keys_from, keys_to) = (from.join("keys"), to.join("keys"));
    std::fs::create_dir_all(&keys_to)
        .with_context(|| format!("cannot create {}", keys_to.display()))?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(&keys_from)
        .with_context(|| format!("cannot list {}", keys_from.display()))?
    {
        let e = e.with_context(|| format!("cannot list {}", keys_from.display()))?;
        if e.file_type()?.is_file() {
            files.push((e.path(), keys_to.join(e.file_name())));
        }
    }
    files.extend(OWNER_FILES.map(|f| (from.join(f), to.join(f))));
    for (src, dst) in files {
        let bytes =
            std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        crate::fileio::atomic::write_bytes(&dst, &bytes)?;
    }
    Ok(())
}

const COMPARING: &str = "comparing with the plaintext fixed-point oracle and float inference";

fn sharing_image(noisy: &GrayImage) -> String {
    format!(
        "gateway: sharing the noisy image ({}x{})",
        noisy.pixels.nrows(),
        noisy.pixels.ncols()
    )
}

/// Both servers as processes; S0 shows the protocol's progress unless the steps are off.
fn servers(
    steps: &mut Steps,
    w: &std::path::Path,
    keys: &std::path::Path,
    extra: &[&str],
    opened: bool,
) -> Result<(f64, Vec<serde_json::Value>)> {
    steps.start("servers S0 and S1: the two-party protocol over TLS");
    run_servers(w, keys, extra, None, opened, !steps.mode().is_off())
}

/// The receiver's step as a process (with its identity when the shares are `sealed`), then
/// the same shares combined here for the comparison.
fn receive(
    steps: &mut Steps,
    w: &std::path::Path,
    keys: &std::path::Path,
    gateway: &serde_json::Value,
    sealed: bool,
) -> Result<(serde_json::Value, PathBuf, GrayImage, OutputShare)> {
    steps.start("receiver: reconstructing the image");
    let out_png = w.join("denoised.png");
    let mut args = vec![
        "reconstruct".into(),
        "--share0".into(),
        s(&w.join("out.p0")),
        "--share1".into(),
        s(&w.join("out.p1")),
        "--out".into(),
        s(&out_png),
    ];
    // The servers' signatures (keys/trust) and the job the shares must be of (the id the
    // gateway's share-image printed).
    args.extend(receiver_checks(keys, gateway)?);
    if sealed {
        let id = keys.join("rx.age-identity");
        args.extend(["--identity".into(), s(&id)]);
        crate::formats::sealed::use_identity(&id)?;
    }
    let rec = step(&args)?;
    let trust = receiver_trust(keys)?;
    let job = crate::formats::container::verify(&w.join("image.pub"))?.job_id;
    let expect = crate::job::receiver::Expect { trust: &trust, job };
    let (secure, share) = combine(&w.join("out.p0"), &w.join("out.p1"), None, &expect)?;
    Ok((rec, out_png, secure, share))
}

/// The side-by-side picture of a demo run (the README's first picture).
const BEFORE_AFTER: &str = "before-after.png";

/// The noisy input and the secure result side by side on a white background, the input's
/// values rounded and clipped as its 8-bit file holds them.
fn before_after(noisy: &ndarray::Array2<f64>, result: &ndarray::Array2<f64>) -> GrayImage {
    const GAP: usize = 8;
    let (h, w) = noisy.dim();
    let mut out = ndarray::Array2::from_elem((h, 2 * w + GAP), 255.0);
    out.slice_mut(ndarray::s![.., ..w])
        .assign(&quantize_u8(noisy));
    out.slice_mut(ndarray::s![.., w + GAP..]).assign(result);
    GrayImage::new(out, 8)
}

/// [`before_after`] of `colours` planes stacked: each plane's pair, stacked again.
fn before_after_planes(
    noisy: &ndarray::Array2<f64>,
    result: &ndarray::Array2<f64>,
    colours: usize,
) -> GrayImage {
    let h = noisy.nrows() / colours;
    let pairs: Vec<ndarray::Array2<f64>> = (0..colours)
        .map(|c| {
            let rows = ndarray::s![c * h..(c + 1) * h, ..];
            before_after(
                &noisy.slice(rows).to_owned(),
                &result.slice(rows).to_owned(),
            )
            .pixels
        })
        .collect();
    let views: Vec<_> = pairs.iter().map(|p| p.view()).collect();
    GrayImage::new(
        ndarray::concatenate(ndarray::Axis(0), &views).expect("planes of one size"),
        8,
    )
}

/// The secure result against the plaintext fixed-point oracle and float inference.
fn compare(
    lines: &mut Vec<String>,
    json: &mut serde_json::Value,
    clean: &GrayImage,
    secure: &GrayImage,
    oracle: &ndarray::Array2<f64>,
    float: &ndarray::Array2<f64>,
) {
    let max_diff = oracle
        .iter()
        .zip(secure.pixels.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f64, f64::max);
    let p_oracle = psnr(&clean.pixels, &quantize_u8(oracle), 255.0);
    let p_float = psnr(&clean.pixels, &quantize_u8(float), 255.0);
    lines.push(format!(
        "PSNR oracle    {p_oracle:.2} dB (plaintext fixed point)"
    ));
    lines.push(format!("PSNR float     {p_float:.2} dB (plaintext float)"));
    lines.push(format!(
        "max |secure - oracle| = {max_diff:.3e} (0 means bit-exact)"
    ));
    json["psnr_oracle"] = p_oracle.into();
    json["psnr_float"] = p_float.into();
    json["max_abs_diff_secure_oracle"] = max_diff.into();
}
