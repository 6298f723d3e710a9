//! The plaintext denoiser: a model run on an image in float, or in the secure protocol's
//! fixed point (its oracle, which every secure result equals bit for bit). What `denoise`,
//! `table` and `demo` hold the secure results to.

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::image::GrayImage;
use crate::inference::mlp::denoise_float;
use crate::model::cnn::Cnn;
use crate::model::mlp::{Activation, Model};
use crate::model::noise_map::NoiseLevel;
use crate::model::preprocess::Preprocess;
use crate::ring::cnn::{self as cnn_ring, CnnFixed, CnnPlan};
use crate::ring::oracle;
use crate::ring::plan::{FixedParams, Plan};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Arith {
    /// Float with the model's own activation (the paper's plaintext baseline): f64 for an
    /// MLP, f32 for a CNN (as PyTorch's float forward).
    Float,
    /// f64 with tanh* as the activation.
    FloatTanhStar,
    /// The fixed-point oracle: exactly what the secure protocol computes.
    Fixed,
}

/// Runs a denoise in the chosen arithmetic with the default fixed-point parameters at
/// scale `scale`; returns the unclipped float image and the out-of-range count.
pub fn run_denoise(
    model: &Model,
    noisy: &GrayImage,
    pre: &Preprocess,
    stride: usize,
    arith: Arith,
    scale: u32,
) -> Result<(ndarray::Array2<f64>, u64)> {
    let params = FixedParams {
        s: scale,
        ..FixedParams::default()
    };
    run_denoise_with(model, noisy, pre, stride, arith, params)
}

/// Runs a denoise in the chosen arithmetic; returns the unclipped float image.
pub fn run_denoise_with(
    model: &Model,
    noisy: &GrayImage,
    pre: &Preprocess,
    stride: usize,
    arith: Arith,
    params: FixedParams,
) -> Result<(ndarray::Array2<f64>, u64)> {
    let t = params.tanh;
    Ok(match arith {
        Arith::Float => (
            denoise_float(model, &noisy.pixels, pre, stride, None, &t),
            0,
        ),
        Arith::FloatTanhStar if model.meta.activation == Activation::Relu => {
            bail!("--arith float-tanh-star applies to tanh MLPs; this MLP computes ReLU")
        }
        Arith::FloatTanhStar => (
            denoise_float(
                model,
                &noisy.pixels,
                pre,
                stride,
                Some(Activation::TanhStar),
                &t,
            ),
            0,
        ),
        Arith::Fixed => {
            let plan = Plan::from_model(model, params).map_err(anyhow::Error::msg)?;
            oracle::denoise(&plan, &noisy.pixels, pre, stride)
        }
    })
}

/// Runs a CNN in float or in the secure protocol's fixed point (the CNN oracle), at noise
/// level `noise` (used by a model with a noise-map channel).
pub fn run_cnn(
    model: &Cnn,
    noisy: &GrayImage,
    pre: &Preprocess,
    arith: Arith,
    params: CnnFixed,
    noise: &NoiseLevel,
) -> Result<(ndarray::Array2<f64>, u64)> {
    // A colour model's image comes as its planes stacked, (C*h) x w.
    let (h, w) = noisy.pixels.dim();
    let map = model.noise_map(noise, h / model.colours, w);
    Ok(match arith {
        Arith::Float => (model.denoise_float(&noisy.pixels, pre, &map), 0),
        Arith::FloatTanhStar => bail!("--arith float-tanh-star applies to MLPs, not CNNs"),
        Arith::Fixed => {
            let plan = CnnPlan::from_cnn(model, params).map_err(anyhow::Error::msg)?;
            cnn_ring::denoise(&plan, &noisy.pixels, &map, pre)
        }
    })
}

/// Runs a CNN graph in float or in the secure protocol's fixed point (its oracle) at
/// `params`, the settings its shares were made at.
pub fn run_graph(
    g: &crate::model::graph::Graph,
    noisy: &GrayImage,
    pre: &Preprocess,
    arith: Arith,
    params: CnnFixed,
) -> Result<(ndarray::Array2<f64>, u64)> {
    Ok(match arith {
        Arith::Float => (
            g.denoise_float(&noisy.pixels, pre, &[])
                .map_err(anyhow::Error::msg)?,
            0,
        ),
        Arith::FloatTanhStar => bail!("--arith float-tanh-star applies to MLPs, not CNN graphs"),
        Arith::Fixed => {
            let plan =
                crate::ring::graph::GraphPlan::from_graph(g, params).map_err(anyhow::Error::msg)?;
            crate::ring::graph::denoise(&plan, &noisy.pixels, &[], pre)
        }
    })
}
