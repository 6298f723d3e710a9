//! `bench`: the performance benchmark (`make bench`). Every figure comes from real runs of
//! the pipeline with both servers as separate processes, for each engine side by side:
//! (a) the paper-size network on a batch of patches (amortised cost per patch and per tanh),
//! (b) a whole image with the shipped model, end to end, every link and every process, on
//!     localhost and through the shaping relay (a real link's bandwidth and delay),
//! (c) the same model in plaintext float, and the secure/plaintext ratio,
//! (d) a 1521-1024-1024-289 network on a whole 96x96 image (the outside peer's comparison).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::inputs::{model_or_default, ModelFile};
use super::procs::{model_setup, run_servers, s, signed_as, signing_keys, timed};
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::formats::signing::Role;
use crate::image::{add_noise, quantize_u8, save_png, GrayImage};
use crate::model::mlp::{random_model, Activation, ModelMeta};
use crate::net::relay::{LinkShape, Relay};

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
    /// Engines to measure, side by side (`--engine gmw` for one).
    #[arg(long, alias = "engine", value_enum, value_delimiter = ',', default_values_t = [EngineKind::Gmw, EngineKind::Gc])]
    pub engines: Vec<EngineKind>,
    /// The link of part (b)'s relay runs: bandwidth and one-way delay, each direction.
    #[arg(long, default_value = "1gbit,5ms")]
    pub link: LinkShape,
    /// Skip part (b)'s runs through the shaping relay.
    #[arg(long)]
    pub no_relay: bool,
    /// A relay run whose bytes alone (from the localhost run) would take longer than this is
    /// not run; its lower bound (bytes / bandwidth) is reported instead, labelled as such.
    #[arg(long, default_value_t = 30.0)]
    pub relay_limit_minutes: f64,
    /// Skip part (d), the 1521-1024-1024-289 network on a whole 96x96 image.
    #[arg(long)]
    pub skip_mid: bool,
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// How one pipeline run is made: engine, batch (None: the engine's default), and the link
/// between the servers (None: localhost directly).
#[derive(Clone, Copy)]
struct RunSpec {
    engine: EngineKind,
    batch: Option<usize>,
    link: Option<LinkShape>,
}

/// The whole pipeline on `noisy_png` with `model`; every step a process.
fn pipeline(
    dir: &Path,
    model: &Path,
    family: Family,
    noisy_png: &Path,
    spec: RunSpec,
) -> Result<Value> {
    let batch = spec.batch.unwrap_or(spec.engine.default_batch());
    // A CNN or a CNN graph runs as one whole-image job, its weights opened in the job and its
    // image shared for it.
    let (graph, cnn) = (family == Family::Graph, family != Family::Mlp);
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
    signing_keys(&keys)?;
    let mut owner_args = vec![
        "share-model".into(),
        "--model".into(),
        s(model),
        "--out".into(),
        s(&p("model")),
    ];
    owner_args.extend(signed_as(&keys, Role::Owner));
    let (t_model, j_model) = timed(&owner_args)?;
    // In a relay run S0 listens on its port and S1 connects to the relay, which forwards to
    // S0: first the model setup's link (not for a CNN), then the job's; a link is two
    // connections, one per direction.
    let relay = match spec.link {
        None => None,
        Some(shape) => {
            let s0 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let relay = Relay::bind("127.0.0.1:0".parse()?, s0, shape)?;
            let via = relay.local_addr();
            let stats = relay.stats();
            Some(((s0, via), stats, relay.spawn(Some(if cnn { 2 } else { 4 }))))
        }
    };
    let addrs = relay.as_ref().map(|r| r.0);
    // Once per model (reported apart from the job): the weight mask and its opening.
    let setup = if cnn {
        Value::Null
    } else {
        model_setup(dir, &keys, addrs, &[])?
    };
    let mut gw_args = vec![
        "share-image".into(),
        "--image".into(),
        s(noisy_png),
        "--sigma".into(),
        "25".into(),
        "--out".into(),
        s(&p("image")),
    ];
    if cnn {
        gw_args.extend(["--model".into(), s(&p("model.pub"))]);
        gw_args.extend(["--trust".into(), s(&keys.join("trust"))]);
    }
    gw_args.extend(signed_as(&keys, Role::Gateway));
    let (t_gw, j_gw) = timed(&gw_args)?;
    let mut dealer_args = vec![
        "gen-triplets".into(),
        "--model".into(),
        s(&p("model.pub")),
        "--image".into(),
        s(&p("image.pub")),
        "--engine".into(),
        spec.engine.name().into(),
        "--out".into(),
        s(&p("triplets")),
    ];
    // A CNN's batch is its ReLU run size: the dealer's default unless one is given.
    let dealer_batch = if cnn { spec.batch } else { Some(batch) };
    if let Some(b) = dealer_batch {
        dealer_args.extend(["--batch".into(), b.to_string()]);
    }
    if !cnn {
        dealer_args.extend(["--model-mask".into(), s(&p("mask.dealer"))]);
    }
    dealer_args.extend(signed_as(&keys, Role::Dealer));
    let (t_dealer, j_dealer) = timed(&dealer_args)?;
    // Now: the servers cut spent triplet files to their headers.
    let dealer_bytes = file_len(&p("triplets.p0")) + file_len(&p("triplets.p1"));
    let extra = [
        "--quiet",
        "--timeout",
        "600",
        "--engine",
        spec.engine.name(),
    ];
    let (t_serve, servers) = run_servers(dir, &keys, &extra, addrs, !cnn, false)?;
    if let (Some((_, stats, h)), Some(shape)) = (relay, spec.link) {
        h.join()
            .map_err(|_| anyhow::anyhow!("the relay thread panicked"))??;
        eprintln!(
            "relay {shape}: {} bytes S1->S0, {} bytes S0->S1 (model setup and job)",
            stats.client_to_target_bytes(),
            stats.target_to_client_bytes()
        );
    }
    let (t_rec, j_rec) = timed(&[
        "reconstruct".into(),
        "--share0".into(),
        s(&p("out.p0")),
        "--share1".into(),
        s(&p("out.p1")),
        "--out".into(),
        s(&p("denoised.png")),
        "--trust".into(),
        s(&keys.join("trust")),
        "--job-id".into(),
        j_gw["job_id"].as_str().unwrap_or_default().into(),
    ])?;
    let r0 = &servers[0]["report"];
    let link = r0["link"]["bytes_sent"].as_u64().unwrap_or(0)
        + r0["link"]["bytes_received"].as_u64().unwrap_or(0);
    Ok(json!({
        "engine": spec.engine.name(), "batch": dealer_batch, "network": if graph { "graph" } else if cnn { "cnn" } else { "mlp" },
        "link": spec.link.map(|l| l.to_string()).unwrap_or_else(|| "localhost".into()),
        "seconds": {"share_model": t_model, "share_image": t_gw, "gen_triplets": t_dealer,
                    "serve": t_serve, "reconstruct": t_rec,
                    "gateway_internal": j_gw["seconds"], "receiver_internal": j_rec["seconds"]},
        "bytes": {"gateway_upload": file_len(&p("image.p0")) + file_len(&p("image.p1")),
                  "dealer_output": dealer_bytes,
                  "model_shares": file_len(&p("model.p0")) + file_len(&p("model.p1")),
                  "s0_s1": link,
                  "receiver_download": file_len(&p("out.p0")) + file_len(&p("out.p1"))},
        "peak_rss_bytes": {"share_model": j_model["peak_rss_bytes"], "share_image": j_gw["peak_rss_bytes"],
                  "gen_triplets": j_dealer["peak_rss_bytes"], "s0": servers[0]["peak_rss_bytes"],
                  "s1": servers[1]["peak_rss_bytes"], "reconstruct": j_rec["peak_rss_bytes"]},
        "servers": [servers[0]["report"].clone(), servers[1]["report"].clone()],
        "model_setup": setup,
    }))
}

/// What a model file is, read once (so that a bad file is refused before anything runs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Mlp,
    Cnn { colours: usize },
    Graph,
}

impl Family {
    fn of(model: &Path) -> Result<Family> {
        Ok(match ModelFile::load(model)? {
            ModelFile::Mlp(_) => Family::Mlp,
            ModelFile::Cnn(c) => Family::Cnn { colours: c.colours },
            ModelFile::Graph(_) => Family::Graph,
        })
    }

    fn colours(self) -> usize {
        match self {
            Family::Cnn { colours } => colours,
            _ => 1,
        }
    }
}

/// The noisy image of a run (sigma 25, seed 1, 8-bit clipped): gray, or RGB for a colour
/// model. A gray source (the phantom) is given colours for it: R the image, G 3/4 of it
/// plus 32, B its negative, so that the three planes differ.
fn noisy_file(dir: &Path, spec: &str, colours: usize) -> Result<(PathBuf, (usize, usize))> {
    let path = dir.join("noisy.png");
    if colours == 3 {
        use crate::image::rgb::{
            add_noise as add_colour_noise, load_picture, ColourImage, Picture,
        };
        let clean = match spec.starts_with("builtin:") {
            false => load_picture(spec)?,
            true => Picture::Gray(super::inputs::load_image(spec)?),
        };
        let clean = match clean {
            Picture::Colour(c) => c,
            Picture::Gray(g) => {
                let (h, w) = g.pixels.dim();
                let p = &g.pixels;
                let planes = ndarray::Array2::from_shape_fn((3 * h, w), |(r, x)| {
                    let v = p[[r % h, x]];
                    [v, 0.75 * v + 32.0, 255.0 - v][r / h]
                });
                ColourImage {
                    planes,
                    bit_depth: 8,
                    alpha: None,
                    stored_max: None,
                }
            }
        };
        let noisy = clean.with_planes(quantize_u8(&add_colour_noise(&clean, 25.0, 1).planes));
        noisy.save(&path)?;
        return Ok((path, (noisy.height(), noisy.width())));
    }
    let clean = super::inputs::load_image(spec)?;
    let noisy = GrayImage {
        pixels: quantize_u8(&add_noise(&clean, 25.0, 1).pixels),
        bit_depth: 8,
    };
    save_png(&noisy, &path, 8)?;
    Ok((path, clean.pixels.dim()))
}

pub(super) fn machine() -> String {
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

pub(super) fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A random model of `widths` (weights of realistic scale, mean shift, no residual) run on
/// the phantom at `size` x `size` in `dir`; its per-patch and per-tanh figures.
fn random_network_run(
    dir: &Path,
    widths: &[usize],
    seed: u64,
    size: usize,
    spec: RunSpec,
) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: false,
        activation: Activation::TanhStar,
        aggregation_sigma: 0.0,
    };
    let model_path = dir.join("model.npz");
    random_model(widths, seed, meta).save(&model_path)?;
    let (noisy, _) = noisy_file(dir, &format!("builtin:phantom:{size}"), 1)?;
    let r = pipeline(dir, &model_path, Family::Mlp, &noisy, spec)?;
    Ok(per_patch(widths, &r))
}

/// Per-patch and per-tanh figures of a run of a network with `widths`.
fn per_patch(widths: &[usize], r: &Value) -> Value {
    let s0 = &r["servers"][0];
    let patches = s0["patches"].as_f64().unwrap_or(1.0);
    let elements = s0["engine"]["elements"].as_f64().unwrap_or(1.0).max(1.0);
    let hidden: usize = widths[1..widths.len() - 1].iter().sum();
    let tanh_elems = hidden as f64 * patches;
    let serve = r["seconds"]["serve"].as_f64().unwrap_or(0.0);
    let link = r["bytes"]["s0_s1"].as_f64().unwrap_or(0.0);
    let and = s0["engine"]["and_gates"].as_f64().unwrap_or(0.0);
    let nonlin = s0["seconds_nonlinear"].as_f64().unwrap_or(0.0)
        + s0["seconds_polynomial"].as_f64().unwrap_or(0.0);
    json!({
        "widths": widths, "patches": patches, "serve_seconds": serve,
        "seconds_per_patch": serve / patches, "s0_s1_bytes_per_patch": link / patches,
        "tanh_elements": tanh_elems, "circuit_elements": elements,
        "and_gates_per_element": and / elements,
        "bytes_per_tanh": link / tanh_elems,
        "microseconds_per_tanh": nonlin * 1e6 / tanh_elems,
        "engine_rounds": s0["engine"]["rounds"], "messages_sent_s0": s0["link"]["messages_sent"],
        "dealer_bytes": r["bytes"]["dealer_output"],
        "seconds_setup_s0": s0["seconds_setup"],
        "model_setup_seconds": r["model_setup"]["seconds"]["open_weights"],
        "model_setup_s0_s1_bytes": r["model_setup"]["bytes"]["s0_s1"],
        "run": r,
    })
}

fn per_patch_line(tag: &str, engine: EngineKind, v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    format!(
        "{tag} [{engine}] {} network, {} patches: {:.4} s/patch, {:.3} MB/patch S0<->S1; per tanh: {:.0} AND gates, {:.0} B, {:.2} us; {} engine rounds; dealer {} B; once per model: open-weights {:.2} s, {:.1} MB",
        v["widths"].as_array().map(|w| w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")).unwrap_or_default(),
        f("patches"), f("seconds_per_patch"), f("s0_s1_bytes_per_patch") / 1e6,
        f("and_gates_per_element"), f("bytes_per_tanh"), f("microseconds_per_tanh"),
        v["engine_rounds"], v["dealer_bytes"],
        f("model_setup_seconds"), f("model_setup_s0_s1_bytes") / 1e6
    )
}

/// A graph's (a chain CNN's too) linear-phase rate and figures per op kind, from S0's report.
fn linear_and_ops(s0: &Value) -> Vec<String> {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let mut lines = Vec::new();
    let (macs, lin) = (f(s0, "macs"), f(s0, "seconds_linear"));
    if macs > 0.0 && lin > 0.0 {
        lines.push(format!(
            "    S0 linear phase {lin:.2} s for two products of {:.3} G multiply-adds: {:.2} G/s; circuits {:.2} s",
            macs / 1e9,
            2.0 * macs / lin / 1e9,
            f(s0, "seconds_nonlinear")
        ));
        let prod = f(s0, "seconds_products");
        if prod > 0.0 {
            lines.push(format!(
                "    S0 products alone {prod:.2} s: {:.2} G/s (the rest of the phase: the openings, waiting on the peer, and the randomness)",
                2.0 * macs / prod / 1e9
            ));
        }
    }
    for op in s0["ops"].as_array().into_iter().flatten() {
        let bytes = f(op, "bytes_sent") + f(op, "bytes_received");
        let (cmp, macs, secs) = (f(op, "comparisons"), f(op, "macs"), f(op, "seconds"));
        let mut l = format!(
            "    {:<13} {:>3} steps {:>8.2} s {:>14.0} B S0<->S1 {:>7} rounds",
            op["op"].as_str().unwrap_or("?"),
            f(op, "steps"),
            secs,
            bytes,
            f(op, "engine_rounds")
        );
        if cmp > 0.0 {
            l += &format!("; {cmp:.0} comparisons, {:.1} B each", bytes / cmp);
        }
        if macs > 0.0 && secs > 0.0 {
            l += &format!(
                "; 2 x {:.3} G multiply-adds, {:.2} G/s",
                macs / 1e9,
                2.0 * macs / secs / 1e9
            );
        }
        lines.push(l);
    }
    lines
}

fn end_to_end(r: &Value) -> f64 {
    ["share_image", "gen_triplets", "serve", "reconstruct"]
        .iter()
        .map(|k| r["seconds"][*k].as_f64().unwrap_or(0.0))
        .sum()
}

pub fn bench(a: BenchArgs) -> Result<Summary> {
    std::fs::create_dir_all(&a.workdir)
        .with_context(|| format!("cannot create {}", a.workdir.display()))?;
    let mut lines = vec![format!(
        "ppdenoise bench ({}), commit {}, {}; engines {:?}, relay link {}",
        if a.quick { "quick" } else { "full" },
        commit(),
        machine(),
        a.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
        a.link
    )];
    let mut out = json!({"commit": commit(), "machine": machine(), "quick": a.quick,
        "link": a.link.to_string(), "engines": {}});
    let mut t_plain = None;
    // Part (b)'s model, read once for every engine and link: its family and colours.
    let model = model_or_default(&a.model);
    let family = if a.skip_image {
        None
    } else {
        Some(Family::of(&model)?)
    };
    for &engine in &a.engines {
        let ework = a.workdir.join(engine.name());
        let mut eout = json!({});
        if !a.skip_paper {
            // (a) The paper's network, random weights of realistic scale, one batch of patches.
            let widths: Vec<usize> = if a.quick {
                vec![81, 32, 32, 25]
            } else {
                vec![1521, 3072, 3072, 2559, 2047, 289]
            };
            let side_out = (widths[widths.len() - 1] as f64).sqrt() as usize;
            // A square image whose patch grid at stride 3 is just large enough for the batch.
            let per_side = (a.paper_patches as f64).sqrt().ceil() as usize;
            let size = side_out + 3 * (per_side - 1);
            let spec = RunSpec {
                engine,
                batch: Some(per_side * per_side),
                link: None,
            };
            let v = random_network_run(&ework.join("paper"), &widths, 7, size, spec)?;
            lines.push(per_patch_line("(a)", engine, &v));
            eout["paper_network"] = v;
        }
        if !a.skip_mid {
            // (d) 1521-1024-1024-289 on a whole 96x96 image (784 patches at stride 3).
            let (widths, size): (Vec<usize>, usize) = if a.quick {
                (vec![81, 24, 24, 25], 24)
            } else {
                (vec![1521, 1024, 1024, 289], 96)
            };
            let spec = RunSpec {
                engine,
                batch: None,
                link: None,
            };
            let v = random_network_run(&ework.join("mid"), &widths, 8, size, spec)?;
            lines.push(per_patch_line("(d)", engine, &v));
            eout["mid_network"] = v;
        }
        if let Some(family) = family {
            // (b) A whole image end to end with the shipped model; (c) the same in plaintext.
            let spec_img = a.image.clone().unwrap_or_else(|| {
                if a.quick {
                    "builtin:phantom:32".into()
                } else {
                    "builtin:phantom:512".into()
                }
            });
            let mut img = json!({"spec": spec_img});
            let mut links = vec![None];
            if !a.no_relay {
                links.push(Some(a.link));
            }
            for link in links {
                let name = if link.is_some() { "relay" } else { "localhost" };
                let dir = ework.join(format!("image-{name}"));
                std::fs::create_dir_all(&dir)?;
                let (noisy, (h, w)) = noisy_file(&dir, &spec_img, family.colours())?;
                if let Some(shape) = link {
                    // A relay run that the bytes alone would keep beyond the limit: bound only.
                    let bytes = img["localhost"]["run"]["bytes"]["s0_s1"]
                        .as_f64()
                        .unwrap_or(0.0);
                    let bound = bytes * 8.0 / shape.bits_per_second as f64;
                    if bound > a.relay_limit_minutes * 60.0 {
                        lines.push(format!(
                            "(b) [{engine}] through the relay {shape}: not run; LOWER BOUND {bound:.0} s (S0<->S1 bytes of the localhost run / bandwidth) exceeds {} min",
                            a.relay_limit_minutes
                        ));
                        img[name] = json!({"lower_bound_seconds": bound, "measured": false,
                            "link": shape.to_string()});
                        continue;
                    }
                }
                let spec = RunSpec {
                    engine,
                    batch: None,
                    link,
                };
                let r = pipeline(&dir, &model, family, &noisy, spec)?;
                let sec = &r["seconds"];
                let total = end_to_end(&r);
                let b = &r["bytes"];
                let m = &r["peak_rss_bytes"];
                let tanh = r["servers"][0]["engine"]["elements"]
                    .as_f64()
                    .unwrap_or(1.0)
                    .max(1.0);
                lines.push(format!(
                    "(b) [{engine}] {spec_img} ({h}x{w}) {name}{}, {} patches (pixels for a CNN): share-image {:.2} s, gen-triplets {:.1} s, serve {:.1} s, reconstruct {:.2} s; end to end {:.1} s",
                    link.map(|l| format!(" {l}")).unwrap_or_default(),
                    r["servers"][0]["patches"], sec["share_image"].as_f64().unwrap_or(0.0), sec["gen_triplets"].as_f64().unwrap_or(0.0),
                    sec["serve"].as_f64().unwrap_or(0.0), sec["reconstruct"].as_f64().unwrap_or(0.0), total
                ));
                lines.push(format!(
                    "    bytes: gateway upload {}, dealer output {}, S0<->S1 {} ({:.1} B per activation), receiver download {}; engine rounds {}",
                    b["gateway_upload"], b["dealer_output"], b["s0_s1"],
                    b["s0_s1"].as_f64().unwrap_or(0.0) / tanh, b["receiver_download"],
                    r["servers"][0]["engine"]["rounds"]
                ));
                lines.extend(linear_and_ops(&r["servers"][0]));
                if r["model_setup"].is_null() {
                    lines.push(
                        "    the weights are opened in the job (a CNN: no model mask)".into(),
                    );
                } else {
                    lines.push(format!(
                        "    once per model, not in the job's figures: gen-model-mask {:.2} s, open-weights {:.2} s, {} bytes S0<->S1",
                        r["model_setup"]["seconds"]["gen_model_mask"].as_f64().unwrap_or(0.0),
                        r["model_setup"]["seconds"]["open_weights"].as_f64().unwrap_or(0.0),
                        r["model_setup"]["bytes"]["s0_s1"]
                    ));
                }
                lines.push(format!(
                    "    peak RSS: S0 {} MB, S1 {} MB, dealer {} MB, gateway {} MB, receiver {} MB",
                    m["s0"].as_u64().unwrap_or(0) >> 20,
                    m["s1"].as_u64().unwrap_or(0) >> 20,
                    m["gen_triplets"].as_u64().unwrap_or(0) >> 20,
                    m["share_image"].as_u64().unwrap_or(0) >> 20,
                    m["reconstruct"].as_u64().unwrap_or(0) >> 20
                ));
                if link.is_none() && t_plain.is_none() {
                    let (t, _) = timed(&[
                        "denoise".into(),
                        "--sigma".into(),
                        "25".into(),
                        "--model".into(),
                        s(&model),
                        "--image".into(),
                        s(&noisy),
                        "--arith".into(),
                        "float".into(),
                    ])?;
                    lines.push(format!(
                        "(c) plaintext float denoise (process wall) {t:.2} s"
                    ));
                    t_plain = Some(t);
                }
                if let (None, Some(tp)) = (link, t_plain) {
                    lines.push(format!(
                        "(c) [{engine}] secure/plaintext = {:.0}x (serve only) / {:.0}x (end to end)",
                        sec["serve"].as_f64().unwrap_or(0.0) / tp,
                        total / tp
                    ));
                }
                img["height"] = h.into();
                img["width"] = w.into();
                img[name] = json!({"run": r, "end_to_end_seconds": total, "measured": true,
                    "bytes_per_tanh": b["s0_s1"].as_f64().unwrap_or(0.0) / tanh});
            }
            eout["image"] = img;
        }
        out["engines"][engine.name()] = eout;
    }
    out["plaintext_seconds"] = t_plain.into();
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::fileio::atomic::write_bytes(&a.out, serde_json::to_string_pretty(&out)?.as_bytes())?;
    lines.push(format!("results written to {}", a.out.display()));
    out["ok"] = true.into();
    Ok(Summary { lines, json: out })
}
