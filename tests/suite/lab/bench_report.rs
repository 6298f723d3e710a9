//! What `bench` reports (docs/benchmarks.md) is what the run did: for a CNN graph, figures
//! per op kind that add up to the link's bytes and the plan's multiply-adds; for a colour
//! model, an RGB image end to end; and the dealer's bytes as written, not what is left once
//! the servers have cut their spent triplet files to headers.

use std::path::Path;

use common::graph_job::fixture_in;
use common::ok;
use ppdenoise::image::{load_picture, Picture};
use ppdenoise::model::cnn::{random_framed_cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use serde_json::Value;

use crate::common;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A gmw run of `model` on the 24x24 phantom, localhost: the report's run.
fn bench(model: &Path, dir: &Path) -> Value {
    let out = dir.join("bench.json");
    ok(&[
        "bench",
        "--skip-paper",
        "--skip-mid",
        "--no-relay",
        "--engine",
        "gmw",
        "--model",
        &s(model),
        "--image",
        "builtin:phantom:24",
        "--workdir",
        &s(dir),
        "--out",
        &s(&out),
        "--quiet",
    ]);
    let j: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    j["engines"]["gmw"]["image"]["localhost"]["run"].clone()
}

/// Each AND gate's triple leaves at least one explicit bit in party 1's file.
fn dealer_bytes_are_the_files_as_written(r: &Value) {
    let dealer = u(&r["bytes"]["dealer_output"]);
    let and_gates = u(&r["servers"][0]["engine"]["and_gates"]);
    assert!(and_gates > 0);
    assert!(
        dealer > and_gates / 8,
        "dealer {dealer} B for {and_gates} AND gates"
    );
}

#[test]
fn a_graph_bench_counts_every_op_and_every_byte() {
    if !common::have_graph_fixtures() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let r = bench(
        &fixture_in("graph-fixtures", "graph-fixtures", "unet"),
        d.path(),
    );
    assert_eq!(r["network"], "graph", "{r}");
    for rep in r["servers"].as_array().unwrap() {
        let ops = rep["ops"].as_array().expect("per-op figures");
        let sum = |k: &str| ops.iter().map(|f| u(&f[k])).sum::<u64>();
        // All but the session tag, exchanged twice (at most 127 B each with its framing: 210
        // B in all here since its wire revision), is counted under an op.
        let tag = u(&rep["link"]["bytes_sent"]) - sum("bytes_sent");
        assert!(
            (1..256).contains(&tag),
            "{tag} bytes outside any op: {ops:?}"
        );
        assert_eq!(sum("bytes_received"), sum("bytes_sent"), "both send alike");
        assert_eq!(sum("engine_rounds"), u(&rep["engine"]["rounds"]));
        let op = |name: &str| {
            ops.iter()
                .find(|f| f["op"] == name)
                .unwrap_or_else(|| panic!("no {name} in {ops:?}"))
        };
        assert!(u(&op("OpenWeights")["bytes_sent"]) > 0);
        assert!(u(&op("Conv")["macs"]) > 0 && u(&op("Conv")["bytes_sent"]) > 0);
        for cmp in ["Relu", "MaxPool"] {
            assert!(u(&op(cmp)["comparisons"]) > 0 && u(&op(cmp)["and_gates"]) > 0);
        }
        assert_eq!(u(&op("Concat")["bytes_sent"]), 0, "a join is local");
    }
    dealer_bytes_are_the_files_as_written(&r);
}

#[test]
fn a_colour_bench_runs_an_rgb_image_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("colour.npz");
    let meta = CnnMeta {
        sigma: 25.0,
        residual: false,
    };
    random_framed_cnn(&[13, 8, 12], 3, 7, meta, Frame::FFDNET)
        .save(&model)
        .unwrap();
    let r = bench(&model, d.path());
    assert_eq!(r["network"], "cnn", "{r}");
    for name in ["noisy.png", "denoised.png"] {
        let p = d.path().join("gmw/image-localhost").join(name);
        match load_picture(&p).unwrap() {
            Picture::Colour(c) => assert_eq!((c.height(), c.width()), (24, 24)),
            Picture::Gray(_) => panic!("{}: gray", p.display()),
        }
    }
    // Two 3x3 convolutions on the 12x12 sub-images: 13*9*8 + 8*9*12 per position.
    assert_eq!(u(&r["servers"][0]["macs"]), (13 * 9 * 8 + 8 * 9 * 12) * 144);
    every_byte_and_round_is_in_an_op(&r);
    dealer_bytes_are_the_files_as_written(&r);
}

/// A chain CNN's job (a graph's) figures per op kind add up to the job's: every byte but the
/// session tag's, every engine round, AND gate and multiply-add is in one of its ops; the
/// weights' opening, the convolutions and the ReLUs each have theirs.
fn every_byte_and_round_is_in_an_op(r: &Value) {
    for rep in r["servers"].as_array().unwrap() {
        let ops = rep["ops"].as_array().expect("per-op figures");
        let sum = |k: &str| ops.iter().map(|f| u(&f[k])).sum::<u64>();
        for op in ["OpenWeights", "Conv", "Relu"] {
            let f = ops.iter().find(|f| f["op"] == op);
            assert!(f.is_some_and(|f| u(&f["bytes_sent"]) > 0), "{op}: {ops:?}");
        }
        let tag = u(&rep["link"]["bytes_sent"]) - sum("bytes_sent");
        assert!(
            (1..256).contains(&tag),
            "{tag} bytes outside any op: {ops:?}"
        );
        assert_eq!(sum("bytes_received"), sum("bytes_sent"), "both send alike");
        assert_eq!(sum("engine_rounds"), u(&rep["engine"]["rounds"]));
        assert_eq!(sum("and_gates"), u(&rep["engine"]["and_gates"]));
        assert_eq!(sum("macs"), u(&rep["macs"]));
    }
}
