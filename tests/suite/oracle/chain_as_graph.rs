//! DnCNN and FFDNet at their published depths and widths, run as graphs (`Graph::from_cnn`,
//! `twopc::graph`, `dealer::graph`) in process: the secure output is the chain CNN's own
//! oracle's (`ring::cnn::run`) bit for bit. The ignored test measures the full-size
//! networks' seconds and bytes (docs/graph.md, "One convolutional family").

use crate::common::in_process::{chain_job, share_graph, ChainRun};
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use ppdenoise::model::graph::Graph;
use ppdenoise::ring::cnn::{CnnFixed, CnnPlan};
use ppdenoise::ring::graph::GraphPlan;

/// The encoded input: the image's planes (c x h x w) then the map's channels, at scale s.
fn input(m: &Cnn, h: usize, w: usize, s: u32) -> Vec<u64> {
    let maps = m.convs[0].cin - m.frame.out_channels(m.colours);
    let (mh, mw) = m.frame.stack_dims(h, w);
    let image = (0..m.colours * h * w).map(|i| ((i * 31) % 256) as f64 / 255.0);
    let map = (0..maps * mh * mw).map(|i| (10 + (i * 7) % 60) as f64 / 255.0);
    image
        .chain(map)
        .map(|v| ppdenoise::ring::fixed::encode(v, s))
        .collect()
}

/// The graph job's output, bytes both servers sent and seconds, and the CNN oracle's output.
fn both(m: &Cnn, h: usize, w: usize, engine: EngineKind) -> (Vec<u64>, u64, f64, Vec<u64>) {
    let params = CnnFixed::for_model(m);
    let plan = GraphPlan::from_graph(&Graph::from_cnn(m).unwrap(), params).unwrap();
    let enc = input(m, h, w, params.s);
    let run = ChainRun {
        engine,
        batch: 1 << 16,
        opened: None,
        garble: None,
    };
    let o = chain_job(&plan, &share_graph(&plan), &enc, (h, w), run);
    let bytes = o.reports[0].link.bytes_sent + o.reports[1].link.bytes_sent;
    let oracle = ppdenoise::ring::cnn::run(&CnnPlan::from_cnn(m, params).unwrap(), h, w, &enc);
    (o.out, bytes, o.seconds, oracle.output)
}

/// DnCNN, gray FFDNet and colour FFDNet: `full`, at their published depths and widths
/// (17 x 64, 15 x 64, 12 x 96), else 3 layers of 8 channels.
fn nets(full: bool) -> Vec<(&'static str, Cnn)> {
    let meta = |residual| CnnMeta {
        sigma: 25.0,
        residual,
    };
    let stack = |first: usize, last: usize, depth: usize, width: usize| {
        let (depth, width) = if full { (depth, width) } else { (3, 8) };
        let mut c = vec![first];
        c.extend(std::iter::repeat_n(width, depth - 1));
        c.push(last);
        c
    };
    vec![
        (
            "DnCNN",
            random_framed_cnn(&stack(1, 1, 17, 64), 3, 3, meta(true), Frame::PLAIN),
        ),
        (
            "FFDNet",
            random_framed_cnn(&stack(5, 4, 15, 64), 3, 4, meta(false), Frame::FFDNET),
        ),
        (
            "colour FFDNet",
            random_framed_cnn(&stack(15, 12, 12, 96), 3, 5, meta(false), Frame::FFDNET),
        ),
    ]
}

/// Every network on both engines at an odd size: the CNN oracle's bits.
#[test]
fn dncnn_and_ffdnet_as_graphs_give_the_cnn_oracles_bits() {
    for (name, m) in nets(false) {
        for engine in [EngineKind::Gmw, EngineKind::Gc] {
            let (out, _, _, oracle) = both(&m, 17, 12, engine);
            assert_eq!(out, oracle, "{name}, {engine}: outputs differ");
        }
    }
}

/// Full-size networks, gmw: seconds and bytes (`CHAIN_SIDE=512 CHAIN_ONLY=FFDNet cargo
/// test --release --test suite -- --ignored oracle::chain_as_graph --nocapture`, nothing
/// else running; the side defaults to 128, every network is run without the filter).
#[test]
#[ignore]
fn full_size_networks_as_graphs() {
    let side: usize = std::env::var("CHAIN_SIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let only = std::env::var("CHAIN_ONLY").unwrap_or_default();
    for (name, m) in nets(true)
        .into_iter()
        .filter(|(n, _)| n.contains(only.as_str()))
    {
        let (out, bytes, seconds, oracle) = both(&m, side, side, EngineKind::Gmw);
        assert_eq!(out, oracle, "{name}");
        println!(
            "{name} {side}x{side}: graph {seconds:.2} s {:.1} MB",
            bytes as f64 / 1e6
        );
    }
}
