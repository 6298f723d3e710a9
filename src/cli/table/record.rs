//! The record a finished table run leaves (`run.json`) and the checks that let `--resume`
//! reuse it only when everything its numbers depend on is unchanged.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::models::TableModel;
use super::{Input, Pictures, Run, TableArgs};
use crate::corr::engine_kind::EngineKind;
use crate::image::rgb::load_stacked;
use crate::image::GrayImage;
use crate::ring::plan::FixedParams;

/// What a finished run leaves in its directory (`run.json`) so that `--resume` can reuse it:
/// the run plus everything its numbers depend on besides the image and sigma.
#[derive(Serialize, Deserialize)]
pub(super) struct RunRecord {
    pub(super) format: String,
    /// Tool version and fixed-point settings the run was made with ([`protocol_tag`]).
    #[serde(default)]
    pub(super) protocol: String,
    pub(super) seed: u64,
    pub(super) stride: usize,
    pub(super) model_blake3: String,
    /// Patches per batch: no effect on the (bit-exact) result, only on time and memory.
    #[serde(default)]
    pub(super) batch: usize,
    /// The engine of the secure run (records without one were made by the GC engine).
    #[serde(default = "engine_of_old_records")]
    pub(super) engine: EngineKind,
    /// A CNN's fixed-point settings ([`TableModel::cnn_settings`]); absent for an MLP, and
    /// in the CNN records made before this field, which all used [`CNN_SETTINGS_BEFORE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cnn: Option<String>,
    /// Signal-dependent noise (`--noise`) instead of Gaussian noise of sigma; absent for
    /// Gaussian runs and in records made before the option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) noise: Option<String>,
    pub(super) run: Run,
}

/// The only CNN fixed-point settings that existed before records named theirs.
const CNN_SETTINGS_BEFORE: &str = "s=10 ws=10 k=18";

fn engine_of_old_records() -> EngineKind {
    EngineKind::Gc
}

pub(super) const RECORD_FORMAT: &str = "ppdenoise-table-run/1";

/// What a run's numbers depend on besides its inputs: the tool version and the fixed-point
/// settings the secure pipeline uses (the `demo` defaults).
pub(super) fn protocol_tag() -> String {
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
pub(super) fn recorded_run(
    workdir: &Path,
    input: &Input,
    clean_input: &Array2<f64>,
    sigma: f64,
    a: &TableArgs,
    model: &TableModel,
) -> Result<Option<Run>> {
    let model_blake3 = model.blake3.as_str();
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
    if rec.noise != a.noise {
        let show = |n: &Option<String>| n.clone().unwrap_or_else(|| "Gaussian noise".into());
        return Err(mismatch("noise", show(&rec.noise), show(&a.noise)));
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
    let cnn_then = match (&rec.cnn, model.cnn_settings()) {
        (None, Some(_)) => Some(CNN_SETTINGS_BEFORE.to_string()),
        (then, _) => then.clone(),
    };
    if cnn_then != model.cnn_settings() {
        return Err(mismatch(
            "CNN fixed point",
            format!("{cnn_then:?}"),
            format!("{:?}", model.cnn_settings()),
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
    // Gray or RGB (planes stacked), as the run wrote it.
    Ok(load_stacked(workdir.join(f))
        .with_context(|| {
            format!(
                "{}: recorded run is missing {f}; delete run.json to run again",
                workdir.display()
            )
        })?
        .0)
}

/// The images of a recorded run, for the figures.
pub(super) fn recorded_pictures(workdir: &Path) -> Result<Pictures> {
    Ok(Pictures {
        noisy: recorded_png(workdir, "noisy.png")?.pixels,
        float: recorded_png(workdir, "plaintext.png")?.pixels,
        secure: recorded_png(workdir, "denoised.png")?.pixels,
    })
}
