//! The dealer-free offline phase (src/offline/) against the dealer: an MLP job's hidden-layer
//! matrix triples made by the two servers alone are, bit for bit, the corrections the dealer
//! writes into party 1's file for the same seeds (so the online phase runs unchanged on them),
//! and so are a CNN graph job's product steps.

use rand09::rngs::StdRng;
use rand09::SeedableRng;

use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::corr::operands::{GraphOperands, MlpOperands};
use ppdenoise::corr::pack::low_mask;
use ppdenoise::dealer::{self, DealSeeds, NonlinearDeal};
use ppdenoise::formats::bodies::JobParams;
use ppdenoise::model::geometry::Geometry;
use ppdenoise::model::graph::random::{every_op, random_graph};
use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::offline::conv::ConvShape;
use ppdenoise::offline::graph::{GraphProducts, StepCorrection};
use ppdenoise::offline::mlp::HiddenTriples;
use ppdenoise::ring::cnn::CnnFixed;
use ppdenoise::ring::graph::GraphPlan;
use ppdenoise::ring::plan::{FixedParams, Plan};
use ppdenoise::ring::share::Seed;
use ppdenoise::ring::Party;
use ppdenoise::twopc::channel::mem_pair;

fn seed(i: u8) -> Seed {
    [i; 32]
}

#[test]
fn the_servers_hidden_layer_triples_are_the_dealers_corrections() {
    let model = random_model(
        &[25, 16, 12, 1],
        7,
        ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: true,
            activation: Activation::Relu,
            aggregation_sigma: 0.0,
        },
    );
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let widths = plan.widths();
    let (h, w, stride, batch) = (11, 9, 2, 7);
    let job = JobParams {
        height: h,
        width: w,
        bit_depth: 8,
        stride,
        scale: FixedParams::default().s,
        pre: Preprocess::new(25.0, 25.0, false),
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let geo = Geometry::new(h, w, plan.patch, stride);
    let patches = 0..geo.num_patches();
    // The gc engine and ReLU: the dealer's stream is then the matrix triples alone, one per
    // batch and layer, batch-major.
    let deal = NonlinearDeal::new(EngineKind::Gc, &plan.circuits());
    let nl = widths.len() - 1;
    for model_mask in [None, Some([seed(3), seed(4)])] {
        let seeds = DealSeeds {
            job: [seed(1), seed(2)],
            model_mask,
        };
        let mut dealt: Vec<(Vec<u64>, u32)> = Vec::new();
        dealer::generate_into(
            &job,
            &widths,
            plan.patch,
            patches.clone(),
            batch,
            &seeds,
            &deal,
            &mut |v: &[u64], bits: u32| {
                dealt.push((v.to_vec(), bits));
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        let batches = geo.num_patches().div_ceil(batch);
        assert_eq!(
            dealt.len(),
            batches * nl,
            "one correction per batch and layer"
        );

        let bits: Vec<u32> = (0..nl - 1).map(|l| deal.product_bits(l, nl)).collect();
        println!("hidden product widths {bits:?}");
        let triples = HiddenTriples {
            widths: &widths,
            bits: &bits,
            patches: patches.clone(),
            batch,
        };
        let mask_seeds = model_mask.unwrap_or(seeds.job);
        let ops = [0, 1].map(|p| MlpOperands::new(&geo, &widths, &seeds.job[p], &mask_seeds[p]));
        let (mut c0, mut c1) = mem_pair();
        let made = std::thread::scope(|sc| {
            let (triples, ops) = (&triples, &ops);
            let p0 = sc.spawn(move || {
                let mut r = StdRng::seed_from_u64(10);
                triples.run(&mut c0, Party::S0, &ops[0], &mut r)
            });
            let mut r = StdRng::seed_from_u64(11);
            let made = triples.run(&mut c1, Party::S1, &ops[1], &mut r).unwrap();
            assert!(
                p0.join().unwrap().unwrap().is_empty(),
                "party 0 keeps nothing"
            );
            made
        });
        assert_eq!(made.len(), batches * (nl - 1));
        for b in 0..batches {
            for l in 0..nl - 1 {
                let (want, bits) = &dealt[b * nl + l];
                let mask = (1u64 << bits) - 1;
                let want: Vec<u64> = want.iter().map(|v| v & mask).collect();
                assert_eq!(
                    made[b * (nl - 1) + l],
                    want,
                    "batch {b}, layer {l}, model mask {model_mask:?}"
                );
            }
        }
    }
}

/// The offline figures of the paper network (1521-3072-3072-2559-2047-289, tanh*): its four
/// hidden layers' matrix triples for one batch of 64 patches, both servers in process on one
/// core each, over an in-memory channel that counts the bytes. A measurement, not a check
/// (docs/benchmarks.md, "Dealer-free offline"): `cargo test --release --test suite --
/// --ignored --nocapture paper_network_hidden_triples`.
#[test]
#[ignore]
fn paper_network_hidden_triples_offline_figures() {
    use ppdenoise::twopc::channel::Channel;
    let widths = [1521, 3072, 3072, 2559, 2047, 289];
    let model = random_model(
        &widths,
        5,
        ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: true,
            activation: Activation::TanhStar,
            aggregation_sigma: 0.0,
        },
    );
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let deal = NonlinearDeal::new(EngineKind::Gmw, &plan.circuits());
    let nl = widths.len() - 1;
    let bits: Vec<u32> = (0..nl - 1).map(|l| deal.product_bits(l, nl)).collect();
    let geo = Geometry::new(38, 38, plan.patch, 3);
    assert_eq!(geo.num_patches(), 64);
    let triples = HiddenTriples {
        widths: &widths,
        bits: &bits,
        patches: 0..64,
        batch: 64,
    };
    let seeds = [seed(1), seed(2)];
    let ops = [0, 1].map(|p| MlpOperands::new(&geo, &widths, &seeds[p], &seeds[p]));
    let (mut c0, mut c1) = mem_pair();
    let t = std::time::Instant::now();
    let (s0, s1) = std::thread::scope(|sc| {
        let (triples, ops) = (&triples, &ops);
        let p0 = sc.spawn(move || {
            let mut r = StdRng::seed_from_u64(10);
            triples.run(&mut c0, Party::S0, &ops[0], &mut r).unwrap();
            c0.stats()
        });
        let mut r = StdRng::seed_from_u64(11);
        triples.run(&mut c1, Party::S1, &ops[1], &mut r).unwrap();
        (p0.join().unwrap(), c1.stats())
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "paper network, hidden-layer triples of 64 patches (widths {widths:?}, bits {bits:?}): \
         {secs:.1} s, {:.1} ms per patch; S1->S0 {} B in {} messages, S0->S1 {} B in {} messages",
        secs * 1e3 / 64.0,
        s1.bytes_sent,
        s1.messages_sent,
        s0.bytes_sent,
        s0.messages_sent
    );
    for l in 0..nl - 1 {
        let shape = ppdenoise::offline::triple::TripleShape {
            dout: widths[l + 1],
            din: widths[l],
            n: 64,
            bits: bits[l],
        };
        let [a, b] = shape.blocks();
        println!(
            "layer {l}: A0 B1 cut {:?}x{:?}x{:?} ({} up, {} back, {} encoded, {} products); (A1 B0)^T cut {:?}x{:?}x{:?} ({} up, {} back, {} encoded, {} products)",
            a.rows, a.inner, a.cols, a.x_blocks(), a.returns(), a.encodes(), a.products(),
            b.rows, b.inner, b.cols, b.x_blocks(), b.returns(), b.encodes(), b.products()
        );
    }
}

/// Both parties' product steps of a graph job over an in-memory channel that counts the
/// bytes: party 1's corrections, and the bytes each way.
fn graph_products(
    plan: &GraphPlan,
    (h, w): (usize, usize),
    seeds: &DealSeeds,
) -> (Vec<StepCorrection>, [u64; 2]) {
    use ppdenoise::twopc::channel::Channel;
    let job = GraphProducts {
        plan,
        h,
        w,
        engine: EngineKind::Gc,
    };
    let mask_seeds = seeds.model_mask.unwrap_or(seeds.job);
    let ops = [0, 1].map(|p| GraphOperands::new(plan, &seeds.job[p], &mask_seeds[p]));
    let (mut c0, mut c1) = mem_pair();
    std::thread::scope(|sc| {
        let (job, ops) = (&job, &ops);
        let p0 = sc.spawn(move || {
            let mut r = StdRng::seed_from_u64(12);
            let kept = job.run(&mut c0, Party::S0, &ops[0], &mut r).unwrap();
            assert!(kept.is_empty(), "party 0 keeps nothing");
            c0.stats().bytes_sent
        });
        let mut r = StdRng::seed_from_u64(13);
        let made = job.run(&mut c1, Party::S1, &ops[1], &mut r).unwrap();
        let up = c1.stats().bytes_sent;
        (made, [up, p0.join().unwrap()])
    })
}

/// A graph job's product steps (every convolution form and the per-channel scales, through
/// `every_op` and random U-Net-like graphs) made by the two servers are, bit for bit, the
/// corrections the dealer writes for the same seeds, with and without a model mask. The gc
/// engine: its dealer stream is then the products alone.
#[test]
fn the_servers_graph_products_are_the_dealers_corrections() {
    let graphs = [
        ("every op", every_op(3)),
        ("random 1", random_graph(1)),
        ("random 4", random_graph(4)),
    ];
    for (name, g) in graphs {
        let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
        let (h, w) = (4 * plan.stride[0], 3 * plan.stride[1]);
        for model_mask in [None, Some([seed(5), seed(6)])] {
            let seeds = DealSeeds {
                job: [seed(1), seed(2)],
                model_mask,
            };
            let mut dealt: Vec<(Vec<u64>, u32)> = Vec::new();
            dealer::graph::generate_into(
                &plan,
                h,
                w,
                &seeds,
                EngineKind::Gc,
                64,
                &mut |v: &[u64], bits: u32| {
                    dealt.push((v.to_vec(), bits));
                    Ok::<(), String>(())
                },
            )
            .unwrap();
            let (made, _) = graph_products(&plan, (h, w), &seeds);
            assert_eq!(
                made.len(),
                dealt.len(),
                "{name}: one correction per product"
            );
            for (m, (want, bits)) in made.iter().zip(&dealt) {
                let mask = low_mask(*bits);
                let want: Vec<u64> = want.iter().map(|v| v & mask).collect();
                assert_eq!(m.bits, *bits, "{name}, step {}", m.step);
                assert_eq!(
                    m.values, want,
                    "{name}, step {} ({:?}), model mask {model_mask:?}",
                    m.step, plan.steps[m.step].kind
                );
            }
        }
    }
}

/// The offline figures of FFDNet (the authors' gray weights, `make out/ffdnet/clip.npz`)
/// on a 128 x 128 image: every product step made by the two servers in process, one core
/// each, bytes counted. A measurement, not a check (docs/benchmarks.md, "Dealer-free
/// offline"): `cargo test --release --test suite -- --ignored --nocapture
/// ffdnet_graph_products`.
#[test]
#[ignore]
fn ffdnet_graph_products_offline_figures() {
    let npz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("out/ffdnet/clip.npz");
    let side: usize = std::env::var("PPDENOISE_FFDNET_SIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let cnn = ppdenoise::model::cnn::Cnn::load(&npz).unwrap();
    let g = ppdenoise::model::graph::Graph::from_cnn(&cnn).unwrap();
    let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
    let seeds = DealSeeds {
        job: [seed(1), seed(2)],
        model_mask: None,
    };
    let t = std::time::Instant::now();
    let (made, [up, back]) = graph_products(&plan, (side, side), &seeds);
    let secs = t.elapsed().as_secs_f64();
    let widths: Vec<u32> = made.iter().map(|m| m.bits).collect();
    println!(
        "FFDNet {side} x {side}, {} product steps (widths {widths:?}): {secs:.1} s; \
         S1->S0 {up} B, S0->S1 {back} B",
        made.len()
    );
    let dims = plan.dims(side, side).unwrap();
    for m in &made {
        let kind = &plan.steps[m.step].kind;
        let d = dims[plan.steps[m.step].inputs[0]];
        let degree = ppdenoise::offline::he::Set::for_bits(m.bits).degree;
        let shape = ConvShape::new(kind, d, m.bits, degree).unwrap();
        println!(
            "step {}: {:?} over {d:?}: cut {:?}, {} returns",
            m.step,
            shape.valid.out,
            shape.blocks,
            shape.returns()
        );
    }
}

/// Issue 74's "done when", for the U-Net of `make graph-fixtures` (max pooling, a transposed
/// convolution, skip connections): from share-model to reconstruct with no dealer. The two
/// servers deal the job between themselves (`gen-triplets --party`, two processes over their
/// pinned link), serve it, and the output shares add up to the graph oracle bit for bit; the
/// receiver's image is `denoise --arith fixed`'s. What is not dealt without a dealer yet is
/// refused by name; two servers asked for different jobs refuse each other naming the
/// difference; a server whose peer dies mid-dealing keeps no file.
#[test]
fn a_unet_job_runs_from_share_model_to_reconstruct_with_no_dealer() {
    use crate::common::graph_job::{fixed_point, fixture_in, graph, oracle, refused, Dir};
    use ppdenoise::formats::bodies::OutputShare;
    use ppdenoise::formats::container::Kind;
    if !crate::common::have_graph_fixtures() {
        return;
    }
    let onnx = fixture_in("graph-fixtures", "graph-fixtures", "unet");
    let g = graph(&onnx);
    let d = Dir::new();
    d.share_model(&onnx);
    d.noisy(30);
    let o = d.share_image("model.pub", "image");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = oracle(&d, &g);
    let gc = |_| vec!["--engine".to_string(), "gc".to_string()];
    let outs = d.deal_together("t", gc);
    for (o, who) in outs.iter().zip(["S0", "S1"]) {
        assert!(
            o.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let said: Vec<serde_json::Value> = outs
        .iter()
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    assert_eq!(said[0]["triplet_id"], said[1]["triplet_id"]);
    assert_eq!(said[1]["dealer"], false);
    for (o, who) in d.serve(("model", "image", "t")).iter().zip(["S0", "S1"]) {
        assert!(
            o.status.success(),
            "serve {who}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (_, secure) = d.sum_of("out", Kind::OutputShare, |b: &OutputShare| b.canvas.clone());
    let differ = secure.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        (secure.len(), differ),
        (want.len(), 0),
        "pixels off the oracle"
    );
    d.reconstruct("secure.png");
    fixed_point(&onnx, &d.p("noisy.png"), &d.p("fixed.png"));
    let fixed = ppdenoise::image::load(d.path("fixed.png")).unwrap();
    let secure = ppdenoise::image::load(d.path("secure.png")).unwrap();
    assert_eq!(secure.pixels, fixed.pixels, "the receiver's image");

    // The boolean engine's correlations are not made without a dealer yet: refused by name
    // on both servers before they meet.
    let gmw = |_| vec!["--engine".to_string(), "gmw".to_string()];
    for o in d.deal_together("tg", gmw) {
        refused(&o, "--engine gmw: the boolean engine's AND triples");
    }
    // Asked for different jobs (another ReLU batch on S1): both refuse, naming it.
    let batch = |p| match p {
        1 => ["--engine", "gc", "--batch", "4096"]
            .map(String::from)
            .to_vec(),
        _ => gc(p),
    };
    for o in d.deal_together("tb", batch) {
        refused(&o, "the ReLU batch is");
    }
    // One asked for both tiles, the other for tile 0 only: refused before any is dealt.
    let tiles = |p| match p {
        0 => ["--engine", "gc", "--tiles", "2", "--tile", "0"]
            .map(String::from)
            .to_vec(),
        _ => ["--engine", "gc", "--tiles", "2"]
            .map(String::from)
            .to_vec(),
    };
    for o in d.deal_together("tt", tiles) {
        refused(&o, "the peer server would deal other tiles");
    }
    for f in ["tg.p0", "tg.p1", "tb.p0", "tb.p1", "tt.t0.p0", "tt.t0.p1"] {
        assert!(!d.path(f).exists(), "{f} was left");
    }
    // S1 killed mid-dealing: S0 fails and keeps nothing.
    let [c0, mut c1] = crate::common::start_pair(&d.dir, |p, addr| {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        std::process::Command::new(crate::common::bin())
            .args(["gen-triplets", "--party", &p.to_string(), "--engine", "gc"])
            .args(["--model", &d.p("model.pub"), "--image", &d.p("image.pub")])
            .args(["--out", &d.p("tk")])
            .args(["--key", &d.p(&format!("keys/{me}.key"))])
            .args(["--cert", &d.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &d.p(&format!("keys/{peer}.crt"))])
            .args(["--timeout", "20"])
            .args(addr)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    c1.kill().unwrap();
    let _ = c1.wait();
    let o0 = crate::common::wait_limit(c0, std::time::Duration::from_secs(120));
    assert!(!o0.status.success(), "S0 went on alone");
    assert!(!d.path("tk.p0").exists(), "S0 kept half a dealing");
}
