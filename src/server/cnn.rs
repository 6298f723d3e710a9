//! A CNN job: the same files and checks as an MLP job, the CNN's plan and protocol
//! ([`crate::twopc::cnn`]).

use crate::ring::Party;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::{assemble, check_engine, open_triplets, Inputs, JobFiles, ReadyJob, Work};
use crate::corr::randomness::PartyRandomness;
use crate::formats::bodies::{is_cnn, public_cnn_plan, ImageShare, JobParams, OutputShare};
use crate::formats::checks::{
    check_cnn_job, check_colours, check_noise_map, check_relu_batch, cnn_plan_from_header,
};
use crate::formats::container::Kind;
use crate::model::geometry::Geometry;
use crate::model::mlp::PatchShape;
use crate::ring::cnn::CnnPlan;
use crate::ring::share::Stream;
use crate::ring::tiles::{Band, Tile};
use crate::twopc::channel::Channel;
use crate::twopc::cnn::{self, CnnJobInputs};
use crate::twopc::protocol::{Nonlinear, Report, Weights};

pub(super) struct CnnJob {
    pub(super) plan: Arc<CnnPlan>,
    job: JobParams,
    /// This party's share of the encoded image (of the tile's band, for a tile).
    image: Vec<u64>,
    relu_batch: usize,
    /// The tile the triplet file names, and its band of rows.
    tile: Option<(Tile, Band)>,
}

pub(super) fn prepare(f: JobFiles, inputs: Inputs) -> Result<ReadyJob> {
    let p = f.party;
    let at = |path: &std::path::Path, e: String| anyhow::anyhow!("{}: {e}", path.display());
    let sealed = inputs.first_sealed();
    let Inputs {
        model,
        image,
        triplets,
    } = inputs;
    let super::loaded::Family::Cnn(plan) = &model.family else {
        bail!("{}: is not a CNN's share", f.model.display());
    };
    let mh = model.header.clone();
    let (ih, is): (_, ImageShare) = image.read(Kind::ImageShare, Some(p))?;
    is.job.validate().map_err(|e| at(&f.image, e))?;
    if !is_cnn(&ih) {
        bail!(
            "{}: the image was not shared for a CNN (an MLP's or a CNN graph's); share it for this CNN with `share-image --model model.pub`",
            f.image.display()
        );
    }
    let t = open_triplets(&f, &mh, &ih, triplets)?;
    let (th, tr) = (&t.header, &t.stream);
    check_cnn_job(&f.image, &is.job, &mh)?;
    if th.info("model_mask").is_some() {
        bail!(
            "{}: names a model mask, which CNN jobs do not use",
            f.triplets.display()
        );
    }
    check_relu_batch(tr.lead.batch).map_err(|e| at(&f.triplets, e.to_string()))?;
    let plan = plan.clone();
    let (h, w) = (is.job.height, is.job.width);
    // A tile runs its band of rows as its job: everything is sized from the band.
    let tile = match th.info("tile") {
        None => None,
        Some(s) => {
            let tile = Tile::parse(s).map_err(|e| at(&f.triplets, e))?;
            let band = plan.band(h, tile).map_err(|e| at(&f.triplets, e))?;
            Some((tile, band))
        }
    };
    let rows = tile.as_ref().map_or(h, |(_, b)| b.height());
    // (The stride was checked with the model's sigma* by check_cnn_job.)
    if ih.scale != plan.params.s || is.job.scale != plan.params.s {
        bail!(
            "{}: image encoded at scale {} but the CNN takes scale {}",
            f.image.display(),
            is.job.scale,
            plan.params.s
        );
    }
    plan.check_image(h, w).map_err(|e| at(&f.image, e))?;
    check_colours(&f.image, &is.job, plan.colours())?;
    check_noise_map(&f.image, &ih, plan.frame.noise_map)?;
    // The dealer's plan (from the public header it was given) must be this share's.
    if !is_cnn(th) || cnn_plan_from_header(&f.triplets, th)? != public_cnn_plan(&plan) {
        bail!(
            "{}: this randomness was made for another CNN plan (shapes or fixed point) than {} holds",
            f.triplets.display(),
            f.model.display()
        );
    }
    if tr.lead.widths != plan.channels() || tr.lead.job != is.job {
        bail!(
            "{}: the randomness does not match this model and job",
            f.triplets.display()
        );
    }
    let engine_kind = tr.lead.engine;
    check_engine(&f, th, engine_kind)?;
    let want_circuit = crate::dealer::cnn::circuit_shape(&plan, engine_kind);
    if th.info("circuit") != Some(want_circuit.as_str()) {
        bail!(
            "{}: made for another ReLU circuit ({} here, {} in the file); the dealer and this server run different versions",
            f.triplets.display(),
            want_circuit,
            th.info("circuit").unwrap_or("none")
        );
    }
    let want = if p.is_s1() {
        crate::dealer::cnn::correction_count(&plan, rows, w, engine_kind, tr.lead.batch).bits
    } else {
        0
    };
    if tr.corrections.len() != want {
        bail!(
            "{}: holds {} bits of explicit triple shares (packed at their widths) but this job consumes {want}",
            f.triplets.display(),
            tr.corrections.len()
        );
    }
    let mut image = is
        .data
        .materialise(Stream::ImageShare, plan.input_len(h, w))
        .map_err(|e| at(&f.image, e))?;
    if let Some((_, band)) = &tile {
        image = plan.band_input(&image, h, w, band);
    }
    let relu_batch = tr.lead.batch;
    let work = Work::Cnn(CnnJob {
        plan,
        job: is.job,
        image,
        relu_batch,
        tile,
    });
    assemble(f, (mh, ih, sealed), t, ("per-job".into(), None), work)
}

impl CnnJob {
    /// What the protocol's progress counts: every layer's output rows, layer after layer
    /// (rows of the frame's sub-images).
    pub(super) fn steps(&self) -> usize {
        let (h, w) = (self.rows(), self.job.width);
        self.plan.layers.len() * self.plan.frame.stack_dims(h, w).0
    }

    /// Rows of the image this job runs on: the band's for a tile.
    fn rows(&self) -> usize {
        self.tile
            .as_ref()
            .map_or(self.job.height, |(_, b)| b.height())
    }

    /// What the output share's header says of the tile: which one, and the image rows its
    /// canvas holds.
    pub(super) fn tile_info(&self) -> Vec<(String, String)> {
        match &self.tile {
            None => Vec::new(),
            Some((t, b)) => t.facts("rows", &b.output),
        }
    }
}

impl super::Runs for CnnJob {
    fn run(
        &self,
        ch: &mut dyn Channel,
        party: Party,
        rand: PartyRandomness,
        session_tag: Vec<u8>,
        engine: &mut dyn Nonlinear,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(OutputShare, Report)> {
        let (h, w) = (self.rows(), self.job.width);
        let inputs = CnnJobInputs {
            party,
            plan: &self.plan,
            height: h,
            width: w,
            image: &self.image,
            rand,
            session_tag,
            weights: Weights::PerJob,
            relu_batch: self.relu_batch,
        };
        let (mut canvas, report) = cnn::run(ch, inputs, engine, &mut |d, _| progress(d))?;
        // A tile keeps its own rows of the band (the halo's are not exact).
        let h = match &self.tile {
            Some((_, band)) => {
                canvas = self.plan.band_output(&canvas, w, band);
                band.output.len()
            }
            None => h,
        };
        // The output is image-sized: a geometry of 1x1 "patches" at stride 1 (canvas = image,
        // every weight 1), so the receiver's checks apply unchanged; a colour image's planes
        // stacked, (colours h) x w.
        let h = h * self.plan.colours();
        let one = PatchShape {
            input: 1,
            output: 1,
            window_milli: 0,
        };
        let out = OutputShare {
            geometry: Geometry::new(h, w, one, 1),
            job: self.job.clone(),
            scale: self.plan.params.out_scale(),
            canvas,
        };
        Ok((out, report))
    }
}

#[cfg(test)]
mod tests {
    use crate::corr::engine_kind::EngineKind;
    use crate::dealer::DealSeeds;
    use crate::formats::bodies::CnnModelShare;
    use crate::model::cnn::{random_cnn, CnnMeta};
    use crate::model::preprocess::Preprocess;
    use crate::ring::cnn::{self as ring_cnn, row_blocks, CnnFixed, CnnPlan};
    use crate::ring::share::{expand, share_with_seed, Stream};
    use crate::ring::Party;
    use crate::twopc::channel::{mem_pair, Channel};
    use crate::twopc::cnn::{run, shift_first_block, CnnJobInputs};
    use crate::twopc::engines::engine_for;
    use crate::twopc::protocol::Weights;

    /// The secure CNN job (`twopc::cnn::run` on the dealer's randomness) on a network whose
    /// hidden layers span two row blocks (64 channels at 96 x 96), in process, boolean engine: the output is the oracle's bit for bit, and
    /// with block 0 put one row too low (`twopc::cnn::shift_first_block`) it is not. The same job through
    /// real processes on both engines is tests/suite/secure/cnn_pipeline.rs's multi-block test.
    #[test]
    fn a_block_put_one_row_off_breaks_the_multi_block_job() {
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        let plan = CnnPlan::from_cnn(
            &random_cnn(&[1, 64, 64, 1], 3, 11, meta),
            CnnFixed::default(),
        )
        .unwrap();
        let (h, w) = (96, 96);
        let blocks: Vec<usize> = plan
            .layers
            .iter()
            .map(|l| row_blocks(l, h, w).count())
            .collect();
        assert_eq!(blocks, [1, 2, 2]);
        let shares = CnnModelShare::split(&plan, meta, &[4; 32]).map(|s| s.share_plan().unwrap());
        let img = ndarray::Array2::from_shape_fn((h, w), |(i, j)| ((i * 7 + j * 13) % 256) as f64);
        let enc = ring_cnn::encode_image(&img, &[], &Preprocess::identity(), plan.params.s);
        let image = [
            share_with_seed(&enc, &[5; 32], Stream::ImageShare),
            expand(&[5; 32], Stream::ImageShare, enc.len()),
        ];
        let oracle = ring_cnn::run(&plan, h, w, &enc).output;
        let secure = |shift: bool| {
            let engine = EngineKind::Gmw;
            let seeds = DealSeeds {
                job: [[6; 32], [7; 32]],
                model_mask: None,
            };
            let deal = crate::dealer::cnn::generate_with(
                &plan,
                h,
                w,
                engine,
                1 << 16,
                &seeds,
                (Vec::new(), Vec::new()),
            );
            let (mut c0, mut c1) = mem_pair();
            let play = |p: Party, ch: &mut dyn Channel| {
                shift_first_block(shift);
                let (rand, setup) = deal.party(p);
                let mut eng = engine_for(engine, p, setup).unwrap();
                let inp = CnnJobInputs {
                    party: p,
                    plan: &shares[p as usize],
                    height: h,
                    width: w,
                    image: &image[p as usize],
                    rand,
                    session_tag: b"blocks".to_vec(),
                    weights: Weights::PerJob,
                    relu_batch: 1 << 16,
                };
                run(ch, inp, eng.as_mut(), &mut |_, _| {}).unwrap().0
            };
            let [o0, o1] = std::thread::scope(|sc| {
                let play = &play;
                let h1 = sc.spawn(move || play(Party::S1, &mut c1));
                [play(Party::S0, &mut c0), h1.join().unwrap()]
            });
            o0.iter()
                .zip(&o1)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect::<Vec<u64>>()
        };
        assert_eq!(secure(false), oracle, "the multi-block job");
        let off = secure(true);
        let differ = off.iter().zip(&oracle).filter(|(a, b)| a != b).count();
        assert!(differ > 0, "a block one row off went unnoticed");
    }
}

#[cfg(test)]
mod extended_opening {
    // Here, not in dealer/ or twopc/: the test needs both (docs/architecture.md, "The floors").
    use crate::corr::pack::low_mask;
    use crate::corr::randomness::{extension_bits, PartyRandomness};
    use crate::dealer::cnn::emit_map_extension;
    use crate::ring::share::{add, Prg, Seed, Stream};
    use crate::ring::Party;
    use crate::twopc::channel::{mem_pair, Recording};
    use crate::twopc::cnn::{open_extending, top_bits_bare};

    const SEEDS: [Seed; 2] = [[1u8; 32], [2u8; 32]];

    /// One party's side of an extended opening: its opened map, the first message it
    /// received (the peer's masked top bits) and its ρ.
    struct Side {
        v: Vec<u64>,
        got: Vec<u8>,
        rho: Vec<u64>,
    }

    /// Both parties' openings of ReLU results held as shares `y[0]`, `y[1]` mod 2^k under
    /// masks `b`, extended to `bits`, with `seeds` (both the same: one ρ for both) and party
    /// 1's explicit values; `bare` runs the negative control that sends the top bits bare.
    fn open_both(
        y: [&[u64]; 2],
        b: &[Vec<u64>; 2],
        (k, bits): (u32, u32),
        seeds: [Seed; 2],
        bare: bool,
    ) -> ([Side; 2], Vec<u64>) {
        let n = y[0].len();
        let mut p1 = Vec::new();
        emit_map_extension::<std::convert::Infallible>(&seeds, 3, n, bits - k, &mut |v, w| {
            p1.extend(v.iter().map(|x| x & low_mask(w)));
            Ok(())
        })
        .unwrap();
        let explicit = p1.clone();
        let (c0, c1) = mem_pair();
        let side = |p: Party, ch, corr| {
            top_bits_bare(bare);
            let mut rec = Recording::new(ch);
            let mut r = PartyRandomness::new(p, seeds[p as usize], corr);
            let pi = p as usize;
            let v = open_extending(&mut rec, p, &mut r, 3, y[pi], &b[pi], k, bits).unwrap();
            r.finish().unwrap();
            top_bits_bare(false);
            let rho = extension_bits(&mut Prg::new(&seeds[pi], Stream::MapExtend(3)), n);
            let got = rec.got.swap_remove(0);
            Side { v, got, rho }
        };
        let sides = std::thread::scope(|s| {
            let h = s.spawn(|| side(Party::S1, c1, p1));
            let s0 = side(Party::S0, c0, Vec::new());
            [s0, h.join().unwrap()]
        });
        (sides, explicit)
    }

    /// Shares mod 2^k of `y`, the first party's uniform.
    fn shares_of(y: &[u64], k: u32, rng: &mut Prg) -> [Vec<u64>; 2] {
        let y0: Vec<u64> = rng.vec(y.len()).iter().map(|v| v & low_mask(k)).collect();
        let y1 = y
            .iter()
            .zip(&y0)
            .map(|(y, s)| y.wrapping_sub(*s) & low_mask(k))
            .collect();
        [y0, y1]
    }

    /// A layer's input extended by its shares' top bits (`twopc::cnn::open_extending`, the
    /// dealer's `emit_map_extension`) and opened is V = y - B mod 2^bits for every result y
    /// of a ReLU held mod 2^k (0 <= y < 2^(k-1)), whatever the shares: at the edges of y,
    /// with every pair of top bits, at a hidden layer's width and at 64.
    #[test]
    fn an_extended_opening_is_the_masked_relu_result() {
        let (k, n) = (18u32, 4096usize);
        let mut rng = Prg::new(&[7; 32], Stream::ImageShare);
        let top = (1u64 << (k - 1)) - 1;
        let y: Vec<u64> = (0..n)
            .map(|i| match i % 4 {
                0 => 0,
                1 => top,
                _ => rng.vec(1)[0] & top,
            })
            .collect();
        for bits in [31u32, 64] {
            let b = [rng.vec(n), rng.vec(n)];
            let ys = shares_of(&y, k, &mut rng);
            let mut pairs = [0usize; 4];
            for (a, b) in ys[0].iter().zip(&ys[1]) {
                pairs[((a >> (k - 1)) * 2 + (b >> (k - 1))) as usize] += 1;
            }
            assert!(pairs.iter().all(|&c| c > 100), "top bits {pairs:?}");
            let ([s0, s1], _) = open_both([&ys[0], &ys[1]], &b, (k, bits), SEEDS, false);
            assert_eq!(s0.v, s1.v, "both parties open the same map");
            let bs = add(&b[0], &b[1]);
            for i in 0..n {
                let want = y[i].wrapping_sub(bs[i]) & low_mask(bits);
                assert_eq!(s0.v[i], want, "element {i} (y {}), {bits} bits", y[i]);
            }
        }
    }

    /// z-score of `n` bits against a fair coin.
    fn z_of(bits: impl Iterator<Item = u64>, n: usize) -> f64 {
        let ones = bits.filter(|&b| b & 1 == 1).count();
        (ones as f64 - n as f64 / 2.0).abs() / (n as f64 / 4.0).sqrt()
    }

    /// The largest z-score of party 1's explicit shares of ρ_0 ρ_1 (at `width` bits): each
    /// bit must be uniform, the low one also beside the product.
    fn explicit_z(explicit: &[u64], product: impl Fn(usize) -> u64, width: u32) -> f64 {
        let n = explicit.len();
        (0..width)
            .map(|j| {
                let bit = |i: usize| (explicit[i] >> j) ^ if j == 0 { product(i) } else { 0 };
                z_of((0..n).map(bit), n)
            })
            .fold(0.0, f64::max)
    }

    /// What each party learns from the top-bit message: for y = 0 everywhere the two
    /// shares' top bits differ almost always, so the peer's bit beside the party's own top
    /// bit, and beside its own top bit and ρ (which would unmask the peer's bit were ρ the
    /// same for both), must be uniform (z below 7 of a binomial over 4096 elements), and so
    /// must each bit of party 1's explicit share of ρ_0 ρ_1, the low one beside the product.
    /// Three negative controls must fail: the top bits sent without ρ and one seed's ρ for
    /// both (each exact), and the product itself as party 1's share, scored as the share is.
    #[test]
    fn the_shares_top_bits_cross_masked() {
        let (k, bits, n) = (18u32, 31u32, 4096usize);
        let mut rng = Prg::new(&[9; 32], Stream::ImageShare);
        let y = vec![0u64; n];
        let worst = |bare: bool, seeds: [Seed; 2], rng: &mut Prg| {
            let ys = shares_of(&y, k, rng);
            let b = [rng.vec(n), rng.vec(n)];
            let (sides, explicit) = open_both([&ys[0], &ys[1]], &b, (k, bits), seeds, bare);
            let bs = add(&b[0], &b[1]);
            assert!(
                (0..n).all(|i| sides[0].v[i] == bs[i].wrapping_neg() & low_mask(bits)),
                "exact (bare: {bare})"
            );
            let mut z: Vec<f64> = Vec::new();
            for (p, s) in sides.iter().enumerate() {
                assert_eq!(s.got.len(), n / 8, "one bit an element");
                let peer = |i: usize| (s.got[i / 8] >> (i % 8)) as u64 & 1;
                let own = |i: usize| ys[p][i] >> (k - 1);
                z.push(z_of((0..n).map(|i| peer(i) ^ own(i)), n));
                z.push(z_of((0..n).map(|i| peer(i) ^ own(i) ^ s.rho[i]), n));
            }
            let (r0, r1) = (&sides[0].rho, &sides[1].rho);
            let product = |i: usize| r0[i] & r1[i];
            z.push(explicit_z(&explicit, product, bits - k));
            // The control of the score: the product dealt bare, as a dealer that shared it
            // with a zero would, must be told apart.
            let bare_product: Vec<u64> = (0..n).map(product).collect();
            let z_bare = explicit_z(&bare_product, product, bits - k);
            assert!(
                z_bare > 7.0,
                "a bare product went unnoticed (z {z_bare:.1})"
            );
            z.into_iter().fold(0.0, f64::max)
        };
        let z = worst(false, SEEDS, &mut rng);
        assert!(z < 7.0, "the masked top bits are biased (z {z:.1})");
        let z = worst(true, SEEDS, &mut rng);
        assert!(z > 7.0, "top bits sent bare went unnoticed (z {z:.1})");
        let z = worst(false, [SEEDS[0]; 2], &mut rng);
        assert!(z > 7.0, "one ρ for both parties went unnoticed (z {z:.1})");
    }
}
