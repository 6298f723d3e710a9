//! What the colour commands share (issue 48): their inputs' and outputs' checks and
//! `metrics` of two RGB images; `denoise` with a colour CNN lives with `denoise`
//! (`tools`), `add-noise` of a colour image with `add-noise` (`gateway`). PSNR over RGB is the FFDNet paper's: the mean squared error over all
//! three channels' values on the 0..255 scale (docs/formats.md).

use std::path::Path;

use anyhow::{bail, Result};

use super::Summary;
use crate::image::{load_picture, ColourImage, Format, Picture};
use crate::metrics::psnr;

/// `spec`'s image when it is a colour PNG, TIFF or DICOM; a gray file is refused by name, since
/// `model` (named `name`) takes colour.
pub(super) fn colour_input(spec: &str, name: &str) -> Result<ColourImage> {
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

/// [`colour_input`] for `denoise`, and with a DICOM output (`dicom_out`, a .dcm) the colour
/// DICOM it is written like: `like`, or the input itself when it is a DICOM (its bytes read
/// once, for the image and the template), checked before any work: colour, one frame, the
/// image's size.
pub(super) fn colour_input_like(
    spec: &str,
    name: &str,
    like: Option<&Path>,
    dicom_out: Option<&Path>,
) -> Result<(ColourImage, Option<crate::image::DicomTemplate>)> {
    use crate::image::{rgb::picture_from_bytes, DicomTemplate};
    let Some(out) = dicom_out else {
        if let Some(l) = like {
            bail!(
                "--like {}: a colour image is written like a DICOM only to a .dcm output",
                l.display()
            );
        }
        return Ok((colour_input(spec, name)?, None));
    };
    if spec.starts_with(crate::image::BUILTIN_PREFIX) {
        return Ok((colour_input(spec, name)?, None));
    }
    let path = Path::new(spec);
    let bytes = crate::image::read_file(path)?;
    let img = match picture_from_bytes(&bytes, path)? {
        Picture::Colour(c) => c,
        Picture::Gray(g) => bail!(
            "{spec}: a gray image ({} bits); {name} is colour: give an RGB image, or a gray \
             model",
            g.bit_depth
        ),
    };
    if img.alpha.is_some() {
        bail!(
            "{spec}: an RGBA image; a DICOM output keeps no alpha: write a PNG or TIFF (its \
             alpha kept)"
        );
    }
    let tpl = match like {
        Some(l) => DicomTemplate::read(l)?,
        None if Format::sniff(&bytes) == Some(Format::Dicom) => {
            DicomTemplate::from_bytes_windowed(
                &bytes,
                path,
                &crate::image::window::WindowChoice::Full,
            )?
            .0
        }
        None => bail!(
            "{}: a colour DICOM output is written like a colour DICOM: give --like, or a \
             DICOM input",
            out.display()
        ),
    };
    let t = tpl.path().display();
    if !tpl.is_colour() {
        bail!("--like {t}: a gray DICOM; the image is colour: give a colour DICOM");
    }
    if tpl.frames() != 1 {
        bail!(
            "--like {t}: {} frames; denoise writes one colour image",
            tpl.frames()
        );
    }
    if tpl.dim() != (img.height(), img.width()) {
        bail!(
            "--like {t}: {} x {} pixels, but {spec} is {} x {}",
            tpl.dim().0,
            tpl.dim().1,
            img.height(),
            img.width()
        );
    }
    Ok((img, Some(tpl)))
}

/// An output path a colour image can be written to: PNG or TIFF (checked before the work).
pub(super) fn check_output(out: &Path) -> Result<()> {
    if Format::of_extension(out) == Format::Dicom {
        bail!(
            "{}: a colour image is written as PNG or TIFF here (a colour DICOM is written by \
             reconstruct --like the colour DICOM shared)",
            out.display()
        );
    }
    Ok(())
}

/// Whether `spec` names a PNG, TIFF or DICOM whose header says colour (no pixel decoded).
pub fn is_colour_file(spec: &str) -> bool {
    !spec.starts_with(crate::image::BUILTIN_PREFIX) && crate::image::rgb::is_colour_file(spec)
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
