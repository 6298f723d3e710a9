//! `bench-tiles`: one CNN job (run as its graph) as 1, 2, 4, ... tiles on this machine, what the halo costs,
//! and the projected time of a study on N server pairs (`make bench-tiles`).
//!
//! For every tile count K the job runs twice with fresh randomness: all K pairs at once on
//! this machine (what it can gain here), and the K pairs one after another (each tile's cost
//! as if it had a machine of its own: the slowest tile is the job's time on K machines).

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::procs::{receiver_checks, run_pair, s, server_role, signed_as, signing_keys, timed};
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::formats::signing::Role;
use crate::model::cnn::Cnn;
use crate::ring::cnn::CnnFixed;
use crate::ring::graph::GraphPlan;
use crate::ring::tiles::Tile;

/// Measure a CNN job split into tiles: all tiles at once on this machine, each tile alone,
/// the halo's extra rows, and the projected time of a study on N server pairs; writes a JSON
/// report and a scaling figure.
#[derive(Args)]
pub struct BenchTilesArgs {
    /// The CNN (.npz), e.g. out/ffdnet/clip.npz.
    #[arg(long)]
    pub model: PathBuf,
    /// The image (sigma-25 noise is added, seed 1).
    #[arg(long, default_value = "builtin:phantom:512")]
    pub image: String,
    /// Tile counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    pub tiles: Vec<usize>,
    /// Slices of the projected study.
    #[arg(long, default_value_t = 200)]
    pub slices: usize,
    #[arg(long, value_enum, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    /// Working folder; the report (bench-tiles.json) and the figure (scaling.png) go here.
    #[arg(long, default_value = "out/bench-tiles")]
    pub out: PathBuf,
}

/// Server pairs of the projection.
const PAIRS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

pub fn bench_tiles(a: BenchTilesArgs) -> Result<Summary> {
    if a.tiles.is_empty() || a.tiles.contains(&0) || a.slices == 0 {
        bail!("--tiles: counts of at least 1; --slices: at least 1");
    }
    // The bands are computed here from the model, as the servers do, for the halo figures.
    let cnn = Cnn::load_gray(&a.model)?;
    let g = crate::model::graph::Graph::from_cnn(&cnn).map_err(anyhow::Error::msg)?;
    let plan = GraphPlan::from_graph(&g, CnnFixed::for_model(&cnn)).map_err(anyhow::Error::msg)?;
    let dir = a.out.clone();
    std::fs::create_dir_all(&dir)?;
    let p = |n: &str| dir.join(n);
    let keys = p("keys");
    for n in ["s0", "s1"] {
        timed(&args(&[
            "keygen",
            "--force",
            "--name",
            n,
            "--out-dir",
            &s(&keys),
        ]))?;
    }
    signing_keys(&keys)?;
    let sign = |r: Role| signed_as(&keys, r);
    let owner = sign(Role::Owner);
    timed(&args(&[
        "share-model",
        "--model",
        &s(&a.model),
        "--out",
        &s(&p("model")),
        &owner[0],
        &owner[1],
    ]))?;
    let noisy = p("noisy.png");
    timed(&args(&[
        "add-noise",
        "--image",
        &a.image,
        "--sigma",
        "25",
        "--seed",
        "1",
        "--out",
        &s(&noisy),
    ]))?;
    let (h, w) = super::inputs::load_image(&a.image)?.pixels.dim();
    let gateway = sign(Role::Gateway);
    let (_, gw) = timed(&args(&[
        "share-image",
        &gateway[0],
        &gateway[1],
        "--image",
        &s(&noisy),
        "--model",
        &s(&p("model.pub")),
        "--trust",
        &s(&keys.join("trust")),
        "--sigma",
        "25",
        "--out",
        &s(&p("image")),
    ]))?;
    let mut runs = Vec::new();
    let mut lines = vec![format!(
        "bench-tiles: {} on {} ({h}x{w}), {} engine, {}",
        a.model.display(),
        a.image,
        a.engine,
        super::bench::machine()
    )];
    for &k in &a.tiles {
        let mut rows = 0;
        for i in 0..k {
            rows += plan
                .band(h, w, Tile::new(i, k).map_err(anyhow::Error::msg)?)
                .map_err(anyhow::Error::msg)?
                .height();
        }
        let (dealer_together, together) = run_tiles(&dir, &keys, &gw, &a, k, true)?;
        let (dealer_alone, alone) = run_tiles(&dir, &keys, &gw, &a, k, false)?;
        let slowest = alone.iter().cloned().fold(0.0, f64::max);
        let halo = rows as f64 / h as f64 - 1.0;
        lines.push(format!(
            "{k} tile(s): all pairs at once here {:.1} s (dealer {dealer_together:.1} s); one after another {:.1} s, slowest tile {slowest:.1} s (dealer {dealer_alone:.1} s); halo: {rows} rows computed for {h} (+{:.0}%)",
            together[0],
            alone.iter().sum::<f64>(),
            100.0 * halo
        ));
        runs.push(json!({
            "tiles": k, "rows_computed": rows, "halo_overhead": halo,
            "together": {"serve_seconds": together[0], "dealer_seconds": dealer_together},
            "alone": {"serve_seconds": alone, "slowest_seconds": slowest, "dealer_seconds": dealer_alone},
        }));
    }
    // The projection: a study's slices spread over N pairs, one slice per job (one tile),
    // each pair on a machine like this one; the dealer either ahead of time elsewhere
    // (serve only) or on the pair's machine before each slice.
    let one = runs.iter().find(|r| r["tiles"] == 1).unwrap_or(&runs[0]);
    let serve = one["alone"]["slowest_seconds"].as_f64().unwrap_or(0.0);
    let dealer = one["alone"]["dealer_seconds"].as_f64().unwrap_or(0.0);
    let hours = |per: f64, n: usize| (a.slices.div_ceil(n) as f64) * per / 3600.0;
    let serve_only: Vec<f64> = PAIRS.iter().map(|&n| hours(serve, n)).collect();
    let with_dealer: Vec<f64> = PAIRS.iter().map(|&n| hours(serve + dealer, n)).collect();
    lines.push(format!(
        "one pair: {:.0} slices per hour (dealer ahead) or {:.0} (dealer on the pair's machine); a {}-slice study: {}",
        3600.0 / serve,
        3600.0 / (serve + dealer),
        a.slices,
        PAIRS
            .iter()
            .zip(&serve_only)
            .map(|(n, t)| format!("{n} pairs {:.2} h", t))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let fig = p("scaling.png");
    super::figures::scaling_plot(
        &PAIRS.iter().map(|&n| n as f64).collect::<Vec<_>>(),
        &[
            ("dealer ahead of time (serve only)", &serve_only),
            ("dealer on each pair's machine", &with_dealer),
        ],
        &format!("a {}-slice study, {}x{} slices", a.slices, h, w),
        &fig,
    )?;
    lines.push(format!("figure: {}", fig.display()));
    let report = json!({
        "model": a.model, "image": a.image, "height": h, "width": w, "engine": a.engine.name(),
        "machine": super::bench::machine(), "commit": super::bench::commit(),
        "runs": runs,
        "projection": {"slices": a.slices, "pairs": PAIRS, "hours_serve_only": serve_only,
                       "hours_with_dealer": with_dealer,
                       "slices_per_hour_one_pair": 3600.0 / serve},
    });
    let out = p("bench-tiles.json");
    crate::fileio::atomic::write_bytes(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    lines.push(format!("results written to {}", out.display()));
    Ok(Summary {
        lines,
        json: report,
    })
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// Deals `k` tiles with fresh randomness and runs their pairs, all at once (`together`) or
/// one after another. Returns the dealer's seconds and the serve seconds: one wall time for
/// all pairs at once, else one per tile.
fn run_tiles(
    dir: &Path,
    keys: &Path,
    gateway: &serde_json::Value,
    a: &BenchTilesArgs,
    k: usize,
    together: bool,
) -> Result<(f64, Vec<f64>)> {
    let sub = dir.join(format!(
        "t{k}-{}",
        if together { "together" } else { "alone" }
    ));
    std::fs::create_dir_all(&sub)?;
    let tri = sub.join("triplets");
    let dealer_key = signed_as(keys, Role::Dealer);
    let (dealer, _) = timed(&args(&[
        "gen-triplets",
        &dealer_key[0],
        &dealer_key[1],
        "--model",
        &s(&dir.join("model.pub")),
        "--image",
        &s(&dir.join("image.pub")),
        "--engine",
        a.engine.name(),
        "--tiles",
        &k.to_string(),
        "--out",
        &s(&tri),
    ]))?;
    let pair = |i: usize| {
        let file = |what: &str, p: Party| s(&sub.join(format!("{what}.t{i}.p{p}")));
        let serve = |p: Party| {
            args(&[
                "serve",
                "--quiet",
                "--timeout",
                "600",
                "--model",
                &s(&dir.join(format!("model.p{p}"))),
                "--image",
                &s(&dir.join(format!("image.p{p}"))),
                "--triplets",
                &file("triplets", p),
                "--out",
                &file("out", p),
            ])
            .into_iter()
            .chain(signed_as(keys, server_role(p)))
            .collect::<Vec<_>>()
        };
        run_pair(&sub, keys, serve, None).map(|(secs, _)| secs)
    };
    let secs = if together {
        let t = std::time::Instant::now();
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..k).map(|i| sc.spawn(move || pair(i))).collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<f64>>>()
        })?;
        vec![t.elapsed().as_secs_f64()]
    } else {
        (0..k).map(pair).collect::<Result<Vec<f64>>>()?
    };
    // The tiles put together must be the image; the receiver checks every tile.
    let shares = |p: Party| -> Vec<String> {
        (0..k)
            .map(|i| s(&sub.join(format!("out.t{i}.p{p}"))))
            .collect()
    };
    let mut rec = args(&["reconstruct", "--share0"]);
    rec.extend(shares(Party::S0));
    rec.push("--share1".into());
    rec.extend(shares(Party::S1));
    rec.extend(args(&["--out", &s(&sub.join("denoised.png"))]));
    rec.extend(receiver_checks(keys, gateway)?);
    timed(&rec)?;
    Ok((dealer, secs))
}
