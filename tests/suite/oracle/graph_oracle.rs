//! Secure CNN graphs vs the plaintext fixed-point oracle, in process, bit for bit (issue 47,
//! milestone 4).
//!
//! Each case shares a graph plan's secret values (convs' weights and biases, affine maps,
//! PReLU slopes) as a model owner would, shares an input, and for each engine the dealer
//! makes fresh randomness (`dealer::graph`); S0 and S1 run `twopc::graph::run` in two threads
//! over an in-memory channel, with the weights opened in the job and opened once under a
//! model mask. Both output shares must add up to the oracle's output exactly.

use crate::common;
use ppdenoise::ring::Party;
use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};

use common::in_process::{in_pair, share_graph, tamper_last_weight};
use common::test_seed;
use ppdenoise::circuit::netlist::Netlist;
use ppdenoise::corr::batches::batches;
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::dealer::graph as deal;
use ppdenoise::dealer::DealSeeds;
use ppdenoise::model::graph::random::{every_op, mixed_readers, random_graph, win, Net};
use ppdenoise::model::graph::{Coords, Graph, Interp, Op, Resize, Rounding, Window};
use ppdenoise::ring::cnn::CnnFixed;
use ppdenoise::ring::graph::uses::Use;
use ppdenoise::ring::graph::{self as oracle, GraphPlan, Kind};
use ppdenoise::ring::share::{expand, share_with_seed, Stream};
use ppdenoise::twopc::engines::engine_for;
use ppdenoise::twopc::graph::{self as secure, mask_shares, open_graph_weights, GraphJobInputs};
use ppdenoise::twopc::job::{Report, Weights};
use ppdenoise::twopc::weights::Opened;

struct Outcome {
    /// (engine and weight path, reconstructed output) per run.
    runs: Vec<(String, Vec<u64>)>,
    oracle: Vec<u64>,
    out_of_range: u64,
    /// Per run: both parties' reports.
    reports: Vec<[Report; 2]>,
}

/// A random input of `n` values at scale s: values in [-1, 1) (a normalised image, and a
/// noise map where the plan takes one).
fn input(n: usize, s: u32, seed: u64) -> Vec<u64> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| ppdenoise::ring::fixed::encode(rng.gen_range(-1.0..1.0), s))
        .collect()
}

/// What a negative control changes.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    /// The last weighted step's first weight in party 1's share.
    Weight,
    /// Party 1's last explicit value from the dealer (the last product's triple: no
    /// activation can hide it).
    Dealer,
    /// Not a fault: every bit of party 1's explicit values above the width its reader reads
    /// them at is garbage (`common::Garbled`); the output must not change.
    Garble,
}

fn run_case(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    tamper: Tamper,
    relu_batch: usize,
    engines: &[EngineKind],
) -> Outcome {
    let mut shares = share_graph(plan);
    if tamper == Tamper::Weight {
        shares[1] = tamper_last_weight(plan, &shares[1], 1 << 12);
    }
    let enc = input(plan.inputs().len(h, w), plan.params.s, 7);
    let iseed = test_seed();
    let img = [
        share_with_seed(&enc, &iseed, Stream::ImageShare),
        expand(&iseed, Stream::ImageShare, enc.len()),
    ];
    let mask_seeds = [test_seed(), test_seed()];
    let opened: [Opened; 2] = in_pair(|p, ch| {
        let mask = mask_shares(&mask_seeds[p.index()], &shares[p.index()]);
        open_graph_weights(ch, p, &shares[p.index()], mask).unwrap()
    });
    assert_eq!(opened[0].u, opened[1].u);

    let mut runs = Vec::new();
    let mut reports = Vec::new();
    for &engine in engines {
        for model_mask in [None, Some(mask_seeds)] {
            let seeds = DealSeeds {
                job: [test_seed(), test_seed()],
                model_mask,
            };
            let setup = common::with_test_rng(|r| engine.deal_setup_with(r));
            let mut d = deal::generate_with(plan, h, w, engine, relu_batch, &seeds, setup).unwrap();
            if tamper == Tamper::Dealer {
                let last = d.corrections.len() - 1;
                d.corrections[last] = d.corrections[last].wrapping_add(1 << 40);
            }
            let bits = deal::correction_count(plan, h, w, engine, relu_batch)
                .unwrap()
                .bits;
            let res = in_pair(|p, ch| {
                let pi = p.index();
                let (mut rand, setup) = d.party(p);
                if tamper == Tamper::Garble && p == Party::S1 {
                    let src =
                        common::Garbled::new(d.corrections.clone(), bits, seeds.job[0][0].into());
                    rand = ppdenoise::corr::randomness::PartyRandomness::streaming(
                        Party::S1,
                        d.seeds[1],
                        src,
                    );
                }
                let mut eng = engine_for(engine, p, setup).unwrap();
                let inp = GraphJobInputs {
                    party: p,
                    plan: &shares[pi],
                    height: h,
                    width: w,
                    image: &img[pi],
                    rand,
                    session_tag: b"graph test".to_vec(),
                    weights: match model_mask {
                        Some(_) => Weights::Opened(&opened[pi]),
                        None => Weights::PerJob,
                    },
                    relu_batch,
                };
                secure::run(ch, inp, eng.as_mut(), &mut |_, _| {}).unwrap()
            });
            let out: Vec<u64> = res[0]
                .0
                .v
                .iter()
                .zip(&res[1].0.v)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect();
            let how = if model_mask.is_some() {
                "weights opened once"
            } else {
                "weights opened per job"
            };
            runs.push((format!("{engine}, {how}"), out));
            let [r0, r1] = res;
            reports.push([r0.1, r1.1]);
        }
    }
    let orc = oracle::run(plan, &enc, h, w);
    Outcome {
        runs,
        oracle: orc.output.v,
        out_of_range: orc.out_of_range,
        reports,
    }
}

fn assert_exact(o: &Outcome, what: &str) {
    for (how, out) in &o.runs {
        assert_eq!(out.len(), o.oracle.len(), "{what} ({how}): output size");
        let diff = out.iter().zip(&o.oracle).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{what} ({how}): {diff} values differ from the oracle"
        );
    }
}

/// The kinds of step a plan holds (by name), to show the cases cover every op.
fn kinds(plan: &GraphPlan) -> BTreeSet<String> {
    plan.steps
        .iter()
        .map(|s| {
            format!("{:?}", s.kind)
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The smallest size for `plan` from (h, w) up: multiples of its total stride on which
/// every map keeps at least one value.
fn size(plan: &GraphPlan, h: usize, w: usize) -> (usize, usize) {
    let [sy, sx] = plan.stride;
    let (mut h, mut w) = (h.div_ceil(sy) * sy, w.div_ceil(sx) * sx);
    while plan.dims(h, w).is_err() {
        (h, w) = (h + sy, w + sx);
    }
    (h, w)
}

const BOTH: [EngineKind; 2] = [EngineKind::Gc, EngineKind::Gmw];

/// Every kind of step but the input.
const ALL: [&str; 15] = [
    "Trunc",
    "Conv",
    "Add",
    "Sub",
    "Concat",
    "Affine",
    "AvgPool",
    "MaxPool",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
];

#[test]
fn the_every_op_graph_is_bit_exact_on_both_engines() {
    let plan = GraphPlan::from_graph(&every_op(1), CnnFixed::default()).unwrap();
    let mut want: BTreeSet<String> = ALL.iter().map(|s| s.to_string()).collect();
    want.insert("Input".into());
    assert_eq!(kinds(&plan), want);
    let (h, w) = size(&plan, 12, 20);
    // A small batch: several circuit runs per step (each its own stream).
    let o = run_case(&plan, h, w, Tamper::None, 97, &BOTH);
    assert_exact(&o, "every-op graph");
    assert_eq!(o.out_of_range, 0, "every-op graph: oracle out of range");
}

/// Random graphs of every op (depth, strides, odd sizes, skips across levels), both engines,
/// both weight paths; the seeds together use every step kind.
#[test]
fn random_graphs_are_bit_exact_on_both_engines() {
    let mut used = BTreeSet::new();
    let mut in_range = 0;
    for seed in 0..10 {
        let g: Graph = random_graph(seed);
        let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
        let [sy, sx] = plan.stride;
        let (h, w) = size(
            &plan,
            sy * (3 + seed as usize % 3),
            sx * (5 - seed as usize % 2),
        );
        let batch = if seed % 2 == 0 { 1 << 20 } else { 61 };
        let o = run_case(&plan, h, w, Tamper::None, batch, &BOTH);
        assert_exact(&o, &format!("random graph {seed}"));
        in_range += usize::from(o.out_of_range == 0);
        used.extend(kinds(&plan));
    }
    assert!(in_range >= 8, "only {in_range} of 10 graphs stay in range");
    let all: BTreeSet<String> = ALL.iter().map(|s| s.to_string()).collect();
    assert!(all.is_subset(&used), "the random graphs use only {used:?}");
}

/// DnCNN and FFDNet as graphs (`Graph::from_cnn`): gray and colour planes, FFDNet's noise map
/// (one channel, and one per colour) as a second input, both engines, both weight paths.
#[test]
fn chain_cnns_with_noise_maps_and_colours_are_bit_exact_on_both_engines() {
    use ppdenoise::model::cnn::{random_framed_cnn, CnnMeta};
    use ppdenoise::model::frame::Frame;
    for (frame, chans, residual) in [
        (Frame::PLAIN, vec![1, 6, 1], true),
        (Frame::PLAIN, vec![3, 5, 3], true),
        (Frame::FFDNET, vec![5, 6, 4], false),
        (Frame::FFDNET, vec![15, 6, 12], false),
        (Frame::FFDNET, vec![13, 7, 12], false),
    ] {
        let meta = CnnMeta {
            sigma: 25.0,
            residual,
        };
        let g = Graph::from_cnn(&random_framed_cnn(&chans, 3, 5, meta, frame)).unwrap();
        let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
        assert_eq!(plan.inputs().map.is_some(), frame.noise_map);
        let (h, w) = size(&plan, 10, 6);
        let o = run_case(&plan, h, w, Tamper::None, 83, &BOTH);
        assert_exact(&o, &format!("{frame:?} {chans:?}"));
    }
}

/// At 16 fractional bits everywhere (other scales, other Trunc placements).
#[test]
fn non_default_fixed_point_is_bit_exact() {
    let params = CnnFixed {
        s: 16,
        ws: 16,
        k: 24,
    };
    for seed in [3, 11] {
        let plan = GraphPlan::from_graph(&random_graph(seed), params).unwrap();
        let (h, w) = size(&plan, 16, 12);
        let o = run_case(&plan, h, w, Tamper::None, 1 << 20, &[EngineKind::Gmw]);
        assert_exact(&o, &format!("random graph {seed} at 16 bits"));
    }
}

/// A wrong weight share gives another output (the test can fail).
#[test]
fn a_wrong_weight_share_breaks_exactness() {
    let plan = GraphPlan::from_graph(&random_graph(2), CnnFixed::default()).unwrap();
    let (h, w) = size(&plan, 16, 16);
    for tamper in [Tamper::Weight, Tamper::Dealer] {
        let o = run_case(&plan, h, w, tamper, 1 << 20, &BOTH);
        for (how, out) in &o.runs {
            assert!(out != &o.oracle, "{how}: a tampered value went unnoticed");
        }
    }
}

/// The cases random graphs do not draw: a leaky ReLU at sh = 0 (after a ReLU), an affine
/// map and a PReLU with one value for all channels, a 1x1 max pooling of stride 2 (no
/// comparison at all), a dilated max pooling whose border windows hold one value, one-sided
/// clips, a grouped transposed conv, a dilated average pooling counting its padding.
fn edge_cases() -> Graph {
    let mut n = Net::new(12);
    let c = 4;
    let a = n.conv(0, 1, c, win(3, 1, 1), false, 1);
    let a = n.add(Op::Relu, &[a]);
    let l = n.add(Op::LeakyRelu { alpha: 0.2 }, &[a]);
    let f = n.add(
        Op::Affine {
            scale: vec![0.7],
            shift: vec![0.05],
        },
        &[l],
    );
    let p = n.add(Op::PRelu { slope: vec![0.25] }, &[f]);
    let m1 = n.add(
        Op::MaxPool {
            window: win(1, 2, 0),
        },
        &[p],
    );
    let dilated = Window {
        kernel: [2, 2],
        stride: [2, 2],
        dilation: [2, 2],
        pads: [1; 4],
    };
    let m2 = n.add(Op::MaxPool { window: dilated }, &[p]);
    let j = n.add(Op::Add, &[m1, m2]);
    let j = n.add(
        Op::AvgPool {
            window: Window {
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [2, 2],
                pads: [2; 4],
            },
            count_pad: true,
        },
        &[j],
    );
    let c1 = n.add(
        Op::Clip {
            lo: Some(-0.5),
            hi: None,
        },
        &[j],
    );
    let c2 = n.add(
        Op::Clip {
            lo: None,
            hi: Some(0.8),
        },
        &[c1],
    );
    let u = n.conv(c2, c, c, win(2, 2, 0), true, 2);
    let o = n.conv(u, c, 1, win(3, 1, 1), false, 1);
    let o = n.add(Op::Sub, &[0, o]);
    n.graph(o)
}

/// A graph whose output is a circuit's (ReLU, leaky ReLU, PReLU, max pooling, clip), held
/// at the output's width (wire revision 6; a ReLU's at k bits, where its result needs no
/// extension), is the oracle's bit for bit on both engines, at the defaults and at
/// activations of ±16, with every dealer bit above its reader's width garbage.
#[test]
fn a_graph_that_ends_in_a_circuit_is_bit_exact() {
    let ends = [
        Op::Relu,
        Op::LeakyRelu { alpha: 0.2 },
        Op::PRelu { slope: vec![-0.5] },
        Op::MaxPool {
            window: win(3, 1, 1),
        },
        Op::Clip {
            lo: Some(-0.5),
            hi: Some(0.8),
        },
    ];
    for end in ends {
        let mut n = Net::new(3);
        let a = n.conv(0, 1, 2, win(3, 1, 1), false, 1);
        let a = n.add(Op::Relu, &[a]);
        let b = n.conv(a, 2, 1, win(3, 1, 1), false, 1);
        let o = n.add(end.clone(), &[b]);
        let g = n.graph(o);
        for p in [CnnFixed::default(), WIDE_OUT] {
            let plan = GraphPlan::from_graph(&g, p).unwrap();
            let (h, w) = size(&plan, 9, 10);
            for tamper in [Tamper::None, Tamper::Garble] {
                let o = run_case(&plan, h, w, tamper, 41, &BOTH);
                assert_exact(&o, &format!("ending in {end:?} at {p:?}"));
            }
        }
    }
}

/// Issue 51, item 3: party 1's dealer values are needed only mod the width their product's
/// result or their circuit's output is read at (`GraphPlan::product_bits`,
/// `circuit_out_bits`): with every bit above it garbage, the every-op graph (every step kind,
/// max pooling's and clip's chained circuits included) and the edge cases are still the
/// oracle's, bit for bit, on both engines. (Watched failing with every circuit's outputs
/// made at k bits, the circuit's own output width, instead of what their readers read.)
#[test]
fn garbage_above_each_dealer_value_s_width_changes_nothing() {
    let p = CnnFixed::default();
    let plan = GraphPlan::from_graph(&every_op(1), p).unwrap();
    let (h, w) = size(&plan, 12, 20);
    assert_exact(
        &run_case(&plan, h, w, Tamper::Garble, 97, &BOTH),
        "every-op graph",
    );
    let plan = GraphPlan::from_graph(&edge_cases(), p).unwrap();
    let (h, w) = size(&plan, 10, 14);
    assert_exact(
        &run_case(&plan, h, w, Tamper::Garble, 29, &BOTH),
        "edge cases",
    );
}

#[test]
fn edge_cases_are_bit_exact_on_both_engines() {
    let plan = GraphPlan::from_graph(&edge_cases(), CnnFixed::default()).unwrap();
    for (h, w) in [size(&plan, 10, 14), size(&plan, 2, 2)] {
        let o = run_case(&plan, h, w, Tamper::None, 29, &BOTH);
        assert_exact(&o, &format!("edge cases at {h} x {w}"));
    }
}

/// Activations at ±16 (s = 12, ws = 13, k = 17): the output's width (31 bits, its least
/// range ±32) is then not a ReLU's reading width (ws + k = 30), as it is at the defaults.
const WIDE_OUT: CnnFixed = CnnFixed {
    s: 12,
    ws: 13,
    k: 17,
};

/// A map read by two products of different needs is opened at the wider one: one read by a
/// conv feeding a ReLU and one reaching the output linearly (at the output's width), one by
/// a conv feeding a ReLU at ws and two convs feeding one at 2 ws; each with the wider reader
/// first and last.
#[test]
fn a_map_read_at_two_widths_is_bit_exact_on_both_engines() {
    let p = WIDE_OUT;
    for wide_first in [true, false] {
        let (g, [a, r]) = mixed_readers(5, wide_first);
        let plan = GraphPlan::from_graph(&g, p).unwrap();
        // The case is what it says: the map reaching the output opened at its width.
        assert_eq!(plan.out_bits(), p.ws + p.k + 1);
        assert_eq!(plan.open_bits((plan.nodes[a] as u32, 0)), plan.out_bits());
        assert_eq!(plan.open_bits((plan.nodes[r] as u32, 0)), 2 * p.ws + p.k);
        let (h, w) = size(&plan, 9, 11);
        let o = run_case(&plan, h, w, Tamper::None, 101, &BOTH);
        assert_exact(&o, &format!("two widths, wide first: {wide_first}"));
    }
}

/// A net whose first activation is read by two convs (a skip's two branches), then a PReLU,
/// a max pooling, a nearest up-sampling and a residual output.
fn two_readers() -> Graph {
    let mut n = Net::new(9);
    let c = 3;
    let a = n.conv(0, 1, c, win(3, 1, 1), false, 1);
    let a = n.add(Op::Relu, &[a]);
    let b1 = n.conv(a, c, c, win(3, 1, 1), false, 1);
    let b2 = n.conv(a, c, c, win(1, 1, 0), false, 1);
    let j = n.add(Op::Add, &[b1, b2]);
    let j = n.add(
        Op::PRelu {
            slope: vec![0.1, -0.2, 0.3],
        },
        &[j],
    );
    let m = n.add(
        Op::MaxPool {
            window: win(2, 2, 0),
        },
        &[j],
    );
    let r = Resize {
        scale: [2, 2],
        interp: Interp::Nearest(Rounding::Floor),
        coords: Coords::Asymmetric,
    };
    let u = n.add(Op::Resize(r), &[m]);
    let o = n.conv(u, c, 1, win(3, 1, 1), false, 1);
    let o = n.add(Op::Sub, &[0, o]);
    n.graph(o)
}

/// The boolean engine sends what the protocol says: the session tag, each product's input
/// map once (a tensor read by several products once), a PReLU's second map (each packed at
/// its opening width), 2 bits per AND
/// and 1 per output bit of each circuit run (and a ReLU selection's sum and result), an
/// 8-byte frame per message; opening the
/// weights in the job adds exactly them.
#[test]
fn traffic_is_what_the_protocol_says() {
    let plan = GraphPlan::from_graph(&two_readers(), WIDE_OUT).unwrap();
    let (h, w) = size(&plan, 8, 12);
    let batch = 333;
    let o = run_case(&plan, h, w, Tamper::None, batch, &[EngineKind::Gmw]);
    assert_exact(&o, "traffic case");
    let dims = plan.dims(h, w).unwrap();
    let len = |d: [usize; 3]| (d[0] * d[1] * d[2]) as u64;
    let mut opened = BTreeSet::new();
    let mut maps = 0;
    let mut circuits = 0;
    let mut twice = 0;
    // Openings are packed at their width: the low bits their readers need; a ReLU result
    // left mod 2^k (the boolean engine fuses) first sends its shares' masked top bits.
    let mut widths = BTreeSet::new();
    let fused = plan.fused(true);
    let mut extended = 0;
    for (i, st) in plan.steps.iter().enumerate().skip(1) {
        match st.kind {
            Kind::Conv { .. } | Kind::Affine { .. } => {
                if !opened.insert(st.inputs[0]) {
                    twice += 1;
                } else {
                    let bits = plan.open_bits((st.inputs[0] as u32, 0));
                    widths.insert(bits);
                    maps += (len(dims[st.inputs[0]]) * bits as u64).div_ceil(8);
                    if fused.opens(i, st.inputs[0]).is_some() {
                        maps += len(dims[st.inputs[0]]).div_ceil(8);
                        extended += 1;
                    }
                }
            }
            Kind::PRelu { .. } => {
                let bits = plan.open_bits((i as u32, 1));
                widths.insert(bits);
                maps += (len(dims[i]) * bits as u64).div_ceil(8);
            }
            _ => {}
        }
        for u in plan.uses(i, &dims, &fused) {
            if let Use::Circuit { circ, elements } = u {
                let net = Netlist::record(&circ);
                // A ReLU finished by selection also opens its k-bit sum (at the readers'
                // width when that is narrower) and, read wider than k bits, its k-bit result.
                let bits = plan.circuit_bits(&plan.needed_bits(), i, &fused);
                let select = net.select.map_or(0, |p| {
                    let k = p.k as u64;
                    k.min(bits as u64) + if bits as u64 > k { k } else { 0 }
                });
                let per = net.and_openings() as u64 + net.outputs.len() as u64 + select;
                circuits += batches(elements, batch)
                    .map(|(_, _, n)| (n as u64).div_ceil(64) * 8 * per)
                    .sum::<u64>();
            }
        }
    }
    assert!(twice > 0, "the case has a tensor read by two products");
    assert!(
        extended > 0,
        "the case has a ReLU result extended as it is opened"
    );
    assert!(
        widths.len() > 1 && widths.contains(&plan.out_bits()),
        "the case has openings only circuits read and one the output reads: {widths:?}"
    );
    let weights: u64 = plan.weight_steps().iter().map(|&(_, n)| 8 * n as u64).sum();
    let [per_job, once] = [&o.reports[0][0], &o.reports[1][0]];
    let framing = 8 * once.link.messages_sent;
    let tag = b"graph test".len() as u64;
    assert_eq!(once.link.bytes_sent, tag + maps + circuits + framing);
    assert_eq!(per_job.link.bytes_sent - once.link.bytes_sent, weights + 8);

    // Per op kind (bench's figures): every byte but the session tag's is counted once, under
    // the op that sent it; every step once; the products' multiply-adds are the plan's.
    let sent = |r: &Report, op: &str| r.ops.iter().find(|f| f.op == op).map(|f| f.bytes_sent);
    for r in [per_job, once] {
        let counted: u64 = r.ops.iter().map(|f| f.bytes_sent).sum();
        assert_eq!(counted, r.link.bytes_sent - tag - 8, "{:?}", r.ops);
        let steps: usize = r.ops.iter().map(|f| f.steps).sum();
        let opened = (sent(r, "OpenWeights").is_some()) as usize;
        assert_eq!(steps, plan.steps.len() - 1 + opened);
        // Counted here from the shapes, not from the plan's costs: a conv's every output
        // reads a filter row, a transposed conv's every input spreads one.
        let macs: u64 = (1..plan.steps.len())
            .map(|i| {
                let st = &plan.steps[i];
                match &st.kind {
                    Kind::Conv { op, .. } => {
                        let [kh, kw] = op.window.kernel;
                        let (d, c) = match op.transposed {
                            true => (dims[st.inputs[0]], op.cout),
                            false => (dims[i], op.cin),
                        };
                        len(d) * (c / op.groups * kh * kw) as u64
                    }
                    Kind::Affine { .. } | Kind::PRelu { .. } => len(dims[i]),
                    _ => 0,
                }
            })
            .sum();
        assert!(r.macs > 0 && r.macs == macs, "{} {macs}", r.macs);
        let relu = r
            .ops
            .iter()
            .find(|f| f.op == "Relu")
            .expect("the case has ReLUs");
        assert!(relu.comparisons > 0 && relu.and_gates > 0 && relu.engine_rounds > 0);
    }
    assert_eq!(sent(per_job, "OpenWeights"), Some(weights + 8));
    assert_eq!(sent(once, "OpenWeights"), None);
}
