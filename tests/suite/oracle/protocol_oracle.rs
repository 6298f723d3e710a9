//! Secure protocol vs the plaintext fixed-point oracle, in process.
//!
//! Each case plays every party: the model owner shares a random model (as `share-model`
//! does), the gateway shares an image once (as `share-image` does, S1's share a PRG seed),
//! and for each engine (garbled circuits, boolean shares) the dealer makes fresh correlated
//! randomness (`dealer::generate`) and S0 and S1 run `twopc::mlp::run` in two threads
//! over an in-memory channel. The two output canvases must add up to the oracle's canvas bit
//! for bit, for both engines, for several model shapes, options, image contents and sizes,
//! strides and batch sizes. Each engine runs each case twice: opening the masked weights in
//! the job, and with weights opened once beforehand under a model mask (`open-weights`) and
//! the job's triplets made against that mask (`gen-triplets --model-mask`).

use crate::common;
use ndarray::Array2;
use ppdenoise::ring::Party;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use common::test_seed;
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::corr::masks::{mask_shares, weight_count};
use ppdenoise::corr::randomness::PartyRandomness;
use ppdenoise::dealer;
use ppdenoise::dealer::NonlinearDeal;
use ppdenoise::formats::bodies::{Data, ImageShare, JobParams, ModelShare, Triplets};
use ppdenoise::image::phantom::shepp_logan;
use ppdenoise::model::geometry::Geometry;
use ppdenoise::model::mlp::{random_model, Activation, Model, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Hidden, Plan};
use ppdenoise::ring::share::{share_with_seed, Stream};
use ppdenoise::twopc::channel::{mem_pair, Channel};
use ppdenoise::twopc::engines::engine_for;
use ppdenoise::twopc::job::{Report, Weights};
use ppdenoise::twopc::mlp::{self, JobInputs};
use ppdenoise::twopc::weights::{open_weights, Opened};

const ENGINES: [EngineKind; 2] = [EngineKind::Gc, EngineKind::Gmw];

struct Outcome {
    /// The boolean engine's canvas (the default engine's).
    secure: Vec<u64>,
    /// Every engine's canvas, per way of opening the weights ("gc, per job", ...).
    by_engine: Vec<(String, Vec<u64>)>,
    oracle: Vec<u64>,
    out_of_range: u64,
    /// The last run's reports (the boolean engine, weights opened per job).
    reports: [Report; 2],
    /// The same job's reports with the weights opened once beforehand.
    reports_opened: [Report; 2],
    /// Number of weights (the length of U).
    weights: usize,
    geo: Geometry,
    out_scale: u32,
}

/// Runs one job through the secure protocol and through the oracle.
fn run_case(model: &Model, image: &Array2<f64>, stride: usize, batch: usize) -> Outcome {
    run_case_tampered(model, image, stride, batch, false)
}

/// `tamper`: add one unit (2^-s) to one output-layer weight share of S1, which must break
/// bit-exactness.
fn run_case_tampered(
    model: &Model,
    image: &Array2<f64>,
    stride: usize,
    batch: usize,
    tamper: bool,
) -> Outcome {
    let params = FixedParams::default();
    let plan = Plan::from_model(model, params).expect("plan");
    let s = params.s;

    // Model owner (as src/cli/owner.rs): explicit share for S0, a seed for S1, public plan
    // without weights in both bodies.
    let mut shares: Vec<Plan> = ModelShare::split(&plan, &model.meta, &test_seed())
        .iter()
        .map(|s| s.share_plan().expect("share plan"))
        .collect();

    if tamper {
        let last = shares[1].layers.len() - 1;
        let w = &mut shares[1].layers[last].w[0];
        *w = w.wrapping_add(1);
    }

    // Gateway (as src/job/gateway.rs).
    let (h, w) = image.dim();
    let pre = Preprocess::new(25.0, model.meta.sigma, false);
    let job = JobParams {
        height: h,
        width: w,
        bit_depth: 8,
        stride,
        scale: s,
        pre,
        sigma: 25.0,
        model_sigma: model.meta.sigma,
        private_pre: false,
        colours: 1,
    };
    let enc = oracle::encode_image(image, &pre, s);
    let iseed = test_seed();
    let img_bodies = [
        ImageShare {
            job: job.clone(),
            data: Data::Explicit(share_with_seed(&enc, &iseed, Stream::ImageShare)),
        },
        ImageShare {
            job: job.clone(),
            data: Data::Seed(iseed),
        },
    ];
    let img_shares: Vec<Vec<u64>> = img_bodies
        .iter()
        .map(|b| b.data.materialise(Stream::ImageShare, h * w).unwrap())
        .collect();

    // Once per model: the dealer's weight mask and the servers' opening of U = W - A.
    let mask_seeds = [test_seed(), test_seed()];
    let opened: Vec<Opened> = {
        let (mut c0, mut c1) = mem_pair();
        let open = |p: usize, ch: &mut dyn Channel| {
            let mask = mask_shares(&mask_seeds[p], &shares[p]);
            open_weights(ch, Party::BOTH[p], &shares[p], mask).unwrap()
        };
        std::thread::scope(|sc| {
            let open = &open;
            let h0 = sc.spawn(|| open(0, &mut c0));
            let h1 = sc.spawn(|| open(1, &mut c1));
            vec![h0.join().unwrap(), h1.join().unwrap()]
        })
    };
    assert_eq!(opened[0].u, opened[1].u, "both servers open the same U");

    let mut by_engine = Vec::new();
    let mut reports = [None, None];
    for engine in ENGINES {
        for (mode, model_mask) in [(1, Some(mask_seeds)), (0, None)] {
            // Dealer.
            let deal = NonlinearDeal::new(engine, &plan.circuits());
            let seeds = dealer::DealSeeds {
                job: [test_seed(), test_seed()],
                model_mask,
            };
            let setup = common::with_test_rng(|r| engine.deal_setup_with(r));
            let (t0, t1) = dealer::generate_with(
                &job,
                &plan.widths(),
                plan.patch,
                batch,
                &deal,
                &seeds,
                setup,
            );
            let trip = [t0, t1];
            let weights = |p: usize| match model_mask {
                Some(_) => Weights::Opened(&opened[p]),
                None => Weights::PerJob,
            };

            let (mut c0, mut c1) = mem_pair();
            let run = |p: usize, ch: &mut dyn Channel| {
                party_run(
                    Party::BOTH[p],
                    ch,
                    &shares[p],
                    &job,
                    &img_shares[p],
                    &trip[p],
                    weights(p),
                )
            };
            let results: Vec<(Vec<u64>, Report)> = std::thread::scope(|sc| {
                let run = &run;
                let h0 = sc.spawn(|| run(0, &mut c0));
                let h1 = sc.spawn(|| run(1, &mut c1));
                vec![h0.join().unwrap(), h1.join().unwrap()]
            });
            let secure: Vec<u64> = results[0]
                .0
                .iter()
                .zip(&results[1].0)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect();
            let how = if mode == 0 {
                "weights opened per job"
            } else {
                "weights opened once"
            };
            by_engine.push((format!("{engine}, {how}"), secure));
            let mut it = results.into_iter();
            let r0 = it.next().unwrap().1;
            let r1 = it.next().unwrap().1;
            reports[mode] = Some([r0, r1]);
        }
    }
    let geo = Geometry::new(h, w, plan.patch, stride);
    // The oracle is independent of batching; use a different batch size on purpose.
    let orc = oracle::run(&plan, &geo, &enc, 7);
    Outcome {
        secure: by_engine.last().unwrap().1.clone(),
        by_engine,
        oracle: orc.canvas,
        out_of_range: orc.out_of_range,
        reports: reports[0].take().unwrap(),
        reports_opened: reports[1].take().unwrap(),
        weights: weight_count(&plan),
        geo,
        out_scale: plan.out_scale,
    }
}

fn party_run(
    p: Party,
    ch: &mut dyn Channel,
    plan: &Plan,
    job: &JobParams,
    image: &[u64],
    t: &Triplets,
    weights: Weights<'_>,
) -> (Vec<u64>, Report) {
    let rand = PartyRandomness::packed(p, t.seed, t.corrections.clone());
    let mut engine = engine_for(t.engine, p, &t.base_ot).unwrap();
    let inputs = JobInputs {
        party: p,
        plan,
        job,
        image,
        rand,
        batch: t.batch,
        session_tag: b"job-model-triplets".to_vec(),
        weights,
        patches: None,
    };
    mlp::run(ch, inputs, engine.as_mut(), &mut |_, _| {})
        .unwrap_or_else(|e| panic!("party {p}: {e}"))
}

fn assert_bit_exact(name: &str, o: &Outcome) {
    assert_eq!(
        o.by_engine.len(),
        2 * ENGINES.len(),
        "{name}: every engine ran, both ways"
    );
    for (engine, secure) in &o.by_engine {
        assert_eq!(
            secure.len(),
            o.oracle.len(),
            "{name} ({engine}): canvas sizes"
        );
        assert_eq!(secure.len(), o.geo.canvas_h * o.geo.canvas_w, "{name}");
        let diff = secure.iter().zip(&o.oracle).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff,
            0,
            "{name} ({engine}): {diff} of {} canvas values differ from the oracle (first: {:?})",
            secure.len(),
            secure
                .iter()
                .zip(&o.oracle)
                .enumerate()
                .find(|(_, (a, b))| a != b)
        );
    }
    // Both parties processed the whole job.
    for r in &o.reports {
        assert_eq!(r.patches, o.geo.num_patches(), "{name}");
    }
    // The canvas is not trivially zero (an all-zero output would hide bugs).
    assert!(
        o.oracle.iter().any(|&v| v != 0),
        "{name}: oracle canvas is all zero"
    );
}

fn meta(mean_shift: bool, residual: bool) -> ModelMeta {
    ModelMeta {
        sigma: 25.0,
        mean_shift,
        residual,
        activation: Activation::TanhStar,
        // Residual models also use Gaussian aggregation weights, like the shipped model.
        aggregation_sigma: if residual { 3.0 } else { 0.0 },
    }
}

fn random_image(h: usize, w: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Array2::from_shape_fn((h, w), |_| rng.gen_range(0..=255u32) as f64)
}

fn checkerboard(h: usize, w: usize) -> Array2<f64> {
    Array2::from_shape_fn((h, w), |(i, j)| if (i + j) % 2 == 0 { 0.0 } else { 255.0 })
}

fn phantom_crop(h: usize, w: usize) -> Array2<f64> {
    let p = shepp_logan(h.max(w)).pixels;
    p.slice(ndarray::s![..h, ..w]).to_owned()
}

#[test]
fn one_hidden_layer_random_images_strides_and_batches() {
    // 9x9 -> 5x5, one hidden layer of 12.
    let model = random_model(&[81, 12, 25], 11, meta(false, false));
    for (i, &(h, w, stride, batch)) in [
        (13usize, 17usize, 1usize, 10usize),
        (14, 11, 2, 7),
        (19, 23, 3, 5),
    ]
    .iter()
    .enumerate()
    {
        let img = random_image(h, w, 100 + i as u64);
        let o = run_case(&model, &img, stride, batch);
        assert!(
            !o.geo.num_patches().is_multiple_of(batch),
            "case must have a partial last batch"
        );
        assert_bit_exact(
            &format!("1 hidden, {h}x{w}, stride {stride}, batch {batch}"),
            &o,
        );
    }
}

#[test]
fn two_hidden_layers_mean_shift_and_residual_combinations() {
    for (i, &(ms, res)) in [(false, false), (true, false), (false, true), (true, true)]
        .iter()
        .enumerate()
    {
        let model = random_model(&[81, 16, 16, 25], 20 + i as u64, meta(ms, res));
        let img = phantom_crop(15, 21);
        let o = run_case(&model, &img, 2, 9);
        assert_eq!(o.out_of_range, 0);
        assert_bit_exact(&format!("2 hidden, mean_shift {ms}, residual {res}"), &o);
    }
}

#[test]
fn three_hidden_layers_other_patch_shape() {
    // 7x7 -> 3x3 with three hidden layers of different widths.
    let model = random_model(&[49, 10, 7, 13, 9], 31, meta(true, true));
    let img = random_image(17, 12, 7);
    let o = run_case(&model, &img, 3, 4);
    assert_bit_exact("3 hidden, 7x7 -> 3x3", &o);
    // 11x11 -> 1x1, a single-pixel output.
    let model = random_model(&[121, 8, 6, 5, 1], 32, meta(false, true));
    let img = random_image(9, 10, 8);
    let o = run_case(&model, &img, 1, 13);
    assert_bit_exact("3 hidden, 11x11 -> 1x1", &o);
}

#[test]
fn extreme_images() {
    let model = random_model(&[49, 8, 9], 41, meta(false, true));
    let model_ms = random_model(&[49, 8, 9], 42, meta(true, false));
    let (h, w) = (11, 14);
    let cases: Vec<(&str, Array2<f64>)> = vec![
        ("all 0", Array2::zeros((h, w))),
        ("all 255", Array2::from_elem((h, w), 255.0)),
        ("checkerboard", checkerboard(h, w)),
    ];
    for (name, img) in &cases {
        for (mname, m) in [("residual", &model), ("mean shift", &model_ms)] {
            let o = run_case(m, img, 2, 6);
            assert_bit_exact(&format!("{name}, {mname}"), &o);
        }
    }
}

#[test]
fn odd_sizes_and_tiny_images() {
    let model = random_model(&[49, 8, 9], 51, meta(false, false));
    // Images smaller than the input window and the output window (mirror padding).
    for (i, &(h, w)) in [(1usize, 1usize), (2, 5), (3, 3), (7, 1), (5, 13)]
        .iter()
        .enumerate()
    {
        let img = random_image(h, w, 200 + i as u64);
        let o = run_case(&model, &img, 1, 3);
        assert_bit_exact(&format!("{h}x{w}"), &o);
    }
}

#[test]
fn batch_larger_than_job_and_batch_of_one() {
    let model = random_model(&[81, 6, 25], 61, meta(true, false));
    let img = random_image(10, 9, 300);
    let o = run_case(&model, &img, 3, 1000);
    assert_bit_exact("batch > patches", &o);
    let o = run_case(&model, &img, 3, 1);
    assert_bit_exact("batch 1", &o);
}

/// The largest difference, in grey levels, between the decoded secure result of a stride-2
/// job and float inference with `activation` (the model's own when `None`).
fn decoded_vs_float(
    o: &Outcome,
    model: &Model,
    img: &Array2<f64>,
    activation: Option<Activation>,
) -> f64 {
    let pre = Preprocess::new(25.0, 25.0, false);
    let dec = oracle::decode_canvas(&o.secure, &o.geo, &pre, o.out_scale);
    let fl = ppdenoise::inference::mlp::denoise_float(
        model,
        img,
        &pre,
        2,
        activation,
        &ppdenoise::model::tanhstar::TanhStar::PAPER,
    );
    dec.iter()
        .zip(fl.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn shipped_shape_reduced_inputs_decode_close_to_float() {
    // A sanity check that bit-exactness is not exactness of garbage: the decoded secure
    // result is close to float inference with tanh* (quantisation only).
    let model = random_model(&[81, 16, 16, 25], 71, meta(false, true));
    let img = phantom_crop(16, 16);
    let o = run_case(&model, &img, 2, 16);
    assert_bit_exact("decode", &o);
    let max = decoded_vs_float(&o, &model, &img, Some(Activation::TanhStar));
    // Quantisation at the default 16 fractional bits: 0.058 grey levels here (0.04 at 18);
    // garbage would be off by tens of levels.
    assert!(
        max < 0.25,
        "secure vs float tanh*: max abs pixel diff {max}"
    );
}

fn relu(mean_shift: bool, residual: bool) -> ModelMeta {
    ModelMeta {
        activation: Activation::Relu,
        ..meta(mean_shift, residual)
    }
}

/// ReLU MLPs (issue 29: an MLP exported with nn.ReLU): the hidden layers run the engines'
/// ReLU circuit with the exact truncation, and the secure canvas is the oracle's bit for
/// bit on both engines, for one to three hidden layers, the options, strides and partial
/// batches. The ReLU is not vacuous: some pre-activations are cut to zero and some pass.
#[test]
fn relu_mlps_match_the_oracle_on_both_engines() {
    let cases: [(&[usize], bool, bool, usize, usize); 4] = [
        (&[81, 12, 25], false, false, 1, 10),
        (&[81, 16, 16, 25], true, false, 2, 9),
        (&[81, 16, 16, 25], false, true, 2, 7),
        (&[49, 10, 7, 13, 9], true, true, 3, 4),
    ];
    for (i, &(widths, ms, res, stride, batch)) in cases.iter().enumerate() {
        let model = random_model(widths, 90 + i as u64, relu(ms, res));
        let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
        assert_eq!(plan.hidden, Hidden::Relu);
        assert!(plan.acts.is_empty());
        let img = random_image(13 + i, 16, 200 + i as u64);
        let o = run_case(&model, &img, stride, batch);
        assert_eq!(o.out_of_range, 0);
        assert_bit_exact(&format!("ReLU {widths:?}, ms {ms}, res {res}"), &o);
        // The first hidden layer's pre-activations on a few patches: both signs occur.
        let l = &plan.layers[0];
        let z: Vec<u64> = (0..l.outputs)
            .map(|r| {
                (0..l.inputs).fold(l.b[r], |acc, c| {
                    acc.wrapping_add(l.w[r * l.inputs + c].wrapping_mul(1 << plan.params.s))
                })
            })
            .collect();
        let acts: Vec<u64> = z
            .iter()
            .map(|&v| oracle::hidden_activation(&plan, 0, v).0)
            .collect();
        assert!(acts.contains(&0) && acts.iter().any(|&a| a != 0));
    }
}

/// A ReLU MLP's decoded secure result is float ReLU inference up to quantisation (ReLU is
/// computed exactly; only the weights' and the truncation's rounding remain).
#[test]
fn relu_mlp_decodes_close_to_float() {
    let model = random_model(&[81, 16, 16, 25], 95, relu(false, true));
    let img = phantom_crop(16, 16);
    let o = run_case(&model, &img, 2, 16);
    assert_bit_exact("ReLU decode", &o);
    let max = decoded_vs_float(&o, &model, &img, None);
    assert!(max < 0.05, "secure vs float ReLU: max abs pixel diff {max}");
    // Run as tanh* instead, the same weights give another image: the check can fail.
    let off = decoded_vs_float(&o, &model, &img, Some(Activation::TanhStar));
    assert!(
        off > 0.5,
        "ReLU and tanh* agree to {off}: the test cannot tell them apart"
    );
}

#[test]
fn negative_control_a_one_ulp_weight_change_is_detected() {
    // The comparison can fail: one unit in the last place of one weight share of S1 changes
    // the secure canvas, and the bit-for-bit comparison sees it.
    let model = random_model(&[49, 8, 9], 81, meta(false, false));
    let img = random_image(12, 12, 9);
    let o = run_case_tampered(&model, &img, 1, 16, true);
    for (engine, secure) in &o.by_engine {
        let diff = secure.iter().zip(&o.oracle).filter(|(a, b)| a != b).count();
        assert!(diff > 0, "{engine}: a tampered weight share went unnoticed");
    }
}

#[test]
fn weights_opened_once_leave_only_activations_in_the_job() {
    // A job whose weights were opened beforehand sends exactly the masked weights (8 bytes
    // each way per weight, in one message with its 8-byte length frame) fewer than one that
    // opens them itself, and is still bit-exact (checked for every case by assert_bit_exact).
    let model = random_model(&[81, 12, 12, 25], 91, meta(true, false));
    let img = random_image(14, 13, 17);
    let o = run_case(&model, &img, 2, 64);
    assert_bit_exact("weights opened once", &o);
    for p in 0..2 {
        let (per_job, once) = (&o.reports[p].link, &o.reports_opened[p].link);
        assert_eq!(
            per_job.bytes_sent - once.bytes_sent,
            8 * o.weights as u64 + 8,
            "S{p}: bytes sent"
        );
        assert_eq!(
            per_job.messages_sent - once.messages_sent,
            1,
            "S{p}: messages"
        );
    }
}

/// A plan read for opened weights holds its biases alone (`ModelShare::bias_plan`): in a
/// job that opens its weights per job it is refused by the protocol before anything is
/// sent (the peer's channel closes with no message), where the party's full share plan
/// passes that check and goes on to the session's tag (which it sends).
#[test]
fn a_plan_of_biases_alone_is_refused_where_its_job_opens_the_weights() {
    use ppdenoise::twopc::channel::Expect;
    let model = random_model(&[9, 7, 5, 1], 3, meta(false, false));
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let [share, _] = ModelShare::split(&plan, &model.meta, &test_seed());
    let (biases, full) = (share.bias_plan().unwrap(), share.share_plan().unwrap());
    let job = JobParams {
        height: 8,
        width: 8,
        bit_depth: 8,
        stride: 1,
        scale: FixedParams::default().s,
        pre: Preprocess::new(25.0, model.meta.sigma, false),
        sigma: 25.0,
        model_sigma: model.meta.sigma,
        private_pre: false,
        colours: 1,
    };
    let image = vec![0u64; 64];
    let attempt = |plan: &Plan| {
        let (mut c0, mut c1) = mem_pair();
        let inputs = JobInputs {
            party: Party::S0,
            plan,
            job: &job,
            image: &image,
            rand: PartyRandomness::packed(Party::S0, test_seed(), Default::default()),
            batch: 16,
            session_tag: b"job-model-triplets".to_vec(),
            weights: Weights::PerJob,
            patches: None,
        };
        let mut engine = engine_for(EngineKind::Gmw, Party::S0, &[]).unwrap();
        // The peer's side: what it receives before party 0's channel closes.
        let peer = std::thread::spawn(move || c1.recv(Expect::AtMost(1 << 20)).is_ok());
        let e = mlp::run(&mut c0, inputs, engine.as_mut(), &mut |_, _| {})
            .expect_err("a job with no peer cannot finish")
            .to_string();
        drop(c0);
        (e, peer.join().unwrap())
    };
    let (e, sent) = attempt(&biases);
    assert!(e.contains("holds no share of the weights"), "{e}");
    assert!(!sent, "a message crossed before the refusal");
    // The control: the full share plan is not refused there, and sends its session tag.
    let (e, sent) = attempt(&full);
    assert!(!e.contains("holds no share of the weights"), "{e}");
    assert!(sent, "the full plan's job sent nothing");
}
