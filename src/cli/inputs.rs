//! Input resolution shared by the commands: images (files or built-ins) and the default model.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::plain::image::{self, DicomTemplate, Encoding, Format, GrayImage};
use crate::plain::phantom;

/// Loads an image file, or a built-in image named `builtin:<name>`.
pub fn load_image(spec: &str) -> Result<GrayImage> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return phantom::builtin(name).ok_or_else(|| {
            anyhow!("unknown built-in image '{name}' (available: phantom, phantom:<size>)")
        });
    }
    Ok(image::load(Path::new(spec))?)
}

/// How to write the image `out`, by its extension: PNG or TIFF at `depth` (8 or 16), or
/// DICOM like `like`, or else like the input image `input` when that is a DICOM file
/// (`derivation` goes in its Derivation Description). Called before any work is done, so a
/// DICOM output without a usable template is refused first.
pub fn output_encoding(
    out: &Path,
    depth: u8,
    like: Option<&Path>,
    input: Option<&str>,
    derivation: String,
) -> Result<Encoding> {
    let template = match like {
        Some(p) => Some(p.to_path_buf()),
        None if Format::of_extension(out) == Format::Dicom => input
            .filter(|s| !s.starts_with(image::BUILTIN_PREFIX))
            .map(PathBuf::from)
            .filter(|p| Format::of_file(p) == Some(Format::Dicom)),
        None => None,
    };
    let template = template
        .map(|p| DicomTemplate::read(p).map(|t| t.with_derivation(derivation)))
        .transpose()?;
    Ok(Encoding::for_path(out, depth, template)?)
}

/// The shipped default model: `fixtures/default-model.npz` in the working directory or in
/// the source tree this binary was built from.
pub fn default_model() -> PathBuf {
    let local = PathBuf::from("fixtures/default-model.npz");
    if local.exists() {
        return local;
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model.npz"
    ))
}

pub fn model_or_default(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(default_model)
}
