//! The gateway's commands: `share-image` (parsed here, shared by [`crate::job::gateway`]) and
//! the `add-noise` tool for experiments.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inputs::{load_image_windowed, output_encoding};
use super::Summary;
use crate::formats::container::id_hex;
use crate::formats::container::Seal;
use crate::formats::receiver_alpha::{alpha_file, stage as stage_alpha};
use crate::formats::receiver_facts::{facts_file, ReceiverFacts};
use crate::formats::sealed::Recipient;
use crate::formats::signing::Role;
use crate::image::window::{Sigma, Units, ValueScale, WindowChoice};
use crate::image::{add_noise as awgn, GrayImage};
use crate::job::gateway::{intensity_line, ShareOptions, Sharer};
use crate::model::noise_map::PoissonGaussian;

/// Secret-share a noisy image for S0 and S1 (a new job).
///
/// The image is normalised ((p/255 - 0.5) * 5, after optional sigma*/sigma scaling), encoded
/// in fixed point and shared once, not per patch: the servers pad it and extract patches from
/// their shares. S1's share is a 32-byte PRG seed, so the upload is about one image's worth.
#[derive(Args)]
pub struct ShareImageArgs {
    /// Noisy image (PNG or TIFF, 8 or 16 bit grayscale; single-frame grayscale DICOM) or
    /// builtin:phantom; for a colour model, an RGB or RGBA PNG or TIFF (8 or 16 bits), whose
    /// alpha goes to <out>.alpha, for the receiver alone.
    #[arg(long)]
    pub image: String,
    /// Output prefix: writes <out>.p0 and <out>.p1 (one per server) and <out>.pub (the public
    /// job header, all the dealer needs).
    #[arg(long, default_value = "image")]
    pub out: PathBuf,
    /// The receiver's file-encryption recipient (an `age1...` key, or the <name>.age-recipient
    /// file keygen wrote): an RGBA image's <out>.alpha is sealed to it, so that only the
    /// receiver reads the alpha (`reconstruct --identity`). Needs --sign-key. Without it the
    /// alpha file is plain, and must reach the receiver by a way the servers cannot read.
    #[arg(long, value_name = "RECIPIENT")]
    pub alpha_to: Option<String>,
    #[command(flatten)]
    pub opts: ShareOpts,
}

/// `--alpha-to`, checked before anything is read: a recipient of the receiver's own (not a
/// server's, which could then read the alpha), with a key to sign what is sealed to it.
fn alpha_recipient(a: &ShareImageArgs) -> Result<Option<Recipient>> {
    let Some(spec) = &a.alpha_to else {
        return Ok(None);
    };
    let r = Recipient::parse(spec)?;
    let seal = &a.opts.seal;
    for (flag, server) in [("--to-s0", &seal.to_s0), ("--to-s1", &seal.to_s1)] {
        if let Some(server) = server {
            if Recipient::parse(server)?.to_string() == r.to_string() {
                bail!("--alpha-to {spec} is {flag}'s recipient: the alpha is the receiver's alone, and that server could read it");
            }
        }
    }
    if seal.sign_key.is_none() {
        bail!("--alpha-to: a sealed file must be signed by its maker: give --sign-key (the gateway's <name>.sign-key from `keygen --signing`)");
    }
    Ok(Some(r))
}

/// How an image is encoded and shared (`share-image`, `share-study`).
#[derive(Args)]
pub struct ShareOpts {
    /// Noise level of the image (required): a number in a PNG's or TIFF's grey levels (the
    /// model's 0..255 scale), `20HU` in Hounsfield units (CT), `20SV` in stored values, or
    /// `auto`: estimated from each image (docs/dicom.md). A DICOM image takes its own units
    /// or `auto` only: a bare number there is refused.
    /// Not needed with a per-pixel map (--noise-map, --noise), which carries the level.
    #[arg(long, value_parser = super::inputs::parse_sigma,
          required_unless_present_any = ["noise", "noise_map", "sigma_per_colour"])]
    pub sigma: Option<Sigma>,
    #[command(flatten)]
    pub window: super::inputs::WindowArgs,
    /// Noise level the model was trained for (sigma*).
    #[arg(long, default_value_t = 25.0)]
    pub model_sigma: f64,
    /// Do not apply the paper's sigma*/sigma scaling. Scaling is on by default: with the
    /// shipped model it measured +0.62 dB at sigma 15 and +1.49 dB at sigma 35 on set12.
    #[arg(long)]
    pub no_scale_noise: bool,
    /// Patch stride.
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Fixed-point fractional bits (must match the model shares).
    #[arg(long, default_value_t = crate::ring::plan::FixedParams::default().s)]
    pub scale: u32,
    /// The model's public header (model.pub from `share-model`): the image is then encoded as
    /// that model takes it (its scale and sigma* replace --scale and --model-sigma; a CNN
    /// gets p/255 instead of the MLP's normalisation, and no patches; a CNN with a noise-map
    /// channel, FFDNet, gets the noise map: --sigma everywhere, or --noise-map / --noise).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub owner: super::keys::OwnerPinArgs,
    /// Map the images with --window even though the model declares another window it was
    /// trained on (its header's `window`); without it such a --window is refused.
    #[arg(long)]
    pub override_model_window: bool,
    #[command(flatten)]
    pub noise: super::inputs::NoiseArgs,
    /// Take a DICOM image's --sigma even where it is more than three times the noise the
    /// image holds by the gateway's own estimate (such a level smooths structure away, and
    /// is refused without this).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub seal: super::keys::SealArgs,
}

impl ShareOpts {
    /// The gateway these options describe, checked in this order: the seal and signing key,
    /// the numbers, the pinned model owner.
    pub fn sharer(&self) -> Result<Sharer> {
        let to = self.seal.outputs(Role::Gateway)?;
        let opts = ShareOptions {
            sigma: self.sigma,
            window: self.window.window.clone(),
            model_sigma: self.model_sigma,
            no_scale_noise: self.no_scale_noise,
            stride: self.stride,
            scale: self.scale,
            model: self.model.clone(),
            override_model_window: self.override_model_window,
            noise: self.noise.plain(),
            force: self.force,
        };
        opts.check()?;
        // Whose model.pub to believe, before it is read.
        let owner = self.owner.load()?;
        Sharer::new(opts, to, owner)
    }
}

pub fn share_image(a: ShareImageArgs) -> Result<Summary> {
    let t = Instant::now();
    let alpha_to = alpha_recipient(&a)?;
    let sharer = a.opts.sharer()?;
    let (img, scale, colours, alpha) =
        if !crate::image::colour::as_gray() && super::colour::is_colour_file(&a.image) {
            let (img, scale, alpha) = colour_input(&a.image, sharer.window())?;
            (img, scale, 3, alpha)
        } else {
            let (img, scale) = load_image_windowed(&a.image, sharer.window())?;
            (img, scale, 1, None)
        };
    let (h, w) = (img.pixels.nrows() / colours, img.pixels.ncols());
    // The planes alone go to the servers; the alpha stays here until the receiver's file.
    // The alpha's file is staged with the shares: all of them appear, or none.
    let alpha_path = alpha_file(&a.out);
    let done =
        sharer.share_planes_with(&img, colours, &scale, &a.image, &a.out, |set, job_id| {
            match &alpha {
                Some(al) => stage_alpha(
                    set,
                    &alpha_path,
                    job_id,
                    al,
                    img.bit_depth,
                    Seal::new(alpha_to.as_ref(), sharer.signer()),
                ),
                None => Ok(()),
            }
        })?;
    let outs: Vec<String> = done
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut notes: Vec<String> = sharer.model_note().map(String::from).into_iter().collect();
    let mut alpha_out = None;
    if alpha.is_some() {
        notes.push(format!(
            "give {} to the receiver alone (reconstruct --alpha): the image's alpha, which \
             the servers did not get{}",
            alpha_path.display(),
            match alpha_to {
                Some(_) => ", sealed to the receiver",
                None => "; it is not encrypted (--alpha-to seals it to the receiver)",
            }
        ));
        alpha_out = Some(alpha_path.display().to_string());
    } else if alpha_to.is_some() {
        notes.push(format!(
            "{} has no alpha: --alpha-to was not needed",
            a.image
        ));
    }
    let mut facts = None;
    // A DICOM's window (and a private level's scaling) for the receiver alone: without it
    // the receiver would have to be told the same --window again.
    if done.private || scale.units != Units::Grey {
        let rx = facts_file(&a.out);
        ReceiverFacts::new(
            id_hex(&done.job_id),
            done.pre.noise_scale,
            done.sigma,
            scale.window,
            scale.units,
        )
        .write_signed(&rx, sharer.signer())?;
        notes.push(format!(
            "{}give {} to the receiver alone (reconstruct --job-facts): the window{}",
            if done.private {
                "the noise level came from the image's pixels, so the servers got stand-ins; "
            } else {
                ""
            },
            rx.display(),
            if done.private {
                ", the level and the scaling"
            } else {
                " the image was shared on"
            }
        ));
        facts = Some(rx.display().to_string());
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![
            match &a.opts.noise.sigma_per_colour {
                // The levels went into the shared map; the job names the nominal sigma.
                Some(l) => {
                    format!(
                    "{}: noise levels per colour plane (R, G, B) {} on the 0..255 scale, shared \
                     in the noise map; the job names the model's nominal sigma {}",
                    a.image,
                    l.0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                    done.sigma
                )
                }
                None => intensity_line(&a.image, &scale, done.sigma, a.opts.sigma),
            },
            format!(
                "image {} ({h}x{w}) shared as {} and {}; job id {}; upload {} bytes in total",
                a.image,
                outs[0],
                outs[1],
                id_hex(&done.job_id),
                done.upload_bytes
            ),
        ]
        .into_iter()
        .chain(notes)
        .collect(),
        json: serde_json::json!({
            "ok": true, "command": "share-image", "job_id": id_hex(&done.job_id), "height": h, "width": w, "colours": colours,
            "outputs": outs, "upload_bytes": done.upload_bytes, "seconds": secs,
            "window": scale.window, "units": scale.units, "clipped": scale.clipped,
            "sigma": done.sigma, "sigma_in_units": scale.in_units(done.sigma),
            "sigma_per_colour": a.opts.noise.sigma_per_colour.as_ref().map(|l| l.0.clone()),
            "receiver_facts": facts, "receiver_alpha": alpha_out, "model_owner_checked": a.opts.model.is_some().then(|| sharer.model_note().is_none()),
        }),
    })
}

/// A colour PNG or TIFF for `share-image` (issue 48): its planes stacked, (3h) x w, on the
/// 0..255 scale, and the full range of its depth (a colour image takes no --window); and an
/// RGBA image's alpha samples (h x w at its depth), which are pixel data: they go to the
/// receiver's own file, never to the servers.
fn colour_input(
    spec: &str,
    window: &WindowChoice,
) -> Result<(GrayImage, ValueScale, Option<ndarray::Array2<u16>>)> {
    if !matches!(window, WindowChoice::Default | WindowChoice::Full) {
        bail!("{spec}: a colour image takes its full range: no --window");
    }
    let c = match crate::image::load_picture(spec)? {
        crate::image::Picture::Colour(c) => c,
        crate::image::Picture::Gray(_) => bail!("{spec}: not a colour image"),
    };
    if let Some(al) = c
        .alpha
        .as_ref()
        .filter(|al| al.dim() != (c.height(), c.width()))
    {
        bail!(
            "{spec}: alpha of {} x {} samples for a {} x {} image",
            al.nrows(),
            al.ncols(),
            c.height(),
            c.width()
        );
    }
    let scale = c.value_scale();
    Ok((GrayImage::new(c.planes, c.bit_depth), scale, c.alpha))
}

/// Add white Gaussian noise of a given sigma (seeded) and save the noisy image: an 8-bit PNG
/// or TIFF, or a DICOM like the input.
#[derive(Args)]
pub struct AddNoiseArgs {
    /// Clean image (PNG, TIFF or DICOM; a multi-frame DICOM whole) or builtin:phantom; or a
    /// folder (a DICOM series or images, in the series' order, slice i with seed + i), whose
    /// outputs go under their names into the new folder --out.
    #[arg(long)]
    pub image: String,
    /// Noise level (required unless --noise): a number on the 0..255 scale of the image's
    /// full container range, `20HU` in Hounsfield units (CT), or `20SV` in stored values.
    /// The noise is added to the stored values, so nothing is clipped but the container.
    #[arg(long, value_parser = super::inputs::parse_sigma,
          required_unless_present_any = ["noise", "sigma_per_colour"])]
    pub sigma: Option<Sigma>,
    /// A colour image only: independent noise of a level per colour plane, R,G,B on the
    /// 0..255 scale (e.g. 10,25,40), for a colour model with a map per colour
    /// (share-image --sigma-per-colour takes the same levels).
    #[arg(long, value_parser = super::inputs::parse_levels, conflicts_with_all = ["sigma", "noise"])]
    pub sigma_per_colour: Option<super::inputs::Levels>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output image, by extension: .tif/.tiff an 8-bit TIFF, .dcm a DICOM like the input (or
    /// --like) at its bit depth, anything else an 8-bit PNG. Values are rounded and clipped
    /// to what the file holds.
    #[arg(long)]
    pub out: PathBuf,
    /// DICOM whose attributes and pixel layout a .dcm output takes (default: the input, when
    /// it is a DICOM).
    #[arg(long)]
    pub like: Option<PathBuf>,
    #[command(flatten)]
    pub series: super::inputs::SeriesArgs,
    /// Signal-dependent noise instead of --sigma: `poisson-gaussian:A,B`, variance =
    /// A * clean pixel + B (0..255 scale).
    #[arg(long)]
    pub noise: Option<String>,
    /// Also write the true per-pixel sigma map as a 2-D f64 .npy (what `share-image
    /// --noise-map` reads).
    #[arg(long)]
    pub map_out: Option<PathBuf>,
}

/// `add-noise` over a folder (a DICOM series or images): slice `i` gets the noise of seed
/// `seed + i`; the outputs go under their inputs' names into the new folder `--out` (all or
/// none), a series into one new derived series.
fn add_noise_folder(a: &AddNoiseArgs, pg: Option<PoissonGaussian>) -> Result<Summary> {
    if a.map_out.is_some() || a.like.is_some() {
        bail!(
            "--image {}: a folder takes neither --map-out nor --like",
            a.image
        );
    }
    let noise = noise_words(a);
    let folder = super::folders::Folder::open(
        std::path::Path::new(&a.image),
        &a.series,
        &format!("{noise} added"),
        &format!(
            "{noise} added by ppdenoise add-noise (seed {} plus the slice's index)",
            a.seed
        ),
        &WindowChoice::Full,
    )?;
    let written = folder.run(
        &a.out,
        |_| 8,
        |i, img, scale| {
            let seed = a.seed.wrapping_add(i as u64);
            Ok(match pg {
                Some(pg) => pg.add_to(img, seed),
                None => awgn(img, noise_level(a, scale)?, seed),
            }
            .pixels)
        },
    )?;
    Ok(Summary {
        lines: vec![format!(
            "wrote {} slices of {} into {} ({noise}; slice i: seed {} + i)",
            written.files.len(),
            a.image,
            a.out.display(),
            a.seed
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out,
            "files": written.files, "series_uid": written.series_uid}),
    })
}

/// `noise sigma 20HU` or `noise poisson-gaussian:A,B`: what add-noise adds, in words.
fn noise_words(a: &AddNoiseArgs) -> String {
    match (&a.noise, a.sigma) {
        (Some(n), _) => format!("noise {n}"),
        (None, Some(s)) => format!("noise sigma {s}"),
        (None, None) => unreachable!("clap requires --sigma or --noise"),
    }
}

/// add-noise's --sigma on the 0..255 scale of an image's full range.
fn noise_level(a: &AddNoiseArgs, scale: &ValueScale) -> Result<f64> {
    match a.sigma {
        Some(Sigma::Auto) => bail!("--sigma auto: add-noise adds a known level; give it"),
        Some(s) => scale
            .level_of(s, &ndarray::Array2::zeros((0, 0)))
            .map_err(anyhow::Error::msg),
        None => bail!(
            "--sigma: required (or --noise); {}",
            crate::image::window::SIGMA_FORMS
        ),
    }
}

/// `add-noise` on a multi-frame image: frame `k` gets the noise of seed `seed + k`, and the
/// output is one DICOM of as many frames.
fn add_noise_frames(
    a: &AddNoiseArgs,
    frames: &[GrayImage],
    pg: Option<PoissonGaussian>,
    enc: &crate::image::Encoding,
    level: f64,
) -> Result<Summary> {
    if let Some(m) = &a.map_out {
        bail!(
            "--map-out {}: one map is for one image, and {} has {} frames",
            m.display(),
            a.image,
            frames.len()
        );
    }
    let mut psnrs = Vec::with_capacity(frames.len());
    let noisy: Vec<GrayImage> = (0u64..)
        .zip(frames)
        .map(|(k, img)| {
            let seed = a.seed.wrapping_add(k);
            let noisy = match pg {
                Some(pg) => pg.add_to(img, seed),
                None => awgn(img, level, seed),
            };
            let q = enc.quantize(&noisy.pixels);
            psnrs.push(crate::metrics::psnr(&img.pixels, &q, 255.0));
            GrayImage {
                pixels: q,
                bit_depth: enc.bit_depth(),
            }
        })
        .collect();
    enc.save_frames(&noisy, &a.out)?;
    let psnr = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}, {} frames; seeds {} to {}): mean PSNR {psnr:.2} dB against the clean frames",
            a.out.display(),
            enc.describe(),
            frames.len(),
            a.seed,
            a.seed.wrapping_add(frames.len() as u64 - 1)
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": psnr,
            "frames": frames.len(), "psnr_frames": psnrs}),
    })
}

pub fn add_noise(a: AddNoiseArgs) -> Result<Summary> {
    if a.sigma == Some(Sigma::Auto) {
        bail!("--sigma auto: add-noise adds a known level; give it");
    }
    let pg = a.noise.as_deref().map(PoissonGaussian::parse).transpose()?;
    let colour = !crate::image::colour::as_gray() && super::colour::is_colour_file(&a.image);
    if a.sigma_per_colour.is_some() && (!colour || super::folders::is_folder(&a.image)) {
        bail!(
            "--sigma-per-colour: {} is not one colour image; a gray image or a folder takes \
             --sigma",
            a.image
        );
    }
    if super::folders::is_folder(&a.image) {
        return add_noise_folder(&a, pg);
    }
    if colour {
        let levels = match (&a.noise, &a.sigma_per_colour) {
            (Some(_), _) => [0.0; 3],
            (None, Some(l)) => [l.0[0], l.0[1], l.0[2]],
            (None, None) => [noise_level(&a, &ValueScale::grey(8, 0))?; 3],
        };
        return add_noise_colour(&a, levels);
    }
    let enc = output_encoding(
        &a.out,
        8,
        a.like.as_deref(),
        Some(&a.image),
        match &a.noise {
            Some(n) => format!("Noise {n} added by ppdenoise add-noise (seed {})", a.seed),
            None => format!(
                "Gaussian noise added by ppdenoise add-noise (sigma {}, seed {})",
                a.sigma.expect("clap requires --sigma or --noise"),
                a.seed
            ),
        },
        (&a.series, &format!("{} added", noise_words(&a))),
        &WindowChoice::Full,
    )?;
    let loaded = super::inputs::load_frames_windowed(&a.image, &WindowChoice::Full, true)?;
    let frames = loaded.frames;
    enc.check_frames(frames.len(), &a.out)?;
    let level = match pg {
        Some(_) => 0.0,
        None => noise_level(&a, &loaded.scale)?,
    };
    if frames.len() > 1 {
        return add_noise_frames(&a, &frames, pg, &enc, level);
    }
    let img = frames.into_iter().next().expect("one frame");
    let noisy = match pg {
        Some(pg) => pg.add_to(&img, a.seed),
        None => awgn(&img, level, a.seed),
    };
    if let Some(m) = &a.map_out {
        let map = match pg {
            Some(pg) => pg.map_of(&img.pixels),
            None => img.pixels.mapv(|_| level),
        };
        crate::fileio::atomic::write_with(m, |f| {
            use ndarray_npy::WriteNpyExt;
            map.write_npy(f)?;
            Ok(())
        })
        .with_context(|| format!("writing {}", m.display()))?;
    }
    let q = GrayImage {
        pixels: enc.quantize(&noisy.pixels),
        bit_depth: enc.bit_depth(),
    };
    enc.save(&q, &a.out)?;
    let psnr = crate::metrics::psnr(&img.pixels, &q.pixels, 255.0);
    let what = match &a.noise {
        Some(n) => n.clone(),
        None => format!(
            "sigma {} = {level:.4} on the 0..255 scale",
            a.sigma.expect("clap requires --sigma or --noise")
        ),
    };
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}; {what}, seed {}): PSNR {:.2} dB against the clean image",
            a.out.display(),
            enc.describe(),
            a.seed,
            psnr
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": psnr}),
    })
}

/// `add-noise` on a colour image: N(0, sigma^2) on every channel independently (seeded),
/// rounded and clipped to 8 bits as the FFDNet paper's colour (CBSD68) noisy images are;
/// written as an 8-bit RGB (or RGBA, alpha kept) PNG or TIFF.
fn add_noise_colour(a: &AddNoiseArgs, levels: [f64; 3]) -> Result<Summary> {
    use crate::image::{load_picture, quantize_u8, ColourImage, Picture};
    use crate::metrics::psnr;
    if a.noise.is_some() || a.map_out.is_some() || a.like.is_some() {
        bail!(
            "{}: a colour image takes --sigma only (not --noise, --map-out or --like)",
            a.image
        );
    }
    super::colour::check_output(&a.out)?;
    let img = match load_picture(&a.image)? {
        Picture::Colour(c) => c,
        Picture::Gray(_) => bail!("{}: not a colour image", a.image),
    };
    let noisy = crate::image::rgb::add_noise_per_colour(&img, levels, a.seed);
    // 8 bits out: a 16-bit source's alpha is scaled to 8 bits with its colour.
    let alpha = img.alpha.as_ref().map(|al| {
        if img.bit_depth == 8 {
            al.clone()
        } else {
            al.mapv(|v| ((f64::from(v) / 257.0).round()) as u16)
        }
    });
    let q = ColourImage {
        planes: quantize_u8(&noisy.planes),
        bit_depth: 8,
        alpha,
        stored_max: None,
    };
    q.save(&a.out)?;
    let p = psnr(&img.planes, &q.planes, 255.0);
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}; {}, seed {}): PSNR over R, G and B {p:.2} dB against the clean image",
            a.out.display(),
            q.kind(),
            if levels.iter().all(|l| *l == levels[0]) {
                format!("sigma {:.4} per channel", levels[0])
            } else {
                format!(
                    "sigma {:.4}, {:.4}, {:.4} for R, G, B",
                    levels[0], levels[1], levels[2]
                )
            },
            a.seed
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": p,
            "colours": 3}),
    })
}
