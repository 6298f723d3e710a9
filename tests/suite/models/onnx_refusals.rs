//! Issue 29, item 2: every graph ppdenoise cannot run as written is refused before anything
//! is shared, by node, op and attribute. Each case mutates a fixture exported by PyTorch
//! (fixtures/onnx/) through the importer's own protobuf messages and runs `share-model`.

use crate::common;

use std::path::Path;

use ppdenoise::import::onnx::proto::{
    attr_type, AttributeProto, Dimension, ModelProto, NodeProto, StringStringEntryProto,
    TensorProto, ValueInfoProto,
};
use prost::Message;

fn load(name: &str) -> ModelProto {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/onnx")
        .join(name);
    ModelProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap()
}

/// `share-model` on `bytes` written as bad.onnx: it must fail, write nothing, and name the
/// file; returns its message.
fn refused_bytes(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.onnx");
    std::fs::write(&f, bytes).unwrap();
    let out = dir.path().join("m");
    let o = common::run(&[
        "share-model",
        "--model",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "accepted: {err}");
    assert!(err.contains("bad.onnx"), "the file is not named: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{err}");
    err
}

fn refused(m: &ModelProto) -> String {
    refused_bytes(&m.encode_to_vec())
}

fn node<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    let g = m.graph.as_mut().unwrap();
    g.node.iter_mut().find(|n| n.name == name).unwrap()
}

fn set_ints(n: &mut NodeProto, name: &str, v: &[i64]) {
    n.attribute.retain(|a| a.name != name);
    n.attribute.push(AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    });
}

fn set_int(n: &mut NodeProto, name: &str, v: i64) {
    n.attribute.retain(|a| a.name != name);
    n.attribute.push(AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i: v,
        ..Default::default()
    });
}

/// A file the CNN-graph walk reads (docs/graph.md): `share-model` shares it as a graph
/// (issue 47, milestone 5), where it used to refuse it.
fn shared_as_graph(m: &ModelProto) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("graph.onnx");
    std::fs::write(&f, m.encode_to_vec()).unwrap();
    let out = dir.path().join("m");
    let j = common::ok(&[
        "share-model",
        "--model",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(j["network"], "graph", "{j}");
}

/// The message names the node and its op, and says `what`.
fn says(err: &str, node: &str, op: &str, what: &[&str]) {
    assert!(err.contains(&format!("node {node} ({op})")), "{err}");
    for w in what {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
}

const CONV: &str = "/net/net.2/Conv";

#[test]
fn conv_attributes_other_than_same_size_are_refused() {
    // A stride, a dilation or a padding other than same makes the CNN-graph walk read the
    // network (issue 47), where the residual then subtracts maps of two sizes.
    for (attr, v, size) in [
        ("strides", vec![2, 2], "H/2 x W/2"),
        ("dilations", vec![2, 2], "H-2 x W-2"),
        ("pads", vec![0, 0, 0, 0], "H-2 x W-2"),
    ] {
        let mut m = load("tiny-dncnn.onnx");
        set_ints(node(&mut m, CONV), attr, &v);
        says(
            &refused(&m),
            "/Sub",
            "Sub",
            &[size, "the sizes must agree; cropping is not supported"],
        );
    }
    // Shifted padding keeps the size: a CNN graph, which share-model now shares as one.
    let mut m = load("tiny-dncnn.onnx");
    set_ints(node(&mut m, CONV), "pads", &[2, 2, 0, 0]);
    shared_as_graph(&m);
    let mut m = load("tiny-dncnn.onnx");
    set_int(node(&mut m, CONV), "group", 2);
    says(&refused(&m), CONV, "Conv", &["attribute group = 2: only 1"]);
    let mut m = load("tiny-dncnn.onnx");
    let n = node(&mut m, CONV);
    n.attribute.retain(|a| a.name != "pads");
    n.attribute.push(AttributeProto {
        name: "auto_pad".into(),
        r#type: attr_type::STRING,
        s: b"VALID".to_vec(),
        ..Default::default()
    });
    says(&refused(&m), "/Sub", "Sub", &["the sizes must agree"]);
    // An attribute the op does not have in the versions read.
    let mut m = load("tiny-dncnn.onnx");
    set_int(node(&mut m, CONV), "channels_last", 1);
    says(
        &refused(&m),
        CONV,
        "Conv",
        &["attribute channels_last is not supported on Conv (supported: "],
    );
}

#[test]
fn ops_outside_the_families_are_refused_naming_what_is_supported() {
    // LeakyRelu makes a CNN graph (issue 47); an op neither walk reads is refused naming
    // what the graph walk reads.
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.4/Relu").op_type = "LeakyRelu".into();
    shared_as_graph(&m);
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.4/Relu").op_type = "Gelu".into();
    says(
        &refused(&m),
        "/net/net.4/Relu",
        "Gelu",
        &[
            "op Gelu has no circuit inside a CNN graph",
            "CNN graphs read Conv, ConvTranspose, BatchNormalization",
        ],
    );
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.4/Relu").domain = "com.microsoft".into();
    says(
        &refused(&m),
        "/net/net.4/Relu",
        "Relu",
        &["domain \"com.microsoft\""],
    );
    // An MLP mixing Relu and Tanh, and Tanh in a CNN.
    let mut m = load("tiny-mlp.onnx");
    node(&mut m, "/1/Tanh").op_type = "Relu".into();
    says(
        &refused(&m),
        "/3/Tanh",
        "Tanh",
        &["mixes activations (one kind for the whole network)"],
    );
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.1/Relu").op_type = "Tanh".into();
    says(
        &refused(&m),
        "/net/net.1/Relu",
        "Tanh",
        &["Tanh in a convolutional network"],
    );
    // The residual the other way round, net - image, is a CNN graph.
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/Sub").input.swap(0, 1);
    shared_as_graph(&m);
}

#[test]
fn batch_norm_in_training_mode_or_away_from_a_conv_is_refused() {
    let mut m = load("tiny-dncnn.onnx");
    set_int(
        node(&mut m, "/net/net.3/BatchNormalization"),
        "training_mode",
        1,
    );
    says(
        &refused(&m),
        "/net/net.3/BatchNormalization",
        "BatchNormalization",
        &["training_mode = 1"],
    );
    // After the ReLU instead of before it: conv -> ReLU -> BN.
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    let i = g
        .node
        .iter()
        .position(|n| n.op_type == "BatchNormalization")
        .unwrap();
    let (mut bn, mut relu) = (g.node[i].clone(), g.node[i + 1].clone());
    relu.input[0] = bn.input[0].clone();
    relu.output[0] = "r".into();
    bn.input[0] = "r".into();
    bn.output[0] = g.node[i + 1].output[0].clone();
    let a = bn.clone();
    g.node[i] = relu;
    g.node[i + 1] = bn;
    // A CNN graph: the batch norm is a per-channel affine node there.
    let _ = a;
    shared_as_graph(&m);
}

#[test]
fn dynamic_sizes_where_a_fixed_one_is_needed_are_refused() {
    let mut m = load("tiny-ffdnet.onnx");
    let x = &mut m.graph.as_mut().unwrap().input[0];
    let dims = &mut x.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
    dims.shape.as_mut().unwrap().dim[2] = Dimension {
        dim_value: None,
        dim_param: Some("height".into()),
    };
    says(
        &refused(&m),
        "/down/Reshape",
        "Reshape",
        &["dynamic size at axis 2", "export with a fixed example size"],
    );
    // A DnCNN needs none: its dynamic sizes are fine.
    let mut m = load("tiny-dncnn.onnx");
    let x = &mut m.graph.as_mut().unwrap().input[0];
    let t = x.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
    for d in &mut t.shape.as_mut().unwrap().dim[2..] {
        *d = Dimension {
            dim_value: None,
            dim_param: Some("size".into()),
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dyn.onnx");
    std::fs::write(&f, m.encode_to_vec()).unwrap();
    let j = common::ok(&["inspect", f.to_str().unwrap()]);
    assert_eq!(j["kind"], "cnn model");
}

#[test]
fn inputs_other_than_the_image_are_refused() {
    // An extra input the network ignores, and one it adds to a layer.
    let mut m = load("tiny-dncnn.onnx");
    let x = m.graph.as_ref().unwrap().input[0].clone();
    m.graph.as_mut().unwrap().input.push(ValueInfoProto {
        name: "gain".into(),
        ..x.clone()
    });
    let err = refused(&m);
    assert!(
        err.contains("graph input \"gain\" is not used as a noise level"),
        "{err}"
    );
    let mut m = load("tiny-mlp.onnx");
    let x = m.graph.as_ref().unwrap().input[0].clone();
    let g = m.graph.as_mut().unwrap();
    g.input.push(ValueInfoProto {
        name: "shift".into(),
        ..x
    });
    let gemm = g.node.iter().position(|n| n.name == "/0/Gemm").unwrap();
    let out = g.node[gemm].output[0].clone();
    g.node[gemm].output[0] = "pre".into();
    g.node.insert(
        gemm + 1,
        NodeProto {
            name: "add_shift".into(),
            op_type: "Add".into(),
            input: vec!["pre".into(), "shift".into()],
            output: vec![out],
            ..Default::default()
        },
    );
    says(
        &refused(&m),
        "add_shift",
        "Add",
        &["adds something other than a constant bias"],
    );
    // Three inputs.
    let mut m = load("tiny-ffdnet.onnx");
    let x = m.graph.as_ref().unwrap().input[0].clone();
    m.graph.as_mut().unwrap().input.push(ValueInfoProto {
        name: "z".into(),
        ..x
    });
    assert!(refused(&m).contains("the graph has 3 inputs (x, sigma, z)"));
}

#[test]
fn hostile_structure_is_refused_without_large_allocations() {
    // External data.
    let mut m = load("tiny-dncnn.onnx");
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    let name = t.name.clone();
    t.raw_data.clear();
    t.data_location = 1;
    t.external_data.push(StringStringEntryProto {
        key: "location".into(),
        value: "/etc/passwd".into(),
    });
    let err = refused(&m);
    assert!(
        err.contains(&format!(
            "tensor {name}: its data is stored outside the file"
        )),
        "{err}"
    );
    // A huge declared tensor with no data behind it.
    let mut m = load("tiny-dncnn.onnx");
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: "huge".into(),
        dims: vec![1 << 20, 1 << 20, 1 << 20],
        data_type: 1,
        ..Default::default()
    });
    let err = refused(&m);
    assert!(err.contains("tensor huge: declares shape"), "{err}");
    // A cycle: the nodes in reverse order.
    let mut m = load("tiny-dncnn.onnx");
    m.graph.as_mut().unwrap().node.reverse();
    let err = refused(&m);
    assert!(err.contains("is not defined before this node"), "{err}");
    // A deep graph: 20,000 Identity nodes.
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    for i in 0..20_000 {
        g.node.push(NodeProto {
            op_type: "Identity".into(),
            input: vec![format!("i{i}")],
            output: vec![format!("i{}", i + 1)],
            ..Default::default()
        });
    }
    assert!(refused(&m).contains("20010 nodes (at most 10000)"));
    // A million empty nodes: 2 bytes each on the wire, hundreds decoded.
    let mut bytes = load("tiny-dncnn.onnx").encode_to_vec();
    let mut graph = Vec::new();
    for _ in 0..1_000_000 {
        graph.extend_from_slice(&[0x0a, 0x00]);
    }
    // Field 7 (graph) of the model, length-delimited, merged into the existing graph.
    bytes.push(0x3a);
    prost::encoding::encode_varint(graph.len() as u64, &mut bytes);
    bytes.extend_from_slice(&graph);
    let err = refused_bytes(&bytes);
    assert!(err.contains("its structure would take"), "{err}");
    // Not protobuf at all, and an old op set.
    assert!(refused_bytes(b"\x0b\x0c").contains("malformed protobuf"));
    let mut m = load("tiny-dncnn.onnx");
    m.opset_import[0].version = 7;
    assert!(refused(&m).contains("opset 7 of the standard domain (9 to"));
}

#[test]
fn branches_and_dangling_outputs_are_refused() {
    // The last conv's output used twice (as the output and again by an extra node).
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    let last_conv = g
        .node
        .iter()
        .rev()
        .find(|n| n.op_type == "Conv")
        .unwrap()
        .output[0]
        .clone();
    let sub = g.node.len() - 1;
    g.node.insert(
        sub,
        NodeProto {
            name: "tap".into(),
            op_type: "Relu".into(),
            input: vec![last_conv],
            output: vec!["tapped".into()],
            ..Default::default()
        },
    );
    says(
        &refused(&m),
        "tap",
        "Relu",
        &["its output is read by nothing (a dangling branch)"],
    );
    // An activation after the last layer.
    let mut m = load("tiny-mlp.onnx");
    let g = m.graph.as_mut().unwrap();
    let out = g.output[0].name.clone();
    g.node.last_mut().unwrap().output[0] = "z".into();
    g.node.push(NodeProto {
        name: "final".into(),
        op_type: "Tanh".into(),
        input: vec!["z".into()],
        output: vec![out],
        ..Default::default()
    });
    assert!(refused(&m).contains("ends with an activation"));
}

/// The tiny DnCNN's state dict with `edit` applied to its tensors (name -> shape, f32
/// values) and `meta` as its metadata; `share-model`'s refusal.
fn refused_state_dict(
    edit: impl Fn(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)>),
    meta: &[(&str, &str)],
) -> String {
    use safetensors::tensor::{Dtype, TensorView};
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/tiny-dncnn.safetensors");
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32)
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, TensorView)> = t
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let md = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = safetensors::serialize(views, Some(md)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.safetensors");
    std::fs::write(&f, out).unwrap();
    let o = common::run(&[
        "share-model",
        "--model",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "accepted");
    assert!(
        err.contains("bad.safetensors") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{err}");
    err
}

#[test]
fn cnn_state_dicts_that_do_not_say_enough_are_refused() {
    let full = [("residual", "true"), ("bn_eps", "0.0001")];
    // What a state dict cannot say must be in the metadata.
    let e = refused_state_dict(|_| {}, &[("bn_eps", "0.0001")]);
    assert!(e.contains("metadata residual: is missing"), "{e}");
    let e = refused_state_dict(|_| {}, &[("residual", "true")]);
    assert!(e.contains("metadata bn_eps: is missing"), "{e}");
    let e = refused_state_dict(
        |_| {},
        &[("residual", "true"), ("bn_eps", "1e-4"), ("act", "x")],
    );
    assert!(e.contains("metadata act: is not a setting"), "{e}");
    // Two convolutions with no ReLU between them (indices 0 and 1).
    let e = refused_state_dict(
        |t| {
            for k in ["weight", "bias"] {
                let v = t.remove(&format!("0.{k}")).unwrap();
                t.insert(format!("1.{k}"), v);
            }
        },
        &full,
    );
    assert!(
        e.contains("tensor 1.weight: is module 1 where 0 was expected"),
        "{e}"
    );
    // A gap of two modules: something without tensors besides the ReLU (a pooling?).
    let e = refused_state_dict(
        |t| {
            let v = t.remove("8.weight").unwrap();
            t.insert("9.weight".into(), v);
            let v = t.remove("8.bias").unwrap();
            t.insert("9.bias".into(), v);
        },
        &full,
    );
    assert!(
        e.contains("tensor 9.weight: is module 9 where 8 was expected"),
        "{e}"
    );
    // A batch norm with no convolution right before it.
    let e = refused_state_dict(
        |t| {
            for k in ["weight", "bias", "running_mean", "running_var"] {
                let v = t.remove(&format!("3.{k}")).unwrap();
                t.insert(format!("4.{k}"), v);
            }
        },
        &full,
    );
    assert!(e.contains("does not directly follow a convolution"), "{e}");
    // An even kernel.
    let e = refused_state_dict(
        |t| {
            let (_, d) = t.get("0.weight").unwrap().clone();
            t.insert("0.weight".into(), (vec![2, 1, 2, 2], d[..32].to_vec()));
        },
        &full,
    );
    assert!(
        e.contains("tensor 0.weight: has a 2x2 kernel (square, odd"),
        "{e}"
    );
}

/// `nodes` (and `inits`) put in front of the tiny DnCNN's own: refused, with `want`.
fn refused_with(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, want: &str) {
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node.splice(0..0, nodes);
    g.initializer.extend(inits);
    let err = refused(&m);
    assert!(err.contains(want), "{want:?} missing from: {err}");
}

fn op(name: &str, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![format!("{name}_out")],
        attribute: attrs,
        ..Default::default()
    }
}

fn ints_const(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        int64_data: {
            let mut b = Vec::new();
            for &x in v {
                prost::encoding::encode_varint(x as u64, &mut b);
            }
            b
        },
        ..Default::default()
    }
}

#[test]
fn crafted_nodes_are_refused_without_crashing_or_spinning() {
    refused_with(
        vec![op("c", "Concat", &[], vec![])],
        vec![],
        "node c (Concat): has no inputs",
    );
    // A fill value with no values; an empty tensor beside a huge dimension.
    let empty = TensorProto {
        dims: vec![0],
        data_type: 1,
        ..Default::default()
    };
    let fill = AttributeProto {
        name: "value".into(),
        r#type: attr_type::TENSOR,
        t: Some(empty),
        ..Default::default()
    };
    refused_with(
        vec![op("k", "ConstantOfShape", &["shape"], vec![fill])],
        vec![ints_const("shape", &[4])],
        "node k (ConstantOfShape): is empty",
    );
    let z = TensorProto {
        name: "z".into(),
        dims: vec![1 << 62, 0],
        data_type: 1,
        ..Default::default()
    };
    refused_with(
        vec![op("c", "Concat", &["z", "z"], vec![])],
        vec![z],
        "tensor z: is empty",
    );
    // A million values copied by every Identity: stopped by the walk's budget.
    let mut nodes = vec![op("big", "ConstantOfShape", &["shape"], vec![])];
    for i in 0..100 {
        nodes.push(op(&format!("id{i}"), "Identity", &["big_out"], vec![]));
    }
    refused_with(
        nodes,
        vec![ints_const("shape", &[1 << 20])],
        "values copied or computed",
    );
    // Rank beyond 8.
    refused_with(
        vec![op("k", "ConstantOfShape", &["shape"], vec![])],
        vec![ints_const("shape", &[1; 9])],
        "node k (ConstantOfShape): shape [1, 1, 1, 1, 1, 1, 1, 1, 1]",
    );
    // An attribute given twice; more inputs than the op takes.
    let mut m = load("tiny-dncnn.onnx");
    let n = node(&mut m, CONV);
    let dup = n
        .attribute
        .iter()
        .find(|a| a.name == "pads")
        .unwrap()
        .clone();
    n.attribute.push(dup);
    says(
        &refused(&m),
        CONV,
        "Conv",
        &["attribute pads is given twice"],
    );
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.1/Relu").input.push("x".into());
    says(
        &refused(&m),
        "/net/net.1/Relu",
        "Relu",
        &["has 2 inputs (Relu takes at most 1)"],
    );
}

#[test]
fn second_review_cases_are_refused_too() {
    // Concat of a 1024 x 1024 image 4096 times: each copy is charged before it is made.
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    let t = g.input[0]
        .r#type
        .as_mut()
        .unwrap()
        .tensor_type
        .as_mut()
        .unwrap();
    for d in &mut t.shape.as_mut().unwrap().dim[2..] {
        d.dim_value = Some(1024);
    }
    let axis = AttributeProto {
        name: "axis".into(),
        r#type: attr_type::INT,
        i: 1,
        ..Default::default()
    };
    g.node
        .insert(0, op("c", "Concat", &vec!["x"; 4096], vec![axis]));
    let err = refused(&m);
    assert!(
        err.contains("node c (Concat): the graph's constants and rearrangements come to more"),
        "{err}"
    );
    // An empty shape (Shape of a scalar), then expanded beside a huge size.
    let scalar = AttributeProto {
        name: "value_float".into(),
        r#type: attr_type::FLOAT,
        f: 0.0,
        ..Default::default()
    };
    refused_with(
        vec![
            op("c", "Constant", &[], vec![scalar]),
            op("s", "Shape", &["c_out"], vec![]),
        ],
        vec![],
        "node s (Shape): gives an empty shape",
    );
    // Integers are shapes: a long packed list is refused before it is decoded.
    let mut long = ints_const("long", &[0; 8]);
    long.dims = vec![1 << 23];
    long.int64_data = vec![0; 1 << 23];
    refused_with(
        vec![],
        vec![long],
        "tensor long: is an integer tensor of 8388608 values (at most 1048576",
    );
    // Axes both as an attribute and as an input.
    let axes = AttributeProto {
        name: "axes".into(),
        r#type: attr_type::INTS,
        ints: vec![0],
        ..Default::default()
    };
    refused_with(
        vec![op("u", "Unsqueeze", &["a", "a"], vec![axes])],
        vec![ints_const("a", &[0])],
        "node u (Unsqueeze): has axes both as an attribute and as an input",
    );
}

/// Issue 73, item 5: the graph walk's cap on constant values copied (each read of a constant
/// copies it). One initializer of 2^20 values read by 130 nodes (a `Dropout`'s
/// `training_mode`, all zeros: each read is taken, then dropped) comes to more than the cap
/// of 2^27 at the 128th; the chain walk has stopped before (its own work cap, at the 32nd),
/// so the refusal is the graph walk's, naming its cap.
#[test]
fn one_constant_read_by_many_nodes_is_refused_at_the_graph_walks_copy_cap() {
    let n = 1usize << 20;
    let big = TensorProto {
        name: "off".into(),
        dims: vec![n as i64],
        data_type: 1,
        raw_data: vec![0; 4 * n],
        ..Default::default()
    };
    let mut nodes = Vec::new();
    let mut x = "x".to_string();
    for i in 0..130 {
        let d = op(&format!("d{i}"), "Dropout", &[&x, "", "off"], vec![]);
        x = d.output[0].clone();
        nodes.push(d);
    }
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = x;
    g.node.splice(0..0, nodes);
    g.initializer.push(big);
    let err = refused(&m);
    says(
        &err,
        "d127",
        "Dropout",
        &["the graph's constants come to more than 134217728 values copied"],
    );
}

/// Issue 73, item 6: a CNN graph's kernels are 1 to 8 a side, checked where the file gives
/// the size (a pooling's `kernel_shape`, a convolution's weights), before any padding or
/// shape is computed from it; the message says which (the graph's own check, which stands
/// for descriptions read elsewhere, says neither).
#[test]
fn a_graph_kernel_past_the_bound_is_refused_where_the_file_gives_it() {
    let kernel = |v: &[i64]| AttributeProto {
        name: "kernel_shape".into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    };
    // A pooling before the chain (which neither walk reads as a chain).
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = "p_out".into();
    g.node
        .insert(0, op("p", "MaxPool", &["x"], vec![kernel(&[9, 9])]));
    says(
        &refused(&m),
        "p",
        "MaxPool",
        &["attribute kernel_shape gives a 9x9 kernel (a CNN graph's are 1 to 8 a side)"],
    );
    // Eight a side is taken.
    let mut m = load("tiny-dncnn.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = "p_out".into();
    let mut pool = op("p", "MaxPool", &["x"], vec![kernel(&[8, 8])]);
    set_ints(&mut pool, "strides", &[8, 8]);
    g.node.insert(0, pool);
    g.node.insert(
        1,
        op(
            "u",
            "Resize",
            &["p_out", "", "up"],
            vec![AttributeProto {
                name: "mode".into(),
                r#type: attr_type::STRING,
                s: b"nearest".to_vec(),
                ..Default::default()
            }],
        ),
    );
    g.node[2].input[0] = "u_out".into();
    g.initializer.push(TensorProto {
        name: "up".into(),
        dims: vec![4],
        data_type: 1,
        float_data: vec![1.0, 1.0, 8.0, 8.0],
        ..Default::default()
    });
    shared_as_graph(&m);
    // A convolution's weights of 9 x 9, in a graph (a LeakyReLU before it).
    let mut m = load("tiny-dncnn.onnx");
    node(&mut m, "/net/net.1/Relu").op_type = "LeakyRelu".into();
    let conv = node(&mut m, CONV);
    set_ints(conv, "kernel_shape", &[9, 9]);
    set_ints(conv, "pads", &[4, 4, 4, 4]);
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.2.weight")
        .unwrap();
    w.dims = vec![8, 8, 9, 9];
    w.raw_data = vec![0; 4 * 8 * 8 * 81];
    w.float_data.clear();
    says(
        &refused(&m),
        CONV,
        "Conv",
        &["W's shape gives a 9x9 kernel (a CNN graph's are 1 to 8 a side)"],
    );
}
