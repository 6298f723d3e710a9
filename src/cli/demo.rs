//! `demo`: the main job. Runs the whole pipeline on one machine, every party as its own
//! process, and compares the secure result with the plaintext fixed-point oracle and the
//! float model ([`super::pipeline`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::pipeline::{self, SecureRun};
use super::Summary;
use crate::corr::engine_kind::EngineKind;

/// The main job: run the whole secure pipeline on one machine, every party its own process
/// (both servers over authenticated TLS on localhost), and compare the result with the
/// plaintext fixed-point oracle and float inference.
#[derive(Args)]
pub struct DemoArgs {
    /// Clean image (PNG) or builtin:phantom[:size].
    #[arg(long, default_value = "builtin:phantom:256")]
    pub image: String,
    /// Trained model (an MLP or a CNN: .npz, .safetensors or .onnx); default: the shipped
    /// model.
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
}

pub fn demo(a: DemoArgs, json: bool) -> Result<Summary> {
    let DemoArgs {
        image,
        model,
        sigma,
        seed,
        noise,
        noisy,
        stride,
        batch,
        engine,
        workdir,
        no_compare,
        weights_per_job,
        plain_files,
        quiet,
        keep_triplets,
    } = a;
    pipeline::run(
        SecureRun {
            image,
            model,
            sigma,
            seed,
            noise,
            noisy,
            stride,
            batch,
            engine,
            workdir,
            no_compare,
            weights_per_job,
            plain_files,
            quiet,
            keep_triplets,
        },
        json,
    )
}
