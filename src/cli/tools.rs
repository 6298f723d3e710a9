//! Plaintext tools: `denoise`, `metrics`, `inspect`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::inputs::{load_clean, load_image, model_or_default, output_encoding};
use super::Summary;
use crate::formats::container::{FormatError, Opened};
use crate::image::window::{DeclaredWindow, Sigma, Units, ValueScale, WindowChoice};
use crate::image::{quantize_u8, Format, GrayImage};
use crate::job::plain::{run_cnn, run_denoise_with, Arith};
use crate::metrics::{psnr, ssim};
use crate::model::cnn::Cnn;
use crate::model::mlp::Model;
use crate::model::noise_map::NoiseLevel;
use crate::model::preprocess::Preprocess;
use crate::ring::cnn::CnnFixed;
use crate::ring::plan::FixedParams;

/// Denoise an image in the clear, in float or in the secure protocol's fixed point.
#[derive(Args)]
pub struct DenoiseArgs {
    /// Trained model (.npz, a PyTorch state dict as .safetensors, or an .onnx export);
    /// default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Noisy image (PNG, TIFF or DICOM; a multi-frame DICOM whole) or builtin:phantom; or a
    /// folder (a DICOM series or images), whose outputs go under their names into the new
    /// folder --out.
    #[arg(long)]
    pub image: String,
    /// Output image, by extension: .tif/.tiff TIFF, .dcm DICOM like the input (or --like),
    /// anything else PNG; PNG and TIFF at the input's bit depth (8 or 16).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// DICOM whose attributes and pixel layout a .dcm output takes (default: the input, when
    /// it is a DICOM).
    #[arg(long)]
    pub like: Option<PathBuf>,
    #[command(flatten)]
    pub series: super::inputs::SeriesArgs,
    #[arg(long, value_enum, default_value = "float")]
    pub arith: Arith,
    /// Noise level of the image (required): a number on the model's 0..255 scale, `20HU`
    /// (CT), `20SV` (stored values) or `auto` (estimated from each image), as share-image.
    /// Not needed with --sigma-per-colour.
    #[arg(long, value_parser = super::inputs::parse_sigma,
          required_unless_present = "sigma_per_colour")]
    pub sigma: Option<Sigma>,
    #[command(flatten)]
    pub window: super::inputs::WindowArgs,
    /// Map the image with --window even though the model declares another window it was
    /// trained on (its file's `window` setting); without it such a --window is refused.
    #[arg(long)]
    pub override_model_window: bool,
    /// Do not apply the paper's sigma*/sigma scaling (on by default, as in share-image).
    #[arg(long)]
    pub no_scale_noise: bool,
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Fixed-point parameters (with --arith fixed).
    #[command(flatten)]
    pub fixed: super::owner::FixedArgs,
    /// Fixed-point parameters of a CNN model (with --arith fixed).
    #[command(flatten)]
    pub cnn_fixed: super::owner::CnnFixedArgs,
    /// Clean reference: print PSNR/SSIM of the input and the result.
    #[arg(long)]
    pub clean: Option<String>,
    #[command(flatten)]
    pub noise: super::inputs::NoiseArgs,
}

impl DenoiseArgs {
    /// --sigma; with --sigma-per-colour (whose levels the noise map carries), their mean,
    /// which only names the run.
    fn sigma(&self) -> Sigma {
        self.sigma.unwrap_or_else(|| {
            let l = &self
                .noise
                .sigma_per_colour
                .as_ref()
                .expect("clap requires one")
                .0;
            Sigma::Scale(l.iter().sum::<f64>() / l.len() as f64)
        })
    }
}

/// A model loaded once for `denoise`, run on image after image.
enum Runner {
    Cnn(Box<Cnn>, CnnFixed),
    Mlp(Box<Model>, FixedParams),
    /// A CNN graph (docs/graph.md) and its fixed-point plan (issue 47).
    Graph(
        Box<crate::model::graph::Graph>,
        Box<crate::ring::graph::GraphPlan>,
    ),
}

impl Runner {
    fn new(a: &DenoiseArgs, path: &std::path::Path) -> Result<Runner> {
        if crate::import::onnx::is_onnx(path) {
            if let crate::import::onnx::Net::Graph(g) = crate::import::onnx::load(path)? {
                if a.arith == Arith::FloatTanhStar
                    || a.noise.per_pixel()
                    || a.noise.sigma_per_colour.is_some()
                {
                    bail!(
                        "{}: a CNN graph (docs/graph.md) runs in float or fixed point at a \
                         uniform --sigma (no noise map; issue 47)",
                        path.display()
                    );
                }
                let params = a.cnn_fixed.graph_params(&g)?;
                let plan = crate::ring::graph::GraphPlan::from_graph(&g, params)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                return Ok(Runner::Graph(Box::new(g), Box::new(plan)));
            }
        }
        if Cnn::is_cnn_file(path)? {
            let model = Cnn::load(path)?;
            // Before any level is probed: a map or levels per colour the model cannot take.
            a.noise.plain().check_maps(model.map_channels())?;
            let params = a.cnn_fixed.params(&model)?;
            return Ok(Runner::Cnn(Box::new(model), params));
        }
        if a.noise.per_pixel() || a.noise.sigma_per_colour.is_some() {
            bail!(
                "--noise-map, --noise and --sigma-per-colour apply to CNNs with a noise-map \
                 channel (FFDNet), not MLPs"
            );
        }
        let model = Model::load(path)?;
        Ok(Runner::Mlp(Box::new(model), a.fixed.params()?))
    }

    /// --window resolved against the window the model file declares (`path`, for errors).
    fn window(&self, a: &DenoiseArgs, path: &std::path::Path) -> Result<WindowChoice> {
        let declared = match self {
            Runner::Cnn(m, _) => m.window.as_ref(),
            Runner::Mlp(m, _) => m.window.as_ref(),
            Runner::Graph(g, _) => g.window.as_ref(),
        };
        if a.override_model_window && declared.is_none() {
            bail!(
                "--override-model-window: {} declares no window (it applies to a model file \
                 with a window setting)",
                path.display()
            );
        }
        let name = path.display().to_string();
        DeclaredWindow::resolve(declared, &a.window.window, a.override_model_window, &name)
            .map_err(anyhow::Error::msg)
    }

    /// The fixed-point oracle of `noisy` at the uniform noise level `sigma`, whatever
    /// --arith and --noise-map ask.
    fn oracle(
        &self,
        a: &DenoiseArgs,
        noisy: &GrayImage,
        sigma: f64,
    ) -> Result<(ndarray::Array2<f64>, u64)> {
        match self {
            Runner::Cnn(model, params) => {
                let pre = model.preprocess(sigma, !a.no_scale_noise);
                let noise = NoiseLevel::Uniform(sigma);
                run_cnn(model, noisy, &pre, Arith::Fixed, *params, &noise)
            }
            Runner::Mlp(..) => self.run_in(a, noisy, sigma, Arith::Fixed),
            Runner::Graph(..) => self.run_in(a, noisy, sigma, Arith::Fixed),
        }
    }

    /// The denoised image and its count of out-of-range pre-activations, at noise level
    /// `sigma` (0..255 scale).
    fn run(
        &self,
        a: &DenoiseArgs,
        noisy: &GrayImage,
        sigma: f64,
    ) -> Result<(ndarray::Array2<f64>, u64)> {
        self.run_in(a, noisy, sigma, a.arith)
    }

    fn run_in(
        &self,
        a: &DenoiseArgs,
        noisy: &GrayImage,
        sigma: f64,
        arith: Arith,
    ) -> Result<(ndarray::Array2<f64>, u64)> {
        match self {
            Runner::Cnn(model, params) => {
                let pre = model.preprocess(sigma, !a.no_scale_noise);
                let noise =
                    a.noise
                        .level(sigma, &noisy.pixels, (model.colours, model.map_channels()))?;
                run_cnn(model, noisy, &pre, arith, *params, &noise)
            }
            Runner::Mlp(model, params) => {
                let pre = Preprocess::new(sigma, model.meta.sigma, !a.no_scale_noise);
                run_denoise_with(model, noisy, &pre, a.stride, arith, *params)
            }
            Runner::Graph(g, plan) => {
                let pre = g.preprocess(sigma, !a.no_scale_noise);
                let (h, w) = noisy.pixels.dim();
                g.padded_size(h, w)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
                Ok(match arith {
                    Arith::Fixed => crate::ring::graph::denoise(plan, &noisy.pixels, &[], &pre),
                    _ => {
                        let out = g
                            .denoise_float(&noisy.pixels, &pre, &[])
                            .map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
                        (out, 0)
                    }
                })
            }
        }
    }

    /// For a graph in fixed point: the worst-case distance of its output to float, in grey
    /// levels, over images of `noisy`'s range (docs/graph.md, "Error bound").
    fn float_bound(&self, a: &DenoiseArgs, noisy: &GrayImage, sigma: f64) -> Option<f64> {
        match self {
            Runner::Graph(g, plan) if a.arith == Arith::Fixed => {
                let pre = g.preprocess(sigma, !a.no_scale_noise);
                let top = noisy.pixels.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                Some(plan.output_bound(g, &pre, top))
            }
            _ => None,
        }
    }

    /// For a graph in fixed point: the largest distance of `out` (its fixed-point output of
    /// `noisy`) to the float run's, in grey levels, measured on this image. The worst case of
    /// [`Runner::float_bound`] is loose by orders of magnitude on deep graphs (docs/graph.md,
    /// "Error bound"): this is the figure that says how far the two are.
    fn float_gap(
        &self,
        a: &DenoiseArgs,
        noisy: &GrayImage,
        sigma: f64,
        out: &ndarray::Array2<f64>,
    ) -> Result<Option<f64>> {
        match self {
            Runner::Graph(..) if a.arith == Arith::Fixed => {
                let (float, _) = self.run_in(a, noisy, sigma, Arith::Float)?;
                let gap = out
                    .iter()
                    .zip(&float)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                Ok(Some(gap))
            }
            _ => Ok(None),
        }
    }
}

/// A worst-case distance to float wider than this (the whole 8-bit scale) says nothing of an
/// image: `denoise` then says so beside the measured one, which it always prints.
const USEFUL_BOUND: f64 = 255.0;

/// --sigma on the 0..255 scale of `img`, refused where the model's fixed point does not hold
/// for it (the owner's sweep's test at the image's own span and level, as share-image's
/// range check, measured here on the model itself).
fn level(
    a: &DenoiseArgs,
    runner: &Runner,
    img: &GrayImage,
    scale: &ValueScale,
    name: &str,
) -> Result<f64> {
    let sigma = scale
        .level_of(a.sigma(), &img.pixels)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    // A model with a noise map takes any level to MAX_SIGMA (share-model records no range).
    // A graph's fixed point is not probed here yet: its out-of-range values are counted and
    // warned about after its run (issue 47; share-model records no range for one either).
    if matches!(runner, Runner::Cnn(m, _) if m.frame.noise_map)
        || matches!(runner, Runner::Graph(..))
    {
        return Ok(sigma);
    }
    let span = crate::ring::sweep::span(&img.pixels);
    let failed = std::cell::RefCell::new(None);
    let probe = crate::ring::sweep::probe(span, sigma, |noisy, s| {
        runner
            .oracle(a, &GrayImage::new(noisy.clone(), 8), s)
            .unwrap_or_else(|e| {
                *failed.borrow_mut() = Some(e);
                (noisy.clone(), 0)
            })
    });
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    if !probe.holds() {
        bail!(
            "{name}: --sigma {}: noise level {sigma:.3} on the model's 0..255 scale, on values \
             spanning {span:.0} levels, is past what the model's fixed point holds for ({} of \
             its pre-activations out of range on the phantom there): a narrower --window \
             raises the level (e.g. a CT's soft tissue, --window -160:240), or use a model \
             with a noise map (FFDNet)",
            a.sigma(),
            probe.out_of_range
        );
    }
    Ok(sigma)
}

/// `denoise` over a folder: every slice denoised alone, written under its name into the new
/// folder `--out` (all or none), a DICOM series into one new derived series.
fn denoise_folder(a: &DenoiseArgs, path: &std::path::Path) -> Result<Summary> {
    let Some(out) = &a.out else {
        bail!("--image {}: a folder needs --out <new folder>", a.image);
    };
    if a.clean.is_some()
        || a.like.is_some()
        || a.noise.per_pixel()
        || a.noise.sigma_per_colour.is_some()
    {
        bail!(
            "--image {}: a folder takes none of --clean, --like, --noise-map, --noise and \
             --sigma-per-colour",
            a.image
        );
    }
    let t = Instant::now();
    let runner = Runner::new(a, path)?;
    if matches!(&runner, Runner::Cnn(m, _) if m.is_colour()) {
        bail!(
            "--image {}: {} is colour; it denoises one RGB PNG or TIFF at a time",
            a.image,
            path.display()
        );
    }
    let window = runner.window(a, path)?;
    let folder = super::folders::Folder::open(
        std::path::Path::new(&a.image),
        &a.series,
        &format!(
            "denoised in the clear, {}, sigma {}",
            path.file_stem().unwrap_or_default().to_string_lossy(),
            a.sigma()
        ),
        "Denoised by ppdenoise denoise (in the clear)",
        &window,
    )?;
    let mut oor = 0;
    let written = folder.run(
        out,
        |img| img.bit_depth,
        |i, noisy, scale| {
            let sigma = level(a, &runner, noisy, scale, &format!("{} slice {i}", a.image))?;
            let (den, o) = runner.run(a, noisy, sigma)?;
            oor += o;
            Ok(den)
        },
    )?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![format!(
            "denoised {} slices of {} in {secs:.2} s into {}",
            written.files.len(),
            a.image,
            out.display()
        )],
        json: serde_json::json!({"ok": true, "command": "denoise", "seconds": secs,
            "out": out, "files": written.files, "series_uid": written.series_uid,
            "out_of_range": oor}),
    })
}

/// A colour image refused by the loader, named with the gray model it was meant for.
fn gray_model_refuses(e: anyhow::Error, model: &std::path::Path) -> anyhow::Error {
    match e.downcast_ref::<crate::image::ImageError>() {
        Some(crate::image::ImageError::Colour { path, kind }) => anyhow::anyhow!(
            "{}: a colour image ({kind}); {} is gray: give --as-gray to denoise its luma \
             (BT.601), or a colour model",
            path.display(),
            model.display()
        ),
        _ => e,
    }
}

pub fn denoise(a: DenoiseArgs) -> Result<Summary> {
    if a.stride == 0 {
        bail!("--stride must be at least 1");
    }
    let path = model_or_default(&a.model);
    if super::folders::is_folder(&a.image) {
        return denoise_folder(&a, &path);
    }
    // The model first: its file may declare the window the image is mapped with.
    let runner = Runner::new(&a, &path)?;
    if let Runner::Cnn(m, params) = &runner {
        if m.is_colour() {
            return denoise_colour(&a, m, *params, &path);
        }
    }
    let window = runner.window(&a, &path)?;
    let loaded = super::inputs::load_frames_windowed(&a.image, &window, true)
        .map_err(|e| gray_model_refuses(e, &path))?;
    let (frames, scale) = (loaded.frames, loaded.scale);
    if frames.len() > 1 && (a.clean.is_some() || a.noise.per_pixel()) {
        bail!(
            "{} has {} frames: --clean, --noise-map and --noise take single images",
            a.image,
            frames.len()
        );
    }
    let noisy = &frames[0];
    // The output's form is checked before the work.
    let enc = match &a.out {
        Some(o) => Some(output_encoding(
            o,
            noisy.bit_depth,
            a.like.as_deref(),
            Some(&a.image),
            format!(
                "Denoised by ppdenoise denoise (in the clear, {} arithmetic, model {})",
                a.arith
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            (
                &a.series,
                &format!(
                    "denoised in the clear, {}, sigma {}",
                    path.file_stem().unwrap_or_default().to_string_lossy(),
                    a.sigma()
                ),
            ),
            &window,
        )?),
        None => None,
    };
    if let (Some(o), Some(enc)) = (&a.out, &enc) {
        enc.check_frames(frames.len(), o)?;
    }
    // The clean reference on the noisy image's window (a CT's own, or the noisy image's
    // auto range: the same scale for both).
    let clean_choice = match &window {
        WindowChoice::Default | WindowChoice::Auto => WindowChoice::Range(scale.window),
        other => other.clone(),
    };
    let clean = match a.clean.as_deref() {
        Some(c) if scale.units == Units::Grey => Some(load_clean(c, noisy.pixels.dim(), &a.image)?),
        Some(c) => {
            let (img, _) = super::inputs::load_image_windowed(c, &clean_choice)?;
            if img.pixels.dim() != noisy.pixels.dim() {
                bail!("--clean {c}: its size is not {}'s", a.image);
            }
            Some(img)
        }
        None => None,
    };
    let t = Instant::now();
    // Every frame of a multi-frame image, one after another.
    let mut outs = Vec::with_capacity(frames.len());
    let mut oor = 0;
    let mut levels = Vec::with_capacity(frames.len());
    let mut bound: Option<f64> = None;
    let mut gap: Option<f64> = None;
    for noisy in &frames {
        let sigma = level(&a, &runner, noisy, &scale, &a.image)?;
        levels.push(sigma);
        let (out, o) = runner.run(&a, noisy, sigma)?;
        if let Some(g) = runner.float_gap(&a, noisy, sigma, &out)? {
            gap = Some(gap.map_or(g, |m| m.max(g)));
        }
        outs.push(out);
        oor += o;
        if let Some(b) = runner.float_bound(&a, noisy, sigma) {
            bound = Some(bound.map_or(b, |m| m.max(b)));
        }
    }
    let out = &outs[0];
    let secs = t.elapsed().as_secs_f64();
    let q = quantize_u8(out);
    let mut lines = vec![format!(
        "denoised {} in {secs:.2} s{}",
        a.image,
        if outs.len() > 1 {
            format!(" ({} frames)", outs.len())
        } else {
            String::new()
        }
    )];
    lines.push(crate::job::gateway::intensity_line(
        &a.image,
        &scale,
        levels[0],
        Some(a.sigma()),
    ));
    let mut json = serde_json::json!({"ok": true, "command": "denoise", "seconds": secs,
        "out_of_range": oor, "window": scale.window, "units": scale.units,
        "clipped": scale.clipped, "sigma": levels[0],
        "sigma_in_units": scale.in_units(levels[0])});
    if let Some(g) = gap {
        json["float_difference"] = g.into();
    }
    // The bound holds only while every value stays in range; beside the measured distance it
    // is printed where it says something (a deep graph's is loose by orders of magnitude).
    match bound {
        Some(b) if oor == 0 => {
            let measured = gap.map_or(String::new(), |g| {
                format!("fixed point within {g:.4} grey levels of float on this image (measured); ")
            });
            lines.push(if b <= USEFUL_BOUND {
                format!(
                    "{measured}at most {b:.4} on any image of this range (a worst case, \
                     docs/graph.md)"
                )
            } else {
                format!(
                    "{measured}the worst case over all images of this range ({b:.3e} grey \
                     levels) is too loose to bound a graph this deep (docs/graph.md, \
                     \"Error bound\")"
                )
            });
            json["float_bound"] = b.into();
        }
        Some(_) => {
            lines.push(format!(
                "no bound on the distance to float: values left the fixed-point range{}",
                gap.map_or(String::new(), |g| format!(
                    " ({g:.4} grey levels on this image, measured)"
                ))
            ));
            json["float_bound"] = serde_json::Value::Null;
        }
        None => {}
    }
    if oor > 0 {
        lines.push(format!(
            "warning: {oor} pre-activations left the fixed-point range (the secure result \
             would be this same image): a narrower --window, or a model with a noise map \
             (FFDNet), keeps them in"
        ));
    }
    if let (Some(o), Some(enc)) = (&a.out, &enc) {
        let frames: Vec<GrayImage> = outs
            .iter()
            .map(|out| GrayImage {
                pixels: out.clone(),
                bit_depth: enc.bit_depth(),
            })
            .collect();
        enc.save_frames(&frames, o)?;
        lines.push(format!("wrote {} ({})", o.display(), enc.describe()));
        json["out"] = serde_json::json!(o);
    }
    if let Some(clean) = &clean {
        let (pn, pd) = (
            psnr(&clean.pixels, &noisy.pixels, 255.0),
            psnr(&clean.pixels, &q, 255.0),
        );
        let sd = ssim(&clean.pixels, &q);
        lines.push(format!(
            "PSNR noisy {pn:.2} dB -> denoised {pd:.2} dB (SSIM {sd:.4})"
        ));
        json["psnr_noisy"] = pn.into();
        json["psnr"] = pd.into();
        json["ssim"] = sd.into();
    }
    Ok(Summary { lines, json })
}

/// PSNR and SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of two images.
#[derive(Args)]
pub struct MetricsArgs {
    /// Reference image.
    pub reference: String,
    /// Test image.
    pub test: String,
}

pub fn metrics(a: MetricsArgs) -> Result<Summary> {
    if !crate::image::colour::as_gray() && super::colour::is_colour_file(&a.reference) {
        return super::colour::metrics(&a.reference, &a.test);
    }
    let r = load_image(&a.reference)?;
    let t = load_image(&a.test)?;
    if r.pixels.dim() != t.pixels.dim() {
        bail!(
            "{} is {:?} but {} is {:?}: shapes differ",
            a.reference,
            r.pixels.dim(),
            a.test,
            t.pixels.dim()
        );
    }
    let p = psnr(&r.pixels, &t.pixels, 255.0);
    let s = ssim(&r.pixels, &t.pixels);
    Ok(Summary {
        lines: vec![format!("PSNR {p:.4} dB  SSIM {s:.6}")],
        json: serde_json::json!({"ok": true, "command": "metrics", "psnr": p, "ssim": s}),
    })
}

/// What `inspect` says of a CNN: its family, shapes, and what it costs per input pixel.
fn inspect_cnn(m: &Cnn) -> Summary {
    let r2 = m.frame.sub_images() as f64;
    let last = m.convs.len() - 1;
    let relus: f64 = m.convs[..last].iter().map(|c| c.cout as f64).sum::<f64>() / r2;
    let macs: f64 = m
        .convs
        .iter()
        .map(|c| (c.cout * c.fan_in()) as f64)
        .sum::<f64>()
        / r2;
    let fixed = CnnFixed::for_model(m);
    let j = serde_json::json!({"ok": true, "command": "inspect", "kind": "cnn model",
        "family": crate::model::cnn::describe_frame(&m.frame),
        "convolutions": m.convs.len(), "channels": m.channels(),
        "kernels": m.convs.iter().map(|c| c.k).collect::<Vec<_>>(),
        "frame": {"unshuffle": m.frame.unshuffle, "noise_map": m.frame.noise_map,
            "map_channels": m.map_channels()},
        "colours": m.colours,
        "residual": m.meta.residual, "sigma": m.meta.sigma,
        "noise_level": match m.map_channels() {
            0 => "the model's sigma* (images are scaled to it)",
            1 => "any: the noise map (share-image --sigma, --noise-map or --noise)",
            _ => "any, per colour plane: a map per colour (share-image --sigma, --sigma-per-colour, --noise-map or --noise)",
        },
        "relus_per_pixel": relus, "macs_per_pixel": macs,
        "fixed_point": {"s": fixed.s, "ws": fixed.ws, "k": fixed.k,
            "from": if m.fixed_point.is_some() { "the model file" } else { "the defaults" }},
        "receptive_field": m.receptive_field() * m.frame.unshuffle,
        "window": m.window.map(|d| d.to_string())});
    Summary {
        lines: vec![serde_json::to_string_pretty(&j).expect("json")],
        json: j,
    }
}

/// What `inspect` says of an MLP.
fn inspect_mlp(m: &Model) -> Summary {
    let j = serde_json::json!({"ok": true, "command": "inspect", "kind": "model",
        "widths": m.widths(), "meta": m.meta, "window": m.window.map(|d| d.to_string())});
    Summary {
        lines: vec![serde_json::to_string_pretty(&j).expect("json")],
        json: j,
    }
}

/// Side of the image a graph's per-pixel costs are measured on (rounded up to the stride).
const GRAPH_COST_SIDE: usize = 256;

/// What `inspect` says of a CNN graph: its ops, total stride, reach, fixed point, and per op
/// kind the comparisons and multiply-adds per pixel of its plan (on a 256 x 256 image).
fn inspect_graph(path: &std::path::Path, g: &crate::model::graph::Graph) -> Result<Summary> {
    let at = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    let fixed = g
        .fixed_point
        .map_or(CnnFixed::default(), |[s, ws, k]| CnnFixed { s, ws, k });
    let plan = crate::ring::graph::GraphPlan::from_graph(g, fixed).map_err(at)?;
    let (rows, cols) = (g.reach(0).map_err(at)?, g.reach(1).map_err(at)?);
    let (h, w) = crate::ring::graph::padded_dims(plan.stride, GRAPH_COST_SIDE, GRAPH_COST_SIDE);
    let costs = plan.costs(h, w).map_err(at)?;
    let total =
        |f: fn(&crate::ring::graph::costs::KindCost) -> f64| -> f64 { costs.values().map(f).sum() };
    let mut ops: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in &g.nodes[1..] {
        *ops.entry(n.op.name()).or_default() += 1;
    }
    let j = serde_json::json!({"ok": true, "command": "inspect", "kind": "cnn graph",
        "nodes": g.nodes.len(), "ops": ops, "sigma": g.sigma,
        "total_stride": plan.stride,
        "reach": {"above": rows.before, "below": rows.after, "left": cols.before, "right": cols.after},
        "fixed_point": {"s": fixed.s, "ws": fixed.ws, "k": fixed.k,
            "from": if g.fixed_point.is_some() { "the model file" } else { "the defaults" }},
        "rescalings": plan.truncations(),
        "costs_measured_on": [h, w],
        "comparisons_per_pixel": total(|c| c.comparisons_per_pixel),
        "macs_per_pixel": total(|c| c.macs_per_pixel),
        "per_op": costs,
        "window": g.window.map(|d| d.to_string())});
    Ok(Summary {
        lines: vec![serde_json::to_string_pretty(&j)?],
        json: j,
    })
}

/// Print the header of any file ppdenoise writes after checking its sizes and checksum (or a
/// summary of a model or image).
#[derive(Args)]
pub struct InspectArgs {
    #[arg(required_unless_present = "series")]
    pub file: Option<PathBuf>,
    /// List the DICOM series of an export instead (a folder, its sub-folders walked, or a
    /// DICOMDIR): UID, number, description, modality and slices of each, for
    /// `share-study --series`.
    #[arg(long, value_name = "DIR|DICOMDIR", conflicts_with = "file")]
    pub series: Option<PathBuf>,
    // A sealed file's reader: its header (ids, tile) is then shown, e.g. for a scheduler's
    // script that keys a run on the triplet id.
    #[command(flatten)]
    pub identity: super::keys::IdentityArgs,
}

/// `inspect --series`: an export's series, and what it skips.
fn inspect_series(input: &std::path::Path) -> Result<Summary> {
    let found = crate::image::series::survey(input, crate::formats::study::MAX_SLICES)?;
    if found.series.is_empty() {
        bail!(
            "{}: holds images ({} of them), not DICOM series",
            input.display(),
            found.images.len()
        );
    }
    let mut lines = vec![format!(
        "{}: {} series{}",
        input.display(),
        found.series.len(),
        if found.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} object(s) skipped (not images)", found.skipped.len())
        }
    )];
    lines.extend(found.series.iter().map(|s| format!("  {}", s.line())));
    lines.extend(found.skipped.iter().map(|l| format!("  {l}")));
    let series: Vec<serde_json::Value> = found.series.iter().map(|s| s.json()).collect();
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "inspect", "kind": "series",
            "series": series, "skipped": found.skipped}),
    })
}

pub fn inspect(a: InspectArgs) -> Result<Summary> {
    a.identity.load()?;
    if let Some(dir) = &a.series {
        return inspect_series(dir);
    }
    let file = a.file.as_ref().expect("clap requires it without --series");
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let model = ["npz", "safetensors", "onnx"].contains(&ext.to_ascii_lowercase().as_str());
    // An ONNX file is read once and told by what it holds.
    if model && crate::import::onnx::is_onnx(file) {
        return match crate::import::onnx::load(file)? {
            crate::import::onnx::Net::Graph(g) => inspect_graph(file, &g),
            crate::import::onnx::Net::Cnn(m) => Ok(inspect_cnn(&m)),
            crate::import::onnx::Net::Mlp(m) => Ok(inspect_mlp(&m)),
        };
    }
    if model && Cnn::is_cnn_file(file)? {
        return Ok(inspect_cnn(&Cnn::load(file)?));
    }
    if model {
        return Ok(inspect_mlp(&Model::load(file)?));
    }
    // One open: the format is told from the file's first bytes, and a ppdenoise file is
    // then checked through the same handle.
    let mut f = std::fs::File::open(file).map_err(|e| FormatError::Io(file.clone(), e))?;
    let mut head = Vec::with_capacity(132);
    (&mut f)
        .take(132)
        .read_to_end(&mut head)
        .map_err(|e| FormatError::Io(file.clone(), e))?;
    if let Some(format) = Format::sniff(&head) {
        drop(f);
        let loaded = crate::image::load_windowed(file, &WindowChoice::Default, true)?;
        let i = &loaded.frames[0];
        let (h, w) = i.pixels.dim();
        let mut j = serde_json::json!({"ok": true, "command": "inspect", "kind": "image",
            "format": format.to_string(), "height": h, "width": w, "bit_depth": i.bit_depth,
            "frames": loaded.frames.len(), "units": loaded.scale.units,
            "default_window": loaded.scale.window.to_string(),
            "outside_default_window": loaded.scale.clipped,
            // What `--sigma auto` would take, in the image's units.
            "noise_estimate": crate::image::noise_estimate::estimate_sigma(&i.pixels)
                .map(|s| loaded.scale.in_units(s))});
        if format == Format::Dicom {
            let t = crate::image::DicomTemplate::read(file)?;
            let it = t.intensity();
            let (lo, hi) = it.stored_range();
            j["bits_stored"] = it.bits_stored.into();
            j["signed"] = it.signed.into();
            j["stored_range"] = serde_json::json!([lo, hi]);
            j["modality"] = it.modality.clone().into();
            j["rescale_slope"] = it.slope.into();
            j["rescale_intercept"] = it.intercept.into();
            j["rescale_type"] = it.rescale_type.clone().into();
            j["monochrome1"] = it.monochrome1.into();
        }
        return Ok(Summary {
            lines: vec![serde_json::to_string_pretty(&j)?],
            json: j,
        });
    }
    // The whole file is checked, not just the header: inspect is how a user asks whether a
    // share or triplet file survived a copy.
    let bytes = f
        .metadata()
        .with_context(|| format!("{}: cannot read", file.display()))?
        .len();
    let h = Opened::from_file(file, f)?.verify()?;
    let mut j = h.to_json();
    j["ok"] = true.into();
    j["checksum"] = "ok".into();
    j["file_bytes"] = bytes.into();
    Ok(Summary {
        lines: vec![serde_json::to_string_pretty(&j)?],
        json: j,
    })
}

/// `denoise` with a colour model (`path` its file): the RGB image through the model at one
/// sigma, a sigma per colour or a per-pixel map (as share-image takes them), written back in
/// the image's own form (RGB or RGBA, 8 or 16 bits).
fn denoise_colour(
    a: &DenoiseArgs,
    model: &Cnn,
    params: CnnFixed,
    path: &std::path::Path,
) -> Result<Summary> {
    let name = path.display().to_string();
    if model.window.is_some()
        || !matches!(a.window.window, WindowChoice::Default | WindowChoice::Full)
    {
        bail!("--window: a colour PNG or TIFF takes its full range, and {name} must declare none");
    }
    // A .dcm output is written like the colour DICOM read (or --like), as reconstruct does.
    let dicom_out = a
        .out
        .as_deref()
        .filter(|o| Format::of_extension(o) == Format::Dicom);
    let (img, template) =
        super::colour::colour_input_like(&a.image, &name, a.like.as_deref(), dicom_out)?;
    let clean = match &a.clean {
        Some(c) => {
            let clean = super::colour::colour_input(c, &name)?;
            if clean.planes.dim() != img.planes.dim() {
                bail!(
                    "--clean {c}: {}x{} pixels, but {} is {}x{}",
                    clean.height(),
                    clean.width(),
                    a.image,
                    img.height(),
                    img.width()
                );
            }
            Some(clean)
        }
        None => None,
    };
    let scale = img.value_scale();
    let sigma = scale
        .level_of(a.sigma(), &img.planes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
    let t = Instant::now();
    let pre = model.preprocess(sigma, !a.no_scale_noise);
    let noisy = GrayImage::new(img.planes.clone(), img.bit_depth);
    let noise = a
        .noise
        .level(sigma, &noisy.pixels, (model.colours, model.map_channels()))
        .with_context(|| format!("{}, the model {name}", a.image))?;
    let (out, oor) = run_cnn(model, &noisy, &pre, a.arith, params, &noise)?;
    let secs = t.elapsed().as_secs_f64();
    let mut lines = vec![format!(
        "denoised {} ({}) in {secs:.2} s at {} ({} arithmetic)",
        a.image,
        img.kind(),
        match &noise {
            NoiseLevel::Uniform(s) => format!("sigma {s:.4}"),
            other => other.describe(),
        },
        if a.arith == Arith::Fixed {
            "fixed-point"
        } else {
            "float"
        }
    )];
    let mut json = serde_json::json!({"ok": true, "command": "denoise", "seconds": secs,
        "out_of_range": oor, "sigma": sigma, "colours": 3});
    if oor > 0 {
        lines.push(format!(
            "warning: {oor} pre-activations left the fixed-point range (the secure result \
             would be this same image)"
        ));
    }
    if let Some(o) = &a.out {
        let res = img.with_planes(out.clone());
        match &template {
            Some(t) => res.save_like(t, o)?,
            None => res.save(o)?,
        }
        lines.push(format!(
            "wrote {} ({})",
            o.display(),
            match &template {
                Some(_) => "a derived RGB DICOM, explicit VR little endian".to_string(),
                None => res.kind(),
            }
        ));
        json["out"] = serde_json::json!(o);
    }
    if let Some(clean) = &clean {
        let (pn, pd) = (
            psnr(&clean.planes, &img.planes, 255.0),
            psnr(&clean.planes, &quantize_u8(&out), 255.0),
        );
        lines.push(format!(
            "PSNR over R, G and B: noisy {pn:.2} dB -> denoised {pd:.2} dB"
        ));
        json["psnr_noisy"] = pn.into();
        json["psnr"] = pd.into();
    }
    Ok(Summary { lines, json })
}
