//! Foundations (issue 2): model files and their validation, patch geometry (a model that
//! copies the centre of its input reproduces any image), pre- and postprocessing, the
//! fixed-point oracle against float inference, the built-in phantom on the command line,
//! and the `--help` / `--json` contract of every subcommand.

use ppdenoise::ring::Party;
use std::path::Path;
use std::process::{Command, Output};

use ndarray::{Array0, Array1, Array2};
use ndarray_npy::NpzWriter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use ppdenoise::inference::mlp::denoise_float;
use ppdenoise::model::geometry::Geometry;
use ppdenoise::model::mlp::{random_model, Activation, Layer, Model, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::model::tanhstar::TanhStar;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Plan};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

fn ppd(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run ppdenoise")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

// ------------------------------------------------------------------------------------------
// Model files

/// Writes an npz with the given arrays (f64 or f32) and optional metadata scalars.
/// (W, b) of one layer; `None` leaves the array out of the file.
type LayerArrays = (Option<Array2<f64>>, Option<Array1<f64>>);

fn write_npz_f64(path: &Path, layers: &[LayerArrays]) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (i, (w, b)) in layers.iter().enumerate() {
        if let Some(w) = w {
            npz.add_array(format!("W{}", i + 1), w).unwrap();
        }
        if let Some(b) = b {
            npz.add_array(format!("b{}", i + 1), b).unwrap();
        }
    }
    npz.finish().unwrap();
}

fn rand_w(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-0.5..0.5))
}

fn rand_b(n: usize, seed: u64) -> Array1<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Array1::from_shape_fn(n, |_| rng.gen_range(-0.1..0.1))
}

/// Loads `path`, expecting an error whose message contains every needle, and checks the
/// CLI (`inspect`) refuses the same file with a non-zero exit and the same kind of message.
fn expect_model_error(path: &Path, needles: &[&str]) {
    let e = Model::load(path)
        .expect_err("model must be refused")
        .to_string();
    assert!(e.contains(&s(path)), "error does not name the file: {e}");
    for n in needles {
        assert!(e.contains(n), "error {e:?} does not mention {n:?}");
    }
    let o = ppd(&["inspect", &s(path)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "inspect: {err:?} does not mention {n:?}");
    }
}

#[test]
fn model_validation_names_the_array_and_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);

    // Layers that do not chain: W2 takes 15 inputs, layer 1 outputs 16.
    write_npz_f64(
        &p("chain.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(rand_b(16, 2))),
            (Some(rand_w(25, 15, 3)), Some(rand_b(25, 4))),
        ],
    );
    expect_model_error(&p("chain.npz"), &["W2", "do not chain"]);

    // b with the wrong length.
    write_npz_f64(
        &p("blen.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(rand_b(15, 2))),
            (Some(rand_w(25, 16, 3)), Some(rand_b(25, 4))),
        ],
    );
    expect_model_error(&p("blen.npz"), &["b1", "15"]);

    // Non-square input (80 values) and non-square output (24 values).
    write_npz_f64(
        &p("in.npz"),
        &[
            (Some(rand_w(16, 80, 1)), Some(rand_b(16, 2))),
            (Some(rand_w(25, 16, 3)), Some(rand_b(25, 4))),
        ],
    );
    expect_model_error(&p("in.npz"), &["square"]);
    write_npz_f64(
        &p("out.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(rand_b(16, 2))),
            (Some(rand_w(24, 16, 3)), Some(rand_b(24, 4))),
        ],
    );
    expect_model_error(&p("out.npz"), &["square"]);
    // Output not centred in the input (8x8 in a 9x9 window).
    write_npz_f64(
        &p("parity.npz"),
        &[(Some(rand_w(64, 81, 1)), Some(rand_b(64, 2)))],
    );
    expect_model_error(&p("parity.npz"), &["centred"]);

    // Non-finite values, in a weight and in a bias.
    let mut w = rand_w(25, 16, 3);
    w[[3, 7]] = f64::NAN;
    write_npz_f64(
        &p("nan.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(rand_b(16, 2))),
            (Some(w), Some(rand_b(25, 4))),
        ],
    );
    expect_model_error(&p("nan.npz"), &["W2", "non-finite"]);
    let mut b = rand_b(16, 2);
    b[5] = f64::INFINITY;
    write_npz_f64(
        &p("inf.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(b)),
            (Some(rand_w(25, 16, 3)), Some(rand_b(25, 4))),
        ],
    );
    expect_model_error(&p("inf.npz"), &["b1", "non-finite"]);

    // A missing bias.
    write_npz_f64(
        &p("nob.npz"),
        &[
            (Some(rand_w(16, 81, 1)), Some(rand_b(16, 2))),
            (Some(rand_w(25, 16, 3)), None),
        ],
    );
    expect_model_error(&p("nob.npz"), &["b2", "missing"]);

    // No W1 at all; a non-finite metadata scalar; not an npz file.
    write_npz_f64(&p("empty.npz"), &[(None, Some(rand_b(16, 2)))]);
    expect_model_error(&p("empty.npz"), &["W1"]);
    {
        let mut npz = NpzWriter::new(std::fs::File::create(p("sigma.npz")).unwrap());
        npz.add_array("W1", &rand_w(25, 81, 1)).unwrap();
        npz.add_array("b1", &rand_b(25, 2)).unwrap();
        npz.add_array("sigma", &Array0::from_elem((), f64::NAN))
            .unwrap();
        npz.finish().unwrap();
    }
    expect_model_error(&p("sigma.npz"), &["sigma"]);
    std::fs::write(p("junk.npz"), b"this is not a zip archive").unwrap();
    expect_model_error(&p("junk.npz"), &["npz"]);
    // A 1-D weight array.
    {
        let mut npz = NpzWriter::new(std::fs::File::create(p("dim.npz")).unwrap());
        npz.add_array("W1", &rand_b(81, 1)).unwrap();
        npz.add_array("b1", &rand_b(1, 2)).unwrap();
        npz.finish().unwrap();
    }
    expect_model_error(&p("dim.npz"), &["W1"]);
}

#[test]
fn f32_and_f64_models_load_alike() {
    let d = tempfile::tempdir().unwrap();
    let layers = [
        (rand_w(16, 81, 11), rand_b(16, 12)),
        (rand_w(25, 16, 13), rand_b(25, 14)),
    ];
    // f64, with metadata scalars.
    {
        let mut npz = NpzWriter::new(std::fs::File::create(d.path().join("m64.npz")).unwrap());
        for (i, (w, b)) in layers.iter().enumerate() {
            npz.add_array(format!("W{}", i + 1), w).unwrap();
            npz.add_array(format!("b{}", i + 1), b).unwrap();
        }
        npz.add_array("sigma", &Array0::from_elem((), 15.0f64))
            .unwrap();
        npz.add_array("residual", &Array0::from_elem((), 1.0f64))
            .unwrap();
        npz.add_array("mean_shift", &Array0::from_elem((), 1.0f64))
            .unwrap();
        npz.add_array("activation", &Array0::from_elem((), 1.0f64))
            .unwrap();
        npz.finish().unwrap();
    }
    // f32, with f32 metadata.
    {
        let mut npz = NpzWriter::new(std::fs::File::create(d.path().join("m32.npz")).unwrap());
        for (i, (w, b)) in layers.iter().enumerate() {
            npz.add_array(format!("W{}", i + 1), &w.mapv(|v| v as f32))
                .unwrap();
            npz.add_array(format!("b{}", i + 1), &b.mapv(|v| v as f32))
                .unwrap();
        }
        npz.add_array("sigma", &Array0::from_elem((), 15.0f32))
            .unwrap();
        npz.add_array("residual", &Array0::from_elem((), 1.0f32))
            .unwrap();
        npz.add_array("mean_shift", &Array0::from_elem((), 1.0f32))
            .unwrap();
        npz.add_array("activation", &Array0::from_elem((), 1.0f32))
            .unwrap();
        npz.finish().unwrap();
    }
    let m64 = Model::load(&d.path().join("m64.npz")).unwrap();
    let m32 = Model::load(&d.path().join("m32.npz")).unwrap();
    assert_eq!(m64.widths(), vec![81, 16, 25]);
    assert_eq!(m32.widths(), vec![81, 16, 25]);
    let expect_meta = ModelMeta {
        sigma: 15.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 0.0,
    };
    assert_eq!(m64.meta, expect_meta);
    assert_eq!(m32.meta, expect_meta);
    for (i, (w, b)) in layers.iter().enumerate() {
        assert_eq!(m64.layers[i].w, *w);
        assert_eq!(m64.layers[i].b, *b);
        // f32 values widened exactly.
        assert_eq!(m32.layers[i].w, w.mapv(|v| v as f32 as f64));
        assert_eq!(m32.layers[i].b, b.mapv(|v| v as f32 as f64));
    }
    // Defaults when the metadata is absent; save/load round trip.
    write_npz_f64(
        &d.path().join("plain.npz"),
        &[(Some(rand_w(25, 81, 1)), Some(rand_b(25, 2)))],
    );
    let m = Model::load(&d.path().join("plain.npz")).unwrap();
    assert_eq!(m.meta, ModelMeta::default());
    m64.save(&d.path().join("again.npz")).unwrap();
    assert_eq!(Model::load(&d.path().join("again.npz")).unwrap(), m64);
    // Every activation survives a round trip (ReLU is code 2); other codes are refused.
    for act in [Activation::Tanh, Activation::TanhStar, Activation::Relu] {
        let mut m = m64.clone();
        m.meta.activation = act;
        m.save(&d.path().join("act.npz")).unwrap();
        assert_eq!(
            Model::load(&d.path().join("act.npz")).unwrap(),
            m,
            "{act:?}"
        );
    }
    {
        let mut npz = NpzWriter::new(std::fs::File::create(d.path().join("a3.npz")).unwrap());
        npz.add_array("W1", &rand_w(25, 81, 1)).unwrap();
        npz.add_array("b1", &rand_b(25, 2)).unwrap();
        npz.add_array("activation", &Array0::from_elem((), 3.0f64))
            .unwrap();
        npz.finish().unwrap();
    }
    expect_model_error(&d.path().join("a3.npz"), &["activation 3", "2 (ReLU)"]);
    // The shipped model loads and has the paper's patch geometry.
    let shipped = Model::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model.npz"
    )))
    .unwrap();
    let ps = shipped.patch_shape();
    assert_eq!((ps.input, ps.output), (39, 17));
}

// ------------------------------------------------------------------------------------------
// Geometry: a model that copies the centre of its input

/// One layer selecting the centre `output x output` pixels of an `input x input` window.
fn centre_copy_model(input: usize, output: usize) -> Model {
    let m = (input - output) / 2;
    let mut w = Array2::<f64>::zeros((output * output, input * input));
    for k in 0..output * output {
        let (r, c) = (m + k / output, m + k % output);
        w[[k, r * input + c]] = 1.0;
    }
    Model {
        layers: vec![Layer {
            w,
            b: Array1::zeros(output * output),
        }],
        meta: ModelMeta {
            sigma: 25.0,
            mean_shift: false,
            residual: false,
            activation: Activation::Tanh,
            aggregation_sigma: 0.0,
        },
        window: None,
    }
}

fn random_image(h: usize, w: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Array2::from_shape_fn((h, w), |_| rng.gen_range(0..=255u32) as f64)
}

#[test]
fn centre_copy_reproduces_any_image_float_and_fixed_point() {
    let t = TanhStar::PAPER;
    for &(input, output, h, w, stride) in &[
        (39usize, 17usize, 97usize, 131usize, 3usize),
        (9, 5, 97, 131, 1),
        (9, 5, 31, 8, 2),
        (7, 3, 4, 5, 3),
        (39, 17, 20, 18, 3),
        (5, 1, 13, 11, 1),
    ] {
        let model = centre_copy_model(input, output);
        model.validate(Path::new("centre-copy")).unwrap();
        let img = random_image(h, w, (h * w) as u64);
        for pre in [Preprocess::identity(), Preprocess::new(50.0, 25.0, true)] {
            let what = format!("{input}->{output}, {h}x{w}, stride {stride}, {pre:?}");
            // Float: exact up to float rounding of normalise/denormalise.
            let f = denoise_float(&model, &img, &pre, stride, None, &t);
            assert_eq!(f.dim(), (h, w));
            let err = f
                .iter()
                .zip(img.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "{what}: float max error {err}");

            // Fixed point: the canvas sums are exactly count x the encoded input pixel, and
            // the decoded image is the input to within the encoding's quantisation.
            let params = FixedParams::default();
            let plan = Plan::from_model(&model, params).unwrap();
            let geo = Geometry::new(h, w, plan.patch, stride);
            let enc = oracle::encode_image(&img, &pre, params.s);
            let run = oracle::run(&plan, &geo, &enc, 100);
            assert_eq!(run.out_of_range, 0);
            let counts = geo.counts();
            let enc_canvas_pixel = |ci: usize| {
                let (r, c) = (ci / geo.canvas_w, ci % geo.canvas_w);
                // The canvas beyond the image holds mirrored pixels.
                let sr = ppdenoise::model::geometry::mirror(r as isize, h);
                let sc = ppdenoise::model::geometry::mirror(c as isize, w);
                enc[sr * w + sc]
            };
            for (ci, (&v, &n)) in run.canvas.iter().zip(&counts).enumerate() {
                assert_eq!(
                    v,
                    (enc_canvas_pixel(ci) << (plan.out_scale - params.s)).wrapping_mul(n as u64),
                    "{what}: canvas value {ci}"
                );
            }
            let dec = oracle::decode_canvas(&run.canvas, &geo, &pre, plan.out_scale);
            // Encoding rounds to 2^-(s+1) in the normalised domain: times 255/5/noise_scale.
            let q = 0.5 / (params.s as f64).exp2() * 51.0 / pre.noise_scale + 1e-9;
            let err = dec
                .iter()
                .zip(img.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err <= q, "{what}: fixed-point max error {err} > {q}");
            // And 8-bit quantisation gives the input back exactly.
            assert_eq!(ppdenoise::image::quantize_u8(&dec), img, "{what}");
        }
    }
}

#[test]
fn centre_copy_through_the_cli_reproduces_the_png() {
    let d = tempfile::tempdir().unwrap();
    let model = centre_copy_model(9, 5);
    let mp = d.path().join("copy.npz");
    model.save(&mp).unwrap();
    let img = ppdenoise::image::GrayImage::new(random_image(37, 53, 5), 8);
    let ip = d.path().join("in.png");
    ppdenoise::image::save_png(&img, &ip, 8).unwrap();
    for arith in ["float", "float-tanh-star", "fixed"] {
        for extra in [
            &["--sigma", "25"][..],
            &["--sigma", "40"][..],
            &["--no-scale-noise", "--sigma", "40"][..],
        ] {
            let op = d.path().join(format!("out-{arith}.png"));
            let mut args = vec![
                "denoise",
                "--model",
                mp.to_str().unwrap(),
                "--image",
                ip.to_str().unwrap(),
                "--arith",
                arith,
                "--stride",
                "2",
                "--out",
                op.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let o = ppd(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let out = ppdenoise::image::load(&op).unwrap();
            assert_eq!(out.pixels, img.pixels, "denoise --arith {arith} {extra:?}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Pre- and postprocessing

#[test]
fn preprocessing_follows_the_paper() {
    // (p/255 - 0.5) * 5 without noise scaling.
    let id = Preprocess::new(25.0, 25.0, true);
    assert_eq!(id.noise_scale, 1.0);
    assert_eq!(Preprocess::new(15.0, 25.0, false).noise_scale, 1.0);
    for (p, v) in [(0.0, -2.5), (127.5, 0.0), (255.0, 2.5), (51.0, -1.5)] {
        assert!((id.normalize(p) - v).abs() < 1e-12, "normalize({p})");
        assert!((id.denormalize(v) - p).abs() < 1e-9, "denormalize({v})");
    }
    // sigma*/sigma scaling: an image with sigma 50 fed to a sigma* = 25 model is scaled by
    // 1/2 before normalising, so its noise has the model's level; postprocessing undoes it.
    let pre = Preprocess::new(50.0, 25.0, true);
    assert!((pre.noise_scale - 0.5).abs() < 1e-15);
    assert!((pre.normalize(255.0) - 0.0).abs() < 1e-12);
    assert!((pre.normalize(100.0) - (50.0 / 255.0 - 0.5) * 5.0).abs() < 1e-12);
    let pre15 = Preprocess::new(15.0, 25.0, true);
    assert!((pre15.noise_scale - 25.0 / 15.0).abs() < 1e-15);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for _ in 0..1000 {
        let p: f64 = rng.gen_range(-50.0..300.0);
        for pr in [pre, pre15, id] {
            assert!((pr.denormalize(pr.normalize(p)) - p).abs() < 1e-9);
        }
    }
    // Noise of std sigma becomes noise of std sigma* (in 0..255 units before normalising):
    // the difference of two pixels scales by sigma*/sigma.
    let (a, b) = (100.0, 150.0);
    let d_norm = pre.normalize(b) - pre.normalize(a);
    assert!((d_norm - (b - a) * 0.5 / 255.0 * 5.0).abs() < 1e-12);

    // The gateway records the scaling it applied in the job parameters.
    let d = tempfile::tempdir().unwrap();
    let o = ppd(&[
        "--json",
        "share-image",
        "--image",
        "builtin:phantom:24",
        "--sigma",
        "50",
        "--model-sigma",
        "25",
        "--out",
        &s(&d.path().join("img")),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, share): (_, ppdenoise::formats::bodies::ImageShare) = ppdenoise::formats::bodies::load(
        &d.path().join("img.p0"),
        ppdenoise::formats::container::Kind::ImageShare,
        Some(Party::S0),
    )
    .unwrap();
    assert!((share.job.pre.noise_scale - 0.5).abs() < 1e-15);
    assert_eq!(share.job.sigma, 50.0);
    assert_eq!(share.job.model_sigma, 25.0);
    // --no-scale-noise feeds the image unscaled.
    let o = ppd(&[
        "share-image",
        "--image",
        "builtin:phantom:24",
        "--sigma",
        "50",
        "--no-scale-noise",
        "--out",
        &s(&d.path().join("raw")),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, raw): (_, ppdenoise::formats::bodies::ImageShare) = ppdenoise::formats::bodies::load(
        &d.path().join("raw.p0"),
        ppdenoise::formats::container::Kind::ImageShare,
        Some(Party::S0),
    )
    .unwrap();
    assert_eq!(raw.job.pre.noise_scale, 1.0);
}

// ------------------------------------------------------------------------------------------
// The fixed-point oracle against float inference with tanh*

/// Max abs pixel difference between the oracle and float tanh* inference.
fn oracle_vs_float(model: &Model, img: &Array2<f64>, stride: usize) -> (f64, f64) {
    oracle_vs_float_with(model, img, stride, FixedParams::default())
}

fn oracle_vs_float_with(
    model: &Model,
    img: &Array2<f64>,
    stride: usize,
    params: FixedParams,
) -> (f64, f64) {
    let pre = Preprocess::identity();
    let plan = Plan::from_model(model, params).unwrap();
    let (fixed, out_of_range) = oracle::denoise(&plan, img, &pre, stride);
    assert_eq!(out_of_range, 0);
    let float = denoise_float(
        model,
        img,
        &pre,
        stride,
        Some(Activation::TanhStar),
        &TanhStar::PAPER,
    );
    let diffs: Vec<f64> = fixed
        .iter()
        .zip(float.iter())
        .map(|(a, b)| (a - b).abs())
        .collect();
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    (max, mean)
}

/// Bounds on the oracle-vs-float difference, in grey levels (0..255 scale).
///
/// Where the difference comes from (51 grey levels = 1 in the normalised domain): inputs and
/// weights are rounded to 2^-19; every hidden pre-activation is floored to q fractional bits
/// inside the circuit (default q = 10: error in [0, 2^-10), a systematic bias of 2^-11 on
/// average); the tanh* coefficients carry cs = 10 (and more) fractional bits (error up to
/// ~2^-11 |x|^2). The output layer is not truncated. Propagated through a layer (|W| row sums
/// of 2..4 for these models) this is ~1e-3 normalised per output value, ~0.05 grey levels,
/// and the floors' bias does not average out (mean 0.01..0.03 measured). On top, tanh*
/// jumps at 0 (by 0.032), at a (0.0045) and at b (0.012): a pre-activation within 2^-q of a
/// jump may land on the other side, moving one hidden unit by up to 0.032, i.e. a few tenths
/// of a grey level at one output before averaging; that is rare (~1e-3 per unit).
/// Hence: mean below 0.05 and max below 0.5 (the 8-bit results differ by at most one level).
/// That the difference is quantisation is checked directly: it shrinks as the precision
/// grows (q = cs = 8, the default, q = 11).
const MEAN_BOUND: f64 = 0.05;
const MAX_BOUND: f64 = 0.5;

#[test]
fn oracle_matches_float_tanh_star_within_quantisation() {
    let mut worst = (0.0f64, 0.0f64);
    let cases: Vec<(Vec<usize>, bool, bool, usize)> = vec![
        (vec![81, 16, 16, 25], false, false, 2),
        (vec![81, 16, 16, 25], true, true, 1),
        (vec![49, 32, 9], false, true, 2),
        (vec![121, 24, 12, 8, 9], true, false, 3),
    ];
    let coarse = FixedParams {
        q: 8,
        cs: 8,
        ..FixedParams::default()
    };
    let fine = FixedParams {
        q: 11,
        ..FixedParams::default()
    };
    let (mut sum8, mut sum12, mut sum13) = (0.0, 0.0, 0.0);
    for (i, (widths, ms, res, stride)) in cases.iter().enumerate() {
        let model = random_model(
            widths,
            500 + i as u64,
            ModelMeta {
                sigma: 25.0,
                mean_shift: *ms,
                residual: *res,
                activation: Activation::TanhStar,
                aggregation_sigma: if *res { 4.0 } else { 0.0 },
            },
        );
        for (j, img) in [
            random_image(37, 41, 9 + i as u64),
            ppdenoise::image::phantom::shepp_logan(40).pixels,
        ]
        .iter()
        .enumerate()
        {
            let (max, mean) = oracle_vs_float(&model, img, *stride);
            let (max8, mean8) = oracle_vs_float_with(&model, img, *stride, coarse);
            let (max13, mean13) = oracle_vs_float_with(&model, img, *stride, fine);
            eprintln!(
                "model {widths:?} mean shift {ms} residual {res}, image {j}: max/mean default \
                 {max:.4}/{mean:.5}, q8 {max8:.4}/{mean8:.5}, q11 {max13:.4}/{mean13:.5}"
            );
            worst.0 = worst.0.max(max);
            worst.1 = worst.1.max(mean);
            assert!(mean < MEAN_BOUND, "mean abs difference {mean}");
            assert!(max < MAX_BOUND, "max abs difference {max}");
            (sum8, sum12, sum13) = (sum8 + mean8, sum12 + mean, sum13 + mean13);
        }
    }
    eprintln!(
        "worst max {:.4}, worst mean {:.5} grey levels; mean error q8 {:.5} > default {:.5} > q11 {:.5}",
        worst.0, worst.1, sum8 / 8.0, sum12 / 8.0, sum13 / 8.0
    );
    // The difference is quantisation: it falls as bits are added.
    assert!(sum8 > 3.0 * sum12, "q8 {sum8} vs default {sum12}");
    assert!(sum12 > 1.3 * sum13, "default {sum12} vs q11 {sum13}");
    // And it is not zero (the comparison does see the arithmetic).
    assert!(worst.0 > 0.0);
}

#[test]
fn oracle_of_the_shipped_model_is_close_to_float() {
    let shipped = Model::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model.npz"
    )))
    .unwrap();
    let img = ppdenoise::image::add_noise(&ppdenoise::image::phantom::shepp_logan(32), 25.0, 1);
    let img = ppdenoise::image::quantize_u8(&img.pixels);
    let (max, mean) = oracle_vs_float(&shipped, &img, 3);
    eprintln!("shipped model: max {max:.5}, mean {mean:.6}");
    assert!(mean < MEAN_BOUND, "mean abs difference {mean}");
    assert!(max < MAX_BOUND, "max abs difference {max}");
}

// ------------------------------------------------------------------------------------------
// The built-in phantom on the command line

fn json_line(o: &Output, what: &str) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what} failed: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = out.trim_end_matches('\n');
    assert!(
        !t.contains('\n'),
        "{what}: --json printed more than one line: {out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(t).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"));
    assert_eq!(v["ok"], true, "{what}: {v}");
    v
}

#[test]
fn builtin_phantom_is_selectable_everywhere_an_image_is_expected() {
    let d = tempfile::tempdir().unwrap();
    let model = random_model(&[81, 8, 25], 9, ModelMeta::default());
    let mp = d.path().join("m.npz");
    model.save(&mp).unwrap();
    let noisy = d.path().join("noisy.png");
    let v = json_line(
        &ppd(&[
            "--json",
            "add-noise",
            "--image",
            "builtin:phantom:64",
            "--sigma",
            "25",
            "--seed",
            "1",
            "--out",
            &s(&noisy),
        ]),
        "add-noise",
    );
    assert!(v["psnr"].as_f64().unwrap() < 30.0);
    let img = ppdenoise::image::load(&noisy).unwrap();
    assert_eq!(img.pixels.dim(), (64, 64));
    let v = json_line(
        &ppd(&["--json", "metrics", "builtin:phantom:64", &s(&noisy)]),
        "metrics",
    );
    assert!((v["psnr"].as_f64().unwrap() - 20.2).abs() < 2.0, "{v}");
    let v = json_line(
        &ppd(&[
            "--json",
            "metrics",
            "builtin:phantom:64",
            "builtin:phantom:64",
        ]),
        "metrics",
    );
    assert_eq!(v["ssim"].as_f64().unwrap(), 1.0);
    let out = d.path().join("den.png");
    json_line(
        &ppd(&[
            "--json",
            "denoise",
            "--sigma",
            "25",
            "--model",
            &s(&mp),
            "--image",
            "builtin:phantom:64",
            "--out",
            &s(&out),
            "--clean",
            "builtin:phantom:64",
        ]),
        "denoise",
    );
    assert_eq!(ppdenoise::image::load(&out).unwrap().pixels.dim(), (64, 64));
    // The default size and the phantom's content.
    let p = ppdenoise::image::phantom::builtin("phantom").unwrap();
    assert_eq!(p.pixels.dim(), (512, 512));
    let p64 = ppdenoise::image::phantom::builtin("phantom:64").unwrap();
    assert_eq!(
        p64.pixels,
        ppdenoise::image::phantom::shepp_logan(64).pixels
    );
    assert!(p64.pixels.iter().any(|&v| v == 0.0) && p64.pixels.iter().any(|&v| v > 200.0));
    // Unknown built-ins are refused with the list of what exists.
    let o = ppd(&["metrics", "builtin:lena", "builtin:phantom:8"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("phantom"));
}

// ------------------------------------------------------------------------------------------
// --help and --json

const SUBCOMMANDS: &[&str] = &[
    "keygen",
    "share-model",
    "share-image",
    "gen-triplets",
    "serve",
    "reconstruct",
    "denoise",
    "add-noise",
    "metrics",
    "inspect",
    "demo",
    "bench",
    "table",
];

#[test]
fn every_subcommand_has_help() {
    let top = ppd(&["--help"]);
    assert!(top.status.success());
    let top = String::from_utf8_lossy(&top.stdout).to_string();
    let mut missing = Vec::new();
    for sc in SUBCOMMANDS {
        assert!(top.contains(sc), "top-level help does not list {sc}");
        let o = ppd(&[sc, "--help"]);
        assert!(o.status.success(), "{sc} --help failed");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Usage: ppdenoise"), "{sc} --help: {text}");
        assert!(
            text.contains("--json"),
            "{sc} --help does not mention --json"
        );
        // A description before "Usage:", and in the top-level command list.
        let intro = text.split("Usage:").next().unwrap().trim();
        let listed = top
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{sc} ")))
            .map(|l| l.trim_start()[sc.len()..].trim().to_string())
            .unwrap_or_default();
        if intro.is_empty() || listed.is_empty() {
            missing.push(*sc);
        }
    }
    assert!(
        missing.is_empty(),
        "subcommands without a description in --help: {missing:?}"
    );
    assert!(ppd(&["help", "serve"]).status.success());
    assert!(!ppd(&["no-such-command"]).status.success());
}

#[test]
fn every_subcommand_prints_one_line_of_json() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&d.path().join(n));
    let model = random_model(&[49, 8, 9], 3, ModelMeta::default());
    model.save(&d.path().join("m.npz")).unwrap();

    let v = json_line(
        &ppd(&["--json", "keygen", "--name", "s0", "--out-dir", &p("keys")]),
        "keygen",
    );
    assert!(v["fingerprint"].is_string());
    json_line(
        &ppd(&["--json", "keygen", "--name", "s1", "--out-dir", &p("keys")]),
        "keygen",
    );
    let v = json_line(
        &ppd(&[
            "--json",
            "share-model",
            "--model",
            &p("m.npz"),
            "--out",
            &p("model"),
        ]),
        "share-model",
    );
    assert_eq!(v["widths"], serde_json::json!([49, 8, 9]));
    json_line(
        &ppd(&[
            "--json",
            "add-noise",
            "--image",
            "builtin:phantom:16",
            "--sigma",
            "20",
            "--out",
            &p("noisy.png"),
        ]),
        "add-noise",
    );
    let v = json_line(
        &ppd(&[
            "--json",
            "share-image",
            "--image",
            &p("noisy.png"),
            "--sigma",
            "20",
            "--out",
            &p("image"),
        ]),
        "share-image",
    );
    assert!(v["upload_bytes"].as_u64().unwrap() > 16 * 16 * 8);
    let v = json_line(
        &ppd(&[
            "--json",
            "gen-triplets",
            "--model",
            &p("model.p1"),
            "--image",
            &p("image.p1"),
            "--batch",
            "16",
            "--out",
            &p("triplets"),
        ]),
        "gen-triplets",
    );
    assert!(v["patches"].as_u64().unwrap() > 0);
    for f in ["model.p0", "image.p1", "triplets.p0", "m.npz", "noisy.png"] {
        let v = json_line(&ppd(&["--json", "inspect", &p(f)]), "inspect");
        assert!(v.get("kind").is_some(), "inspect {f}: {v}");
    }
    json_line(
        &ppd(&["--json", "metrics", &p("noisy.png"), "builtin:phantom:16"]),
        "metrics",
    );
    json_line(
        &ppd(&[
            "--json",
            "denoise",
            "--sigma",
            "25",
            "--model",
            &p("m.npz"),
            "--image",
            &p("noisy.png"),
            "--arith",
            "fixed",
        ]),
        "denoise",
    );
    // serve (both parties) and reconstruct.
    let port = crate::common::free_port();
    let serve = |party: &str| {
        let (me, peer) = if party == "0" {
            ("s0", "s1")
        } else {
            ("s1", "s0")
        };
        Command::new(bin())
            .args(["--json", "serve", "--party", party])
            .arg("--insecure-unsigned")
            .args(["--model", &p(&format!("model.p{party}"))])
            .args(["--image", &p(&format!("image.p{party}"))])
            .args(["--triplets", &p(&format!("triplets.p{party}"))])
            .args([
                "--key",
                &p(&format!("keys/{me}.key")),
                "--cert",
                &p(&format!("keys/{me}.crt")),
            ])
            .args(["--peer-cert", &p(&format!("keys/{peer}.crt"))])
            .args(["--addr", &format!("127.0.0.1:{port}"), "--timeout", "30"])
            .args([
                "--state-dir",
                &p("state"),
                "--out",
                &p(&format!("out.p{party}")),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c0, c1) = (serve("0"), serve("1"));
    let o0 = c0.wait_with_output().unwrap();
    let o1 = c1.wait_with_output().unwrap();
    let v = json_line(&o0, "serve 0");
    assert!(v["report"]["engine"]["and_gates"].as_u64().unwrap() > 0);
    json_line(&o1, "serve 1");
    let v = json_line(
        &ppd(&[
            "--json",
            "reconstruct",
            "--insecure-unsigned",
            "--share0",
            &p("out.p0"),
            "--share1",
            &p("out.p1"),
            "--out",
            &p("den.png"),
        ]),
        "reconstruct",
    );
    assert!(v["download_bytes"].as_u64().unwrap() > 0);
    // A failing command prints one line of JSON with "ok": false.
    let o = ppd(&["--json", "inspect", &p("missing.p0")]);
    assert!(!o.status.success());
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("missing.p0"));
}

// ------------------------------------------------------------------------------------------
// Independent references for the shipped model (issue 14 item 3): what the code it was
// trained with makes of an image, and what it is for.

fn shipped_model() -> Model {
    Model::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model.npz"
    )))
    .unwrap()
}

/// fixtures/default-model-reference.json is train.py's own numpy forward pass, padding and
/// aggregation (training/reference.py) on a 41x37 asymmetric noisy image: the float path must
/// agree to 1e-4 of the pixel range and the fixed-point oracle to within its quantisation.
#[test]
fn float_path_matches_train_py_reference() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model-reference.json"
    ))
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (h, w) = (
        r["height"].as_u64().unwrap() as usize,
        r["width"].as_u64().unwrap() as usize,
    );
    assert_ne!(
        h, w,
        "a square reference would let a transposed layout through"
    );
    let model = shipped_model();
    assert_eq!(r["stride"], 3);
    assert_eq!(
        r["aggregation_sigma"].as_f64(),
        Some(model.meta.aggregation_sigma)
    );
    let px = |k: &str| -> Vec<f64> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let noisy = Array2::from_shape_vec((h, w), px("noisy")).unwrap();
    let want = Array2::from_shape_vec((h, w), px("denoised")).unwrap();
    let pre = Preprocess::new(25.0, model.meta.sigma, true);
    let float = denoise_float(&model, &noisy, &pre, 3, None, &TanhStar::PAPER);
    let worst = |got: &Array2<f64>| {
        got.iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs() / 255.0)
            .fold(0.0f64, f64::max)
    };
    let f = worst(&float);
    eprintln!("float vs train.py: max {f:.2e} of the pixel range");
    assert!(f < 1e-4, "float path differs from train.py by {f:.2e}");
    // The transposed image through the model is far from the reference (the test can see it).
    let transposed = denoise_float(
        &model,
        &noisy.t().to_owned(),
        &pre,
        3,
        None,
        &TanhStar::PAPER,
    );
    assert!(worst(&transposed.t().to_owned()) > 1e-2);
    // The fixed-point oracle, as the servers compute it, within its quantisation error.
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let (fixed, _) = oracle::denoise(&plan, &noisy, &pre, 3);
    let q = worst(&fixed) * 255.0;
    eprintln!("fixed-point oracle vs train.py: max {q:.3} grey levels");
    assert!(q < 0.5, "oracle differs from train.py by {q} grey levels");
}

/// What the shipped model is for: at sigma 25 on the built-in 128x128 phantom (which no one
/// trained on; its black background clips half the noise, which the model was never shown)
/// it gains at least 4 dB over the noisy input, in float and in fixed point (measured at
/// 7b14a54: noisy 21.91, float 26.34, fixed 26.34 dB). A broken layout or sign gains nothing.
#[test]
fn shipped_model_denoises_the_phantom() {
    use ppdenoise::image::{add_noise, quantize_u8};
    use ppdenoise::metrics::psnr;
    let model = shipped_model();
    let clean = ppdenoise::image::phantom::shepp_logan(128);
    let noisy = quantize_u8(&add_noise(&clean, 25.0, 7).pixels);
    let pre = Preprocess::new(25.0, model.meta.sigma, true);
    let float = quantize_u8(&denoise_float(
        &model,
        &noisy,
        &pre,
        3,
        None,
        &TanhStar::PAPER,
    ));
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let fixed = quantize_u8(&oracle::denoise(&plan, &noisy, &pre, 3).0);
    let p = |x: &Array2<f64>| psnr(&clean.pixels, x, 255.0);
    let (pn, pf, pq) = (p(&noisy), p(&float), p(&fixed));
    eprintln!("phantom 128, sigma 25: noisy {pn:.2} dB, float {pf:.2} dB, fixed {pq:.2} dB");
    assert!(pf - pn >= 4.0, "float gains only {:.2} dB", pf - pn);
    assert!(pq - pn >= 4.0, "fixed point gains only {:.2} dB", pq - pn);
}
