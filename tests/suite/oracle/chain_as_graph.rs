//! DnCNN and FFDNet run two ways in process: as CNN jobs (`twopc::cnn`, `dealer::cnn`) and
//! as graphs (`Graph::from_cnn`, `twopc::graph`, `dealer::graph`), the same weights, image and
//! noise map. The secure outputs must be the same bits, and the graph must move no more
//! bytes between the servers (docs/graph.md, "One convolutional family"): the gate for
//! running chains as graphs only. The ignored test measures full-size networks.

use std::time::Instant;

use crate::common::{self, test_seed};
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::dealer::DealSeeds;
use ppdenoise::formats::bodies::CnnModelShare;
use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use ppdenoise::model::graph::Graph;
use ppdenoise::ring::cnn::{CnnFixed, CnnPlan};
use ppdenoise::ring::graph::{padded_dims, GraphPlan};
use ppdenoise::ring::share::{expand, share_with_seed, Stream};
use ppdenoise::ring::Party;
use ppdenoise::twopc::channel::{mem_pair, Channel};
use ppdenoise::twopc::engines::engine_for;
use ppdenoise::twopc::protocol::Weights;

fn in_pair<T: Send>(f: impl Fn(Party, &mut dyn Channel) -> T + Sync) -> [T; 2] {
    let (mut c0, mut c1) = mem_pair();
    std::thread::scope(|sc| {
        let f = &f;
        let h0 = sc.spawn(move || f(Party::S0, &mut c0));
        let h1 = sc.spawn(move || f(Party::S1, &mut c1));
        [h0.join().unwrap(), h1.join().unwrap()]
    })
}

/// What one secure run gave: the output (image-sized, planes one after another), the bytes
/// both servers sent, and the serving seconds.
struct Run {
    out: Vec<u64>,
    bytes: u64,
    seconds: f64,
}

fn shares_of(v: &[u64]) -> [Vec<u64>; 2] {
    let seed = test_seed();
    [
        share_with_seed(v, &seed, Stream::ImageShare),
        expand(&seed, Stream::ImageShare, v.len()),
    ]
}

fn seeds() -> DealSeeds {
    DealSeeds {
        job: [test_seed(), test_seed()],
        model_mask: None,
    }
}

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

const BATCH: usize = 1 << 16;

fn as_cnn(m: &Cnn, h: usize, w: usize, engine: EngineKind) -> Run {
    let plan = CnnPlan::from_cnn(m, CnnFixed::for_model(m)).unwrap();
    let shares = CnnModelShare::split(&plan, m.meta, &test_seed()).map(|s| s.share_plan().unwrap());
    let img = shares_of(&input(m, h, w, plan.params.s));
    let setup = common::with_test_rng(|r| engine.deal_setup_with(r));
    let deal = ppdenoise::dealer::cnn::generate_with(&plan, h, w, engine, BATCH, &seeds(), setup);
    let t = Instant::now();
    let res = in_pair(|p, ch| {
        let (rand, setup) = deal.party(p);
        let mut eng = engine_for(engine, p, setup).unwrap();
        let inp = ppdenoise::twopc::cnn::CnnJobInputs {
            party: p,
            plan: &shares[p.index()],
            height: h,
            width: w,
            image: &img[p.index()],
            rand,
            session_tag: b"chain".to_vec(),
            weights: Weights::PerJob,
            relu_batch: BATCH,
        };
        let (out, rep) = ppdenoise::twopc::cnn::run(ch, inp, eng.as_mut(), &mut |_, _| {}).unwrap();
        (out, rep.link.bytes_sent)
    });
    let seconds = t.elapsed().as_secs_f64();
    let out = res[0]
        .0
        .iter()
        .zip(&res[1].0)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    Run {
        out,
        bytes: res[0].1 + res[1].1,
        seconds,
    }
}

fn as_graph(m: &Cnn, h: usize, w: usize, engine: EngineKind) -> Run {
    let g = Graph::from_cnn(m).unwrap();
    let plan = GraphPlan::from_graph(&g, CnnFixed::for_model(m)).unwrap();
    let secret = plan.secret_values();
    let seed = test_seed();
    let shares = [
        share_with_seed(&secret, &seed, Stream::ModelShare),
        expand(&seed, Stream::ModelShare, secret.len()),
    ]
    .map(|v| plan.with_secret_values(&v).unwrap());
    let (ph, pw) = padded_dims(plan.stride, h, w);
    let padded = plan
        .inputs()
        .pad(&input(m, h, w, plan.params.s), (h, w), (ph, pw));
    let img = shares_of(&padded);
    let setup = common::with_test_rng(|r| engine.deal_setup_with(r));
    let deal =
        ppdenoise::dealer::graph::generate_with(&plan, ph, pw, engine, BATCH, &seeds(), setup)
            .unwrap();
    let t = Instant::now();
    let res = in_pair(|p, ch| {
        let (rand, setup) = deal.party(p);
        let mut eng = engine_for(engine, p, setup).unwrap();
        let inp = ppdenoise::twopc::graph::GraphJobInputs {
            party: p,
            plan: &shares[p.index()],
            height: ph,
            width: pw,
            image: &img[p.index()],
            rand,
            session_tag: b"chain".to_vec(),
            weights: Weights::PerJob,
            relu_batch: BATCH,
        };
        let (out, rep) =
            ppdenoise::twopc::graph::run(ch, inp, eng.as_mut(), &mut |_, _| {}).unwrap();
        (out.v, rep.link.bytes_sent)
    });
    let seconds = t.elapsed().as_secs_f64();
    let sum: Vec<u64> = res[0]
        .0
        .iter()
        .zip(&res[1].0)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    // The image's own pixels of each padded plane.
    let out = sum
        .chunks_exact(ph * pw)
        .flat_map(|plane| (0..h).flat_map(move |y| plane[y * pw..y * pw + w].to_vec()))
        .collect();
    Run {
        out,
        bytes: res[0].1 + res[1].1,
        seconds,
    }
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

/// The same bits both ways, on both engines, at an odd size; the graph moves no more bytes.
#[test]
fn dncnn_and_ffdnet_as_graphs_give_the_cnn_jobs_bits_and_bytes() {
    for (name, m) in nets(false) {
        for engine in [EngineKind::Gmw, EngineKind::Gc] {
            let (h, w) = (17, 12);
            let (c, g) = (as_cnn(&m, h, w, engine), as_graph(&m, h, w, engine));
            assert_eq!(g.out, c.out, "{name}, {engine}: outputs differ");
            assert!(
                g.bytes <= c.bytes,
                "{name}, {engine}: the graph moved {} bytes, the CNN job {}",
                g.bytes,
                c.bytes
            );
        }
    }
}

/// Full-size networks, gmw: seconds and bytes both ways (`CHAIN_SIDE=512 CHAIN_ONLY=FFDNet
/// cargo test --release --test suite -- --ignored oracle::chain_as_graph --nocapture`,
/// nothing else running; the side defaults to 128, every network is run without the filter).
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
        let engine = EngineKind::Gmw;
        let c = as_cnn(&m, side, side, engine);
        let g = as_graph(&m, side, side, engine);
        assert_eq!(g.out, c.out, "{name}");
        println!(
            "{name} {side}x{side}: CNN job {:.2} s {:.1} MB, graph {:.2} s {:.1} MB",
            c.seconds,
            c.bytes as f64 / 1e6,
            g.seconds,
            g.bytes as f64 / 1e6
        );
    }
}
