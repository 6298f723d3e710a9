//! Secure jobs in process: S0 and S1 in two threads over an in-memory channel. The pair
//! runner, a graph plan shared as a model owner shares it, and the graph job a chain CNN
//! (DnCNN, FFDNet: `Graph::from_cnn`) runs as on its own encoded image, shared by
//! tests/suite/oracle/{graph_oracle,cnn_oracle,chain_as_graph}.rs.

use std::time::Instant;

use super::{test_seed, with_test_rng, Garbled};
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::corr::randomness::PartyRandomness;
use ppdenoise::dealer::DealSeeds;
use ppdenoise::ring::graph::{padded_dims, GraphPlan};
use ppdenoise::ring::share::{expand, share_with_seed, Seed, Stream};
use ppdenoise::ring::Party;
use ppdenoise::twopc::channel::{mem_pair, Channel};
use ppdenoise::twopc::engines::engine_for;
use ppdenoise::twopc::graph::{self as secure, GraphJobInputs};
use ppdenoise::twopc::job::{Report, Weights};
use ppdenoise::twopc::weights::Opened;

/// `f` run as both parties at once, each over its end of one in-memory channel.
pub fn in_pair<T: Send>(f: impl Fn(Party, &mut dyn Channel) -> T + Sync) -> [T; 2] {
    let (mut c0, mut c1) = mem_pair();
    std::thread::scope(|sc| {
        let f = &f;
        let h0 = sc.spawn(move || f(Party::S0, &mut c0));
        let h1 = sc.spawn(move || f(Party::S1, &mut c1));
        [h0.join().unwrap(), h1.join().unwrap()]
    })
}

/// The plan's secret values split into two additive shares (party 1's from a seed, as
/// `share-model` does), each filled into the plan as a server would read its share.
pub fn share_graph(plan: &GraphPlan) -> [GraphPlan; 2] {
    let secret = plan.secret_values();
    let seed = test_seed();
    [
        share_with_seed(&secret, &seed, Stream::ModelShare),
        expand(&seed, Stream::ModelShare, secret.len()),
    ]
    .map(|v| plan.with_secret_values(&v).unwrap())
}

/// `share` (a party's share of `plan`) with `by` added to the last weighted step's first
/// weight: a fault no activation after it can hide (negative controls).
pub fn tamper_last_weight(plan: &GraphPlan, share: &GraphPlan, by: u64) -> GraphPlan {
    let mut v = share.secret_values();
    let ch = plan.channels();
    let (last, _) = *plan.weight_steps().last().unwrap();
    let tail: usize = (last..plan.steps.len())
        .map(|i| plan.secret_counts(i, &ch).iter().sum::<usize>())
        .sum();
    let at = v.len() - tail;
    v[at] = v[at].wrapping_add(by);
    share.with_secret_values(&v).unwrap()
}

/// Two additive shares of `v`, party 1's from a seed (as the gateway shares an image).
pub fn shares_of(v: &[u64]) -> [Vec<u64>; 2] {
    let seed = test_seed();
    [
        share_with_seed(v, &seed, Stream::ImageShare),
        expand(&seed, Stream::ImageShare, v.len()),
    ]
}

/// How a chain's graph job is run: its engine and circuit batch, its weights opened once
/// under a model mask (both parties' opened weights and the mask's seeds) or in the job,
/// and whether party 1's dealer values carry garbage above their widths (`Garbled`, seeded
/// with it).
#[derive(Clone, Copy)]
pub struct ChainRun<'a> {
    pub engine: EngineKind,
    pub batch: usize,
    pub opened: Option<(&'a [Opened; 2], [Seed; 2])>,
    pub garble: Option<u64>,
}

/// What a chain's graph job gave: the output's image pixels (each plane cropped from the
/// padded job's, planes one after another), both parties' reports, party 1's explicit
/// values, and the dealing's and the job's seconds.
pub struct ChainOutcome {
    pub out: Vec<u64>,
    pub reports: [Report; 2],
    pub corrections: usize,
    pub deal_seconds: f64,
    pub seconds: f64,
}

/// The graph job of a chain CNN's `plan` (its parties' `shares`) on `enc`, an h x w image's
/// encoded planes then its map's channels (`ring::cnn::encode_image`): padded by
/// replication to the plan's stride, shared, dealt and run as `run` says.
pub fn chain_job(
    plan: &GraphPlan,
    shares: &[GraphPlan; 2],
    enc: &[u64],
    (h, w): (usize, usize),
    run: ChainRun,
) -> ChainOutcome {
    let (ph, pw) = padded_dims(plan.stride, h, w);
    let img = shares_of(&plan.inputs().pad(enc, (h, w), (ph, pw)));
    let engine = run.engine;
    let seeds = DealSeeds {
        job: [test_seed(), test_seed()],
        model_mask: run.opened.map(|(_, s)| s),
    };
    let setup = with_test_rng(|r| engine.deal_setup_with(r));
    let t = Instant::now();
    let d = ppdenoise::dealer::graph::generate_with(plan, ph, pw, engine, run.batch, &seeds, setup)
        .unwrap();
    let deal_seconds = t.elapsed().as_secs_f64();
    let bits = ppdenoise::dealer::graph::correction_count(plan, ph, pw, engine, run.batch)
        .unwrap()
        .bits;
    let t = Instant::now();
    let res = in_pair(|p, ch| {
        let pi = p.index();
        let (mut rand, setup) = d.party(p);
        if let (Some(g), Party::S1) = (run.garble, p) {
            let src = Garbled::new(d.corrections.clone(), bits, g);
            rand = PartyRandomness::streaming(Party::S1, d.seeds[1], src);
        }
        let mut eng = engine_for(engine, p, setup).unwrap();
        let inp = GraphJobInputs {
            party: p,
            plan: &shares[pi],
            height: ph,
            width: pw,
            image: &img[pi],
            rand,
            session_tag: b"cnn test".to_vec(),
            weights: match run.opened {
                Some((o, _)) => Weights::Opened(&o[pi]),
                None => Weights::PerJob,
            },
            relu_batch: run.batch,
        };
        secure::run(ch, inp, eng.as_mut(), &mut |_, _| {}).unwrap()
    });
    let seconds = t.elapsed().as_secs_f64();
    let sum: Vec<u64> = res[0]
        .0
        .v
        .iter()
        .zip(&res[1].0.v)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let out = sum
        .chunks_exact(ph * pw)
        .flat_map(|plane| (0..h).flat_map(move |y| plane[y * pw..y * pw + w].to_vec()))
        .collect();
    let [r0, r1] = res;
    ChainOutcome {
        out,
        reports: [r0.1, r1.1],
        corrections: d.corrections.len(),
        deal_seconds,
        seconds,
    }
}
