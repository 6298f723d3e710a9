//! Every message a server receives is masked by fresh randomness (issue 3, item 4).
//!
//! The same job geometry (same model, image size, stride and batch; the model re-shared and
//! all randomness fresh for each run, as in reality) is run in process for two very
//! different images, an all-black one and a high-contrast phantom, with the in-memory
//! channel wrapped in a recording channel. For each party, a chi-square two-sample test
//! over byte values (256 bins) compares what it received in the two runs:
//! - all received bytes pooled, per party (p > 1e-6 required);
//! - every message slot (the k-th message received; the schedule is public and identical
//!   in both runs) of at least 4 KiB separately, Bonferroni-corrected;
//! - the values opened by each `open` (own share + received share: what a server learns),
//!   pooled and per slot.
//!
//! Each run on its own must also look uniform: every message slot of at least 4 KiB, every
//! opening, and the difference of each opening with the next of the same length (one-sample
//! chi-square against uniform bytes). That catches, from one run and without a second image,
//! the subtle variants a two-run comparison can miss: a 32-bit mask, one mask used for two
//! openings, weights or an image sent unmasked (all made from real openings and shown caught).
//!
//! Every test's randomness (shares, the dealer's seeds and base OTs, session ids) comes from
//! one printed number, so any failure can be rerun exactly (`PPDENOISE_MASKING_SEED`).
//!
//! Both engines are covered: garbled circuits and boolean shares (whose openings are XORs of
//! the two parties' messages, tested the same way).
//!
//! Negative controls show the test can fail: the raw encoded image bytes of the two images,
//! the opened masked image with the dealer's mask removed (the exact leak the masking
//! prevents), and the boolean engine's opened output bits with their daBits removed, are all
//! detected with overwhelming significance.
//!
//! The same holds with the weights opened once per model (`open-weights`): a job then sends no
//! masked weights and its messages are tested the same way; the one-time opening itself is
//! tested for two models (random weights and all-zero weights), with the negative control
//! that the opened values with the dealer's mask removed (the weights) are detected.

use ndarray::Array2;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use ppdenoise::circuit::activation::ActCircuit;
use ppdenoise::circuit::netlist::Netlist;
use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::corr::masks::mask_shares;
use ppdenoise::corr::randomness::PartyRandomness;
use ppdenoise::corr::randomness::{act_mask_of, dabit_masks, image_mask_of};
use ppdenoise::dealer;
use ppdenoise::dealer::NonlinearDeal;
use ppdenoise::formats::bodies::{JobParams, ModelShare, Triplets};
use ppdenoise::image::phantom::shepp_logan;
use ppdenoise::model::mlp::{random_model, Activation, Model, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Plan};
use ppdenoise::ring::share::{expand, share_with_seed, stream_log, Seed, Stream};
use ppdenoise::ring::Party;
use ppdenoise::twopc::channel::{mem_pair, Channel, ChannelError, Expect, LinkStats};
use ppdenoise::twopc::engines::seeded_engine_for;
use ppdenoise::twopc::job::Weights;
use ppdenoise::twopc::mlp::{self, JobInputs};
use ppdenoise::twopc::weights::{open_weights, Opened};

// ------------------------------------------------------------------------------------------
// Reproducible randomness: every seed a test draws (model, image and mask shares, the dealer's
// job seeds and base OTs, session ids) comes from a generator seeded per test from one number,
// printed at the start (shown when a test fails); PPDENOISE_MASKING_SEED=N reruns with N.

const DEFAULT_SEED: u64 = 20261123;

thread_local! {
    static TEST_RNG: std::cell::RefCell<Option<ChaCha20Rng>> = const { std::cell::RefCell::new(None) };
}

/// Seeds the calling test's randomness (each test runs on its own thread).
fn seeded(test: &str) {
    let base: u64 = match std::env::var("PPDENOISE_MASKING_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("PPDENOISE_MASKING_SEED={s:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("{test}: seed {base} (rerun with PPDENOISE_MASKING_SEED={base})");
    let h = blake3::hash(format!("{base}/{test}").as_bytes());
    TEST_RNG.with(|r| *r.borrow_mut() = Some(ChaCha20Rng::from_seed(*h.as_bytes())));
}

fn with_rng<T>(f: impl FnOnce(&mut ChaCha20Rng) -> T) -> T {
    TEST_RNG.with(|r| f(r.borrow_mut().as_mut().expect("call seeded() first")))
}

/// A seed from the test's generator (where the tool would draw a fresh one).
fn test_seed() -> Seed {
    with_rng(|r| {
        let mut s = [0u8; 32];
        r.fill_bytes(&mut s);
        s
    })
}

// ------------------------------------------------------------------------------------------
// Recording channel

#[derive(Clone, Debug)]
enum Event {
    Sent(Vec<u8>),
    Received(Vec<u8>),
}

/// Wraps a channel and logs every message in order.
struct Recording<C: Channel> {
    inner: C,
    log: Vec<Event>,
}

impl<C: Channel> Channel for Recording<C> {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.log.push(Event::Sent(msg.to_vec()));
        self.inner.send(msg)
    }

    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        let m = self.inner.recv(expect)?;
        self.log.push(Event::Received(m.clone()));
        Ok(m)
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }
}

/// The openings of a CNN or graph job packed below 64 bits (docs/protocol.md, "Ring
/// width"), by byte length: (values, bits). A length not listed is a 64-bit opening.
type Widths = std::collections::HashMap<usize, (usize, u32)>;

/// [`Widths`] of a job's map openings `(values, bits)`, all of them (64-bit ones too): the
/// set-up fails loudly where a byte length would not tell the openings apart (two packed
/// openings of one length but other shapes, or a packed length equal to a 64-bit
/// opening's), since the tests would then unpack a message by another's width.
fn packed_widths(openings: impl IntoIterator<Item = (usize, u32)>) -> Widths {
    use ppdenoise::corr::pack::packed_len;
    let mut widths = Widths::new();
    let mut whole = std::collections::BTreeSet::new();
    for (n, bits) in openings {
        if bits == 64 {
            whole.insert(8 * n);
        } else if let Some(&other) = widths.get(&packed_len(n, bits)) {
            assert_eq!(
                other,
                (n, bits),
                "two packed openings of {} bytes: the test cannot tell them apart",
                packed_len(n, bits)
            );
        } else {
            widths.insert(packed_len(n, bits), (n, bits));
        }
    }
    for (len, w) in &widths {
        assert!(
            !whole.contains(len),
            "a packed opening {w:?} is as long as a 64-bit one ({len} bytes): the test cannot tell them apart"
        );
    }
    widths
}

/// The set-up check can fail: 32 values of 31 bits and 31 of 32 are both 124 bytes; 64
/// values of 31 bits are 248 bytes, as 31 values of 64.
#[test]
#[should_panic(expected = "two packed openings of 124 bytes")]
fn widths_refuse_two_packed_openings_of_one_length() {
    packed_widths([(32, 31), (100, 64), (31, 32)]);
}

#[test]
#[should_panic(expected = "as long as a 64-bit one (248 bytes)")]
fn widths_refuse_a_packed_opening_as_long_as_a_whole_one() {
    packed_widths([(64, 31), (31, 64)]);
}

/// The values opened by `open` (and `exchange`) as seen by party 0, which sends first and
/// then receives a message of the same length: opened = sent + received, per u64.
fn opened_values(log: &[Event]) -> Vec<Vec<u8>> {
    opened_values_in(log, &Widths::new())
}

/// [`opened_values`] where the openings of `widths` are packed: those are added mod 2^l
/// value by value and packed again (uniform bytes where the values are uniform mod 2^l).
fn opened_values_in(log: &[Event], widths: &Widths) -> Vec<Vec<u8>> {
    use ppdenoise::corr::pack::{low_mask, pack, unpack};
    let mut out = Vec::new();
    for w in log.windows(2) {
        if let [Event::Sent(a), Event::Received(b)] = w {
            if let Some(&(n, bits)) = widths.get(&a.len()).filter(|_| a.len() == b.len()) {
                let (x, y) = (unpack(a, n, bits).unwrap(), unpack(b, n, bits).unwrap());
                let v: Vec<u64> = x
                    .iter()
                    .zip(&y)
                    .map(|(x, y)| x.wrapping_add(*y) & low_mask(bits))
                    .collect();
                out.push(pack(&v, bits));
            } else if a.len() == b.len() && a.len() % 8 == 0 && !a.is_empty() {
                let v: Vec<u8> = a
                    .chunks_exact(8)
                    .zip(b.chunks_exact(8))
                    .flat_map(|(x, y)| {
                        let x = u64::from_le_bytes(x.try_into().unwrap());
                        let y = u64::from_le_bytes(y.try_into().unwrap());
                        x.wrapping_add(y).to_le_bytes()
                    })
                    .collect();
                out.push(v);
            }
        }
    }
    out
}

/// The boolean engine's openings as party 0 sees them: both parties send first, so each
/// (sent, received) pair of equal length XORs to the opened bits.
fn xor_opened_values(log: &[Event]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for w in log.windows(2) {
        if let [Event::Sent(a), Event::Received(b)] = w {
            if a.len() == b.len() && !a.is_empty() {
                out.push(a.iter().zip(b).map(|(x, y)| x ^ y).collect());
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Statistics

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised upper incomplete gamma Q(a, x) (Numerical Recipes gammq).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        // Series for P.
        let (mut ap, mut sum) = (a, 1.0 / a);
        let mut del = sum;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - gln).exp()
    } else {
        // Continued fraction for Q (modified Lentz).
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (-x + a * x.ln() - gln).exp() * h
    }
}

fn histogram<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u64; 256] {
    let mut h = [0u64; 256];
    for p in parts {
        for &b in p {
            h[b as usize] += 1;
        }
    }
    h
}

/// Chi-square two-sample test of two histograms (Numerical Recipes chstwo); returns
/// (statistic, degrees of freedom, p-value).
fn chi2_two_sample(r: &[u64; 256], s: &[u64; 256]) -> (f64, f64, f64) {
    let (n1, n2) = (r.iter().sum::<u64>() as f64, s.iter().sum::<u64>() as f64);
    assert!(n1 > 0.0 && n2 > 0.0);
    let (k1, k2) = ((n2 / n1).sqrt(), (n1 / n2).sqrt());
    let mut chi = 0.0;
    let mut bins = 0usize;
    for i in 0..256 {
        let (a, b) = (r[i] as f64, s[i] as f64);
        if a + b > 0.0 {
            bins += 1;
            chi += (k1 * a - k2 * b).powi(2) / (a + b);
        }
    }
    let df = if r.iter().sum::<u64>() == s.iter().sum::<u64>() {
        bins as f64 - 1.0
    } else {
        bins as f64
    };
    (chi, df, gamma_q(df / 2.0, chi / 2.0))
}

/// Chi-square one-sample test of a histogram against the uniform distribution over 256 byte
/// values; returns (statistic, p-value).
fn chi2_uniform(h: &[u64; 256]) -> (f64, f64) {
    let n = h.iter().sum::<u64>() as f64;
    assert!(n > 0.0);
    let e = n / 256.0;
    let chi: f64 = h.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
    (chi, gamma_q(255.0 / 2.0, chi / 2.0))
}

fn words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Ring differences (mod 2^64, as bytes) of every pair of openings of the same length.
fn differences<T: AsRef<[u8]>>(opened: &[T]) -> Vec<Vec<u8>> {
    differences_in(opened, &Widths::new())
}

/// [`differences`] where the openings of `widths` are packed: those mod 2^l, packed again.
fn differences_in<T: AsRef<[u8]>>(opened: &[T], widths: &Widths) -> Vec<Vec<u8>> {
    use ppdenoise::corr::pack::{low_mask, pack, unpack};
    let mut out = Vec::new();
    for (i, a) in opened.iter().enumerate() {
        for b in opened[i + 1..]
            .iter()
            .filter(|b| b.as_ref().len() == a.as_ref().len())
        {
            if let Some(&(n, bits)) = widths.get(&a.as_ref().len()) {
                let (x, y) = (
                    unpack(a.as_ref(), n, bits).unwrap(),
                    unpack(b.as_ref(), n, bits).unwrap(),
                );
                let d: Vec<u64> = x
                    .iter()
                    .zip(&y)
                    .map(|(x, y)| x.wrapping_sub(*y) & low_mask(bits))
                    .collect();
                out.push(pack(&d, bits));
                continue;
            }
            let d: Vec<u64> = words(a.as_ref())
                .iter()
                .zip(words(b.as_ref()))
                .map(|(x, y)| x.wrapping_sub(y))
                .collect();
            out.push(ppdenoise::twopc::channel::u64s_to_bytes(&d));
        }
    }
    out
}

/// Every message slot of at least [`MIN_SLOT_BYTES`] is uniform on its own (one run, no
/// second image needed), Bonferroni-corrected; Err names the first slot that is not.
fn uniform_slots<T: AsRef<[u8]>>(what: &str, msgs: &[T]) -> Result<usize, String> {
    let msgs: Vec<&[u8]> = msgs.iter().map(|m| m.as_ref()).collect();
    let slots: Vec<usize> = (0..msgs.len())
        .filter(|&i| msgs[i].len() >= MIN_SLOT_BYTES)
        .collect();
    let threshold = ALPHA / slots.len().max(1) as f64;
    let mut pmin = 1.0f64;
    for &i in &slots {
        let (chi, p) = chi2_uniform(&histogram([msgs[i]]));
        pmin = pmin.min(p);
        if p <= threshold {
            return Err(format!(
                "{what}: slot {i} ({} bytes) is not uniform: chi2 = {chi:.1}, p = {p:e}",
                msgs[i].len()
            ));
        }
    }
    eprintln!(
        "{what}: {} slots uniform on their own, smallest p = {pmin:.4} (threshold {threshold:.1e})",
        slots.len()
    );
    Ok(slots.len())
}

/// Opening `map` of stream ActMask(t, 0) with both parties' dealer masks removed: the
/// `n` values in the clear, mod 2^l where the opening is packed ([`Widths`]).
fn unmasked(map: &[u8], n: usize, widths: &Widths, seeds: &[Seed; 2], t: u32) -> Vec<u64> {
    use ppdenoise::corr::pack::{low_mask, packed_len, unpack};
    let bits = widths.get(&map.len()).map_or(64, |w| w.1);
    assert_eq!(map.len(), packed_len(n, bits), "the opening of {n} values");
    let (b0, b1) = (
        act_mask_of(&seeds[0], t, 0, n),
        act_mask_of(&seeds[1], t, 0, n),
    );
    unpack(map, n, bits)
        .unwrap()
        .iter()
        .zip(b0.iter().zip(&b1))
        .map(|(v, (x, y))| v.wrapping_add(*x).wrapping_add(*y) & low_mask(bits))
        .collect()
}

fn le_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn statistics_self_check() {
    seeded("statistics_self_check");
    // The one-sample test: a flat histogram gives p = 1, a 4% excess of one byte value
    // among 25,600 gives chi2 = 200 (p ~ 0.996), half the values missing p ~ 0.
    assert!((chi2_uniform(&[100; 256]).1 - 1.0).abs() < 1e-9);
    let mut gap = [100u64; 256];
    gap[7] = 0;
    gap[8] = 200;
    assert!(chi2_uniform(&gap).1 > 0.9);
    let half: [u64; 256] = std::array::from_fn(|i| if i % 2 == 0 { 200 } else { 0 });
    assert!(chi2_uniform(&half).1 < 1e-100);
    // Q(1, x) = exp(-x): chi-square with 2 degrees of freedom.
    for x in [0.1f64, 1.0, 5.0, 20.0] {
        assert!((gamma_q(1.0, x) - (-x).exp()).abs() < 1e-12, "x = {x}");
    }
    // Median of chi-square(255) is about 254.33: p close to 0.5.
    let p = gamma_q(127.5, 254.33 / 2.0);
    assert!((p - 0.5).abs() < 0.01, "p = {p}");
    // Gamma(5) = 24.
    assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
    // Two samples of the same uniform source pass, two different ones fail.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a: Vec<u8> = (0..200_000).map(|_| rng.gen()).collect();
    let b: Vec<u8> = (0..150_000).map(|_| rng.gen()).collect();
    let c: Vec<u8> = (0..150_000).map(|_| rng.gen::<u8>() & 0xfe).collect();
    let (_, _, p_same) = chi2_two_sample(&histogram([a.as_slice()]), &histogram([b.as_slice()]));
    let (_, _, p_diff) = chi2_two_sample(&histogram([a.as_slice()]), &histogram([c.as_slice()]));
    assert!(p_same > 0.001, "p_same = {p_same}");
    assert!(p_diff < 1e-12, "p_diff = {p_diff}");
}

// ------------------------------------------------------------------------------------------
// The job

struct Run {
    logs: [Vec<Event>; 2],
    patches: usize,
    triplets: [Triplets; 2],
    encoded: Vec<u64>,
}

/// Fresh shares of `model`'s plan for S0 and S1, as `share-model` makes them.
fn share_model(model: &Model) -> (Plan, Vec<Plan>) {
    let params = FixedParams::default();
    let plan = Plan::from_model(model, params).unwrap();
    let shares: Vec<Plan> = ModelShare::split(&plan, &model.meta, &test_seed())
        .iter()
        .map(|s| s.share_plan().unwrap())
        .collect();
    (plan, shares)
}

/// `open-weights` in process on recording channels: each party's opened weights and the
/// message logs.
fn open_once(shares: &[Plan], mask_seeds: &[Seed; 2]) -> (Vec<Opened>, [Vec<Event>; 2]) {
    let (opened, logs) = on_recorded_pair(|party, ch| {
        let p = party.index();
        let mask = mask_shares(&mask_seeds[p], &shares[p]);
        open_weights(ch, party, &shares[p], mask).unwrap()
    });
    (opened.into(), logs)
}

/// Runs `f` as S0 and S1 on two threads joined by in-memory channels that record every
/// message; returns both results and both logs.
fn on_recorded_pair<T: Send>(
    f: impl Fn(Party, &mut dyn Channel) -> T + Sync,
) -> ([T; 2], [Vec<Event>; 2]) {
    let (c0, c1) = mem_pair();
    let mut r0 = Recording {
        inner: c0,
        log: Vec::new(),
    };
    let mut r1 = Recording {
        inner: c1,
        log: Vec::new(),
    };
    let out = std::thread::scope(|sc| {
        let f = &f;
        let h0 = sc.spawn(|| f(Party::S0, &mut r0));
        let h1 = sc.spawn(|| f(Party::S1, &mut r1));
        [h0.join().unwrap(), h1.join().unwrap()]
    });
    (out, [r0.log, r1.log])
}

/// One job; `opened`: its weights were opened once beforehand under a model mask (the
/// job then sends no masked weights), else it opens them itself.
fn run_job(
    model: &Model,
    image: &Array2<f64>,
    stride: usize,
    batch: usize,
    engine: EngineKind,
    opened: bool,
) -> Run {
    let params = FixedParams::default();
    // Model owner: fresh shares for this run.
    let (plan, shares) = share_model(model);
    let mask_seeds = [test_seed(), test_seed()];
    let weights = opened.then(|| open_once(&shares, &mask_seeds).0);
    // Gateway.
    let (h, w) = image.dim();
    let pre = Preprocess::new(25.0, 25.0, false);
    let job = JobParams {
        height: h,
        width: w,
        bit_depth: 8,
        stride,
        scale: params.s,
        pre,
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let enc = oracle::encode_image(image, &pre, params.s);
    let iseed = test_seed();
    let img = [
        share_with_seed(&enc, &iseed, Stream::ImageShare),
        expand(&iseed, Stream::ImageShare, h * w),
    ];
    // Dealer.
    let streams = StreamCheck::start();
    let deal = NonlinearDeal::new(engine, &plan.circuits());
    let model_mask = opened.then_some(mask_seeds);
    let seeds = dealer::DealSeeds {
        job: [test_seed(), test_seed()],
        model_mask,
    };
    let setup = with_rng(|r| engine.deal_setup_with(r));
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
    let streams = streams.dealt(&[trip[0].seed, trip[1].seed]);
    // Fresh ids for the session tag, as the real files carry.
    let mut tag = Vec::new();
    for _ in 0..3 {
        tag.extend_from_slice(&test_seed()[..16]);
    }
    // The garbler's wire labels, from the test's generator too.
    let label_seeds: [u64; 2] = with_rng(|r| [r.gen(), r.gen()]);
    let run = |p: Party, ch: &mut dyn Channel| {
        let t = &trip[p.index()];
        let mut engine = seeded_engine_for(t.engine, p, &t.base_ot, label_seeds).unwrap();
        let inputs = JobInputs {
            party: p,
            plan: &shares[p.index()],
            job: &job,
            image: &img[p.index()],
            rand: PartyRandomness::packed(p, t.seed, t.corrections.clone()),
            batch: t.batch,
            session_tag: tag.clone(),
            weights: match &weights {
                Some(w) => Weights::Opened(&w[p.index()]),
                None => Weights::PerJob,
            },
            patches: None,
        };
        mlp::run(ch, inputs, engine.as_mut(), &mut |_, _| {}).unwrap();
    };
    let (_, logs) = on_recorded_pair(run);
    streams.used(&[trip[0].seed, trip[1].seed], &format!("MLP job, {engine}"));
    let patches = ppdenoise::model::geometry::Geometry::new(h, w, plan.patch, stride).num_patches();
    Run {
        logs,
        patches,
        triplets: trip,
        encoded: enc,
    }
}

/// Issue 14 item 7: every (seed, stream) of the job's seeds that the dealer draws is drawn by
/// the dealer once and by the servers exactly once, and the servers draw nothing from the job
/// seeds that the dealer did not. The PRG log is process-wide: a check holds [`WINDOW`] from
/// start to end so that no other job's check clears it, and looks only at its own job's seeds,
/// so other tests drawing meanwhile do not matter.
struct StreamCheck {
    _window: std::sync::MutexGuard<'static, ()>,
    dealt: Vec<(u64, u64)>,
}

static WINDOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The draws of `log` from `seeds`, sorted; none may be repeated and there must be some.
fn draws_of(log: Vec<(u64, u64)>, seeds: &[Seed; 2], who: &str) -> Vec<(u64, u64)> {
    let fps = seeds.map(|s| stream_log::fingerprint(&s));
    let mut own: Vec<(u64, u64)> = log.into_iter().filter(|(f, _)| fps.contains(f)).collect();
    let twice = stream_log::repeated(&own);
    assert!(twice.is_empty(), "{who} drew {twice:x?} twice");
    assert!(!own.is_empty(), "{who} drew nothing from the job seeds");
    own.sort_unstable();
    own
}

impl StreamCheck {
    fn start() -> StreamCheck {
        let window = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
        stream_log::start();
        StreamCheck {
            _window: window,
            dealt: Vec::new(),
        }
    }

    /// Ends the dealer's part, which made the job seeds `seeds`.
    fn dealt(mut self, seeds: &[Seed; 2]) -> StreamCheck {
        self.dealt = draws_of(stream_log::take(), seeds, "the dealer");
        stream_log::start();
        self
    }

    /// Ends the servers' part: together they drew exactly the dealer's streams, once each.
    fn used(self, seeds: &[Seed; 2], what: &str) {
        let used = draws_of(stream_log::take(), seeds, &format!("{what}: the servers"));
        assert_eq!(
            used.len(),
            self.dealt.len(),
            "{what}: the servers drew {} job-seed streams, the dealer {}",
            used.len(),
            self.dealt.len()
        );
        assert!(
            used == self.dealt,
            "{what}: the servers' streams differ from the dealer's"
        );
    }
}

fn received(log: &[Event]) -> Vec<&[u8]> {
    log.iter()
        .filter_map(|e| match e {
            Event::Received(m) => Some(m.as_slice()),
            _ => None,
        })
        .collect()
}

/// Significance of each test family (Bonferroni within a family). About 50 families run per
/// `cargo test`, so a false alarm comes once in some 20,000 runs; every broken variant below
/// is flagged at p < 1e-100.
const ALPHA: f64 = 1e-6;
const MIN_SLOT_BYTES: usize = 4096;

/// Pooled and per-slot tests of two runs' message lists. Err names the first failure.
fn compare(what: &str, a: &[&[u8]], b: &[&[u8]]) -> Result<usize, String> {
    assert_eq!(a.len(), b.len(), "{what}: message counts differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.len(),
            y.len(),
            "{what}: message {i} length differs between images"
        );
    }
    let (chi, df, p) =
        chi2_two_sample(&histogram(a.iter().copied()), &histogram(b.iter().copied()));
    let total: usize = a.iter().map(|m| m.len()).sum();
    eprintln!(
        "{what}: {} messages, {total} bytes per run; pooled chi2 = {chi:.1} (df {df}), p = {p:.4}",
        a.len()
    );
    if p <= ALPHA {
        return Err(format!(
            "{what}: pooled byte distributions differ (p = {p:e})"
        ));
    }
    let slots: Vec<usize> = (0..a.len())
        .filter(|&i| a[i].len() >= MIN_SLOT_BYTES)
        .collect();
    let threshold = ALPHA / slots.len().max(1) as f64;
    let mut pmin = 1.0f64;
    for &i in &slots {
        let (_, _, p) = chi2_two_sample(&histogram([a[i]]), &histogram([b[i]]));
        pmin = pmin.min(p);
        if p <= threshold {
            return Err(format!(
                "{what}: message {i} ({} bytes) differs between images (p = {p:e}, \
                 Bonferroni over {} slots)",
                a[i].len(),
                slots.len()
            ));
        }
    }
    eprintln!(
        "{what}: {} slots of >= {MIN_SLOT_BYTES} bytes tested, smallest p = {pmin:.4} \
         (threshold {threshold:.2e})",
        slots.len()
    );
    Ok(slots.len())
}

fn model() -> Model {
    random_model(
        &[81, 16, 16, 25],
        2024,
        ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: true,
            activation: Activation::TanhStar,
            aggregation_sigma: 0.0,
        },
    )
}

const SIZE: usize = 40;

fn images() -> (Array2<f64>, Array2<f64>) {
    let black = Array2::zeros((SIZE, SIZE));
    let phantom = shepp_logan(SIZE).pixels;
    // High contrast: the phantom's levels stretched to 0..255.
    let phantom = phantom.mapv(|v| if v > 0.0 { 255.0 } else { 0.0 });
    assert!(phantom.iter().any(|&v| v == 255.0) && phantom.iter().any(|&v| v == 0.0));
    (black, phantom)
}

/// Batch per engine: the boolean engine's messages are bit-sliced (a bit per element), so a
/// larger batch gives it message slots big enough for the per-slot test; both still split
/// the job into several batches, so openings of different batches are compared.
fn batch_for(engine: EngineKind) -> usize {
    match engine {
        EngineKind::Gc => 100,
        EngineKind::Gmw => 200,
    }
}

#[test]
fn received_messages_do_not_depend_on_the_image() {
    seeded("received_messages_do_not_depend_on_the_image");
    // Two different models as well as two images: weights that reached a server unmasked
    // would differ between the runs (and fail the one-sample tests on their own).
    let m = model();
    let m2 = random_model(&[81, 16, 16, 25], 2025, m.meta.clone());
    let (black, phantom) = images();
    for (engine, opened) in [
        (EngineKind::Gc, false),
        (EngineKind::Gmw, false),
        (EngineKind::Gc, true),
        (EngineKind::Gmw, true),
    ] {
        let batch = batch_for(engine);
        let a = run_job(&m, &black, 2, batch, engine, opened);
        let b = run_job(&m2, &phantom, 2, batch, engine, opened);
        for p in 0..2 {
            let (ra, rb) = (received(&a.logs[p]), received(&b.logs[p]));
            let slots = compare(&format!("{engine}: S{p} received"), &ra, &rb).unwrap();
            assert!(slots >= 5, "too few large messages to test per slot");
            // Each run on its own: every large message is uniform bytes.
            for (run, r) in [("black", &ra), ("phantom", &rb)] {
                let n = uniform_slots(&format!("{engine}: S{p} received, {run}"), r).unwrap();
                assert!(n >= 5, "too few large messages to test on their own");
            }
        }
        // What the servers learn from `open`: the opened (masked) values.
        let (oa, ob) = (opened_values(&a.logs[0]), opened_values(&b.logs[0]));
        let oa: Vec<&[u8]> = oa.iter().map(|v| v.as_slice()).collect();
        let ob: Vec<&[u8]> = ob.iter().map(|v| v.as_slice()).collect();
        // tag, masked weights (unless opened once before), masked image, then per batch
        // and layer.
        assert!(oa.len() >= 3);
        compare(&format!("{engine}: opened values"), &oa, &ob).unwrap();
        let n = uniform_slots(&format!("{engine}: opened values"), &oa).unwrap();
        assert!(n >= 3, "too few large openings to test on their own");
        // No two openings share a mask: the difference of any two of equal length is
        // uniform too (a reused mask would cancel and leave the difference of the values).
        let n = uniform_slots(
            &format!("{engine}: differences of openings"),
            &differences(&oa),
        )
        .unwrap();
        assert!(n >= 10, "too few pairs of openings to test");
        if engine == EngineKind::Gmw {
            // The boolean engine's openings are XORs: masked AND inputs and output bits.
            let (xa, xb) = (xor_opened_values(&a.logs[0]), xor_opened_values(&b.logs[0]));
            let xa: Vec<&[u8]> = xa.iter().map(|v| v.as_slice()).collect();
            let xb: Vec<&[u8]> = xb.iter().map(|v| v.as_slice()).collect();
            let slots = compare("gmw: XOR-opened bits", &xa, &xb).unwrap();
            assert!(slots >= 5, "too few large openings to test per slot");
        }
    }
}

#[test]
fn negative_control_boolean_outputs_without_dabits_are_detected() {
    seeded("negative_control_boolean_outputs_without_dabits_are_detected");
    // The boolean engine opens its output bits masked by daBits (and tc's low bits as
    // tc + r with an edaBit r). Removing the daBits from the first run's opening (hidden layer
    // 0, batch 0) gives the region and sign bits of every pre-activation and the carry of
    // tc + r: they depend on the image, and the same test flags them.
    let m = model();
    let (black, phantom) = images();
    // One batch holds the whole job here, so the first output opening is all of it.
    let batch = 400;
    let plan = Plan::from_model(&m, FixedParams::default()).unwrap();
    let net = Netlist::record(&ActCircuit::tanh_star(&plan.acts[0]));
    let bits = |r: &Run| -> (Vec<u8>, Vec<u8>) {
        // Pairs: tag, masked weights, masked image, one per AND depth, then the outputs.
        let opened = xor_opened_values(&r.logs[0]);
        let c = &opened[3 + net.and_depth()];
        // One job of fewer patches than the batch: 16 hidden units per patch.
        let words = (16 * r.patches).div_ceil(64);
        assert_eq!(c.len(), net.outputs.len() * words * 8, "the output opening");
        // The daBit-masked outputs (the carry of the edaBit conversion of tc, and the region
        // and sign bits), unmasked; the edaBit-masked low bits of tc + r stay as they are.
        let n = net.dabits() * words;
        let (r0, _) = dabit_masks(&r.triplets[0].seed, 0, 0, n);
        let (r1, _) = dabit_masks(&r.triplets[1].seed, 0, 0, n);
        let masked_words = c
            .chunks_exact(8 * words)
            .zip(&net.masked)
            .filter(|(_, &m)| m)
            .flat_map(|(o, _)| o.chunks_exact(8));
        let clear: Vec<u8> = masked_words
            .zip(r0.iter().zip(&r1))
            .flat_map(|(b, (x, y))| {
                (u64::from_le_bytes(b.try_into().unwrap()) ^ x ^ y).to_le_bytes()
            })
            .collect();
        (c.clone(), clear)
    };
    let a = run_job(&m, &black, 2, batch, EngineKind::Gmw, false);
    let b = run_job(&m, &phantom, 2, batch, EngineKind::Gmw, false);
    let ((ma, ca), (mb, cb)) = (bits(&a), bits(&b));
    let (_, _, p_masked) =
        chi2_two_sample(&histogram([ma.as_slice()]), &histogram([mb.as_slice()]));
    let (chi, _, p) = chi2_two_sample(&histogram([ca.as_slice()]), &histogram([cb.as_slice()]));
    eprintln!(
        "gmw output bits: masked p = {p_masked:.4}; without daBits chi2 = {chi:.1}, p = {p:e}"
    );
    assert!(p < 1e-12, "unmasked output bits not detected (p = {p})");
    assert!(
        p_masked > 1e-6,
        "masked output bits look image-dependent (p = {p_masked})"
    );
}

#[test]
fn negative_controls_unmasked_data_is_detected() {
    seeded("negative_controls_unmasked_data_is_detected");
    let m = model();
    let (black, phantom) = images();
    // 1. The raw encoded images (what an unmasked protocol would send).
    let pre = Preprocess::new(25.0, 25.0, false);
    let ea = oracle::encode_image(&black, &pre, 18);
    let eb = oracle::encode_image(&phantom, &pre, 18);
    let (ba, bb) = (
        ppdenoise::twopc::channel::u64s_to_bytes(&ea),
        ppdenoise::twopc::channel::u64s_to_bytes(&eb),
    );
    let (chi, _, p) = chi2_two_sample(&histogram([ba.as_slice()]), &histogram([bb.as_slice()]));
    eprintln!("raw images: chi2 = {chi:.1}, p = {p:e}");
    assert!(p < 1e-12, "raw image bytes not detected (p = {p})");

    // 2. The opened masked image of real runs with the dealer's image mask removed: this is
    // the image itself, and the same test that passes on the real messages flags it.
    let a = run_job(&m, &black, 2, 100, EngineKind::Gc, false);
    let b = run_job(&m, &phantom, 2, 100, EngineKind::Gc, false);
    let unmask = |r: &Run| -> Vec<u8> {
        let opened = opened_values(&r.logs[0]);
        let npix = SIZE * SIZE;
        let img = &opened[2];
        assert_eq!(img.len(), npix * 8, "third opening is the masked image");
        let mask = ppdenoise::ring::share::add(
            &image_mask_of(&r.triplets[0].seed, npix),
            &image_mask_of(&r.triplets[1].seed, npix),
        );
        let v: Vec<u64> = img
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let x = ppdenoise::ring::share::add(&v, &mask);
        // Sanity: masked image + mask is exactly the encoded image.
        assert_eq!(x, r.encoded);
        ppdenoise::twopc::channel::u64s_to_bytes(&x)
    };
    let (ua, ub) = (unmask(&a), unmask(&b));
    let (_, _, p_masked) = chi2_two_sample(
        &histogram([opened_values(&a.logs[0])[2].as_slice()]),
        &histogram([opened_values(&b.logs[0])[2].as_slice()]),
    );
    let (chi, _, p) = chi2_two_sample(&histogram([ua.as_slice()]), &histogram([ub.as_slice()]));
    eprintln!("opened image: masked p = {p_masked:.4}; unmasked chi2 = {chi:.1}, p = {p:e}");
    assert!(p < 1e-12, "unmasked image not detected (p = {p})");
    assert!(
        p_masked > ALPHA,
        "the real masked image openings differ (p = {p_masked})"
    );

    // 3. Pooled with all other received bytes, the unmasked image is still detected by the
    // per-slot test (a leak in one message cannot hide among megabytes of uniform bytes).
    let mut ra = received(&a.logs[1]);
    let mut rb = received(&b.logs[1]);
    let slot = ra.iter().position(|m| m.len() == SIZE * SIZE * 8).unwrap();
    ra[slot] = &ua;
    rb[slot] = &ub;
    let verdict = compare("S1 received, image unmasked", &ra, &rb);
    eprintln!("with the image unmasked: {verdict:?}");
    assert!(verdict.is_err(), "the test missed an unmasked message");

    // 4. Subtle variants, made from the real opening x - b of the encoded image x with the
    // dealer's mask b, each caught by the tests the real runs pass:
    let mask_of = |r: &Run| {
        ppdenoise::ring::share::add(
            &image_mask_of(&r.triplets[0].seed, SIZE * SIZE),
            &image_mask_of(&r.triplets[1].seed, SIZE * SIZE),
        )
    };
    let bytes = ppdenoise::twopc::channel::u64s_to_bytes;
    // a) a 32-bit mask: x - (b mod 2^32). The one-sample test of the message alone sees it.
    let narrow: Vec<u64> = a
        .encoded
        .iter()
        .zip(mask_of(&a))
        .map(|(x, m)| x.wrapping_sub(m & 0xffff_ffff))
        .collect();
    let narrow = bytes(&narrow);
    let verdict = uniform_slots("opened image, 32-bit mask", &[&narrow]);
    eprintln!("32-bit mask: {verdict:?}");
    assert!(verdict.is_err(), "the test missed a 32-bit mask");
    // b) one mask for two openings (run a's mask on run b's image as well): each opening
    // alone is uniform, their difference is x_a - x_b and is caught.
    let ma = mask_of(&a);
    let oa_img = opened_values(&a.logs[0])[2].clone();
    assert_eq!(words(&oa_img), ppdenoise::ring::share::sub(&a.encoded, &ma));
    let reused = bytes(&ppdenoise::ring::share::sub(&b.encoded, &ma));
    uniform_slots("opened image b under a's mask", &[&reused]).unwrap();
    let verdict = uniform_slots(
        "differences, one mask for two openings",
        &differences(&[&oa_img, &reused]),
    );
    eprintln!("one mask for two openings: {verdict:?}");
    assert!(verdict.is_err(), "the test missed a mask used twice");
    // c) the image sent as is: caught on its own, without a second image.
    let raw = bytes(&b.encoded);
    assert!(uniform_slots("image sent unmasked", &[&raw]).is_err());
    // d) one activation mask for two batches, inside a real run: the opening of layer 1 in
    // batch 1 re-masked with batch 0's mask. Each opening is the one whose dealer mask
    // makes it small (tanh* outputs, |y| <= 2^30 in the ring).
    let oa = opened_values(&a.logs[0]);
    let act_mask = |l: u32, b: u32, n: usize| {
        ppdenoise::ring::share::add(
            &act_mask_of(&a.triplets[0].seed, l, b, n),
            &act_mask_of(&a.triplets[1].seed, l, b, n),
        )
    };
    let small = |v: &[u64]| {
        let top = v.iter().filter(|x| matches!(*x >> 56, 0 | 0xff)).count();
        top * 100 >= v.len() * 99
    };
    let find = |l: u32, b: u32| {
        oa.iter()
            .position(|o| {
                let w = words(o);
                small(&ppdenoise::ring::share::add(&w, &act_mask(l, b, w.len())))
            })
            .unwrap_or_else(|| panic!("no opening of layer {l}, batch {b}"))
    };
    let (i0, i1) = (find(1, 0), find(1, 1));
    assert_ne!(i0, i1);
    let w1 = words(&oa[i1]);
    let x1 = ppdenoise::ring::share::add(&w1, &act_mask(1, 1, w1.len()));
    let mut reused = oa.clone();
    reused[i1] = bytes(&ppdenoise::ring::share::sub(&x1, &act_mask(1, 0, w1.len())));
    uniform_slots("openings, the real run", &differences(&oa)).unwrap();
    uniform_slots("openings, batch 1 under batch 0's mask", &reused).unwrap();
    let verdict = uniform_slots(
        "differences, batch 1 under batch 0's mask",
        &differences(&reused),
    );
    eprintln!("one activation mask for two batches: {verdict:?}");
    assert!(
        verdict.is_err(),
        "the test missed an activation mask used twice"
    );
}

#[test]
fn weights_opening_does_not_depend_on_the_weights() {
    seeded("weights_opening_does_not_depend_on_the_weights");
    // `open-weights` for two models of one shape, a random one and one whose weights are all
    // zero (as different as weights get), each with fresh shares and a fresh model mask: what
    // each server receives, and the opened U, have the same distribution. Negative control:
    // U with the dealer's mask removed is W, and the same test flags it.
    let widths = [81, 64, 64, 25];
    let random = random_model(&widths, 7, model().meta);
    let mut zero = random.clone();
    for l in zero.layers.iter_mut() {
        l.w.fill(0.0);
    }
    let run = |m: &Model| {
        let (_, shares) = share_model(m);
        let seeds = [test_seed(), test_seed()];
        let (opened, logs) = open_once(&shares, &seeds);
        (opened, logs, seeds)
    };
    let (oa, la, sa) = run(&random);
    let (ob, lb, sb) = run(&zero);
    for p in 0..2 {
        let slots = compare(
            &format!("open-weights: S{p} received"),
            &received(&la[p]),
            &received(&lb[p]),
        )
        .unwrap();
        assert_eq!(slots, 1, "one message: the masked weights");
    }
    let bytes = |o: &Opened| ppdenoise::twopc::channel::u64s_to_bytes(&o.flat_u());
    let (ua, ub) = (bytes(&oa[0]), bytes(&ob[0]));
    assert_eq!(
        opened_values(&la[0]),
        vec![ua.clone()],
        "the one opening is U"
    );
    compare("open-weights: opened U", &[&ua], &[&ub]).unwrap();

    // Negative control: U + A = W.
    let unmask = |o: &Opened, seeds: &[Seed; 2], m: &Model| -> Vec<u8> {
        let (plan, shares) = share_model(m);
        let a0 = mask_shares(&seeds[0], &shares[0]);
        let a1 = mask_shares(&seeds[1], &shares[1]);
        let w: Vec<u64> =
            o.u.iter()
                .zip(a0.iter().zip(&a1))
                .flat_map(|(u, (x, y))| {
                    u.iter()
                        .zip(x.iter().zip(y))
                        .map(|(u, (x, y))| u.wrapping_add(*x).wrapping_add(*y))
                        .collect::<Vec<_>>()
                })
                .collect();
        // Sanity: that is exactly the plan's encoded weights.
        let want: Vec<u64> = plan.layers.iter().flat_map(|l| l.w.clone()).collect();
        assert_eq!(w, want);
        ppdenoise::twopc::channel::u64s_to_bytes(&w)
    };
    let (wa, wb) = (unmask(&oa[0], &sa, &random), unmask(&ob[0], &sb, &zero));
    let verdict = compare("open-weights: U with the mask removed", &[&wa], &[&wb]);
    eprintln!("unmasked weights: {verdict:?}");
    assert!(verdict.is_err(), "the test missed unmasked weights");
    // Weights sent unmasked are caught from one model alone; the real opening passes.
    uniform_slots("open-weights: opened U", &[&ua]).unwrap();
    let verdict = uniform_slots("open-weights: random weights unmasked", &[&wa]);
    eprintln!("random weights unmasked, one-sample: {verdict:?}");
    assert!(
        verdict.is_err(),
        "the one-sample test missed unmasked weights"
    );
}

/// A chain CNN's job in process with recording channels: what it returns.
struct ChainLogs {
    logs: [Vec<Event>; 2],
    seeds: [Seed; 2],
    widths: Widths,
    /// The tensor each convolution's product reads, in order (its map mask's stream
    /// `ActMask(t, 0)`).
    reads: Vec<u32>,
}

/// One DnCNN-shaped job in process with recording channels (weights opened in the job).
fn run_cnn_job(image: &Array2<f64>, engine: EngineKind) -> ChainLogs {
    let meta = ppdenoise::model::cnn::CnnMeta {
        sigma: 25.0,
        residual: true,
    };
    let m = ppdenoise::model::cnn::random_cnn(&[1, 8, 8, 1], 3, 31, meta);
    run_framed_cnn_job(&m, image, &[], engine)
}

/// [`run_cnn_job`] for any chain CNN, run as its graph (`Graph::from_cnn`) as the servers
/// run it, with the noise map's values a model with a map channel takes (shared with the
/// image, as the gateway does).
fn run_framed_cnn_job(
    m: &ppdenoise::model::cnn::Cnn,
    image: &Array2<f64>,
    map: &[f64],
    engine: EngineKind,
) -> ChainLogs {
    use ppdenoise::formats::bodies::GraphModelShare;
    use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed};
    use ppdenoise::ring::graph::uses::{product_input, Use};
    use ppdenoise::ring::graph::{padded_dims, GraphPlan};
    use ppdenoise::twopc::graph::{self as twopc_graph, GraphJobInputs};
    let g = ppdenoise::model::graph::Graph::from_cnn(m).unwrap();
    let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
    // Model owner: fresh shares for this run; each server fills the public plan with its own.
    let public = plan.public();
    let shares: Vec<GraphPlan> = GraphModelShare::split(&plan, &test_seed())
        .iter()
        .map(|s| s.share_plan(&public).unwrap())
        .collect();
    // A colour model's image: its planes stacked, (colours h) x w.
    let (rows, w) = image.dim();
    let h = rows / m.colours;
    let enc = ring_cnn::encode_image(image, map, &Preprocess::identity(), plan.params.s);
    let (ph, pw) = padded_dims(plan.stride, h, w);
    let enc = plan.inputs().pad(&enc, (h, w), (ph, pw));
    let iseed = test_seed();
    let img = [
        share_with_seed(&enc, &iseed, Stream::ImageShare),
        expand(&iseed, Stream::ImageShare, enc.len()),
    ];
    let batch = 500;
    let streams = StreamCheck::start();
    let seeds = dealer::DealSeeds {
        job: [test_seed(), test_seed()],
        model_mask: None,
    };
    let setup = with_rng(|r| engine.deal_setup_with(r));
    let d = dealer::graph::generate_with(&public, ph, pw, engine, batch, &seeds, setup).unwrap();
    let streams = streams.dealt(&d.seeds);
    let tag = test_seed()[..16].to_vec();
    // The garbler's wire labels, from the test's generator too.
    let label_seeds: [u64; 2] = with_rng(|r| [r.gen(), r.gen()]);
    let run = |p: Party, ch: &mut dyn Channel| {
        let pi = p.index();
        let (rand, setup) = d.party(p);
        let mut eng = seeded_engine_for(engine, p, setup, label_seeds).unwrap();
        let inputs = GraphJobInputs {
            party: p,
            plan: &shares[pi],
            height: ph,
            width: pw,
            image: &img[pi],
            rand,
            session_tag: tag.clone(),
            weights: Weights::PerJob,
            relu_batch: batch,
        };
        twopc_graph::run(ch, inputs, eng.as_mut(), &mut |_, _| {}).unwrap();
    };
    let (_, logs) = on_recorded_pair(run);
    streams.used(&d.seeds, &format!("CNN job, {engine}"));
    // Every convolution's input map is opened packed at its width; with the boolean engine
    // a map after a ReLU first opens its shares' masked top bits (one bit each, their XOR)
    // to extend them.
    let dims = plan.dims(ph, pw).unwrap();
    let fused = plan.fused(engine == EngineKind::Gmw);
    let steps = plan.weight_steps();
    let reads: Vec<u32> = steps
        .iter()
        .map(|&(i, _)| product_input(&plan, i).0)
        .collect();
    let widths = packed_widths(steps.iter().flat_map(|&(i, _)| {
        let st = product_input(&plan, i);
        let d = dims[st.0 as usize];
        let opening = (d[0] * d[1] * d[2], plan.open_bits(st));
        let top = plan
            .uses(i, &dims, &fused)
            .into_iter()
            .find_map(|u| match u {
                Use::Extend { len, .. } => Some((len, 1)),
                _ => None,
            });
        top.into_iter().chain([opening])
    }));
    assert!(!widths.is_empty(), "the job opens maps packed");
    ChainLogs {
        logs,
        seeds: d.seeds,
        widths,
        reads,
    }
}

#[test]
fn cnn_messages_do_not_depend_on_the_image() {
    seeded("cnn_messages_do_not_depend_on_the_image");
    // A CNN job (the session tag differs per run, so it is left out of the opened values).
    let (black, phantom) = images();
    for engine in [EngineKind::Gc, EngineKind::Gmw] {
        let ChainLogs {
            logs: a,
            widths: wa,
            ..
        } = run_cnn_job(&black, engine);
        let b = run_cnn_job(&phantom, engine).logs;
        for p in 0..2 {
            let (ra, rb) = (received(&a[p]), received(&b[p]));
            let slots =
                compare(&format!("cnn {engine}: S{p} received"), &ra[1..], &rb[1..]).unwrap();
            assert!(slots >= 3, "too few large messages to test per slot");
        }
        let (oa, ob) = (opened_values_in(&a[0], &wa), opened_values_in(&b[0], &wa));
        let oa: Vec<&[u8]> = oa.iter().skip(1).map(|v| v.as_slice()).collect();
        let ob: Vec<&[u8]> = ob.iter().skip(1).map(|v| v.as_slice()).collect();
        // Packed openings, the last layer's at the output's width among them (the last
        // layer reads a map of the hidden layers' size, the largest packed one).
        assert!(oa.iter().filter(|o| wa.contains_key(&o.len())).count() >= 2);
        let hidden = wa.values().map(|w| w.0).max().unwrap();
        // Both engines open the last layer's map whole at out_bits (the boolean engine after
        // the extension's top bits).
        let out_bits = ppdenoise::ring::cnn::CnnFixed::default().out_bits();
        let last = ppdenoise::corr::pack::packed_len(hidden, out_bits);
        assert!(
            oa.iter().any(|o| o.len() == last),
            "cnn {engine}: no opening of the last layer's {hidden} values"
        );
        compare(&format!("cnn {engine}: opened values"), &oa, &ob).unwrap();
        for (run, r) in [("black", &a), ("phantom", &b)] {
            for (p, log) in r.iter().enumerate() {
                let what = format!("cnn {engine}: S{p} received, {run}");
                assert!(uniform_slots(&what, &received(log)[1..]).unwrap() >= 3);
            }
        }
        uniform_slots(
            &format!("cnn {engine}: differences of openings"),
            &differences_in(&oa, &wa),
        )
        .unwrap();
        if engine == EngineKind::Gmw {
            let (xa, xb) = (xor_opened_values(&a[0]), xor_opened_values(&b[0]));
            let xa: Vec<&[u8]> = xa.iter().skip(1).map(|v| v.as_slice()).collect();
            let xb: Vec<&[u8]> = xb.iter().skip(1).map(|v| v.as_slice()).collect();
            compare("cnn gmw: XOR-opened bits", &xa, &xb).unwrap();
        }
    }
}

#[test]
fn negative_control_cnn_input_map_without_its_mask_is_detected() {
    seeded("negative_control_cnn_input_map_without_its_mask_is_detected");
    // The first layer's opening is X - B for the image X; removing the dealer's mask B
    // (stream ActMask(0, 0) of both job seeds) gives the encoded image, which the test flags.
    let (black, phantom) = images();
    let n = SIZE * SIZE;
    let clear = |j: &ChainLogs| -> (Vec<u8>, Vec<u8>) {
        // Opened values: tag, masked weights, then the layer-0 map (packed at ws + k bits).
        let opened = opened_values_in(&j.logs[0], &j.widths);
        let map = &opened[2];
        assert!(
            j.widths.contains_key(&map.len()),
            "the layer-0 opening is packed"
        );
        let clear = unmasked(map, n, &j.widths, &j.seeds, j.reads[0]);
        (map.clone(), le_bytes(&clear))
    };
    let (ja, jb) = (
        run_cnn_job(&black, EngineKind::Gmw),
        run_cnn_job(&phantom, EngineKind::Gmw),
    );
    let ((ma, xa), (mb, xb)) = (clear(&ja), clear(&jb));
    let (_, _, p_masked) =
        chi2_two_sample(&histogram([ma.as_slice()]), &histogram([mb.as_slice()]));
    let (_, _, p) = chi2_two_sample(&histogram([xa.as_slice()]), &histogram([xb.as_slice()]));
    eprintln!("cnn layer-0 map: masked p = {p_masked:.4}; without the mask p = {p:e}");
    assert!(p < 1e-12, "unmasked input map not detected (p = {p})");
    assert!(
        p_masked > 1e-6,
        "masked map looks image-dependent (p = {p_masked})"
    );
}

/// The boolean engine opens a layer's input after a ReLU after extending it by its shares'
/// masked top bits (docs/protocol.md, "The ReLU by selection"): the map that follows them
/// must not tell two images apart; with the dealer's mask of layer 1 removed (stream
/// ActMask(1, 0) of both job seeds) it is the first ReLU's output, which does.
#[test]
fn negative_control_cnn_map_after_a_relu_without_its_mask_is_detected() {
    seeded("negative_control_cnn_map_after_a_relu_without_its_mask_is_detected");
    use ppdenoise::corr::pack::{low_mask, packed_len, unpack};
    let (black, phantom) = images();
    // Layer 1 reads the 8 channels of layer 0's ReLU at ws + k = 31 bits.
    let (n, bits) = (8 * SIZE * SIZE, 31u32);
    let both = |j: &ChainLogs| -> (Vec<u8>, Vec<u8>) {
        let (seeds, t) = (&j.seeds, j.reads[1]);
        let opened = opened_values_in(&j.logs[0], &j.widths);
        let (lt, lv) = (packed_len(n, 1), packed_len(n, bits));
        let i = (0..opened.len() - 1)
            .find(|&i| opened[i].len() == lt && opened[i + 1].len() == lv)
            .expect("layer 1's top bits and map");
        let v = unpack(&opened[i + 1], n, bits).unwrap();
        let (b0, b1) = (
            act_mask_of(&seeds[0], t, 0, n),
            act_mask_of(&seeds[1], t, 0, n),
        );
        let y: Vec<u64> = (0..n)
            .map(|j| v[j].wrapping_add(b0[j]).wrapping_add(b1[j]) & low_mask(bits))
            .collect();
        (le_bytes(&v), le_bytes(&y))
    };
    let (ja, jb) = (
        run_cnn_job(&black, EngineKind::Gmw),
        run_cnn_job(&phantom, EngineKind::Gmw),
    );
    let ((va, ya), (vb, yb)) = (both(&ja), both(&jb));
    let (_, _, p_masked) =
        chi2_two_sample(&histogram([va.as_slice()]), &histogram([vb.as_slice()]));
    let (_, _, p) = chi2_two_sample(&histogram([ya.as_slice()]), &histogram([yb.as_slice()]));
    eprintln!("cnn layer-1 map after a ReLU: masked p = {p_masked:.4}; without the mask p = {p:e}");
    assert!(
        p < 1e-12,
        "the unmasked ReLU output was not detected (p = {p})"
    );
    assert!(
        p_masked > 1e-6,
        "the masked map looks image-dependent (p = {p_masked})"
    );
}

/// Issue 25 item 5: in an FFDNet job, a per-pixel noise map computed from the image (which
/// would reveal it) cannot be told from a uniform map by what either server receives or
/// opens: same image, the two maps, every message and opening compared as above, both
/// engines. Negative control: the layer-0 opening with the dealer's mask removed (the
/// sub-images and the map in the clear) is told apart at once.
#[test]
fn ffdnet_per_pixel_map_is_indistinguishable_from_a_uniform_one() {
    seeded("ffdnet_per_pixel_map_is_indistinguishable_from_a_uniform_one");
    use ppdenoise::model::cnn::{random_framed_cnn, CnnMeta};
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::{NoiseLevel, PoissonGaussian};
    let meta = CnnMeta {
        sigma: 25.0,
        residual: false,
    };
    let m = random_framed_cnn(&[5, 8, 8, 4], 3, 41, meta, Frame::FFDNET);
    let (_, phantom) = images();
    let (h, w) = phantom.dim();
    let uniform = m.noise_map(&NoiseLevel::Uniform(25.0), h, w);
    // Signal-dependent: sigma 2 on black, 50 on white — the map is the image's outline.
    let pg = PoissonGaussian { a: 9.8, b: 4.0 };
    let per_pixel = m.noise_map(&NoiseLevel::PerPixel(pg.map_of(&phantom)), h, w);
    assert_ne!(uniform, per_pixel);
    for engine in [EngineKind::Gc, EngineKind::Gmw] {
        let ChainLogs {
            logs: a,
            seeds: sa,
            widths: wa,
            reads,
        } = run_framed_cnn_job(&m, &phantom, &uniform, engine);
        let ChainLogs {
            logs: b, seeds: sb, ..
        } = run_framed_cnn_job(&m, &phantom, &per_pixel, engine);
        for p in 0..2 {
            let (ra, rb) = (received(&a[p]), received(&b[p]));
            let what = format!("ffdnet {engine}: S{p} received, uniform vs per-pixel map");
            assert!(compare(&what, &ra[1..], &rb[1..]).unwrap() >= 3);
            for (run, r) in [("uniform", &ra), ("per-pixel", &rb)] {
                let what = format!("ffdnet {engine}: S{p} received, {run} map");
                assert!(uniform_slots(&what, &r[1..]).unwrap() >= 3);
            }
        }
        let (oa, ob) = (opened_values_in(&a[0], &wa), opened_values_in(&b[0], &wa));
        let oa: Vec<&[u8]> = oa.iter().skip(1).map(|v| v.as_slice()).collect();
        let ob: Vec<&[u8]> = ob.iter().skip(1).map(|v| v.as_slice()).collect();
        compare(&format!("ffdnet {engine}: opened values"), &oa, &ob).unwrap();
        if engine == EngineKind::Gmw {
            // Negative control on the layer-0 opening (tag, masked weights, then the map):
            // its last channel with the mask removed is the noise map itself.
            let (sh, sw) = Frame::FFDNET.stack_dims(h, w);
            let n = 5 * sh * sw;
            let clear = |opened: &[&[u8]], seeds: &[Seed; 2]| -> Vec<u8> {
                le_bytes(&unmasked(opened[1], n, &wa, seeds, reads[0])[4 * sh * sw..])
            };
            let (xa, xb) = (clear(&oa, &sa), clear(&ob, &sb));
            let (_, _, p) =
                chi2_two_sample(&histogram([xa.as_slice()]), &histogram([xb.as_slice()]));
            eprintln!("ffdnet map channel without its mask: p = {p:e}");
            assert!(p < 1e-12, "the unmasked map was not told apart (p = {p})");
        }
    }
}

/// Issue 48: a colour FFDNet job (13 channels in: R, G and B's sub-images and the one map
/// channel the colour model shares between its planes) reveals neither the image nor the
/// map: an all-black RGB image at a uniform map against three different high-contrast
/// planes with a per-pixel map computed from one of them, every message and opening
/// compared as above, both engines. Negative control: the layer-0 opening with the dealer's
/// mask removed (the planes' sub-images and the map in the clear) is told apart at once.
#[test]
fn colour_ffdnet_job_reveals_neither_planes_nor_map() {
    seeded("colour_ffdnet_job_reveals_neither_planes_nor_map");
    use ppdenoise::model::cnn::random_framed_cnn;
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::{NoiseLevel, PoissonGaussian};
    let m = random_framed_cnn(&[13, 8, 8, 12], 3, 43, COLOUR_META, Frame::FFDNET);
    assert_eq!((m.colours, m.map_channels()), (3, 1));
    let (phantom, planes) = colour_planes();
    let (h, w) = phantom.dim();
    let uniform = m.noise_map(&NoiseLevel::Uniform(25.0), h, w);
    let pg = PoissonGaussian { a: 9.8, b: 4.0 };
    let per_pixel = m.noise_map(&NoiseLevel::PerPixel(pg.map_of(&phantom)), h, w);
    assert_ne!(uniform, per_pixel);
    colour_job_hides(&m, "colour", (&uniform, &planes, &per_pixel));
}

/// Issue 48: a colour FFDNet with a noise map per colour (15 channels in: the planes'
/// sub-images and R, G and B's own maps) reveals neither the planes nor their maps: an
/// all-black RGB image at a sigma per colour (public-looking levels 10, 25, 40) against three
/// high-contrast planes with a per-pixel map per plane computed from each plane (each map
/// the outline of its plane), as above, both engines, with the same negative control.
#[test]
fn colour_job_with_a_map_per_colour_reveals_neither_planes_nor_maps() {
    seeded("colour_job_with_a_map_per_colour_reveals_neither_planes_nor_maps");
    use ppdenoise::model::cnn::random_framed_cnn;
    use ppdenoise::model::frame::Frame;
    use ppdenoise::model::noise_map::{NoiseLevel, PoissonGaussian};
    let m = random_framed_cnn(&[15, 8, 8, 12], 3, 47, COLOUR_META, Frame::FFDNET);
    assert_eq!((m.colours, m.map_channels()), (3, 3));
    let (phantom, planes) = colour_planes();
    let (h, w) = phantom.dim();
    let per_colour = m.noise_map(&NoiseLevel::PerColour(vec![10.0, 25.0, 40.0]), h, w);
    let pg = PoissonGaussian { a: 9.8, b: 4.0 };
    let per_plane = m.noise_map(&NoiseLevel::PerPixel(pg.map_of(&planes)), h, w);
    let n = h.div_ceil(2) * w.div_ceil(2);
    assert_eq!(per_plane.len(), 3 * n);
    // Three maps, each its own plane's.
    assert!(per_plane[..n] != per_plane[n..2 * n] && per_plane[n..2 * n] != per_plane[2 * n..]);
    colour_job_hides(
        &m,
        "colour, a map per colour",
        (&per_colour, &planes, &per_plane),
    );
}

const COLOUR_META: ppdenoise::model::cnn::CnnMeta = ppdenoise::model::cnn::CnnMeta {
    sigma: 25.0,
    residual: false,
};

/// The phantom, and three planes from it (R the phantom, G its negative, B its
/// transpose: each its own), stacked (3h) x w.
fn colour_planes() -> (Array2<f64>, Array2<f64>) {
    let (_, phantom) = images();
    let (h, w) = phantom.dim();
    let planes = Array2::from_shape_fn((3 * h, w), |(r, x)| match r / h {
        0 => phantom[[r % h, x]],
        1 => 255.0 - phantom[[r % h, x]],
        _ => phantom[[x, r % h]],
    });
    (phantom, planes)
}

/// Colour model `m`'s job on an all-black image at `map_a` against `planes` at `map_b`:
/// what each server receives and opens cannot be told apart, on both engines; the layer-0
/// opening with the dealer's mask removed (the planes' sub-images and the maps in the
/// clear) is told apart at once (negative control).
fn colour_job_hides(
    m: &ppdenoise::model::cnn::Cnn,
    label: &str,
    (map_a, planes, map_b): (&[f64], &Array2<f64>, &[f64]),
) {
    use ppdenoise::model::frame::Frame;
    let (rows, w) = planes.dim();
    let h = rows / 3;
    let black = Array2::zeros((3 * h, w));
    for engine in [EngineKind::Gc, EngineKind::Gmw] {
        let ChainLogs {
            logs: a,
            seeds: sa,
            widths: wa,
            reads,
        } = run_framed_cnn_job(m, &black, map_a, engine);
        let ChainLogs {
            logs: b, seeds: sb, ..
        } = run_framed_cnn_job(m, planes, map_b, engine);
        for p in 0..2 {
            let (ra, rb) = (received(&a[p]), received(&b[p]));
            let what = format!("{label} {engine}: S{p} received, black vs planes");
            assert!(compare(&what, &ra[1..], &rb[1..]).unwrap() >= 3);
            for (run, r) in [("black", &ra), ("planes", &rb)] {
                let what = format!("{label} {engine}: S{p} received, {run}");
                assert!(uniform_slots(&what, &r[1..]).unwrap() >= 3);
            }
        }
        let (oa, ob) = (opened_values_in(&a[0], &wa), opened_values_in(&b[0], &wa));
        let oa: Vec<&[u8]> = oa.iter().skip(1).map(|v| v.as_slice()).collect();
        let ob: Vec<&[u8]> = ob.iter().skip(1).map(|v| v.as_slice()).collect();
        compare(&format!("{label} {engine}: opened values"), &oa, &ob).unwrap();
        uniform_slots(
            &format!("{label} {engine}: differences of openings"),
            &differences_in(&oa, &wa),
        )
        .unwrap();
        if engine == EngineKind::Gmw {
            // The layer-0 opening (after the tag and the masked weights) with its mask
            // removed: the 12 sub-image channels and the maps, in the clear.
            let (sh, sw) = Frame::FFDNET.stack_dims(h, w);
            let n = m.convs[0].cin * sh * sw;
            let clear = |opened: &[&[u8]], seeds: &[Seed; 2]| -> Vec<u8> {
                le_bytes(&unmasked(opened[1], n, &wa, seeds, reads[0]))
            };
            let (xa, xb) = (clear(&oa, &sa), clear(&ob, &sb));
            let (_, _, p) =
                chi2_two_sample(&histogram([xa.as_slice()]), &histogram([xb.as_slice()]));
            eprintln!("{label}: layer-0 input without its mask: p = {p:e}");
            assert!(
                p < 1e-12,
                "the unmasked planes were not told apart (p = {p})"
            );
        }
    }
}

/// One CNN graph job in process with recording channels (weights opened in the job): the
/// every-op graph (max pooling, a concat skip and a residual add, transposed and strided
/// convs, PReLU, clip, resizes), on `image` padded to its stride as the servers pad it.
/// Returns the logs, the job seeds, the encoded padded image and the packed openings.
fn run_graph_job(
    image: &Array2<f64>,
    engine: EngineKind,
) -> ([Vec<Event>; 2], [Seed; 2], Vec<u64>, Widths, u32) {
    use ppdenoise::formats::bodies::GraphModelShare;
    use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed};
    use ppdenoise::ring::graph::GraphPlan;
    use ppdenoise::twopc::graph::{self as twopc_graph, GraphJobInputs};
    let g = ppdenoise::model::graph::random::every_op(5);
    let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
    // Model owner: fresh shares for this run; each server fills the public plan with its own.
    let public = plan.public();
    let shares: Vec<GraphPlan> = GraphModelShare::split(&plan, &test_seed())
        .iter()
        .map(|s| s.share_plan(&public).unwrap())
        .collect();
    let (h, w) = image.dim();
    let (ph, pw) = g.padded_size(h, w).unwrap();
    let padded = Array2::from_shape_fn((ph, pw), |(y, x)| image[(y.min(h - 1), x.min(w - 1))]);
    let enc = ring_cnn::encode_image(&padded, &[], &Preprocess::identity(), plan.params.s);
    let iseed = test_seed();
    let img = [
        share_with_seed(&enc, &iseed, Stream::ImageShare),
        expand(&iseed, Stream::ImageShare, enc.len()),
    ];
    let batch = 500;
    let streams = StreamCheck::start();
    let seeds = dealer::DealSeeds {
        job: [test_seed(), test_seed()],
        model_mask: None,
    };
    let setup = with_rng(|r| engine.deal_setup_with(r));
    let d = dealer::graph::generate_with(&public, ph, pw, engine, batch, &seeds, setup).unwrap();
    let streams = streams.dealt(&d.seeds);
    let tag = test_seed()[..16].to_vec();
    let label_seeds: [u64; 2] = with_rng(|r| [r.gen(), r.gen()]);
    let run = |p: Party, ch: &mut dyn Channel| {
        let pi = p.index();
        let (rand, setup) = d.party(p);
        let mut eng = seeded_engine_for(engine, p, setup, label_seeds).unwrap();
        let inputs = GraphJobInputs {
            party: p,
            plan: &shares[pi],
            height: ph,
            width: pw,
            image: &img[pi],
            rand,
            session_tag: tag.clone(),
            weights: Weights::PerJob,
            relu_batch: batch,
        };
        twopc_graph::run(ch, inputs, eng.as_mut(), &mut |_, _| {}).unwrap();
    };
    let (_, logs) = on_recorded_pair(run);
    streams.used(&d.seeds, &format!("graph job, {engine}"));
    let dims = plan.dims(ph, pw).unwrap();
    let widths = packed_widths(plan.weight_steps().iter().map(|&(i, _)| {
        let st = ppdenoise::ring::graph::uses::product_input(&plan, i);
        let d = dims[if st.1 == 0 { st.0 as usize } else { i }];
        (d[0] * d[1] * d[2], plan.open_bits(st))
    }));
    assert!(!widths.is_empty(), "the job opens maps packed");
    // The image's own width: other maps of its size may be opened at other widths.
    let image_bits = plan.open_bits((0, 0));
    (logs, d.seeds, enc, widths, image_bits)
}

/// Issue 47, milestone 5: in a CNN graph job (max pooling's comparison rounds, skips read
/// by two steps, PReLU's second opening, clip), what each server receives and opens does not
/// depend on the image, on both engines, as for the CNN above. Negative control: the opening
/// of the image's map with the dealer's mask removed is the encoded image itself (checked
/// exactly), and is told apart at once.
#[test]
fn graph_messages_do_not_depend_on_the_image() {
    seeded("graph_messages_do_not_depend_on_the_image");
    let (black, phantom) = images();
    for engine in [EngineKind::Gc, EngineKind::Gmw] {
        let (a, sa, ea, wa, bits) = run_graph_job(&black, engine);
        let (b, sb, eb, _, _) = run_graph_job(&phantom, engine);
        for p in 0..2 {
            let (ra, rb) = (received(&a[p]), received(&b[p]));
            let what = format!("graph {engine}: S{p} received");
            assert!(compare(&what, &ra[1..], &rb[1..]).unwrap() >= 3);
            for (run, r) in [("black", &ra), ("phantom", &rb)] {
                let what = format!("graph {engine}: S{p} received, {run}");
                assert!(uniform_slots(&what, &r[1..]).unwrap() >= 3);
            }
        }
        let (oa, ob) = (opened_values_in(&a[0], &wa), opened_values_in(&b[0], &wa));
        let oa: Vec<&[u8]> = oa.iter().skip(1).map(|v| v.as_slice()).collect();
        let ob: Vec<&[u8]> = ob.iter().skip(1).map(|v| v.as_slice()).collect();
        assert!(
            oa.iter().any(|o| wa.contains_key(&o.len())),
            "packed openings"
        );
        compare(&format!("graph {engine}: opened values"), &oa, &ob).unwrap();
        uniform_slots(
            &format!("graph {engine}: differences of openings"),
            &differences_in(&oa, &wa),
        )
        .unwrap();
        if engine == EngineKind::Gmw {
            let (xa, xb) = (xor_opened_values(&a[0]), xor_opened_values(&b[0]));
            let xa: Vec<&[u8]> = xa.iter().skip(1).map(|v| v.as_slice()).collect();
            let xb: Vec<&[u8]> = xb.iter().skip(1).map(|v| v.as_slice()).collect();
            compare("graph gmw: XOR-opened bits", &xa, &xb).unwrap();
            // The image's map is opened once, masked by ActMask(0, 0) of both job seeds: the
            // first opening of its length after the masked weights.
            let n = ea.len();
            let clear = |opened: &[&[u8]], seeds: &[Seed; 2], enc: &[u64]| -> Vec<u8> {
                let len = ppdenoise::corr::pack::packed_len(n, bits);
                let map = opened
                    .iter()
                    .find(|o| o.len() == len)
                    .expect("the image's opening");
                let x = unmasked(map, n, &wa, seeds, 0);
                let m = ppdenoise::corr::pack::low_mask(bits);
                let want: Vec<u64> = enc.iter().map(|v| v & m).collect();
                assert_eq!(x, want, "the opening found is not the image's");
                le_bytes(&x)
            };
            let (xa, xb) = (clear(&oa, &sa, &ea), clear(&ob, &sb, &eb));
            let (_, _, p) =
                chi2_two_sample(&histogram([xa.as_slice()]), &histogram([xb.as_slice()]));
            eprintln!("graph input map without its mask: p = {p:e}");
            assert!(p < 1e-12, "the unmasked image was not told apart (p = {p})");
        }
    }
}
