//! Issue 47, milestone 5 (docs/graph.md): a CNN graph through the real binary. share-model
//! of an ONNX graph (the fixtures of `make graph-fixtures`: RED-CNN, U-Net, DRUNet-like,
//! the LeakyReLU variant), share-image --model, gen-triplets, two `serve` processes over the
//! TLS link, reconstruct: the output shares add up to the graph oracle bit for bit
//! (recomputed here from the ONNX file and the image shares), on both engines, and the
//! receiver's PNG is `denoise --arith fixed`'s. And the refusals that keep graph, CNN and
//! MLP files apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::graph_job::{fixed_point, oracle, refused, Dir};
use common::{bin, no_link_addr, ok, run, start_pair, wait_limit};
use ppdenoise::formats::bodies::{load, GraphModelShare, OutputShare, Triplets};
use ppdenoise::formats::container::{self, Header, Kind};
use ppdenoise::model::graph::Graph;
use ppdenoise::ring::cnn::CnnFixed;
use ppdenoise::ring::graph::GraphPlan;
use ppdenoise::ring::Party;

use crate::common;

fn fixture(name: &str) -> PathBuf {
    common::graph_job::fixture_in("graph-fixtures", "graph-fixtures", name)
}

fn graph(name: &str) -> Graph {
    common::graph_job::graph(&fixture(name))
}

/// Each fixture on both engines, through the binary: secure == oracle, bit for bit, and the
/// receiver's image is `denoise --arith fixed`'s.
#[test]
fn graph_pipeline_is_bit_exact_with_the_oracle() {
    if !common::have_graph_fixtures() {
        return;
    }
    for name in ["redcnn", "unet", "drunet", "leaky"] {
        common::graph_job::bit_exact_through_the_binary(&fixture(name));
    }
}

/// Issue 71, item 15: `demo` and `table` take a graph as they take any model. `demo --model
/// unet.onnx` runs every party as a process and reports the secure result bit for bit its
/// oracle, and the receiver's image is `denoise --arith fixed`'s of the noisy image it
/// shared (recomputed apart from demo); a `table` of it at a tiny size likewise, its run's
/// record naming the graph's fixed point. Where a graph cannot go, the reason is given:
/// `--noise` (no noise map), an image too small for RED-CNN's unpadded convolutions.
#[test]
fn demo_and_table_take_a_graph() {
    let unet = fixture("unet");
    let m = unet.display().to_string();
    let d = Dir::new();
    // 26 x 26: padded to the U-Net's stride 4 by the servers, cropped back.
    let j = ok(&[
        "demo",
        "--model",
        &m,
        "--image",
        "builtin:phantom:26",
        "--workdir",
        &d.p("demo"),
    ]);
    assert_eq!(j["network"], "graph");
    assert_eq!(j["max_abs_diff_secure_oracle"].as_f64(), Some(0.0));
    assert!(j["psnr_float"].as_f64().is_some_and(f64::is_finite));
    fixed_point(&unet, &d.p("demo/noisy.png"), &d.p("fixed.png"));
    let fixed = ppdenoise::image::load(d.path("fixed.png")).unwrap();
    let secure = ppdenoise::image::load(d.path("demo/denoised.png")).unwrap();
    assert_eq!(secure.pixels, fixed.pixels, "demo's secure image");
    let out = d.p("t");
    let t = ok(&[
        "table",
        "--model",
        &m,
        "--images",
        "builtin:phantom:20",
        "--sigmas",
        "25",
        "--figures",
        "none",
        "--quiet",
        "--out-dir",
        &out,
    ]);
    assert_eq!(t["secure_equals_oracle"], true);
    let rundir = d.path("t/runs/phantom_20/sigma25");
    fixed_point(
        &unet,
        &rundir.join("noisy.png").display().to_string(),
        &d.p("fixed20.png"),
    );
    let fixed = ppdenoise::image::load(d.path("fixed20.png")).unwrap();
    let secure = ppdenoise::image::load(rundir.join("denoised.png")).unwrap();
    assert_eq!(secure.pixels, fixed.pixels, "the table's secure image");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rundir.join("run.json")).unwrap()).unwrap();
    let c = CnnFixed::default();
    assert_eq!(
        record["cnn"],
        format!("s={} ws={} k={}", c.s, c.ws, c.k).as_str()
    );
    let md = std::fs::read_to_string(d.path("t/table.md")).unwrap();
    assert!(md.contains("nodes (a CNN graph)"), "{md}");
    // What a graph cannot take, named before anything runs.
    refused(
        &run(&[
            "demo",
            "--model",
            &m,
            "--image",
            "builtin:phantom:24",
            "--noise",
            "poisson-gaussian:0.5,25",
            "--workdir",
            &d.p("noise"),
        ]),
        "a CNN graph, which takes no noise map",
    );
    refused(
        &run(&[
            "table",
            "--model",
            &fixture("redcnn").display().to_string(),
            "--images",
            "builtin:phantom:3",
            "--sigmas",
            "25",
            "--out-dir",
            &d.p("small"),
        ]),
        "too small for this network",
    );
    assert!(!d.path("small").exists());
}

/// docs/graph.md's recipe for your own graph (issue 71, item 16): its metadata step, run as
/// written with the `onnx` package (.venv-onnxrt, which `make graph-fixtures` builds) on the
/// U-Net fixture stripped of its settings, gives a file ppdenoise reads at the level the
/// training step trained for; the export call is the one the fixtures' script makes with
/// torch (PyTorch itself is not installed here).
#[test]
fn the_recipe_for_your_own_graph_sets_what_ppdenoise_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/graph.md")).unwrap();
    let blocks = common::blocks(&doc, "python");
    assert_eq!(
        blocks.len(),
        2,
        "docs/graph.md: a training and a metadata block"
    );
    let (train, settings) = (blocks[0], blocks[1]);
    let script =
        std::fs::read_to_string(root.join("scripts/make-torch-graph-fixtures.py")).unwrap();
    assert!(script.contains("OPSET = 17"));
    for arg in [
        "torch.onnx.export(",
        "dynamo=False",
        "input_names=[\"x\"], output_names=[\"y\"]",
        "{\"x\": {2: \"h\", 3: \"w\"}, \"y\": {2: \"h\", 3: \"w\"}}",
    ] {
        assert!(script.contains(arg), "the fixtures' script lacks {arg}");
        assert!(train.contains(arg), "the recipe lacks {arg}");
    }
    assert!(train.contains("opset_version=17"));
    assert!(train.contains("SIGMA = 15.0") && train.contains("x = clean / 255"));
    let d = tempfile::tempdir().unwrap();
    let python = root.join(".venv-onnxrt/bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            "import onnx, sys\n\
             m = onnx.load(sys.argv[1])\n\
             del m.metadata_props[:]\n\
             onnx.save(m, sys.argv[2])",
        ])
        .arg(fixture("unet"))
        .arg(d.path().join("unet.onnx"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Without its settings: the default level.
    assert_eq!(
        common::graph_job::graph(&d.path().join("unet.onnx")).sigma,
        25.0
    );
    let o = Command::new(&python)
        .args(["-c", settings])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = common::graph_job::graph(&d.path().join("unet.onnx"));
    assert_eq!(g.sigma, 15.0, "the level the recipe trained for");
    assert_eq!(g.nodes, graph("unet").nodes, "the network itself unchanged");
}

/// The U-Net in two tiles (milestone 6) through the binary, on both engines: each tile's
/// band is shorter than the image (cut at a multiple of the total stride and holding the
/// network's reach), and the tiles' shares put together are the one-piece oracle's output
/// bit for bit; the receiver's image is `denoise --arith fixed`'s, on both engines and with
/// the tiles dealt by the servers themselves, no dealer. Tiles given with another tile's
/// randomness are refused.
#[test]
fn a_unet_in_tiles_is_the_one_piece_job_bit_for_bit() {
    if !common::have_graph_fixtures() {
        return;
    }
    let g = graph("unet");
    let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
    let (s, r) = (plan.stride, plan.reach);
    // Two tiles, each band cut short of the image on one side: tall and narrow.
    let h = 2 * (r.before.max(r.after) + s[0]) + 3;
    let w = s[1] + 3;
    // `inspect` says the stride and reach the tiles are cut by.
    let j = ok(&["inspect", &fixture("unet").display().to_string()]);
    assert_eq!(j["kind"], "cnn graph");
    assert_eq!(j["total_stride"], serde_json::json!(s));
    assert_eq!(j["reach"]["above"], r.before);
    assert_eq!(j["reach"]["below"], r.after);
    assert!(j["per_op"]["MaxPool"]["comparisons_per_pixel"].as_f64() > Some(0.0));
    let d = Dir::new();
    d.share_model(&fixture("unet"));
    let img = ndarray::Array2::from_shape_fn((h, w), |(y, x)| {
        (((y * 37 + x * 11) % 97) as f64 * 2.5 + (y as f64 * 0.3).sin() * 20.0).clamp(0.0, 255.0)
    });
    let img = ppdenoise::image::GrayImage::new(img, 8);
    ppdenoise::image::save_png(&img, d.path("noisy.png"), 8).unwrap();
    assert!(d.share_image("model.pub", "image").status.success());
    let want = oracle(&d, &g);
    let (ph, _) = g.padded_size(h, w).unwrap();
    for k in 0..2 {
        let band = plan.band(h, w, ppdenoise::ring::tiles::Tile::new(k, 2).unwrap());
        let band = band.unwrap();
        assert!(
            band.height() < ph,
            "tile {k}: {band:?} is the whole {ph}-row image"
        );
    }
    // "free": the gc engine's tiles dealt by the two servers between themselves, no dealer
    // (`gen-triplets --party --tiles 2`, both tiles over one link).
    for engine in ["gc", "gmw", "free"] {
        let t = format!("t{engine}");
        if engine == "free" {
            let args = |_| {
                ["--engine", "gc", "--tiles", "2"]
                    .map(String::from)
                    .to_vec()
            };
            for o in d.deal_together(&t, args) {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
        } else {
            let o = d.gen_triplets(
                "model.pub",
                "image.pub",
                &t,
                &["--engine", engine, "--tiles", "2"],
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let mut shares = [Vec::new(), Vec::new()];
        for k in 0..2 {
            for (o, who) in d
                .serve(("model", "image", &format!("{t}.t{k}")))
                .iter()
                .zip(["S0", "S1"])
            {
                assert!(
                    o.status.success(),
                    "{engine} tile {k} {who}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            for (p, list) in shares.iter_mut().enumerate() {
                let to = d.path(&format!("{engine}.t{k}.p{p}"));
                std::fs::rename(d.path(&format!("out.p{p}")), &to).unwrap();
                list.push(to.display().to_string());
            }
        }
        // The tiles' rows, put together here from the shares, against the oracle.
        let mut secure = Vec::new();
        for (k, (s0, s1)) in shares[0].iter().zip(&shares[1]).enumerate() {
            let part = |p: usize| -> (Header, OutputShare) {
                let path = [s0, s1][p];
                load(Path::new(path), Kind::OutputShare, Some(Party::BOTH[p])).unwrap()
            };
            let ((h0, o0), (_, o1)) = (part(0), part(1));
            assert_eq!(h0.info("tile"), Some(format!("{k}/2").as_str()));
            secure.extend(
                o0.canvas
                    .iter()
                    .zip(&o1.canvas)
                    .map(|(a, b)| a.wrapping_add(*b)),
            );
        }
        let differ = secure.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            (secure.len(), differ),
            (want.len(), 0),
            "unet {engine} in tiles: pixels differing from the one-piece oracle"
        );
        let mut args = vec!["reconstruct", "--insecure-unsigned", "--share0"];
        args.extend(shares[0].iter().map(String::as_str));
        args.push("--share1");
        args.extend(shares[1].iter().map(String::as_str));
        let out = d.p(&format!("{engine}.png"));
        args.extend(["--out", &out]);
        ok(&args);
    }
    fixed_point(&fixture("unet"), &d.p("noisy.png"), &d.p("fixed.png"));
    let fixed = ppdenoise::image::load(d.path("fixed.png")).unwrap();
    for engine in ["gc", "gmw", "free"] {
        let secure = ppdenoise::image::load(d.path(&format!("{engine}.png"))).unwrap();
        assert_eq!(
            secure.pixels, fixed.pixels,
            "unet {engine} tiles: the receiver's image"
        );
    }
    // A tile label no band has (more tiles than rows) is refused by S0 alone, by name.
    let o = d.gen_triplets("model.pub", "image.pub", "tf", &["--tiles", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    forge::<Triplets>(&d.path("tf.t0.p0"), Kind::Triplets, Party::S0, |h| {
        set(h, "tile", "0/100000".into())
    });
    let o = wait_limit(
        d.spawn(0, &no_link_addr(), ("model", "image", "tf.t0")),
        Duration::from_secs(60),
    );
    refused(&o, "tile");
}

/// A study of two slices through a CNN graph (the RED-CNN fixture): share-study, gen-triplets
/// --study, serve --study on both servers, reconstruct --study; every slice equals
/// `denoise --arith fixed`'s image of its own input.
#[test]
fn a_graph_study_runs_slice_by_slice() {
    if !common::have_graph_fixtures() {
        return;
    }
    let d = Dir::new();
    d.share_model(&fixture("redcnn"));
    std::fs::create_dir(d.path("in")).unwrap();
    for (i, side) in [(0, 30), (1, 26)] {
        ok(&[
            "add-noise",
            "--image",
            &format!("builtin:phantom:{side}"),
            "--sigma",
            "25",
            "--seed",
            &i.to_string(),
            "--out",
            &d.p(&format!("in/s{i}.png")),
        ]);
    }
    let o = common::share_study(&d.dir, "25", "in", "study", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Dealt by the two servers, each asked for other slices: refused on both before any
    // slice is dealt.
    let pair = start_pair(&d.dir, |p, addr| {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["gen-triplets", "--party", &p.to_string(), "--engine", "gc"])
            .args(["--study", &d.p("study"), "--model", &d.p("model.pub")])
            .args(["--slices", if p == 0 { "0" } else { "0-1" }])
            .args(["--key", &d.p(&format!("keys/{me}.key"))])
            .args(["--cert", &d.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &d.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gen-triplets --party")
    });
    for o in pair.map(|c| wait_limit(c, Duration::from_secs(60))) {
        refused(&o, "the peer server would deal other slices");
    }
    assert!(!d.path("study/slice0/triplets.p0").exists());
    ok(&[
        "gen-triplets",
        "--study",
        &d.p("study"),
        "--model",
        &d.p("model.pub"),
        "--engine",
        "gmw",
    ]);
    let [c0, c1] = start_pair(&d.dir, |p, addr| {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &d.p(&format!("model.p{p}"))])
            .args(["--study", &d.p("study")])
            .args(["--key", &d.p(&format!("keys/{me}.key"))])
            .args(["--cert", &d.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &d.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "30"])
            .args(["--state-dir", &d.p(&format!("state{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    });
    for (c, who) in [c0, c1].into_iter().zip(["S0", "S1"]) {
        let o = wait_limit(c, Duration::from_secs(120));
        assert!(
            o.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--study",
        &d.p("study"),
        "--out",
        &d.p("denoised"),
    ]);
    let mut outs: Vec<PathBuf> = std::fs::read_dir(d.path("denoised"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    outs.sort();
    assert_eq!(outs.len(), 2, "{outs:?}");
    for (i, got) in outs.iter().enumerate() {
        let fixed = d.p(&format!("fixed{i}.png"));
        fixed_point(&fixture("redcnn"), &d.p(&format!("in/s{i}.png")), &fixed);
        let want = ppdenoise::image::load(&fixed).unwrap();
        let secure = ppdenoise::image::load(got).unwrap();
        assert_eq!(secure.pixels, want.pixels, "slice {i}: {}", got.display());
    }
}

/// Files of two graphs (a U-Net and a chain CNN, which is shared as a graph too) and of an
/// MLP are kept apart, and what graphs do not take yet is refused by name, before any
/// randomness is drawn.
#[test]
fn graph_files_are_kept_apart_and_their_limits_named() {
    if !common::have_graph_fixtures() {
        return;
    }
    let d = Dir::new();
    d.share_model(&fixture("unet"));
    d.noisy(30);
    assert!(d.share_image("model.pub", "image").status.success());
    // A CNN and an MLP, with images shared for each.
    ppdenoise::model::cnn::random_cnn(
        &[1, 3, 1],
        3,
        5,
        ppdenoise::model::cnn::CnnMeta {
            sigma: 25.0,
            residual: true,
        },
    )
    .save(&d.path("cnn.npz"))
    .unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("cnn.npz"),
        "--out",
        &d.p("cnn"),
    ]);
    assert!(d.share_image("cnn.pub", "cnnimage").status.success());
    ok(&["share-model", "--out", &d.p("mlp")]);
    assert!(d.share_image("mlp.pub", "mlpimage").status.success());
    for (model, image) in [
        ("model.pub", "cnnimage.pub"),
        ("model.pub", "mlpimage.pub"),
        ("cnn.pub", "image.pub"),
        ("mlp.pub", "image.pub"),
    ] {
        let o = d.gen_triplets(model, image, "t", &[]);
        assert!(!o.status.success(), "{model} with {image} was dealt");
        assert!(!d.path("t.p1").exists(), "{model} with {image}");
    }
    // Two graphs' files are told apart by their model ids.
    for (model, image) in [("model.pub", "cnnimage.pub"), ("cnn.pub", "image.pub")] {
        refused(
            &d.gen_triplets(model, image, "t", &[]),
            "the gateway shared this image for model",
        );
    }
    refused(
        &d.gen_triplets("mlp.pub", "image.pub", "t", &[]),
        "is not a CNN graph's header",
    );
    // Not yet for graphs: named.
    refused(
        &run(&[
            "gen-model-mask",
            "--model",
            &d.p("model.pub"),
            "--out",
            &d.p("mask"),
        ]),
        "not supported for CNNs (and CNN graphs)",
    );
    // A graph's servers refuse another graph's image share and triplets.
    assert!(d
        .gen_triplets("cnn.pub", "cnnimage.pub", "tc", &[])
        .status
        .success());
    for o in d.serve(("model", "cnnimage", "tc")) {
        refused(&o, "the gateway shared this image for model");
    }
    // An image too small for RED-CNN's unpadded convolutions: refused by the gateway.
    ok(&[
        "share-model",
        "--model",
        &fixture("redcnn").display().to_string(),
        "--out",
        &d.p("red"),
    ]);
    ok(&[
        "add-noise",
        "--image",
        "builtin:phantom:3",
        "--sigma",
        "25",
        "--out",
        &d.p("noisy.png"),
    ]);
    refused(&d.share_image("red.pub", "small"), "too small");
    assert!(!d.path("small.p0").exists());
}

/// What every party rebuilds from a graph header: a public description carrying a weight is
/// refused, and the plan rebuilt from the description equals the owner's, secret values
/// aside.
#[test]
fn a_public_description_rebuilds_the_owners_plan_and_carries_no_value() {
    if !common::have_graph_fixtures() {
        return;
    }
    let path = Path::new("model.pub");
    for name in ["redcnn", "unet", "drunet", "leaky"] {
        let g = graph(name);
        let public = g.public();
        let rebuilt = GraphPlan::from_graph(&public.graph(path).unwrap(), CnnFixed::default())
            .unwrap()
            .public();
        let owner = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
        assert_eq!(rebuilt, owner.public(), "{name}");
        assert!(!owner.secret_values().is_empty());
        // One weight put back: refused as not public.
        let mut leaky = public.clone();
        for n in &mut leaky.nodes {
            if let ppdenoise::model::graph::Op::Conv(c) = &mut n.op {
                c.b = vec![0.5; c.cout];
                break;
            }
        }
        let e = leaky.graph(path).unwrap_err().to_string();
        assert!(e.contains("carries weights or constants"), "{e}");
    }
}

/// Rewrites a file's header entry `key` (unsigned files: the test stands for whoever can
/// write them; signed ones are refused before this by their makers' keys).
fn forge<B: serde::Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    kind: Kind,
    party: Party,
    edit: impl Fn(&mut Header),
) {
    let (mut h, body): (Header, B) = load(path, kind, Some(party)).unwrap();
    edit(&mut h);
    container::write(path, &h, &body, container::Seal::PLAIN).unwrap();
}

/// A header edit of [`forge`].
type Edit = fn(&mut Header);

fn set(h: &mut Header, key: &str, value: String) {
    let e = h.info.iter_mut().find(|(k, _)| k == key).unwrap();
    e.1 = value;
}

/// What a server checks of a graph job's headers itself (S0 alone: it refuses before it
/// listens): triplets dealt for another description, fixed point or circuits than its model
/// share's; a model header whose description carries a weight, or whose fixed point is not
/// its scale. Each is refused by name.
#[test]
fn a_server_refuses_graph_headers_that_disagree() {
    if !common::have_graph_fixtures() {
        return;
    }
    let d = Dir::new();
    d.share_model(&fixture("unet"));
    d.noisy(30);
    assert!(d.share_image("model.pub", "image").status.success());
    let s0 = |triplets: &str| {
        wait_limit(
            d.spawn(0, &no_link_addr(), ("model", "image", triplets)),
            Duration::from_secs(60),
        )
    };
    let cases: [(&str, Edit, &str); 5] = [
        (
            "fixed_point",
            |h| set(h, "fixed_point", "12,13,18".into()),
            "another CNN graph",
        ),
        (
            "graph_description",
            |h| {
                let v = h.info("graph_description").unwrap().replacen(
                    "\"groups\":1",
                    "\"groups\":2",
                    1,
                );
                set(h, "graph_description", v)
            },
            "another CNN graph",
        ),
        (
            "circuit",
            |h| set(h, "circuit", "1,2,3".into()),
            "made for other circuits",
        ),
        // The output's width: another, then none (a build before wire revision 6).
        (
            "circuit",
            |h| {
                let v = h.info("circuit").unwrap();
                let (shapes, bits) = v.rsplit_once(";out").expect("the width is named");
                let other = bits.parse::<u32>().unwrap() + 1;
                set(h, "circuit", format!("{shapes};out{other}"))
            },
            "made for other circuits",
        ),
        (
            "circuit",
            |h| {
                let v = h.info("circuit").unwrap();
                let shapes = v.rsplit_once(";out").expect("the width is named").0;
                set(h, "circuit", shapes.to_string())
            },
            "made for other circuits",
        ),
    ];
    for (i, (what, edit, needle)) in cases.into_iter().enumerate() {
        let t = format!("t{i}");
        assert!(d
            .gen_triplets("model.pub", "image.pub", &t, &[])
            .status
            .success());
        forge::<Triplets>(&d.path(&format!("{t}.p0")), Kind::Triplets, Party::S0, edit);
        let o = s0(&t);
        assert!(!o.status.success(), "{what}: served");
        refused(&o, needle);
    }
    // The model share's own header: a description with a weight in it, then a fixed point
    // that is not its scale.
    assert!(d
        .gen_triplets("model.pub", "image.pub", "tm", &[])
        .status
        .success());
    let model = d.path("model.p0");
    let original = std::fs::read(&model).unwrap();
    forge::<GraphModelShare>(&model, Kind::GraphModelShare, Party::S0, |h| {
        let v = h
            .info("graph_description")
            .unwrap()
            .replacen("\"b\":[]", "\"b\":[0.5]", 1);
        set(h, "graph_description", v)
    });
    refused(&s0("tm"), "carries weights");
    std::fs::write(&model, &original).unwrap();
    forge::<GraphModelShare>(&model, Kind::GraphModelShare, Party::S0, |h| {
        set(h, "fixed_point", "11,13,18".into())
    });
    refused(&s0("tm"), "graph's fixed point takes 11");
}
