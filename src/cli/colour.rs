//! The colour commands (issue 48): `denoise` of an RGB PNG or TIFF with a colour CNN
//! (FFDNet's colour model) in float or in the secure protocol's fixed point, and
//! `add-noise` on one. PSNR over RGB is the FFDNet paper's: the mean squared error over all
//! three channels' values on the 0..255 scale (docs/formats.md).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use super::tools::{run_cnn, Arith, DenoiseArgs};
use super::Summary;
use crate::image::window::{ValueScale, WindowChoice};
use crate::image::{load_picture, quantize_u8, ColourImage, Format, GrayImage, Picture};
use crate::metrics::psnr;
use crate::model::cnn::Cnn;
use crate::model::noise_map::NoiseLevel;
use crate::ring::cnn::CnnFixed;

/// `spec`'s image when it is a colour PNG or TIFF; a gray file is refused by name, since
/// `model` (named `name`) takes colour.
fn colour_input(spec: &str, name: &str) -> Result<ColourImage> {
    if spec.starts_with(crate::image::BUILTIN_PREFIX) {
        bail!("{spec}: a gray image; {name} is colour: give an RGB image, or a gray model");
    }
    match load_picture(spec)? {
        Picture::Colour(c) => Ok(c),
        Picture::Gray(g) => bail!(
            "{spec}: a gray image ({} bits); {name} is colour: give an RGB image, or a gray \
             model",
            g.bit_depth
        ),
    }
}

/// An output path a colour image can be written to: PNG or TIFF (checked before the work).
fn check_output(out: &Path) -> Result<()> {
    if Format::of_extension(out) == Format::Dicom {
        bail!(
            "{}: a colour image is written as PNG or TIFF (colour DICOM output: issue 48)",
            out.display()
        );
    }
    Ok(())
}

/// Whether `spec` names a PNG or TIFF whose header says colour (no pixel decoded).
pub fn is_colour_file(spec: &str) -> bool {
    !spec.starts_with(crate::image::BUILTIN_PREFIX) && crate::image::rgb::is_colour_file(spec)
}

/// `denoise` with a colour model (`path` its file): the RGB image through the model at one
/// uniform sigma, written back in the image's own form (RGB or RGBA, 8 or 16 bits).
pub fn denoise(a: &DenoiseArgs, model: &Cnn, params: CnnFixed, path: &Path) -> Result<Summary> {
    let name = path.display().to_string();
    if a.noise.per_pixel() {
        bail!(
            "--noise-map and --noise: {name} is colour and takes one --sigma for now (per-pixel \
             maps of colour images: issue 48)"
        );
    }
    if a.like.is_some() {
        bail!("--like: a colour image is written as PNG or TIFF, not DICOM");
    }
    if model.window.is_some()
        || !matches!(a.window.window, WindowChoice::Default | WindowChoice::Full)
    {
        bail!("--window: a colour PNG or TIFF takes its full range, and {name} must declare none");
    }
    let img = colour_input(&a.image, &name)?;
    if let Some(o) = &a.out {
        check_output(o)?;
    }
    let clean = match &a.clean {
        Some(c) => {
            let clean = colour_input(c, &name)?;
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
    let scale = ValueScale::grey(img.bit_depth, img.planes.len());
    let sigma = scale
        .level_of(a.sigma, &img.planes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
    let t = Instant::now();
    let pre = model.preprocess(sigma, !a.no_scale_noise);
    let noisy = GrayImage::new(img.planes.clone(), img.bit_depth);
    let (out, oor) = run_cnn(
        model,
        &noisy,
        &pre,
        a.arith,
        params,
        &NoiseLevel::Uniform(sigma),
    )?;
    let secs = t.elapsed().as_secs_f64();
    let mut lines = vec![format!(
        "denoised {} ({}) in {secs:.2} s at sigma {sigma:.4} ({} arithmetic)",
        a.image,
        img.kind(),
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
        res.save(o)?;
        lines.push(format!("wrote {} ({})", o.display(), res.kind()));
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

/// `add-noise` on a colour image: N(0, sigma^2) on every channel independently (seeded),
/// rounded and clipped to 8 bits as the FFDNet paper's colour (CBSD68) noisy images are;
/// written as an 8-bit RGB (or RGBA, alpha kept) PNG or TIFF.
pub fn add_noise(a: &super::gateway::AddNoiseArgs, level: f64) -> Result<Summary> {
    if a.noise.is_some() || a.map_out.is_some() || a.like.is_some() {
        bail!(
            "{}: a colour image takes --sigma only (not --noise, --map-out or --like)",
            a.image
        );
    }
    check_output(&a.out)?;
    let img = match load_picture(&a.image)? {
        Picture::Colour(c) => c,
        Picture::Gray(_) => bail!("{}: not a colour image", a.image),
    };
    let noisy = crate::image::rgb::add_noise(&img, level, a.seed);
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
    };
    q.save(&a.out)?;
    let p = psnr(&img.planes, &q.planes, 255.0);
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}; sigma {level:.4} per channel, seed {}): PSNR over R, G and B {p:.2} dB \
             against the clean image",
            a.out.display(),
            q.kind(),
            a.seed
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": p,
            "colours": 3}),
    })
}

/// `metrics` of two colour images: PSNR over R, G and B (the FFDNet paper's), and SSIM the
/// mean of the three channels' (as gray SSIM on each).
pub fn metrics(reference: &str, test: &str) -> Result<Summary> {
    let load = |spec: &str| -> Result<ColourImage> {
        match load_picture(spec)? {
            Picture::Colour(c) => Ok(c),
            Picture::Gray(_) => bail!("{spec}: a gray image, and {reference} is colour"),
        }
    };
    let (r, t) = (load(reference)?, load(test)?);
    if r.planes.dim() != t.planes.dim() {
        bail!(
            "{reference} is {}x{} but {test} is {}x{}: shapes differ",
            r.height(),
            r.width(),
            t.height(),
            t.width()
        );
    }
    let p = psnr(&r.planes, &t.planes, 255.0);
    let s = (0..3)
        .map(|c| crate::metrics::ssim(&r.plane(c), &t.plane(c)))
        .sum::<f64>()
        / 3.0;
    Ok(Summary {
        lines: vec![format!(
            "PSNR {p:.4} dB  SSIM {s:.6} (RGB: PSNR over all three channels, SSIM their mean)"
        )],
        json: serde_json::json!({"ok": true, "command": "metrics", "psnr": p, "ssim": s,
            "colours": 3}),
    })
}
