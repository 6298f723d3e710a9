//! Input resolution shared by the commands: images (files or built-ins) and the default model.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::plain::image::{self, GrayImage};
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
