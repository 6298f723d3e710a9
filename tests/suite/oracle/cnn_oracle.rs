//! Chain CNNs (DnCNN- and FFDNet-shaped) run securely as graphs (`Graph::from_cnn`) vs the
//! chain CNN's own plaintext fixed-point oracle (`ring::cnn::run`), in process, bit for bit.
//!
//! Each case shares a random CNN's graph (as the model owner would: an explicit share and a
//! seed share of the encoded weights), shares an image encoded as the gateway encodes it, and
//! for each engine the dealer makes fresh randomness (`dealer::graph`); S0 and S1 run
//! `twopc::graph::run` in two threads over an in-memory channel, with weights opened in the
//! job and opened once under a model mask. Both output shares must add up to the oracle's
//! output exactly.

use crate::common;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use common::in_process::{chain_job, in_pair, share_graph, tamper_last_weight, ChainRun};
use common::test_seed;
use ppdenoise::circuit::activation::{ActCircuit, TruncParams};
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::image::phantom::shepp_logan;
use ppdenoise::model::cnn::{random_cnn, Cnn, CnnMeta};
use ppdenoise::model::graph::Graph;
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed, CnnPlan};
use ppdenoise::ring::graph::GraphPlan;
use ppdenoise::twopc::graph::{mask_shares, open_graph_weights};
use ppdenoise::twopc::job::Report;
use ppdenoise::twopc::weights::Opened;

struct Outcome {
    /// (engine and weight path, reconstructed output) per run.
    runs: Vec<(String, Vec<u64>)>,
    oracle: Vec<u64>,
    out_of_range: u64,
    reports: Vec<[Report; 2]>,
}

/// `relu_batch`: ReLU elements per circuit run (small values give several runs per layer).
fn run_case(
    model: &Cnn,
    params: CnnFixed,
    image: &Array2<f64>,
    tamper: bool,
    relu_batch: usize,
) -> Outcome {
    run_framed_case(model, params, image, &[], tamper, relu_batch)
}

/// [`run_case`] with the noise map's values a model with a map channel takes (shared with
/// the image, as the gateway does).
fn run_framed_case(
    model: &Cnn,
    params: CnnFixed,
    image: &Array2<f64>,
    map: &[f64],
    tamper: bool,
    relu_batch: usize,
) -> Outcome {
    run_framed_case_with(model, params, image, map, tamper, relu_batch, None)
}

/// The graph of `model` at `params` and its plan.
fn graph_plan(model: &Cnn, params: CnnFixed) -> GraphPlan {
    GraphPlan::from_graph(&Graph::from_cnn(model).unwrap(), params).expect("plan")
}

/// [`run_framed_case`]; with `garble`, party 1's explicit values come through
/// [`common::Garbled`] seeded with it; with `tamper`, one unit is added to the last
/// convolution's first weight in party 1's share.
#[allow(clippy::too_many_arguments)]
fn run_framed_case_with(
    model: &Cnn,
    params: CnnFixed,
    image: &Array2<f64>,
    map: &[f64],
    tamper: bool,
    relu_batch: usize,
    garble: Option<u64>,
) -> Outcome {
    let plan = graph_plan(model, params);
    let mut shares = share_graph(&plan);
    if tamper {
        shares[1] = tamper_last_weight(&plan, &shares[1], 1);
    }
    let (h, w) = image.dim();
    let enc = ring_cnn::encode_image(image, map, &Preprocess::identity(), params.s);
    let mask_seeds = [test_seed(), test_seed()];
    let opened: [Opened; 2] = in_pair(|p, ch| {
        let mask = mask_shares(&mask_seeds[p.index()], &shares[p.index()]);
        open_graph_weights(ch, p, &shares[p.index()], mask).unwrap()
    });
    assert_eq!(opened[0].u, opened[1].u);
    let mut runs = Vec::new();
    let mut reports = Vec::new();
    for engine in [EngineKind::Gc, EngineKind::Gmw] {
        for once in [false, true] {
            let run = ChainRun {
                engine,
                batch: relu_batch,
                opened: once.then_some((&opened, mask_seeds)),
                garble,
            };
            let o = chain_job(&plan, &shares, &enc, (h, w), run);
            let how = if once {
                "weights opened once"
            } else {
                "weights opened per job"
            };
            runs.push((format!("{engine}, {how}"), o.out));
            reports.push(o.reports);
        }
    }
    let cnn = CnnPlan::from_cnn(model, params).expect("plan");
    let orc = ring_cnn::run(&cnn, h, w, &enc);
    Outcome {
        runs,
        oracle: orc.output,
        out_of_range: orc.out_of_range,
        reports,
    }
}

fn assert_exact(o: &Outcome, what: &str) {
    assert_eq!(o.out_of_range, 0, "{what}: oracle out of range");
    for (how, out) in &o.runs {
        let diff = out.iter().zip(&o.oracle).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{what} ({how}): {diff} pixels differ from the oracle"
        );
    }
}

fn meta(residual: bool) -> CnnMeta {
    CnnMeta {
        sigma: 25.0,
        residual,
    }
}

fn noisy_image(h: usize, w: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Array2::from_shape_fn((h, w), |_| rng.gen_range(0.0..255.0f64).round())
}

#[test]
fn random_cnns_are_bit_exact_with_the_oracle() {
    // Depth 2 to 5, 1 to 16 channels, kernels 1/3/5, odd and tiny sizes (borders everywhere).
    let cases: [(&[usize], usize, usize, usize, bool); 5] = [
        (&[1, 1], 3, 5, 7, true),
        (&[1, 4, 1], 3, 9, 6, true),
        (&[1, 16, 8, 1], 3, 11, 13, true),
        (&[1, 3, 5, 2, 1], 5, 7, 9, false),
        (&[1, 2, 3, 4, 5, 1], 1, 6, 5, true),
    ];
    for (i, (ch, k, h, w, residual)) in cases.into_iter().enumerate() {
        let m = random_cnn(ch, k, 100 + i as u64, meta(residual));
        // Odd cases: ReLUs in several runs per layer.
        let batch = if i % 2 == 1 { 37 } else { 1 << 20 };
        let o = run_case(
            &m,
            CnnFixed::default(),
            &noisy_image(h, w, i as u64),
            false,
            batch,
        );
        assert_exact(&o, &format!("case {i}: channels {ch:?}, {k}x{k}, {h}x{w}"));
    }
}

/// FFDNet-shaped networks: pixel-unshuffle into sub-images, a noise-map channel (uniform or
/// per pixel), the conv/ReLU stack and pixel-shuffle back, on odd sizes (padding by
/// repetition, cropping) and at every border, for both engines and both weight paths.
#[test]
fn random_ffdnet_shaped_cnns_are_bit_exact_with_the_oracle() {
    use ppdenoise::model::cnn::random_framed_cnn;
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::NoiseLevel;
    let ffd = Frame::FFDNET;
    let no_map3 = Frame {
        unshuffle: 3,
        noise_map: false,
    };
    // (channels, frame, h, w, per-pixel map, residual)
    type Case<'a> = (&'a [usize], Frame, usize, usize, bool, bool);
    let cases: [Case; 8] = [
        (&[5, 4], ffd, 5, 7, false, false),
        (&[5, 3, 4], ffd, 1, 1, true, false),
        (&[5, 2, 4], ffd, 6, 1, false, true),
        (&[5, 16, 4], ffd, 9, 6, true, false),
        (&[5, 8, 8, 4], ffd, 11, 13, true, false),
        (&[5, 3, 5, 2, 4], ffd, 7, 9, false, true),
        (&[5, 2, 3, 4, 5, 1, 4], ffd, 1, 3, true, false),
        (&[9, 4, 9], no_map3, 8, 7, false, false),
    ];
    for (i, (ch, frame, h, w, per_pixel, residual)) in cases.into_iter().enumerate() {
        let m = random_framed_cnn(ch, 3, 300 + i as u64, meta(residual), frame);
        let img = noisy_image(h, w, 40 + i as u64);
        let noise = if per_pixel {
            let mut rng = ChaCha20Rng::seed_from_u64(i as u64);
            NoiseLevel::PerPixel(Array2::from_shape_fn((h, w), |_| rng.gen_range(0.0..75.0)))
        } else {
            NoiseLevel::Uniform(25.0)
        };
        let map = m.noise_map(&noise, h, w);
        assert_eq!(map.len(), frame.map_len(h, w));
        let batch = if i % 2 == 1 { 29 } else { 1 << 20 };
        let o = run_framed_case(&m, CnnFixed::default(), &img, &map, false, batch);
        let what = format!(
            "FFDNet-shaped case {i}: channels {ch:?}, {h}x{w}, {frame:?}, {}",
            noise.describe()
        );
        assert_exact(&o, &what);
        assert_eq!(o.oracle.len(), h * w, "{what}: an image-sized output");
        // The oracle is the float network in fixed point: close to it, pixel by pixel.
        let pre = Preprocess::identity();
        let float = m.denoise_float(&img, &pre, &map);
        let p = CnnFixed::default();
        let dec = ring_cnn::decode_output(&o.oracle, h, w, &pre, p.out_scale());
        let err = dec
            .iter()
            .zip(&float)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 2.0, "{what}: oracle {err} grey levels from float");
    }
}

/// A map is part of the input: a different per-pixel map changes the secure output exactly
/// as it changes the oracle's (negative control: the map is not ignored).
#[test]
fn the_noise_map_reaches_the_network() {
    use ppdenoise::model::cnn::random_framed_cnn;
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::NoiseLevel;
    let m = random_framed_cnn(&[5, 6, 4], 3, 77, meta(false), Frame::FFDNET);
    let img = noisy_image(6, 8, 5);
    let a = m.noise_map(&NoiseLevel::Uniform(10.0), 6, 8);
    let b = m.noise_map(&NoiseLevel::Uniform(60.0), 6, 8);
    let (oa, ob) = (
        run_framed_case(&m, CnnFixed::default(), &img, &a, false, 1 << 20),
        run_framed_case(&m, CnnFixed::default(), &img, &b, false, 1 << 20),
    );
    assert_exact(&oa, "sigma 10");
    assert_exact(&ob, "sigma 60");
    assert_ne!(oa.oracle, ob.oracle, "the map must change the output");
}

#[test]
fn non_default_fixed_point_and_a_structured_image() {
    let m = random_cnn(&[1, 6, 6, 1], 3, 9, meta(true));
    let img = shepp_logan(24).pixels;
    for params in [
        CnnFixed {
            s: 14,
            ws: 16,
            k: 24,
        },
        CnnFixed { s: 6, ws: 5, k: 12 },
    ] {
        let o = run_case(&m, params, &img, false, 100);
        assert_exact(&o, &format!("{params:?}"));
    }
}

/// Issue 51, item 3: party 1's explicit values are needed only mod 2^width, the width at
/// which their product's result or their circuit's output is read; with every bit above it
/// garbage, the output is still the oracle's, bit for bit, on both engines, for a DnCNN- and
/// an FFDNet-shaped network, one of them with several ReLU runs per layer. (Watched failing
/// with the last hidden layer's daBit and edaBit shares made at ws + k bits while the last
/// layer opens its input at 64.)
#[test]
fn garbage_above_each_dealer_value_s_width_changes_nothing() {
    use ppdenoise::model::cnn::random_framed_cnn;
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::NoiseLevel;
    let m = random_cnn(&[1, 5, 4, 1], 3, 41, meta(true));
    // The defaults, whose output is read at the hidden layers' width, and activations at
    // ±16, whose output is read wider (the least range ±32: 31 bits where 30).
    let wide_out = CnnFixed {
        s: 12,
        ws: 13,
        k: 17,
    };
    assert!(wide_out.out_bits() > wide_out.ws + wide_out.k);
    for params in [CnnFixed::default(), wide_out] {
        let o = run_framed_case_with(
            &m,
            params,
            &noisy_image(9, 11, 8),
            &[],
            false,
            53,
            Some(test_seed()[0] as u64),
        );
        assert_exact(&o, &format!("DnCNN-shaped, garbled high bits, {params:?}"));
    }
    let m = random_framed_cnn(&[5, 6, 4, 4], 3, 42, meta(false), Frame::FFDNET);
    let map = m.noise_map(&NoiseLevel::Uniform(25.0), 7, 9);
    let o = run_framed_case_with(
        &m,
        CnnFixed::default(),
        &noisy_image(7, 9, 9),
        &map,
        false,
        1 << 20,
        Some(test_seed()[1] as u64),
    );
    assert_exact(&o, "FFDNet-shaped, garbled high bits");
}

#[test]
fn a_wrong_weight_share_breaks_exactness() {
    // Negative control: one unit on one last-layer weight share must show in the output.
    let m = random_cnn(&[1, 4, 1], 3, 5, meta(true));
    let o = run_case(
        &m,
        CnnFixed::default(),
        &noisy_image(8, 8, 3),
        true,
        1 << 20,
    );
    for (how, out) in &o.runs {
        assert!(out != &o.oracle, "{how}: tampered share went unnoticed");
    }
}

#[test]
fn traffic_is_what_the_protocol_says() {
    // Per layer: the masked input map (each way, packed at the layer's opening width: ws + k
    // bits for a hidden layer, the output's out_bits for the last); the weights once;
    // the ReLU circuits: the boolean engine sends 2 bits per AND (1 + 1/group in a group
    // sharing an input), 1 per output bit, and its selection's k-bit sum.
    // Activations at ±16 (k = 17, s = 12), so that the output's least range ±32 sets its
    // width: the last layer's opening is wider than the hidden ones'.
    let params = CnnFixed {
        s: 12,
        ws: 13,
        k: 17,
    };
    let m = random_cnn(&[1, 8, 8, 1], 3, 21, meta(true));
    let (h, w) = (16, 16);
    let o = run_case(&m, params, &noisy_image(h, w, 4), false, 1 << 20);
    assert_exact(&o, "traffic case");
    let plan = CnnPlan::from_cnn(&m, params).unwrap();
    let hw = (h * w) as u64;
    let (hidden, last) = (params.ws + params.k, params.out_bits());
    assert_eq!(
        (hidden, last),
        (30, 31),
        "the output held at s + ws + 6 bits"
    );
    assert_eq!(
        (0..3).map(|l| plan.open_bits(l)).collect::<Vec<_>>(),
        [hidden, hidden, last]
    );
    // The boolean engine extends a layer's input after a ReLU (left mod 2^k) by its shares'
    // masked top bits, one bit an element, before opening it.
    let k = params.k;
    let packed = |n: u64, bits: u32| (n * bits as u64).div_ceil(8);
    let maps: u64 = plan
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (n, bits) = (l.cin as u64 * hw, plan.open_bits(i));
            if i > 0 {
                packed(n, 1) + packed(n, bits)
            } else {
                packed(n, bits)
            }
        })
        .sum();
    let weights: u64 = plan
        .layers
        .iter()
        .map(|l| 8 * l.weight_count() as u64)
        .sum();
    // The boolean engine's netlist: the ReLU's sign circuit, finished in the ring.
    let relu = ppdenoise::circuit::netlist::Netlist::record(&ActCircuit::Relu(TruncParams {
        sh: params.ws,
        k: params.k,
    }));
    assert_eq!(relu.select.expect("a ReLU is finished by selection").k, k);
    // A D per AND gate, an E per group of ANDs sharing an input (the ReLU's selection).
    let ands = relu.and_openings() as u64;
    let outs = relu.outputs.len() as u64;
    let elems: u64 = plan.layers[..2].iter().map(|l| l.cout as u64 * hw).sum();
    let words = |e: u64| e.div_ceil(64) * 8;
    let relu_bytes: u64 = plan.layers[..2]
        .iter()
        .map(|l| words(l.cout as u64 * hw) * (ands + outs + k as u64))
        .sum();
    assert_eq!(elems, 16 * hw);
    // Runs: [gc per job, gc opened, gmw per job, gmw opened].
    let sent = |r: &Report| r.link.bytes_sent;
    let gmw_job = &o.reports[2][0];
    let gmw_opened = &o.reports[3][0];
    // Every frame carries an 8-byte length; the session tag is 8 bytes here.
    let framing = 8 * gmw_opened.link.messages_sent;
    assert_eq!(sent(gmw_opened), 8 + maps + relu_bytes + framing);
    // Rounds: one per layer's map, two after a ReLU; per ReLU run one per AND depth and one
    // for the outputs and the selection's sum.
    let depth = relu.and_depth() as u64;
    assert_eq!(gmw_opened.link.messages_sent, 1 + 3 + 2 + 2 * (depth + 1));
    // Opening the weights in the job costs exactly them and one frame.
    assert_eq!(sent(gmw_job) - sent(gmw_opened), weights + 8);
}

/// DnCNN on a centre crop of a real image, boolean engine, with timings and traffic:
/// `PPDENOISE_CNN=model.npz PPDENOISE_IMAGE=noisy.png [PPDENOISE_CROP=64] cargo test
/// --release --test suite -- --ignored --nocapture oracle::cnn_oracle::real_cnn` (the converted weights
/// are never in the repository; see scripts/import-dncnn.py).
#[test]
#[ignore]
fn real_cnn_crop_boolean_engine() {
    let (Ok(model), Ok(image)) = (
        std::env::var("PPDENOISE_CNN"),
        std::env::var("PPDENOISE_IMAGE"),
    ) else {
        // Run on purpose (it is ignored otherwise), it must check something or fail.
        panic!("set PPDENOISE_CNN and PPDENOISE_IMAGE: without them nothing is checked");
    };
    let crop: usize = std::env::var("PPDENOISE_CROP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let m = Cnn::load(std::path::Path::new(&model)).unwrap();
    let img = ppdenoise::image::load(&image).unwrap();
    let (h, w) = img.pixels.dim();
    let (y0, x0) = ((h - crop.min(h)) / 2, (w - crop.min(w)) / 2);
    let px = img
        .pixels
        .slice(ndarray::s![y0..y0 + crop.min(h), x0..x0 + crop.min(w)])
        .to_owned();
    let params = CnnFixed::default();
    let plan = graph_plan(&m, params);
    let shares = share_graph(&plan);
    let (h, w) = px.dim();
    let enc = ring_cnn::encode_image(&px, &[], &Preprocess::identity(), params.s);
    let run = ChainRun {
        engine: EngineKind::Gmw,
        batch: EngineKind::Gmw.default_relu_batch(),
        opened: None,
        garble: None,
    };
    let o = chain_job(&plan, &shares, &enc, (h, w), run);
    let cnn = CnnPlan::from_cnn(&m, params).unwrap();
    let orc = ring_cnn::run(&cnn, h, w, &enc);
    assert_eq!(o.out, orc.output, "secure output differs from the oracle");
    let (dealer_s, secs) = (o.deal_seconds, o.seconds);
    let plan = cnn;
    let r = &o.reports[0];
    let relus: u64 = plan.layers[..plan.layers.len() - 1]
        .iter()
        .map(|l| (l.cout * h * w) as u64)
        .sum();
    println!(
        "{h}x{w}: dealer {dealer_s:.1} s ({} explicit values), job {secs:.1} s (linear {:.1} s, \
         nonlinear {:.1} s); S0 sent {} bytes, {:.1} B per ReLU both ways; {relus} ReLUs; \
         {} messages",
        o.corrections,
        r.seconds_linear,
        r.seconds_nonlinear,
        r.link.bytes_sent,
        2.0 * r.link.bytes_sent as f64 / relus as f64,
        r.link.messages_sent
    );
}
