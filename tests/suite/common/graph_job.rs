//! A secure job through the real binary (a folder with the servers' keys, serve spawned for
//! both parties), shared by tests/suite/images/colour_dicom.rs, tests/suite/secure/graph_pipeline.rs (the fixtures
//! of `make graph-fixtures`) and tests/suite/models/torch_graphs.rs (those `torch.onnx.export` wrote):
//! key, share, deal, serve both parties as processes over the TLS link, reconstruct; and the
//! graph oracle recomputed here from the ONNX file and the image shares.

use ppdenoise::ring::Party;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{bin, ok, run, start_pair, wait_limit};
use ppdenoise::formats::bodies::{load, ImageShare, OutputShare};
use ppdenoise::formats::container::{Header, Kind};
use ppdenoise::import::onnx::Net;
use ppdenoise::model::graph::Graph;
use ppdenoise::ring::cnn::CnnFixed;
use ppdenoise::ring::graph::GraphPlan;
use ppdenoise::ring::share::Stream;

/// Fixture `name` of `out/<folder>`, which `make <target>` writes.
pub fn fixture_in(folder: &str, target: &str, name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("out")
        .join(folder)
        .join(format!("{name}.onnx"));
    assert!(p.exists(), "{}: missing; run `make {target}`", p.display());
    p
}

pub fn graph(onnx: &Path) -> Graph {
    match ppdenoise::import::onnx::load(onnx).unwrap() {
        Net::Graph(g) => g,
        other => panic!("{} read as {other:?}", onnx.display()),
    }
}

/// `denoise --arith fixed` of `image` with the graph `onnx` into `out` (the oracle's image).
pub fn fixed_point(onnx: &Path, image: &str, out: &str) {
    let m = onnx.display().to_string();
    let args = ["denoise", "--model", &m, "--image", image, "--sigma", "25"];
    let mut args = args.to_vec();
    args.extend(["--arith", "fixed", "--out", out]);
    ok(&args);
}

pub fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected a refusal mentioning {needle:?}"
    );
    assert!(err.contains(needle), "error lacks {needle:?}: {err}");
}

pub struct Dir {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for n in ["s0", "s1"] {
            ok(&[
                "keygen",
                "--name",
                n,
                "--out-dir",
                &dir.join("keys").display().to_string(),
            ]);
        }
        Dir { _tmp: tmp, dir }
    }

    pub fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `share-model` of `onnx` into model.pub, model.p0 and model.p1: its summary.
    pub fn share_model(&self, onnx: &Path) -> serde_json::Value {
        let m = onnx.display().to_string();
        ok(&["share-model", "--model", &m, "--out", &self.p("model")])
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A noisy phantom of `side` pixels (odd sizes pad to the graph's stride).
    pub fn noisy(&self, side: usize) {
        ok(&[
            "add-noise",
            "--image",
            &format!("builtin:phantom:{side}"),
            "--sigma",
            "25",
            "--seed",
            "3",
            "--out",
            &self.p("noisy.png"),
        ]);
    }

    pub fn share_image(&self, model_pub: &str, out: &str) -> Output {
        let (img, o, m) = (self.p("noisy.png"), self.p(out), self.p(model_pub));
        run(&[
            "share-image",
            "--image",
            &img,
            "--sigma",
            "25",
            "--out",
            &o,
            "--model",
            &m,
        ])
    }

    pub fn gen_triplets(
        &self,
        model_pub: &str,
        image_pub: &str,
        out: &str,
        extra: &[&str],
    ) -> Output {
        let (m, i, o) = (self.p(model_pub), self.p(image_pub), self.p(out));
        let mut args = vec!["gen-triplets", "--model", &m, "--image", &i, "--out", &o];
        args.extend(extra);
        run(&args)
    }

    /// `serve` of party `p` on `model`, `image` and `triplets` (`.p<p>` each).
    pub fn spawn(
        &self,
        p: u8,
        addr: &[String],
        (model, image, triplets): (&str, &str, &str),
    ) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&format!("{model}.p{p}"))])
            .args(["--image", &self.p(&format!("{image}.p{p}"))])
            .args(["--triplets", &self.p(&format!("{triplets}.p{p}"))])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "30"])
            .args(["--state-dir", &self.p("state")])
            .args(["--out", &self.p(&format!("out.p{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }

    /// `gen-triplets --party` of both servers as processes, each dealing its half of the job
    /// model.pub / image.pub with the other over their link, no dealer, into `<out>.p<N>`;
    /// party `p`'s extra arguments `extra(p)`. Their outputs.
    pub fn deal_together(&self, out: &str, extra: impl Fn(u8) -> Vec<String>) -> [Output; 2] {
        let [c0, c1] = start_pair(&self.dir, |p, addr| {
            let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
            Command::new(bin())
                .args(["--json", "gen-triplets", "--party", &p.to_string()])
                .args([
                    "--model",
                    &self.p("model.pub"),
                    "--image",
                    &self.p("image.pub"),
                ])
                .args(["--out", &self.p(out)])
                .args(["--key", &self.p(&format!("keys/{me}.key"))])
                .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
                .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
                .args(["--timeout", "60"])
                .args(addr)
                .args(extra(p))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start gen-triplets --party")
        });
        [c0, c1].map(|c| wait_limit(c, Duration::from_secs(600)))
    }

    /// Both servers as processes; their outputs.
    pub fn serve(&self, files: (&str, &str, &str)) -> [Output; 2] {
        let [c0, c1] = start_pair(&self.dir, |p, addr| self.spawn(p, addr, files));
        [c0, c1].map(|c| wait_limit(c, Duration::from_secs(120)))
    }

    /// The job model.* / image.* dealt on `engine` (triplets `t<engine>`) and run by both
    /// servers, each of which must succeed (`what` names the case in a failure).
    pub fn deal_and_serve(&self, engine: &str, what: &str) {
        let t = format!("t{engine}");
        let o = self.gen_triplets("model.pub", "image.pub", &t, &["--engine", engine]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (o, who) in self.serve(("model", "image", &t)).iter().zip(["S0", "S1"]) {
            assert!(
                o.status.success(),
                "{what} {engine} {who}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// `reconstruct` of out.p0 and out.p1 into `png`.
    pub fn reconstruct(&self, png: &str) {
        let (s0, s1, to) = (self.p("out.p0"), self.p("out.p1"), self.p(png));
        let args = [
            "reconstruct",
            "--insecure-unsigned",
            "--share0",
            &s0,
            "--share1",
            &s1,
        ];
        let mut args = args.to_vec();
        args.extend(["--out", &to]);
        ok(&args);
    }

    pub fn sum_of<B: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        kind: Kind,
        values: impl Fn(&B) -> Vec<u64>,
    ) -> (B, Vec<u64>) {
        let (_, b0): (Header, B) =
            load(&self.path(&format!("{prefix}.p0")), kind, Some(Party::S0)).unwrap();
        let (_, b1): (Header, B) =
            load(&self.path(&format!("{prefix}.p1")), kind, Some(Party::S1)).unwrap();
        let sum = values(&b0)
            .iter()
            .zip(&values(&b1))
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        (b0, sum)
    }
}

/// The graph oracle on the image the shares hold: padded by replication to the stride, run,
/// cropped (computed here, not by the binary).
pub fn oracle(d: &Dir, g: &Graph) -> Vec<u64> {
    let (i0, enc) = d.sum_of("image", Kind::ImageShare, |b: &ImageShare| {
        let n = b.job.height * b.job.width;
        b.data.materialise(Stream::ImageShare, n).unwrap()
    });
    let (h, w) = (i0.job.height, i0.job.width);
    let params = CnnFixed::default();
    let plan = GraphPlan::from_graph(g, params).unwrap();
    let (ph, pw) = g.padded_size(h, w).unwrap();
    let padded: Vec<u64> = (0..ph)
        .flat_map(|y| (0..pw).map(move |x| (y.min(h - 1), x.min(w - 1))))
        .map(|(y, x)| enc[y * w + x])
        .collect();
    let r = ppdenoise::ring::graph::run(&plan, &padded, ph, pw);
    (0..h)
        .flat_map(|y| r.output.v[y * pw..y * pw + w].to_vec())
        .collect()
}

/// The graph `onnx` on both engines, through the binary: secure == oracle, bit for bit, and
/// the receiver's image is `denoise --arith fixed`'s.
pub fn bit_exact_through_the_binary(onnx: &Path) {
    let name = onnx.file_stem().unwrap().to_string_lossy();
    let g = graph(onnx);
    let d = Dir::new();
    let j = d.share_model(onnx);
    assert_eq!(j["network"], "graph", "{name}");
    // 30 x 27: padded to the stride by the servers (every fixture has a stride > 1
    // or none; either way the crop is exercised on one side at least).
    d.noisy(30);
    let o = d.share_image("model.pub", "image");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = oracle(&d, &g);
    for engine in ["gc", "gmw"] {
        d.deal_and_serve(engine, &name);
        let (o0, secure) = d.sum_of("out", Kind::OutputShare, |b: &OutputShare| b.canvas.clone());
        assert_eq!(
            o0.scale,
            GraphPlan::from_graph(&g, CnnFixed::default())
                .unwrap()
                .out_scale()
        );
        let differ = secure.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            (secure.len(), differ),
            (want.len(), 0),
            "{name} {engine}: pixels differing from the oracle"
        );
        d.reconstruct(&format!("{engine}.png"));
    }
    fixed_point(onnx, &d.p("noisy.png"), &d.p("fixed.png"));
    let fixed = ppdenoise::image::load(d.path("fixed.png")).unwrap();
    for engine in ["gc", "gmw"] {
        let secure = ppdenoise::image::load(d.path(&format!("{engine}.png"))).unwrap();
        assert_eq!(
            secure.pixels, fixed.pixels,
            "{name} {engine}: the receiver's image"
        );
    }
}
