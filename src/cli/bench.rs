//! `bench`: the performance benchmark (`make bench`). Every figure comes from real runs of
//! the pipeline with both servers as separate processes on localhost:
//! (a) the paper-size network on a batch of patches (amortised cost per patch and per tanh),
//! (b) a whole image with the shipped model, end to end, every link and every process,
//! (c) the same model in plaintext float, and the secure/plaintext ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::inputs::model_or_default;
use super::procs::{run_servers, s, timed};
use super::Summary;
use crate::plain::image::{add_noise, quantize_u8, save_png, GrayImage};
use crate::plain::model::{random_model, Activation, ModelMeta};

/// Measure time, traffic and memory of the secure protocol (paper-size network, a whole
/// image end to end, plaintext comparison) and write a JSON report.
#[derive(Args)]
pub struct BenchArgs {
    /// Tiny sizes (seconds): checks that the benchmark runs, as CI does.
    #[arg(long)]
    pub quick: bool,
    /// Skip part (a), the paper-size network.
    #[arg(long)]
    pub skip_paper: bool,
    /// Skip parts (b) and (c), the whole image.
    #[arg(long)]
    pub skip_image: bool,
    /// Image of part (b); default builtin:phantom:512 (builtin:phantom:32 with --quick).
    #[arg(long)]
    pub image: Option<String>,
    /// Model of part (b); default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Patches in part (a)'s batch (at least 64 for the figure).
    #[arg(long, default_value_t = 64)]
    pub paper_patches: usize,
    #[arg(long, default_value = "out/bench")]
    pub workdir: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "out/bench/bench.json")]
    pub out: PathBuf,
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The whole pipeline on `noisy_png` with `model`; every step a process.
fn pipeline(dir: &Path, model: &Path, noisy_png: &Path, batch: usize) -> Result<Value> {
    let p = |n: &str| dir.join(n);
    let keys = p("keys");
    for n in ["s0", "s1"] {
        timed(&[
            "keygen".into(),
            "--force".into(),
            "--name".into(),
            n.into(),
            "--out-dir".into(),
            s(&keys),
        ])?;
    }
    let (t_model, j_model) = timed(&[
        "share-model".into(),
        "--model".into(),
        s(model),
        "--out".into(),
        s(&p("model")),
    ])?;
    let (t_gw, j_gw) = timed(&[
        "share-image".into(),
        "--image".into(),
        s(noisy_png),
        "--out".into(),
        s(&p("image")),
    ])?;
    let (t_dealer, j_dealer) = timed(&[
        "gen-triplets".into(),
        "--model".into(),
        s(&p("model.p1")),
        "--image".into(),
        s(&p("image.p1")),
        "--batch".into(),
        batch.to_string(),
        "--out".into(),
        s(&p("triplets")),
    ])?;
    let (t_serve, servers) = run_servers(dir, &keys, &["--quiet", "--timeout", "600"])?;
    let (t_rec, j_rec) = timed(&[
        "reconstruct".into(),
        "--share0".into(),
        s(&p("out.p0")),
        "--share1".into(),
        s(&p("out.p1")),
        "--out".into(),
        s(&p("denoised.png")),
    ])?;
    let r0 = &servers[0]["report"];
    let link = r0["link"]["bytes_sent"].as_u64().unwrap_or(0)
        + r0["link"]["bytes_received"].as_u64().unwrap_or(0);
    Ok(json!({
        "seconds": {"share_model": t_model, "share_image": t_gw, "gen_triplets": t_dealer,
                    "serve": t_serve, "reconstruct": t_rec,
                    "gateway_internal": j_gw["seconds"], "receiver_internal": j_rec["seconds"]},
        "bytes": {"gateway_upload": file_len(&p("image.p0")) + file_len(&p("image.p1")),
                  "dealer_output": file_len(&p("triplets.p0")) + file_len(&p("triplets.p1")),
                  "model_shares": file_len(&p("model.p0")) + file_len(&p("model.p1")),
                  "s0_s1": link,
                  "receiver_download": file_len(&p("out.p0")) + file_len(&p("out.p1"))},
        "peak_rss_bytes": {"share_model": j_model["peak_rss_bytes"], "share_image": j_gw["peak_rss_bytes"],
                  "gen_triplets": j_dealer["peak_rss_bytes"], "s0": servers[0]["peak_rss_bytes"],
                  "s1": servers[1]["peak_rss_bytes"], "reconstruct": j_rec["peak_rss_bytes"]},
        "servers": [servers[0]["report"].clone(), servers[1]["report"].clone()],
    }))
}

fn noisy_file(dir: &Path, spec: &str) -> Result<(PathBuf, (usize, usize))> {
    let clean = super::inputs::load_image(spec)?;
    let noisy = GrayImage {
        pixels: quantize_u8(&add_noise(&clean, 25.0, 1).pixels),
        bit_depth: 8,
    };
    let path = dir.join("noisy.png");
    save_png(&noisy, &path, 8)?;
    Ok((path, clean.pixels.dim()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu}, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn bench(a: BenchArgs) -> Result<Summary> {
    std::fs::create_dir_all(&a.workdir)
        .with_context(|| format!("cannot create {}", a.workdir.display()))?;
    let mut lines = vec![format!(
        "ppdenoise bench ({}), commit {}, {}",
        if a.quick { "quick" } else { "full" },
        commit(),
        machine()
    )];
    let mut out = json!({"commit": commit(), "machine": machine(), "quick": a.quick});

    if !a.skip_paper {
        // (a) The paper's network, random weights of realistic scale, one batch of patches.
        let widths: Vec<usize> = if a.quick {
            vec![81, 32, 32, 25]
        } else {
            vec![1521, 3072, 3072, 2559, 2047, 289]
        };
        let dir = a.workdir.join("paper");
        std::fs::create_dir_all(&dir)?;
        let meta = ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: false,
            activation: Activation::TanhStar,
            aggregation_sigma: 0.0,
        };
        let model_path = dir.join("model.npz");
        random_model(&widths, 7, meta).save(&model_path)?;
        let side_in = (widths[0] as f64).sqrt() as usize;
        let side_out = (widths[widths.len() - 1] as f64).sqrt() as usize;
        // A square image whose patch grid at stride 3 is just large enough for the batch.
        let per_side = (a.paper_patches as f64).sqrt().ceil() as usize;
        let size = side_out + 3 * (per_side - 1);
        let (noisy, _) = noisy_file(&dir, &format!("builtin:phantom:{size}"))?;
        let r = pipeline(&dir, &model_path, &noisy, per_side * per_side)?;
        let patches = r["servers"][0]["patches"].as_f64().unwrap_or(1.0);
        let elements = r["servers"][0]["engine"]["elements"]
            .as_f64()
            .unwrap_or(1.0);
        let hidden: usize = widths[1..widths.len() - 1].iter().sum();
        let tanh_elems = hidden as f64 * patches;
        let serve = r["seconds"]["serve"].as_f64().unwrap_or(0.0);
        let link = r["bytes"]["s0_s1"].as_f64().unwrap_or(0.0);
        let and = r["servers"][0]["engine"]["and_gates"]
            .as_f64()
            .unwrap_or(0.0);
        let nonlin = r["servers"][0]["seconds_nonlinear"].as_f64().unwrap_or(0.0)
            + r["servers"][0]["seconds_polynomial"]
                .as_f64()
                .unwrap_or(0.0);
        let per = json!({
            "widths": widths, "input_patch": side_in, "patches": patches, "serve_seconds": serve,
            "seconds_per_patch": serve / patches, "s0_s1_bytes_per_patch": link / patches,
            "tanh_elements": tanh_elems, "garbled_elements": elements,
            "and_gates_per_garbled_element": and / elements,
            "bytes_per_tanh": link / tanh_elems,
            "microseconds_per_tanh": nonlin * 1e6 / tanh_elems,
            "run": r,
        });
        lines.push(format!(
            "(a) {} network, {} patches: {:.3} s/patch, {:.1} MB/patch S0<->S1; per tanh: {:.0} AND gates, {:.2} KB, {:.1} us",
            widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-"),
            patches, serve / patches, link / patches / 1e6, and / elements, link / tanh_elems / 1e3, nonlin * 1e6 / tanh_elems
        ));
        out["paper_network"] = per;
    }

    if !a.skip_image {
        // (b) A whole image end to end with the shipped model; (c) the same in plaintext.
        let dir = a.workdir.join("image");
        std::fs::create_dir_all(&dir)?;
        let spec = a.image.clone().unwrap_or_else(|| {
            if a.quick {
                "builtin:phantom:32".into()
            } else {
                "builtin:phantom:512".into()
            }
        });
        let model = model_or_default(&a.model);
        let (noisy, (h, w)) = noisy_file(&dir, &spec)?;
        let r = pipeline(&dir, &model, &noisy, 128)?;
        let (t_plain, _) = timed(&[
            "denoise".into(),
            "--model".into(),
            s(&model),
            "--image".into(),
            s(&noisy),
            "--arith".into(),
            "float".into(),
        ])?;
        let sec = &r["seconds"];
        let total = ["share_image", "gen_triplets", "serve", "reconstruct"]
            .iter()
            .map(|k| sec[*k].as_f64().unwrap_or(0.0))
            .sum::<f64>();
        let b = &r["bytes"];
        let m = &r["peak_rss_bytes"];
        lines.push(format!(
            "(b) {spec} ({h}x{w}), {} patches: share-image {:.2} s, gen-triplets {:.1} s, serve {:.1} s, reconstruct {:.2} s; end to end {:.1} s",
            r["servers"][0]["patches"], sec["share_image"].as_f64().unwrap_or(0.0), sec["gen_triplets"].as_f64().unwrap_or(0.0),
            sec["serve"].as_f64().unwrap_or(0.0), sec["reconstruct"].as_f64().unwrap_or(0.0), total
        ));
        lines.push(format!(
            "    bytes: gateway upload {}, dealer output {}, S0<->S1 {}, receiver download {}",
            b["gateway_upload"], b["dealer_output"], b["s0_s1"], b["receiver_download"]
        ));
        lines.push(format!(
            "    peak RSS: S0 {} MB, S1 {} MB, dealer {} MB, gateway {} MB, receiver {} MB",
            m["s0"].as_u64().unwrap_or(0) >> 20,
            m["s1"].as_u64().unwrap_or(0) >> 20,
            m["gen_triplets"].as_u64().unwrap_or(0) >> 20,
            m["share_image"].as_u64().unwrap_or(0) >> 20,
            m["reconstruct"].as_u64().unwrap_or(0) >> 20
        ));
        lines.push(format!(
            "(c) plaintext float denoise (process wall) {t_plain:.2} s; secure/plaintext = {:.0}x (serve only) / {:.0}x (end to end)",
            sec["serve"].as_f64().unwrap_or(0.0) / t_plain, total / t_plain
        ));
        out["image"] = json!({"spec": spec, "height": h, "width": w, "run": r, "plaintext_seconds": t_plain,
            "end_to_end_seconds": total});
    }
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::formats::atomic::write_bytes(&a.out, serde_json::to_string_pretty(&out)?.as_bytes())?;
    lines.push(format!("results written to {}", a.out.display()));
    out["ok"] = true.into();
    Ok(Summary { lines, json: out })
}
