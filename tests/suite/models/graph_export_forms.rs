//! Graphs as exporters write them, made here from the checked-in tiny DnCNN (no generated
//! fixture needed): issue 71, items 2 and 4. A `Resize` whose `roi` is an empty initializer
//! (torch's nearest up-sampling) reads as one with no roi, in float, in fixed point and
//! through the servers; `denoise --arith fixed` on a graph prints the distance to float it
//! measured on the image, with the worst-case bound only where that says something.

use crate::common;

use std::path::{Path, PathBuf};

use ppdenoise::import::onnx::proto::{
    attr_type, AttributeProto, ModelProto, NodeProto, TensorProto,
};
use ppdenoise::import::onnx::{load, Net};
use ppdenoise::model::graph::{Graph, Op};
use prost::Message;

fn fixture() -> ModelProto {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/tiny-dncnn.onnx");
    ModelProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap()
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// The tiny DnCNN behind a 2x2 max pooling and a nearest up-sampling by 2 as torch exports
/// it (`F.interpolate(scale_factor=2)`: asymmetric coordinates, rounded down), its `roi`
/// input named `roi` (with `roi` given as an empty initializer when `empty_roi`) or left
/// out (""), written to `dir`/`name`.
fn upsampling_graph(dir: &Path, name: &str, roi: &str, empty_roi: bool) -> PathBuf {
    let mut m = fixture();
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = "up".into();
    let pool = NodeProto {
        name: "pool".into(),
        op_type: "MaxPool".into(),
        input: vec!["x".into()],
        output: vec!["pooled".into()],
        attribute: vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ..Default::default()
    };
    let resize = NodeProto {
        name: "resize".into(),
        op_type: "Resize".into(),
        input: vec!["pooled".into(), roi.into(), "scales".into()],
        output: vec!["up".into()],
        attribute: vec![
            string("mode", "nearest"),
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ],
        ..Default::default()
    };
    g.node.splice(0..0, [pool, resize]);
    g.initializer.push(TensorProto {
        name: "scales".into(),
        dims: vec![4],
        data_type: 1,
        float_data: vec![1.0, 1.0, 2.0, 2.0],
        ..Default::default()
    });
    if empty_roi {
        g.initializer.push(TensorProto {
            name: roi.into(),
            dims: vec![0],
            data_type: 1,
            ..Default::default()
        });
    }
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn graph(p: &Path) -> Graph {
    match load(p).unwrap() {
        Net::Graph(g) => g,
        other => panic!("{} read as {other:?}", p.display()),
    }
}

fn denoise(model: &Path, image: &str, arith: &str, out: &Path) -> std::process::Output {
    common::run(&[
        "denoise",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image,
        "--sigma",
        "25",
        "--arith",
        arith,
        "--out",
        out.to_str().unwrap(),
    ])
}

fn pixels(p: &Path) -> ndarray::Array2<f64> {
    ppdenoise::image::load(p).unwrap().pixels
}

/// Issue 71, item 2: an empty `roi` initializer is "no roi": the graph read is the one
/// whose roi is left out (which the U-Net fixture holds to onnxruntime), and it runs in
/// float and in fixed point through `denoise`, and through both servers bit for bit as the
/// oracle. Another empty initializer is still refused, and so is an empty roi read by
/// another op too.
#[test]
fn an_empty_roi_is_no_roi_in_float_fixed_point_and_secure() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let empty = upsampling_graph(d, "empty-roi.onnx", "roi", true);
    let none = upsampling_graph(d, "no-roi.onnx", "", false);
    let g = graph(&empty);
    assert_eq!(g, graph(&none), "the graph with an empty roi");
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Resize(_))));
    let img = "builtin:phantom:30";
    let noisy = ppdenoise::image::load_input(img).unwrap().pixels;
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    common::summary(&denoise(&empty, img, "float", &a), "denoise float");
    common::summary(&denoise(&none, img, "float", &b), "denoise float");
    assert_eq!(pixels(&a), pixels(&b));
    let want = g
        .denoise_float(&noisy, &g.preprocess(25.0, true), &[])
        .unwrap();
    let float = pixels(&a);
    let worst = float
        .iter()
        .zip(&want)
        .map(|(x, y)| (x - y.round().clamp(0.0, 255.0)).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1.0,
        "float: {worst} grey levels from the library's"
    );
    assert!(
        float.iter().zip(&noisy).any(|(x, y)| x != y),
        "the network changed nothing"
    );
    // Fixed point: within what it says it measured (each side rounded to 8 bits once).
    let f = d.join("f.png");
    let j = common::summary(&denoise(&empty, img, "fixed", &f), "denoise fixed");
    let gap = j["float_difference"]
        .as_f64()
        .expect("the measured distance");
    let fixed = pixels(&f);
    let worst = fixed
        .iter()
        .zip(&float)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= gap + 1.0,
        "{worst} grey levels apart, {gap} measured"
    );
    assert!(gap < 8.0, "fixed point {gap} grey levels from float");
    // Through the servers: the oracle's bits, the receiver's image `denoise --arith fixed`'s.
    common::graph_job::bit_exact_through_the_binary(&empty);

    // Any other empty initializer is refused as before; so is an empty roi something else
    // reads too.
    let mut m = ModelProto::decode(std::fs::read(&empty).unwrap().as_slice()).unwrap();
    let gr = m.graph.as_mut().unwrap();
    gr.initializer.retain(|t| t.name != "roi");
    gr.initializer.push(TensorProto {
        name: "roi".into(),
        dims: vec![0, 4],
        data_type: 1,
        ..Default::default()
    });
    let e = refuse(d, &m);
    assert!(e.contains("tensor roi: is empty (shape [0, 4])"), "{e}");
    let mut m = ModelProto::decode(std::fs::read(&empty).unwrap().as_slice()).unwrap();
    let gr = m.graph.as_mut().unwrap();
    let sub = gr.node.iter_mut().find(|n| n.op_type == "Sub").unwrap();
    sub.input[0] = "roi".into();
    let e = refuse(d, &m);
    assert!(e.contains("tensor roi: is empty (shape [0])"), "{e}");
}

/// `share-model` of `m`: refused; its message.
fn refuse(d: &Path, m: &ModelProto) -> String {
    let f = d.join("bad.onnx");
    std::fs::write(&f, m.encode_to_vec()).unwrap();
    let o = common::run(&[
        "share-model",
        "--model",
        f.to_str().unwrap(),
        "--out",
        d.join("bad").to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "accepted");
    e
}

/// Issue 71, item 4: `denoise --arith fixed` on a graph says how far its image is from
/// float as measured on this image (the float run beside it: the summary's
/// `float_difference`, the largest distance before rounding), and prints the worst case over
/// all images of the range only where it is narrower than the grey scale; a wider one is
/// said to bound nothing. The figure is checked against the oracle and the float run.
#[test]
fn denoise_in_fixed_point_prints_the_distance_to_float_it_measured() {
    use ppdenoise::ring::cnn::CnnFixed;
    use ppdenoise::ring::graph::{denoise as oracle, GraphPlan};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = upsampling_graph(d, "g.onnx", "", false);
    let g = graph(&model);
    let img = "builtin:phantom:30";
    let noisy = ppdenoise::image::load_input(img).unwrap().pixels;
    let pre = g.preprocess(25.0, true);
    let out = d.join("f.png");
    let j = common::summary(&denoise(&model, img, "fixed", &out), "denoise fixed");
    // What `denoise` takes without --cnn-*: the file's settings, else the defaults.
    let params = match g.fixed_point {
        Some([s, ws, k]) => CnnFixed { s, ws, k },
        None => CnnFixed::default(),
    };
    let plan = GraphPlan::from_graph(&g, params).unwrap();
    let (fixed, oor) = oracle(&plan, &noisy, &[], &pre);
    assert_eq!(oor, 0);
    let float = g.denoise_float(&noisy, &pre, &[]).unwrap();
    let gap = fixed
        .iter()
        .zip(&float)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let said = j["float_difference"]
        .as_f64()
        .expect("the measured distance");
    assert!(
        (said - gap).abs() < 1e-9,
        "{said} said, {gap} measured here"
    );
    assert!(gap > 0.0 && gap < 8.0, "{gap}");
    let bound = j["float_bound"].as_f64().unwrap();
    // The text: the measured figure, and the bound as what it is.
    let o = std::process::Command::new(common::bin())
        .args([
            "denoise",
            "--model",
            model.to_str().unwrap(),
            "--image",
            img,
        ])
        .args([
            "--sigma",
            "25",
            "--arith",
            "fixed",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("grey levels of float"))
        .unwrap_or_else(|| panic!("no distance to float: {text}"));
    assert!(
        line.starts_with(&format!(
            "fixed point within {said:.4} grey levels of float on this image (measured)"
        )),
        "{line}"
    );
    if bound <= 255.0 {
        assert!(
            line.contains(&format!("at most {bound:.4} on any image of this range")),
            "{line}"
        );
    } else {
        assert!(line.contains("too loose to bound"), "{line}");
        assert!(!line.contains(&format!("within {bound:.4}")), "{line}");
    }
    // With too few bits kept, values leave the range: no bound, the measured figure still.
    let o = std::process::Command::new(common::bin())
        .args([
            "denoise",
            "--model",
            model.to_str().unwrap(),
            "--image",
            img,
        ])
        .args(["--sigma", "25", "--arith", "fixed", "--cnn-act-bits", "8"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("no bound on the distance to float: values left the fixed-point range (")
            && text.contains("grey levels on this image, measured)"),
        "{text}"
    );
}
