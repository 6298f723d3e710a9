//! Fuzzing of the parsers of untrusted bytes (issue 12): every file kind a party reads from
//! another (container headers and bodies of every kind, the triplet stream, output shares,
//! public headers through the dealer, a server's job files through `server::prepare`, model
//! `.npz`, `.safetensors` and `.onnx` files, the gateway's PNG, TIFF and DICOM images, TLS
//! keys and certificates, age identities and recipients, state records, a `table --resume`
//! record), mutated from valid files.
//!
//! Valid files come from two real `demo` runs on tiny random models (an MLP with the
//! boolean engine, a CNN with the garbled-circuit engine). Each input is the valid file with
//! 1-8 random mutations (bit flips, interesting bytes and 32/64-bit values at length fields,
//! cuts, insertions, copied chunks), and for containers the BLAKE3 re-sealed most of the time
//! (the checksum is unkeyed, so an attacker does that too) and a signed file signed again by
//! its maker's key (which an attacker lacks: this carries mutations past the signature to
//! the parsers behind it). Each input goes through
//! the same calls a server, the dealer or the receiver makes; it must give `Ok` or an error,
//! never a panic, and never ask for more than [`ALLOC_LIMIT`] bytes at once (the test
//! binary's allocator refuses larger requests, which aborts the process; the input being
//! parsed is then left in `target/fuzz/<target>.<pid>.input`).
//!
//! The frames a peer sends are fuzzed too: tiny MLP jobs (tanh* and ReLU) and a tiny CNN job
//! run in process on each engine, and `open-weights` of an MLP and a CNN, one message of one
//! server altered on its way (bits flipped, or its length changed); both servers must end
//! with a result or an error, never a panic.
//!
//! `cargo test --release --test fuzz -- --ignored` (as `make test` runs it) tries 3000 inputs per target
//! (`PPDENOISE_FUZZ_INPUTS`) from a fixed seed, the same inputs on every machine;
//! `make fuzz-mutation` runs `PPDENOISE_FUZZ_SECS` seconds per target from a fresh seed (printed;
//! `PPDENOISE_FUZZ_SEED` reruns one; `PPDENOISE_FUZZ_ONLY` keeps the targets whose names
//! contain it, `PPDENOISE_FUZZ_SKIP` leaves out those whose names contain one of its
//! comma-separated parts) and keeps a corpus (`PPDENOISE_FUZZ_CORPUS`): inputs that met a new kind of
//! refusal, mutated again in later runs. Targets run `PPDENOISE_FUZZ_THREADS` at once (the
//! machine's cores by default), each from its own random stream. Every crash is saved in
//! `target/fuzz/` and fails the test; the inputs in `fixtures/fuzz/` (crashes found earlier)
//! run first. An allocation past the limit aborts the process: the input is then in one of
//! the `.input` files last written, one per target running (rerun with `PPDENOISE_FUZZ_ONLY`).
//!
//! `make fuzz` runs the same targets (the peer frames aside) coverage-guided, under afl++:
//! see `fuzz/afl.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use ppdenoise::corr::engine_kind::EngineKind;
use ppdenoise::corr::randomness::PartyRandomness;
use ppdenoise::dealer::NonlinearDeal;
use ppdenoise::formats::bodies::{
    load, DealerMask, GraphModelShare, ImageShare, JobParams, ModelMask, ModelShare, OpenedWeights,
    Triplets,
};
use ppdenoise::formats::checks::graph_plan_from_header;
use ppdenoise::formats::container::Kind;
use ppdenoise::formats::triplet_stream;
use ppdenoise::image::{DicomTemplate, Encoding, Format};
use ppdenoise::model::cnn::{random_cnn, CnnMeta};
use ppdenoise::model::graph::Graph;
use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::graph::GraphPlan;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Plan};
use ppdenoise::ring::share::{expand, share_with_seed, Stream};
use ppdenoise::ring::Party;
use ppdenoise::twopc::channel::{mem_pair, Channel, ChannelError, Expect, LinkStats};
use ppdenoise::twopc::engines::engine_for;
use ppdenoise::twopc::graph::GraphJobInputs;
use ppdenoise::twopc::job::Weights;
use ppdenoise::twopc::mlp::{self, JobInputs};

#[path = "fuzz/afl.rs"]
mod afl_campaign;
#[path = "suite/common/mod.rs"]
mod common;

/// Largest single allocation a parser may make on these tiny inputs (the biggest valid file
/// is a few MB): anything above is an allocation sized from crafted bytes.
const ALLOC_LIMIT: usize = 256 << 20;

struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

fn run(args: &[&str]) {
    let o = Command::new(bin()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ppdenoise {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The MLP both the file targets and the peer-frame jobs run: 5x5 patches in, 3x3 out.
fn tiny_mlp() -> ppdenoise::model::mlp::Model {
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 0.0,
    };
    random_model(&[25, 6, 9], 1, meta)
}

/// `model` as PyTorch would save it (`<i>.weight`, `<i>.bias` at Sequential indices 0, 2,
/// ..., F64), its settings as metadata.
fn write_safetensors(model: &ppdenoise::model::mlp::Model, path: &Path) {
    use safetensors::{tensor::TensorView, Dtype};
    let le = |v: &mut dyn Iterator<Item = &f64>| -> Vec<u8> {
        v.flat_map(|x| x.to_le_bytes()).collect()
    };
    let mut raw = Vec::new();
    for (k, l) in model.layers.iter().enumerate() {
        let (r, c) = l.w.dim();
        raw.push((format!("{}.weight", 2 * k), vec![r, c], le(&mut l.w.iter())));
        raw.push((format!("{}.bias", 2 * k), vec![r], le(&mut l.b.iter())));
    }
    let views = raw.iter().map(|(n, s, b)| {
        (
            n.clone(),
            TensorView::new(Dtype::F64, s.clone(), b).unwrap(),
        )
    });
    let m = &model.meta;
    let md = [
        ("sigma", m.sigma.to_string()),
        ("mean_shift", m.mean_shift.to_string()),
        ("residual", m.residual.to_string()),
        (
            "activation",
            if m.activation == Activation::TanhStar {
                "tanh_star"
            } else {
                "tanh"
            }
            .into(),
        ),
        ("aggregation_sigma", m.aggregation_sigma.to_string()),
    ];
    let md = md.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    std::fs::write(path, safetensors::serialize(views, Some(md)).unwrap()).unwrap();
}

/// Two demo runs on tiny models: every file kind the parties exchange. Made once in `dir`,
/// then found there: an afl++ campaign reads the files its export made.
fn seed_runs(dir: &Path) -> (PathBuf, PathBuf) {
    let (mlp, cnn) = (dir.join("mlp"), dir.join("cnn"));
    let done = dir.join("seed-runs.done");
    if done.exists() {
        return (mlp, cnn);
    }
    tiny_mlp().save(&dir.join("mlp.npz")).unwrap();
    write_safetensors(&tiny_mlp(), &dir.join("mlp.safetensors"));
    let cmeta = CnnMeta {
        sigma: 25.0,
        residual: true,
    };
    random_cnn(&[1, 3, 1], 3, 2, cmeta)
        .save(&dir.join("cnn.npz"))
        .unwrap();
    for (model, engine, work) in [("mlp.npz", "gmw", &mlp), ("cnn.npz", "gc", &cnn)] {
        run(&[
            "demo",
            "--image",
            "builtin:phantom:12",
            "--model",
            dir.join(model).to_str().unwrap(),
            "--engine",
            engine,
            "--workdir",
            work.to_str().unwrap(),
            // Plain files, so mutations reach the container parsers; sealed files have
            // their own target.
            "--plain-files",
            // The spent triplet files are seeds of the targets below.
            "--keep-triplets",
        ]);
        // The same job as 2 tiles (per-job weights), served pair by pair: the receiver's
        // and the servers' tile paths get seeds of their own.
        let p = |n: &str| work.join(n).to_str().unwrap().to_string();
        run(&[
            "gen-triplets",
            "--model",
            &p("model.pub"),
            "--image",
            &p("image.pub"),
            "--engine",
            engine,
            "--tiles",
            "2",
            "--out",
            &p("tiles"),
        ]);
        for i in 0..2 {
            let port = common::free_port();
            let servers: Vec<_> = (0..2)
                .map(|party| {
                    let (me, peer) = (format!("s{party}"), format!("s{}", 1 - party));
                    Command::new(bin())
                        .args(["serve", "--quiet", "--party", &party.to_string()])
                        .args(["--insecure-unsigned", "--keep-triplets"])
                        .args(["--model", &p(&format!("model.p{party}"))])
                        .args(["--image", &p(&format!("image.p{party}"))])
                        .args(["--triplets", &p(&format!("tiles.t{i}.p{party}"))])
                        .args(["--key", &p(&format!("keys/{me}.key"))])
                        .args(["--cert", &p(&format!("keys/{me}.crt"))])
                        .args(["--peer-cert", &p(&format!("keys/{peer}.crt"))])
                        .args(["--addr", &format!("127.0.0.1:{port}")])
                        .args(["--state-dir", &p("tile-state")])
                        .args(["--out", &p(&format!("out.t{i}.p{party}"))])
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for c in servers {
                let o = c.wait_with_output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
    std::fs::write(&done, b"").unwrap();
    (mlp, cnn)
}

/// How inputs of a target are built, so that mutations reach past integrity checks.
#[derive(Clone, Copy)]
enum Shape {
    /// A container: its BLAKE3 is re-sealed after mutation most of the time.
    Container,
    /// A zip of `.npy` arrays: one array is mutated and the archive rebuilt (valid CRCs).
    Npz,
    /// Bytes taken as they are (an age file: its MACs cannot be recomputed without the key).
    Raw,
    /// A safetensors file: most of the time one field of its JSON header is changed and the
    /// header re-serialised with its length, so that inputs get past the JSON parser.
    Safetensors,
    /// An ONNX model: most of the time one thing in its graph is changed (an op, an
    /// attribute, a shape, a name, a node's place) and the protobuf written back.
    Onnx,
    /// A JSON document: most of the time one value is replaced (by a number at an edge, a
    /// string, null, ...) or one key removed, and the document written back.
    Json,
}

/// What a party does with an input (`f`), given the valid file it was made from: `Ok` when
/// every step accepted it, else the refusal (its wording, numbers and paths blanked, tells
/// one refusal from another: see [`Corpus`]).
type Parse = Box<dyn Fn(&Path, &Path) -> Result<(), String> + Send + Sync>;

/// A reader's result as a target's outcome: the error's whole chain.
trait Outcome {
    fn outcome(self) -> Result<(), String>;
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    fn outcome(self) -> Result<(), String> {
        self.kept().map(drop)
    }
}

/// A reader's result, its value kept.
trait Kept<T> {
    fn kept(self) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Kept<T> for Result<T, E> {
    fn kept(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:#}"))
    }
}

/// Accepted when one of the readers, all of which run, accepts.
fn any<const N: usize>(r: [Result<(), String>; N]) -> Result<(), String> {
    if r.iter().any(Result::is_ok) {
        return Ok(());
    }
    Err(r
        .into_iter()
        .filter_map(Result::err)
        .collect::<Vec<_>>()
        .join(" | "))
}

/// Accepted when every reader, all of which run, accepts.
fn all<const N: usize>(r: [Result<(), String>; N]) -> Result<(), String> {
    r.into_iter().collect::<Result<Vec<()>, _>>().map(drop)
}

/// One parser under test: the valid files it starts from and what a party does with them.
struct Target {
    name: &'static str,
    seeds: Vec<PathBuf>,
    shape: Shape,
    parse: Parse,
}

/// The calls each reader makes. `f` is the (mutated) input, `seed` the valid file it came
/// from (for readers that need a second, valid file next to it).
fn targets(mlp: &Path, cnn: &Path, scratch: &Path) -> Vec<Target> {
    let both =
        |d: &Path, stem: &str| vec![d.join(format!("{stem}.p0")), d.join(format!("{stem}.p1"))];
    let mut t = vec![
        Target {
            name: "model share (MLP)",
            seeds: both(mlp, "model"),
            shape: Shape::Container,
            parse: Box::new(|f, _| {
                let (_, ms) = load::<ModelShare>(f, Kind::ModelShare, None).kept()?;
                ms.share_plan().outcome()
            }),
        },
        Target {
            name: "model share (CNN, as a graph)",
            seeds: both(cnn, "model"),
            shape: Shape::Container,
            parse: Box::new(|f, _| {
                let (h, ms) = load::<GraphModelShare>(f, Kind::GraphModelShare, None).kept()?;
                let (_, public) = graph_plan_from_header(f, &h).kept()?;
                ms.share_plan(&public).outcome()
            }),
        },
        Target {
            name: "image share",
            seeds: [both(mlp, "image"), both(cnn, "image")].concat(),
            shape: Shape::Container,
            parse: Box::new(|f, _| {
                let (_, is) = load::<ImageShare>(f, Kind::ImageShare, None).kept()?;
                // Up to MAX_PIXELS (2^28) a job is valid by design, and S1's seed then
                // expands to that many values (what `serve` does): expanded here only when
                // small, so that the time goes to parsing.
                let n = is.job.height.saturating_mul(is.job.width);
                is.job.validate().outcome()?;
                if n > 1 << 16 {
                    return Ok(());
                }
                is.data
                    .materialise(ppdenoise::ring::share::Stream::ImageShare, n)
                    .outcome()
            }),
        },
        Target {
            name: "triplet stream",
            seeds: [both(mlp, "triplets"), both(cnn, "triplets")].concat(),
            shape: Shape::Container,
            parse: Box::new(|f, _| {
                // Read as whichever party's file it claims to be, to its end.
                let read = |party| {
                    let (_, mut ts) = triplet_stream::open(f, party).kept()?;
                    loop {
                        let left = ts.corrections.len() - ts.corrections.position();
                        if left == 0 {
                            return ts.corrections.finish().outcome();
                        }
                        // Bits: whole words while they last, then the rest as one value.
                        let (n, bits) = match left / 64 {
                            0 => (1, left as u32),
                            w => (w.min(4096) as usize, 64),
                        };
                        ts.corrections.take(n, bits).outcome()?;
                    }
                };
                any([read(Party::S0), read(Party::S1)])
            }),
        },
        Target {
            name: "model mask, dealer mask, opened weights",
            seeds: [
                both(mlp, "mask"),
                vec![mlp.join("mask.dealer")],
                both(mlp, "weights"),
            ]
            .concat(),
            shape: Shape::Container,
            parse: Box::new(|f, _| {
                any([
                    load::<ModelMask>(f, Kind::ModelMask, None).outcome(),
                    load::<DealerMask>(f, Kind::DealerMask, None).outcome(),
                    load::<OpenedWeights>(f, Kind::OpenedWeights, None).outcome(),
                ])
            }),
        },
    ];
    // The receiver: a mutated share next to the valid other one.
    for d in [mlp, cnn] {
        let (o0, o1) = (d.join("out.p0"), d.join("out.p1"));
        t.push(Target {
            name: if d == mlp {
                "output share (MLP)"
            } else {
                "output share (CNN)"
            },
            seeds: vec![o0.clone(), o1.clone()],
            shape: Shape::Container,
            parse: Box::new(move |f, seed| {
                if seed == o0 {
                    ppdenoise::job::receiver::combine(
                        f,
                        &o1,
                        None,
                        &ppdenoise::job::receiver::Expect::unchecked(),
                    )
                    .outcome()
                } else {
                    ppdenoise::job::receiver::combine(
                        &o0,
                        f,
                        None,
                        &ppdenoise::job::receiver::Expect::unchecked(),
                    )
                    .outcome()
                }
            }),
        });
    }
    // The receiver of a job in 2 tiles: one of the four shares mutated next to the others.
    for d in [mlp, cnn] {
        let shares: Vec<PathBuf> = (0..2)
            .flat_map(|i| (0..2).map(move |p| (i, p)))
            .map(|(i, p)| d.join(format!("out.t{i}.p{p}")))
            .collect();
        let all = shares.clone();
        t.push(Target {
            name: if d == mlp {
                "output shares of tiles (MLP)"
            } else {
                "output shares of tiles (CNN)"
            },
            seeds: shares,
            shape: Shape::Container,
            parse: Box::new(move |f, seed| {
                let list: Vec<PathBuf> = all
                    .iter()
                    .map(|s| {
                        if s == seed {
                            f.to_path_buf()
                        } else {
                            s.clone()
                        }
                    })
                    .collect();
                ppdenoise::job::receiver::combine_tiles(
                    &list,
                    None,
                    &ppdenoise::job::receiver::Expect::unchecked(),
                )
                .outcome()
            }),
        });
    }
    // The dealer, from public headers (a mutated one next to the valid other one).
    for d in [mlp, cnn] {
        let (m, i) = (d.join("model.pub"), d.join("image.pub"));
        let out = scratch.join(if d == mlp { "dealer-mlp" } else { "dealer-cnn" });
        t.push(Target {
            name: if d == mlp {
                "public headers through the dealer (MLP)"
            } else {
                "public headers through the dealer (CNN)"
            },
            seeds: vec![m.clone(), i.clone()],
            shape: Shape::Container,
            parse: Box::new(move |f, seed| {
                if dealt_past_bound(f) {
                    return Err("past the harness's size bound for dealing".into());
                }
                let (model, image) = if seed == m {
                    (f.to_path_buf(), i.clone())
                } else {
                    (m.clone(), f.to_path_buf())
                };
                let args = ppdenoise::cli::dealer::GenTripletsArgs {
                    model,
                    image: Some(image),
                    batch: None,
                    engine: Default::default(),
                    model_mask: None,
                    out: out.clone(),
                    tiles: None,
                    tile: None,
                    study: None,
                    slices: None,
                    dirs: Default::default(),
                    records: Default::default(),
                    seal: Default::default(),
                    quiet: true,
                    party: None,
                    peer: Default::default(),
                };
                ppdenoise::cli::dealer::gen_triplets(args).outcome()
            }),
        });
    }
    // A server's job: one of its files mutated next to its other, valid files, through the
    // same loading and checks `serve` makes before it claims anything (no link is opened).
    for d in [mlp, cnn] {
        let roles = ["model", "image", "triplets", "weights"];
        let seeds = roles
            .iter()
            .flat_map(|r| both(d, r))
            .filter(|f| f.exists())
            .collect();
        job_target(&mut t, d, scratch, seeds, "triplets", d == mlp, false);
        // A tile's triplets (its band or patch run sized from the `tile` header fact).
        job_target(
            &mut t,
            d,
            scratch,
            both(d, "tiles.t1"),
            "tiles.t1",
            d == mlp,
            true,
        );
    }
    t.extend(more_targets(mlp, cnn, scratch));
    t
}

/// Whether a public header claims a job the dealer would need more than the harness's
/// allocation bound for, by design: a hidden layer wider than 4096 (a batch's boolean
/// triples grow with width x batch; a 25-1048582-9 MLP needs 1.1 GB for one) or an image
/// of more than 2^16 pixels (as for the image parsers). Such a header is valid, not hostile:
/// it asks for a big job.
fn dealt_past_bound(f: &Path) -> bool {
    let Ok(h) = ppdenoise::formats::container::read_header(f) else {
        return false;
    };
    let wide = h
        .shape("layers")
        .is_some_and(|l| l.iter().any(|&w| w > 4096));
    let job = h
        .info("job")
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
    let pixels = job.as_ref().map_or(0, |j| {
        let side = |k: &str| j[k].as_u64().unwrap_or(0);
        side("height").saturating_mul(side("width"))
    });
    wide || pixels > 1 << 16
}

/// A server's job: one of its files mutated next to its other, valid files, through the
/// same loading and checks `serve` makes before it claims anything (no link is opened).
/// `triplets`: the stem of the triplet files (a tile's, or the job's).
fn job_target(
    t: &mut Vec<Target>,
    d: &Path,
    scratch: &Path,
    seeds: Vec<PathBuf>,
    triplets: &'static str,
    mlp: bool,
    tile: bool,
) {
    let (d, state) = (d.to_path_buf(), scratch.join("state"));
    // As a deployment runs: the makers' keys pinned. A tile's triplets (made here by
    // gen-triplets without --sign-key) are unsigned.
    let trust = if tile {
        ppdenoise::formats::signing::Trust::InsecureUnsigned
    } else {
        ppdenoise::formats::signing::Trust::Pinned(
            ppdenoise::formats::signing::Trust::parse_file(&d.join("keys/trust")).unwrap(),
        )
    };
    t.push(Target {
        name: match (mlp, tile) {
            (true, false) => "server job files (MLP)",
            (false, false) => "server job files (CNN)",
            (true, true) => "server job files (MLP tile)",
            (false, true) => "server job files (CNN tile)",
        },
        seeds,
        shape: Shape::Container,
        parse: Box::new(move |f, seed| {
            let party = if seed.extension().is_some_and(|e| e == "p1") {
                Party::S1
            } else {
                Party::S0
            };
            let file = |role: &str| {
                let valid = d.join(format!("{role}.p{party}"));
                if valid == seed {
                    f.to_path_buf()
                } else {
                    valid
                }
            };
            // A tile's job opens its weights itself (its triplets name no model mask).
            let weights = file("weights");
            let files = ppdenoise::server::JobFiles {
                party,
                model: file("model"),
                image: file("image"),
                triplets: file(triplets),
                weights: (!tile && weights.exists()).then_some(weights),
                engine: None,
                state_dir: state.clone(),
                trust: trust.clone(),
            };
            ppdenoise::server::prepare(files).outcome()
        }),
    });
}

/// The targets of the remaining readers: sealed files, model files, images, headers.
fn more_targets(mlp: &Path, cnn: &Path, scratch: &Path) -> Vec<Target> {
    let mut t = Vec::new();
    // The record a finished table run leaves (`run.json`), read by `table --resume`: a tiny
    // table is made once, then each input replaces its record and the command runs in this
    // process (an accepted record is reused: its numbers go into the report).
    let table = scratch.join("table");
    let model = scratch.join("table-mlp.npz");
    let args: Vec<String> = [
        "ppdenoise",
        "table",
        "--images",
        "builtin:phantom:12",
        "--sigmas",
        "25",
        "--stride",
        "2",
        "--model",
        model.to_str().unwrap(),
        "--out-dir",
        table.to_str().unwrap(),
        "--figures",
        "none",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    // Made once per scratch directory, like every file below (see `seed_runs`).
    let seed = scratch.join("run.json");
    if !seed.exists() {
        tiny_mlp().save(&model).unwrap();
        run(&args[1..].iter().map(String::as_str).collect::<Vec<_>>());
    }
    let runs = table.join("runs");
    let image = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record = image.join("sigma25").join("run.json");
    if !seed.exists() {
        std::fs::copy(&record, &seed).unwrap();
    }
    let resume: Vec<String> = args.into_iter().chain(["--resume".into()]).collect();
    t.push(Target {
        name: "table --resume record",
        seeds: vec![seed],
        shape: Shape::Json,
        parse: Box::new(move |f, _| {
            std::fs::copy(f, &record).unwrap();
            ppdenoise::cli::run_args(&resume).outcome()
        }),
    });
    // Sealed files (age, to this process's identity): the age header and stream, then the
    // container inside, read whole as every reader does.
    let sealed_dir = scratch.join("sealed");
    std::fs::create_dir_all(&sealed_dir).unwrap();
    let id = sealed_dir.join("id.age-identity");
    let recipient = sealed_dir.join("id.age-recipient");
    let plain = [
        mlp.join("image.p1"),
        mlp.join("triplets.p0"),
        cnn.join("out.p0"),
    ];
    let seeds: Vec<PathBuf> = plain
        .iter()
        .map(|p| sealed_dir.join(p.file_name().unwrap()))
        .collect();
    if !id.exists() {
        let (secret, to) = ppdenoise::formats::sealed::new_identity();
        std::fs::write(&recipient, format!("# public\n{to}\n")).unwrap();
        for (p, sealed) in plain.iter().zip(&seeds) {
            let mut w = to.seal(std::fs::File::create(sealed).unwrap()).unwrap();
            std::io::Write::write_all(&mut w, &std::fs::read(p).unwrap()).unwrap();
            w.finish().unwrap();
        }
        std::fs::write(&id, secret).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ppdenoise::formats::sealed::use_identity(&id).unwrap();
    t.push(Target {
        name: "sealed files (age)",
        seeds,
        shape: Shape::Raw,
        parse: Box::new(|f, _| ppdenoise::formats::container::verify(f).outcome()),
    });
    // Issue 31, item 8: the small files every party reads besides its data. Age identities
    // and recipients (keygen's), each mutated copy read as both.
    t.push(Target {
        name: "age identities and recipients",
        seeds: vec![id.clone(), recipient],
        shape: Shape::Raw,
        parse: Box::new(|f, seed| {
            // Private, as keygen writes it (else every input prints the mode's warning).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
            let as_id = ppdenoise::formats::sealed::load_identity(f).outcome();
            let as_recipient =
                ppdenoise::formats::sealed::Recipient::parse(f.to_str().unwrap()).outcome();
            // A valid file is one of the two (and must be read as such).
            if seed.extension().is_some_and(|e| e == "age-identity") {
                as_id
            } else {
                as_recipient
            }
        }),
    });
    // TLS keys and certificates: a mutated key with its valid certificate, a mutated
    // certificate as a peer's and with its valid key.
    let keys = scratch.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (key, cert) = (keys.join("s0.key"), keys.join("s0.crt"));
    if !cert.exists() {
        ppdenoise::net::identity::keygen("s0")
            .unwrap()
            .save(&keys.join("s0"), true)
            .unwrap();
    }
    t.push(Target {
        name: "TLS keys and certificates",
        seeds: vec![key, cert],
        shape: Shape::Raw,
        parse: Box::new(|f, seed| {
            use ppdenoise::net::identity::{load_peer_cert, Identity};
            // Private, as keygen writes it (else every input prints the mode's warning).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
            let (key, cert) = (seed.with_extension("key"), seed.with_extension("crt"));
            if seed.extension().is_some_and(|e| e == "key") {
                Identity::load(f, &cert).outcome()
            } else {
                all([
                    load_peer_cert(f).outcome(),
                    Identity::load(&key, f).outcome(),
                ])
            }
        }),
    });
    // Issue 30: the makers' signing keys (private and public) and the trust file a server
    // pins them with.
    let keys = mlp.join("keys");
    t.push(Target {
        name: "signing keys and trust files",
        seeds: vec![
            keys.join("trust"),
            keys.join("dealer.sign-key"),
            keys.join("dealer.sign-pub"),
        ],
        shape: Shape::Raw,
        parse: Box::new(|f, seed| {
            use ppdenoise::formats::signing::{PublicKey, Role, Signer, Trust};
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
            match seed.extension().and_then(|e| e.to_str()) {
                Some("sign-key") => Signer::load(f, Role::Dealer).outcome(),
                Some("sign-pub") => PublicKey::parse(f.to_str().unwrap()).outcome(),
                _ => Trust::parse_file(f).outcome(),
            }
        }),
    });
    // A server's record of consumed randomness, read before every claim.
    let state = scratch.join("state");
    let made = state.join("consumed-triplets-p0").exists();
    for id in [
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    ]
    .into_iter()
    .filter(|_| !made)
    {
        ppdenoise::server::state::mark_used(
            &state,
            Party::S0,
            ppdenoise::server::state::Record::Triplets,
            id,
        )
        .unwrap();
    }
    t.push(Target {
        name: "state records",
        seeds: vec![state.join("consumed-triplets-p0")],
        shape: Shape::Raw,
        parse: Box::new(|f, _| {
            use ppdenoise::server::state::{check_unused, Record};
            let dir = f.with_extension("state");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(f, dir.join("consumed-triplets-p0")).unwrap();
            // An id the valid record does not hold, and one it does.
            let fresh = check_unused(
                &dir,
                Party::S0,
                Record::Triplets,
                "0123456789abcdef0123456789abcdef",
                f,
            );
            let recorded = check_unused(
                &dir,
                Party::S0,
                Record::Triplets,
                "00112233445566778899aabbccddeeff",
                f,
            );
            all([
                fresh.outcome(),
                match recorded {
                    Ok(()) => Err("a recorded id was not found".into()),
                    Err(_) => Ok(()),
                },
            ])
        }),
    });
    // The model owner's inputs: model files (zip of .npy arrays).
    // The same, as PyTorch saves an MLP: the Python-written fixtures and one from the crate.
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx");
    t.push(Target {
        name: "model .safetensors (MLP)",
        seeds: vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-mlp.safetensors"),
            mlp.parent().unwrap().join("mlp.safetensors"),
            onnx.join("tiny-mlp-relu.safetensors"),
        ],
        shape: Shape::Safetensors,
        parse: Box::new(|f, _| ppdenoise::model::mlp::Model::load(f).outcome()),
    });
    // Models exported from PyTorch: ONNX graphs of each family, and CNN state dicts (the
    // fixtures of tests/suite/models/onnx.rs). The input's name does not end in .onnx, so the reader is
    // called directly.
    t.push(Target {
        name: "model .onnx (MLP, DnCNN, FFDNet)",
        seeds: [
            "tiny-mlp.onnx",
            "tiny-mlp-relu.onnx",
            "tiny-dncnn.onnx",
            "tiny-ffdnet.onnx",
            "tiny-ffdnet-dynamo.onnx",
        ]
        .iter()
        .map(|f| onnx.join(f))
        .collect(),
        shape: Shape::Onnx,
        parse: Box::new(|f, _| {
            let bytes = std::fs::read(f).unwrap();
            ppdenoise::import::onnx::parse(f, &bytes).outcome()
        }),
    });
    t.push(Target {
        name: "model .safetensors (CNN)",
        seeds: vec![
            onnx.join("tiny-dncnn.safetensors"),
            onnx.join("tiny-ffdnet.safetensors"),
        ],
        shape: Shape::Safetensors,
        parse: Box::new(|f, _| ppdenoise::model::cnn::Cnn::load(f).outcome()),
    });
    // The gateway's inputs: images in every format it reads, made here.
    let images = scratch.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = ppdenoise::image::load_input("builtin:phantom:24").unwrap();
    let saved = |name: &str, enc: Encoding| {
        let p = images.join(name);
        if !p.exists() {
            enc.save(&img, &p).unwrap();
        }
        p
    };
    let dcm = images.join("ct.dcm");
    if !dcm.exists() {
        common::dicom_slice(&dcm, "1.2.826.0.1.3680043.8.498.9", 1, 0.0, 24, 1);
    }
    for (name, seeds) in [
        (
            "images: PNG",
            vec![
                saved("8.png", Encoding::Png(8)),
                saved("16.png", Encoding::Png(16)),
            ],
        ),
        (
            "images: TIFF",
            vec![
                saved("8.tif", Encoding::Tiff(8)),
                saved("16.tif", Encoding::Tiff(16)),
            ],
        ),
        (
            "images: DICOM, every syntax read",
            dicom_seeds(&dcm, &images),
        ),
    ] {
        t.push(Target {
            name,
            seeds,
            shape: Shape::Raw,
            // An image of up to 2^28 pixels is valid by design (2 GB as f64), more than this
            // binary's allocator allows: only images that say they are small are decoded, so
            // that the time goes to the parsers.
            parse: Box::new(|f, _| match declared_pixels(f) {
                Some(n) if n <= 1 << 16 => ppdenoise::image::load(f).outcome(),
                Some(_) => Err("a large image (not decoded)".into()),
                None => Err("no size in the header".into()),
            }),
        });
    }
    t.push(Target {
        name: "model .npz (MLP and CNN)",
        seeds: vec![
            mlp.parent().unwrap().join("mlp.npz"),
            mlp.parent().unwrap().join("cnn.npz"),
        ],
        shape: Shape::Npz,
        parse: Box::new(|f, _| {
            any([
                ppdenoise::model::mlp::Model::load(f).outcome(),
                ppdenoise::model::cnn::Cnn::load(f).outcome(),
            ])
        }),
    });
    t
}

/// DICOM seeds: the 12-bit slice `ct` in explicit VR little endian, big endian, deflated,
/// JPEG-LS and 12-bit lossy JPEG (made here), and RLE and JPEG 2000 files of
/// `make dicom-testdata` (pydicom's MR_small, 8-bit JPEG 2000 by OpenJPEG); its top 8 bits
/// as 8-bit DCT and lossless JPEG; and every JPEG, JPEG-LS and JPEG 2000 one cut short.
fn dicom_seeds(ct: &Path, dir: &Path) -> Vec<PathBuf> {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{open_file, FileMetaTableBuilder};
    use dicom_pixeldata::Transcode;
    let mut seeds = vec![ct.to_path_buf()];
    let inner = || open_file(ct).unwrap().into_inner();
    // Writes a seed once (kept across runs) and gives its path.
    let write = |name: &str, obj: dicom_object::InMemDicomObject, ts: &str| {
        let p = dir.join(name);
        if !p.exists() {
            obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
                .unwrap()
                .write_to_file(&p)
                .unwrap();
        }
        p
    };
    seeds.push(write("ct-be.dcm", inner(), "1.2.840.10008.1.2.2"));
    seeds.push(write(
        "ct-deflated.dcm",
        inner(),
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ));
    let values: Vec<u16> = {
        let obj = inner();
        let words = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        words
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    let jpeg = ppdenoise::image::jpeg12::encode(&values, 24, 24, 90).unwrap();
    let mut obj = inner();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(Vec::<u32>::new(), vec![jpeg]),
    ));
    seeds.push(write("ct-jpeg12.dcm", obj, uids::JPEG_EXTENDED12_BIT));
    let p = dir.join("ct-jls.dcm");
    if !p.exists() {
        let mut jls = open_file(ct).unwrap();
        jls.transcode(
            &dicom_transfer_syntax_registry::entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased(),
        )
        .unwrap();
        jls.write_to_file(&p).unwrap();
    }
    seeds.push(p);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = root.join("out/dicom-testdata/j2k8-lossless.dcm");
    let pydicom = std::fs::read_dir(root.join(".venv-dicom/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/pydicom/data/test_files"))
        .find(|p| p.exists());
    let shipped = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"]
        .map(|n| pydicom.as_ref().map(|d| d.join(n)));
    for f in [Some(made)].into_iter().chain(shipped) {
        let f = f.filter(|f| f.exists()).unwrap_or_else(|| {
            panic!("a DICOM seed is missing; run `make dicom-testdata` (pydicom from PyPI)")
        });
        seeds.push(f);
    }
    // 8-bit DCT and lossless JPEG of the slice's top 8 bits (libjpeg-turbo).
    let narrow: Vec<u8> = values.iter().map(|&v| (v >> 4) as u8).collect();
    for (name, ts, lossless) in [
        ("ct-jpeg8.dcm", uids::JPEG_BASELINE8_BIT, None),
        ("ct-jpeg-lossless.dcm", uids::JPEG_LOSSLESS_SV1, Some(())),
    ] {
        let mut jpeg = ppdenoise::image::jpeg12::encode8(&narrow, 24, 24, lossless, 90);
        if jpeg.len() % 2 == 1 {
            jpeg.push(0);
        }
        let mut obj = inner();
        for (tag, v) in [
            (tags::BITS_ALLOCATED, 8u16),
            (tags::BITS_STORED, 8),
            (tags::HIGH_BIT, 7),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(
                tag,
                VR::US,
                dicom_core::PrimitiveValue::from(v),
            ));
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![jpeg]),
        ));
        seeds.push(write(name, obj, ts));
    }
    // Each encapsulated seed cut to 30% of its one fragment and closed with an EOI (EOC for
    // JPEG 2000, the same bytes): refused as cut short, never decoded with a grey rest.
    let encapsulated: Vec<PathBuf> = seeds
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains("jpeg") || n.contains("jls") || n.contains("j2k")
        })
        .cloned()
        .collect();
    for src in encapsulated {
        let p = dir.join(format!(
            "cut-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        if !p.exists() {
            let mut obj = open_file(&src).unwrap();
            let pixel = obj.element(tags::PIXEL_DATA).unwrap();
            let whole = pixel.value().fragments().unwrap().concat();
            let mut cut = whole[..(whole.len() * 3 / 10) & !1].to_vec();
            cut.extend_from_slice(&[0xFF, 0xD9]);
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![cut]),
            ));
            obj.write_to_file(&p).unwrap();
        }
        seeds.push(p);
    }
    seeds
}

/// The pixels an image file says it has, from its header alone (`None`: no header read),
/// as the loader reads them first: the `image` crate's header for PNG and TIFF, the DICOM
/// template's layout.
fn declared_pixels(f: &Path) -> Option<u64> {
    let (a, b) = match Format::of_file(f)? {
        Format::Dicom => DicomTemplate::read(f).ok()?.dim(),
        _ => {
            let (w, h) = image::ImageReader::open(f)
                .ok()?
                .with_guessed_format()
                .ok()?
                .into_dimensions()
                .ok()?;
            (w as usize, h as usize)
        }
    };
    Some((a as u64).saturating_mul(b as u64))
}

/// Values that tend to sit on boundaries of length and count fields.
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

/// One mutation of `base`: shaped by its format when `base` is a valid file, byte-level
/// when it is a corpus input (refused once already, so its structure is not assumed).
fn mutate(rng: &mut ChaCha12Rng, base: &[u8], shape: Shape, is_valid: bool) -> Vec<u8> {
    match shape {
        Shape::Container => mutate_bytes(rng, base, true),
        _ if !is_valid => mutate_bytes(rng, base, false),
        Shape::Npz if rng.gen_bool(0.85) => mutate_npz(rng, base),
        Shape::Npz => mutate_bytes(rng, base, false),
        Shape::Raw => mutate_bytes(rng, base, false),
        Shape::Safetensors if rng.gen_bool(0.7) => mutate_safetensors(rng, base),
        Shape::Safetensors => mutate_bytes(rng, base, false),
        Shape::Onnx if rng.gen_bool(0.8) => mutate_onnx(rng, base),
        Shape::Onnx => mutate_bytes(rng, base, false),
        Shape::Json if rng.gen_bool(0.8) => {
            mutate_json(rng, base).unwrap_or_else(|| mutate_bytes(rng, base, false))
        }
        Shape::Json => mutate_bytes(rng, base, false),
    }
}

/// A JSON document with one leaf changed or one key removed; None when `valid` has no leaf
/// to change (a corpus input need not be JSON at all).
fn mutate_json(rng: &mut ChaCha12Rng, valid: &[u8]) -> Option<Vec<u8>> {
    use serde_json::{json, Value};
    // JSON Pointer (RFC 6901) segments: keys may hold '/' and '~'.
    fn seg(k: &str) -> String {
        k.replace('~', "~0").replace('/', "~1")
    }
    fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| leaves(x, format!("{at}/{}", seg(k)), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| leaves(x, format!("{at}/{i}"), out)),
            _ => out.push(at),
        }
    }
    let mut doc: Value = serde_json::from_slice(valid).ok()?;
    let mut all = Vec::new();
    leaves(&doc, String::new(), &mut all);
    all.retain(|a| !a.is_empty());
    if all.is_empty() {
        return None;
    }
    let at = all[rng.gen_range(0..all.len())].clone();
    let big = INTERESTING[rng.gen_range(0..INTERESTING.len())];
    let to = match rng.gen_range(0..10) {
        0 => json!(big),
        1 => json!(-(big as i64)),
        2 => json!(1e300),
        3 => json!(-0.0),
        4 => json!(0.1),
        5 => json!(""),
        6 => json!("x".repeat(rng.gen_range(1..64))),
        7 => Value::Null,
        8 => json!([]),
        _ => {
            // The key itself goes.
            let (parent, key) = at.rsplit_once('/')?;
            let key = key.replace("~1", "/").replace("~0", "~");
            if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
                m.remove(&key);
            }
            return serde_json::to_vec(&doc).ok();
        }
    };
    *doc.pointer_mut(&at)? = to;
    serde_json::to_vec(&doc).ok()
}

/// Changes one or two things in an ONNX graph and encodes it again, sometimes with a few
/// bytes mutated after.
fn mutate_onnx(rng: &mut ChaCha12Rng, valid: &[u8]) -> Vec<u8> {
    use ppdenoise::import::onnx::proto::{Dimension, ModelProto};
    use prost::Message;
    const OPS: [&str; 26] = [
        "Conv",
        "Relu",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Tanh",
        "BatchNormalization",
        "Reshape",
        "Transpose",
        "DepthToSpace",
        "SpaceToDepth",
        "Tile",
        "Expand",
        "Concat",
        "Identity",
        "Dropout",
        "Constant",
        "ConstantOfShape",
        "Shape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Cast",
        "Loop",
        "",
    ];
    let mut m = ModelProto::decode(valid).expect("a valid seed");
    let big = |rng: &mut ChaCha12Rng| {
        INTERESTING[rng.gen_range(0..INTERESTING.len())].wrapping_add(rng.gen_range(0..3)) as i64
            - 1
    };
    for _ in 0..rng.gen_range(1..3) {
        let g = m.graph.as_mut().unwrap();
        let (nn, ni) = (g.node.len(), g.initializer.len());
        let k = rng.gen_range(0..nn);
        match rng.gen_range(0..12) {
            0 => g.node[k].op_type = OPS[rng.gen_range(0..OPS.len())].into(),
            1 => {
                let n = &mut g.node[k];
                if let Some(a) = n.attribute.iter_mut().next() {
                    match rng.gen_range(0..3) {
                        0 if !a.ints.is_empty() => {
                            let i = rng.gen_range(0..a.ints.len());
                            a.ints[i] = big(rng);
                        }
                        1 => a.i = big(rng),
                        _ => a.r#type = rng.gen_range(0..15),
                    }
                }
            }
            2 if ni > 0 => {
                let i = rng.gen_range(0..ni);
                let t = &mut g.initializer[i];
                if !t.dims.is_empty() {
                    let i = rng.gen_range(0..t.dims.len());
                    t.dims[i] = if rng.gen_bool(0.5) {
                        big(rng)
                    } else {
                        t.dims[i] + rng.gen_range(-1..2)
                    };
                }
            }
            3 if ni > 0 => g.initializer[rng.gen_range(0..ni)].data_type = rng.gen_range(0..17),
            4 => {
                let j = rng.gen_range(0..nn);
                g.node.swap(k, j);
            }
            5 if nn > 1 => {
                g.node.remove(k);
            }
            6 => {
                let n = g.node[k].clone();
                g.node.insert(rng.gen_range(0..nn), n);
            }
            7 => {
                // An input renamed to another node's output or a graph input.
                let names: Vec<String> = g
                    .node
                    .iter()
                    .flat_map(|n| n.output.clone())
                    .chain(g.input.iter().map(|i| i.name.clone()))
                    .collect();
                let n = &mut g.node[k];
                if !n.input.is_empty() {
                    let i = rng.gen_range(0..n.input.len());
                    n.input[i] = names[rng.gen_range(0..names.len())].clone();
                }
            }
            8 => {
                let i = rng.gen_range(0..g.input.len());
                let x = &mut g.input[i];
                if let Some(shape) = x
                    .r#type
                    .as_mut()
                    .and_then(|t| t.tensor_type.as_mut())
                    .and_then(|t| t.shape.as_mut())
                {
                    if !shape.dim.is_empty() {
                        let i = rng.gen_range(0..shape.dim.len());
                        shape.dim[i] = if rng.gen_bool(0.7) {
                            Dimension {
                                dim_value: Some(big(rng)),
                                dim_param: None,
                            }
                        } else {
                            Dimension {
                                dim_value: None,
                                dim_param: Some("n".into()),
                            }
                        };
                    }
                }
            }
            9 if ni > 0 => {
                let i = rng.gen_range(0..ni);
                let t = &mut g.initializer[i];
                let cut = rng.gen_range(0..=t.raw_data.len());
                t.raw_data.truncate(cut);
            }
            10 => {
                let n = &mut g.node[k];
                n.input.push(n.input.first().cloned().unwrap_or_default());
            }
            _ => m.opset_import[0].version = rng.gen_range(1..30),
        }
    }
    let out = m.encode_to_vec();
    if rng.gen_bool(0.1) {
        mutate_bytes(rng, &out, false)
    } else {
        out
    }
}

/// Changes one thing in a safetensors header (a tensor's dtype, a dimension, an offset, its
/// name, the entry itself, or a setting) and writes the header back with its new length;
/// sometimes the data after it is mutated too.
fn mutate_safetensors(rng: &mut ChaCha12Rng, valid: &[u8]) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let mut header: Map<String, Value> = serde_json::from_slice(&valid[8..8 + n]).unwrap();
    let mut data = valid[8 + n..].to_vec();
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = names[rng.gen_range(0..names.len())].clone();
    let big = |rng: &mut ChaCha12Rng| {
        let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        json!(v.wrapping_add(rng.gen_range(0..3)).wrapping_sub(1))
    };
    match rng.gen_range(0..9) {
        0 => {
            let dtypes = [
                "F32", "F64", "F16", "BF16", "I32", "I64", "U8", "BOOL", "F4", "C64",
            ];
            header[&name]["dtype"] = json!(dtypes[rng.gen_range(0..dtypes.len())]);
        }
        // A scalar (a batch norm's num_batches_tracked) has no dimension to change.
        1 if !header[&name]["shape"].as_array().unwrap().is_empty() => {
            let shape = header[&name]["shape"].as_array_mut().unwrap();
            let k = rng.gen_range(0..shape.len());
            shape[k] = if rng.gen_bool(0.5) {
                big(rng)
            } else {
                json!(shape[k]
                    .as_u64()
                    .unwrap()
                    .wrapping_add(rng.gen_range(0..3))
                    .wrapping_sub(1))
            };
        }
        2 => {
            let dims = rng.gen_range(0..5);
            header[&name]["shape"] = json!((0..dims)
                .map(|_| rng.gen_range(0..20))
                .collect::<Vec<u64>>());
        }
        3 => header[&name]["data_offsets"][rng.gen_range(0..2)] = big(rng),
        4 => {
            let to = match rng.gen_range(0..4) {
                0 => format!("x{name}"),
                1 => name.replace("weight", "bias"),
                2 => name.replace('0', "10"),
                _ => format!("{name}.weight"),
            };
            let v = header.remove(&name).unwrap();
            header.insert(to, v);
        }
        5 => {
            header.remove(&name);
        }
        6 => {
            let v = header[&name].clone();
            header.insert(format!("{}.{name}", rng.gen_range(0..9)), v);
        }
        7 => {
            let keys = [
                "sigma",
                "mean_shift",
                "residual",
                "activation",
                "aggregation_sigma",
                "x",
            ];
            let values = [
                "",
                "0",
                "1",
                "-1",
                "nan",
                "1e400",
                "true",
                "tanh_star",
                "relu",
                "0.3",
            ];
            let md = header.entry("__metadata__").or_insert_with(|| json!({}));
            md[keys[rng.gen_range(0..keys.len())]] = json!(values[rng.gen_range(0..values.len())]);
        }
        _ => data = mutate_bytes(rng, &data, false),
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

/// Rebuilds a `.npz` with one entry's bytes mutated, sometimes also an entry copied under
/// another name or dropped.
fn mutate_npz(rng: &mut ChaCha12Rng, valid: &[u8]) -> Vec<u8> {
    use std::io::{Cursor, Read, Write};
    let mut zip = zip::ZipArchive::new(Cursor::new(valid)).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = (0..zip.len())
        .map(|i| {
            let mut e = zip.by_index(i).unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (e.name().to_string(), b)
        })
        .collect();
    let k = rng.gen_range(0..entries.len());
    entries[k].1 = mutate_bytes(rng, &entries[k].1, false);
    match rng.gen_range(0..10) {
        0 => {
            let copy = entries[rng.gen_range(0..entries.len())].1.clone();
            let to = entries[rng.gen_range(0..entries.len())].0.clone();
            entries.push((format!("x{to}"), copy));
        }
        1 if entries.len() > 1 => {
            entries.remove(rng.gen_range(0..entries.len()));
        }
        _ => {}
    }
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in &entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn mutate_bytes(rng: &mut ChaCha12Rng, valid: &[u8], container: bool) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        // Half of the edits land in the first 512 bytes: headers, lengths and counts.
        let span = if rng.gen_bool(0.5) {
            b.len().min(512)
        } else {
            b.len()
        };
        if span == 0 {
            b.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..span);
        match rng.gen_range(0..8) {
            0 => b[at] ^= 1 << rng.gen_range(0..8),
            1 => b[at] = rng.gen(),
            2 | 3 => {
                let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let v = if rng.gen_bool(0.3) {
                    v.wrapping_add(rng.gen_range(0..3)).wrapping_sub(1)
                } else {
                    v
                };
                let w = if rng.gen_bool(0.5) { 8 } else { 4 };
                let bytes = v.to_le_bytes();
                let n = w.min(b.len() - at);
                b[at..at + n].copy_from_slice(&bytes[..n]);
            }
            4 => b.truncate(at),
            5 => {
                let n = rng.gen_range(1..64);
                let ins: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b.splice(at..at, ins);
            }
            6 => {
                let end = (at + rng.gen_range(1..64)).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let from = rng.gen_range(0..b.len());
                let n = rng.gen_range(1..64).min(b.len() - from);
                let chunk = b[from..from + n].to_vec();
                let to = rng.gen_range(0..b.len());
                let end = (to + n).min(b.len());
                b[to..end].copy_from_slice(&chunk[..end - to]);
            }
        }
    }
    if container && rng.gen_bool(0.85) {
        reseal(&mut b);
    }
    b
}

/// The makers' signing keys of the seed runs, to sign mutated files again.
static SIGNERS: std::sync::OnceLock<Vec<ppdenoise::formats::signing::Signer>> =
    std::sync::OnceLock::new();

/// Re-seals a (mutated) container as its maker could: the BLAKE3 where its header and body
/// lengths put it (else over the last 32 bytes), and, for a file whose 64 last bytes follow
/// that hash and whose header names one of the seed runs' signers, a fresh signature by
/// that key. An attacker has no signing key: this only carries mutations past the
/// signature to the parsers behind it (the 15% left as they are exercise the check).
fn reseal(b: &mut [u8]) {
    use ppdenoise::formats::signing::SIGNATURE_BYTES;
    let at = (b.len() >= 14)
        .then(|| u32::from_le_bytes(b[10..14].try_into().unwrap()) as usize)
        .and_then(|h| {
            let bl = b.get(14 + h..22 + h)?;
            (22 + h).checked_add(u64::from_le_bytes(bl.try_into().unwrap()) as usize)
        })
        // Checked: a mutated length near 2^64 would wrap past the end.
        .filter(|&at| at.checked_add(32).is_some_and(|end| end <= b.len()));
    let Some(at) = at.or(b.len().checked_sub(32)) else {
        return;
    };
    let sum = *blake3::hash(&b[..at]).as_bytes();
    b[at..at + 32].copy_from_slice(&sum);
    if b.len() != at + 32 + SIGNATURE_BYTES {
        return;
    }
    let head = &b[..at];
    let signer = SIGNERS.get().into_iter().flatten().find(|s| {
        let key = s.public().to_string();
        head.windows(key.len()).any(|w| w == key.as_bytes())
    });
    if let Some(s) = signer {
        let sig = s.sign(&sum);
        b[at + 32..].copy_from_slice(&sig);
    }
}

/// How long each target runs: a fixed number of inputs from a fixed seed unless
/// `PPDENOISE_FUZZ_SECS` asks for a time budget (then the seed is fresh unless given), so that
/// `make test` tries the same inputs on every machine.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Inputs(u64),
    Secs(f64),
}

impl Budget {
    fn from_env() -> (Budget, u64) {
        let var = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<f64>().ok());
        let seed = std::env::var("PPDENOISE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok());
        match var("PPDENOISE_FUZZ_SECS") {
            Some(t) => (
                Budget::Secs(t),
                seed.unwrap_or_else(|| rand::thread_rng().gen()),
            ),
            None => (
                Budget::Inputs(var("PPDENOISE_FUZZ_INPUTS").map_or(3000, |n| n as u64)),
                seed.unwrap_or(20261123),
            ),
        }
    }

    /// Whether input `n` (0-based) of a target started at `start` is within the budget;
    /// `scale` divides an input count (a peer-frame run costs as much as many file inputs).
    fn allows(self, n: u64, start: Instant, scale: u64) -> bool {
        match self {
            Budget::Inputs(k) => n < k.div_ceil(scale),
            Budget::Secs(t) => start.elapsed() < Duration::from_secs_f64(t),
        }
    }
}

fn crash_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("fuzz");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Runs `parse` on `input` (written to `path`): `Err` is a panic (a crash), `Ok` the
/// reader's outcome.
fn try_one(
    t: &Target,
    input: &[u8],
    path: &Path,
    seed: &Path,
) -> Result<Result<(), String>, String> {
    std::fs::write(path, input).unwrap();
    catch_unwind(AssertUnwindSafe(|| (t.parse)(path, seed))).map_err(|p| panic_message(p.as_ref()))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// A refusal's wording with its particulars blanked (paths, and every word holding a
/// digit: numbers, ids, hex), so that one refusal met with other values counts once.
fn refusal_kind(m: &str) -> String {
    let blank = |tok: &str| {
        if tok.contains('/') {
            return "<path>".to_string();
        }
        let (mut out, mut word) = (String::new(), String::new());
        let flush = |word: &mut String, out: &mut String| {
            if word.chars().any(|c| c.is_ascii_digit()) {
                out.push('#');
            } else {
                out.push_str(word);
            }
            word.clear();
        };
        for c in tok.chars() {
            if c.is_alphanumeric() {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out
    };
    m.split(' ').map(blank).collect::<Vec<_>>().join(" ")
}

/// Inputs that met a refusal no earlier input met, kept on disk across runs
/// (`PPDENOISE_FUZZ_CORPUS`, `make fuzz-mutation`: `target/fuzz/corpus/<target>/`) and mutated like
/// the valid files: the refusal's kind stands in for the coverage feedback that needs an
/// instrumented build (docs/security.md). `make test` keeps none, so that it tries the same
/// inputs on every machine.
struct Corpus {
    dir: Option<PathBuf>,
    kinds: std::collections::HashSet<String>,
    /// (index of the valid file it descends from, bytes)
    inputs: Vec<(usize, Vec<u8>)>,
}

/// The most inputs a target's corpus keeps.
const CORPUS_MAX: usize = 1000;

impl Corpus {
    fn open(t: &Target) -> Corpus {
        let dir =
            std::env::var_os("PPDENOISE_FUZZ_CORPUS").map(|d| PathBuf::from(d).join(slug(t.name)));
        let mut c = Corpus {
            dir,
            kinds: Default::default(),
            inputs: Vec::new(),
        };
        if let Some(d) = &c.dir {
            std::fs::create_dir_all(d).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for f in files.into_iter().take(CORPUS_MAX) {
                let k = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('-').next())
                    .and_then(|k| k.parse::<usize>().ok());
                if let (Some(k), Ok(b)) = (k, std::fs::read(&f)) {
                    if k < t.seeds.len() {
                        c.inputs.push((k, b));
                    }
                }
            }
        }
        c
    }

    /// Keeps `input` (made from valid file `k`) if it met a new kind of refusal.
    fn offer(&mut self, k: usize, input: &[u8], outcome: &Result<(), String>) -> bool {
        let Err(m) = outcome else { return false };
        if self.kinds.len() >= 64 * CORPUS_MAX || !self.kinds.insert(refusal_kind(m)) {
            return false;
        }
        let Some(d) = &self.dir else { return false };
        if self.inputs.len() >= CORPUS_MAX {
            return false;
        }
        let name = format!("{k}-{}.bin", &blake3::hash(input).to_hex()[..16]);
        std::fs::write(d.join(name), input).unwrap();
        self.inputs.push((k, input.to_vec()));
        true
    }
}

/// A target's own random stream: the same inputs whichever targets run, in whatever order.
fn target_rng(seed: u64, name: &str) -> ChaCha12Rng {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    ChaCha12Rng::seed_from_u64(seed ^ u64::from_le_bytes(b))
}

/// What one target's run found.
struct TargetRun {
    secs: f64,
    inputs: u64,
    accepted: u64,
    kinds: usize,
    corpus: (usize, usize),
    regressions: usize,
    crashes: Vec<String>,
}

/// Fuzzes one target: its earlier crashes (`fixtures/fuzz/`) and its corpus first, its valid
/// files (each must be accepted), then mutated inputs within the budget.
fn fuzz_target(t: &Target, budget: Budget, seed: u64) -> TargetRun {
    let crashes_at = crash_dir();
    // The input under test, per process: two runs on one checkout do not read each other's.
    let current = crashes_at.join(format!("{}.{}.input", slug(t.name), std::process::id()));
    let mut crashes = Vec::new();
    // Earlier crashes first (fixtures/fuzz/<target slug>-*.bin), against each seed.
    let fixed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("fuzz");
    let mut regressions = 0;
    if let Ok(rd) = std::fs::read_dir(&fixed) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&slug(t.name)) {
                let input = std::fs::read(e.path()).unwrap();
                for s in &t.seeds {
                    regressions += 1;
                    if let Err(m) = try_one(t, &input, &current, s) {
                        crashes.push(format!("{}: regression {name}: {m}", t.name));
                    }
                }
            }
        }
    }
    let valid: Vec<Vec<u8>> = t.seeds.iter().map(|s| std::fs::read(s).unwrap()).collect();
    // The valid files themselves must pass every step, or the target tests nothing; a
    // seed cut short on purpose (`cut-*`, [`dicom_seeds`]) must be refused, not crash.
    for (v, s) in valid.iter().zip(&t.seeds) {
        let outcome = try_one(t, v, &current, s);
        if s.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("cut-"))
        {
            assert!(
                matches!(outcome, Ok(Err(_))),
                "{}: the file cut short {} is not refused: {outcome:?}",
                t.name,
                s.display()
            );
            continue;
        }
        assert_eq!(
            outcome,
            Ok(Ok(())),
            "{}: the valid file {} is not accepted",
            t.name,
            s.display()
        );
    }
    // The corpus kept from earlier runs: replayed, and its refusals known.
    let mut corpus = Corpus::open(t);
    let kept = corpus.inputs.len();
    for (k, input) in std::mem::take(&mut corpus.inputs) {
        match try_one(t, &input, &current, &t.seeds[k]) {
            Ok(outcome) => {
                if let Err(m) = outcome {
                    corpus.kinds.insert(refusal_kind(&m));
                }
            }
            Err(m) => crashes.push(format!("{}: corpus input: {m}", t.name)),
        }
        corpus.inputs.push((k, input));
    }
    let mut rng = target_rng(seed, t.name);
    let (start, mut n, mut accepted) = (Instant::now(), 0u64, 0u64);
    let mut added = 0;
    while budget.allows(n, start, 1) {
        // Half of the inputs grow from the corpus, when there is one.
        let (k, base, is_valid) = if !corpus.inputs.is_empty() && rng.gen_bool(0.5) {
            let (k, b) = &corpus.inputs[rng.gen_range(0..corpus.inputs.len())];
            (*k, b, false)
        } else {
            let k = (rng.next_u32() as usize) % valid.len();
            (k, &valid[k], true)
        };
        let input = mutate(&mut rng, base, t.shape, is_valid);
        n += 1;
        match try_one(t, &input, &current, &t.seeds[k]) {
            Ok(outcome) => {
                accepted += outcome.is_ok() as u64;
                added += corpus.offer(k, &input, &outcome) as usize;
            }
            Err(m) => {
                let saved = crashes_at.join(format!("{}-{n}.bin", slug(t.name)));
                std::fs::write(&saved, &input).unwrap();
                crashes.push(format!("{}: {m} (input {})", t.name, saved.display()));
            }
        }
    }
    let _ = std::fs::remove_file(&current);
    TargetRun {
        secs: start.elapsed().as_secs_f64(),
        inputs: n,
        accepted,
        kinds: corpus.kinds.len(),
        corpus: (kept, added),
        regressions,
        crashes,
    }
}

/// A two-server exchange whose frames are altered: each server's side on its channel end.
trait PeerRun: Sync {
    fn name(&self) -> String;
    fn play(&self, p: Party, ch: &mut dyn Channel) -> Result<(), String>;
}

/// One MLP job's inputs on one engine, everything the two servers start from.
struct PeerJob {
    engine: EngineKind,
    relu: bool,
    shares: Vec<Plan>,
    job: JobParams,
    image: [Vec<u64>; 2],
    triplets: [Triplets; 2],
}

impl PeerRun for PeerJob {
    fn name(&self) -> String {
        let act = if self.relu { "ReLU" } else { "tanh*" };
        format!("{act} MLP job, {}", self.engine)
    }

    fn play(&self, p: Party, ch: &mut dyn Channel) -> Result<(), String> {
        let t = &self.triplets[p.index()];
        let mut engine = engine_for(self.engine, p, &t.base_ot).map_err(|e| e.to_string())?;
        let inputs = JobInputs {
            party: p,
            plan: &self.shares[p.index()],
            job: &self.job,
            image: &self.image[p.index()],
            rand: PartyRandomness::packed(p, t.seed, t.corrections.clone()),
            batch: t.batch,
            session_tag: vec![1; 48],
            weights: Weights::PerJob,
            patches: None,
        };
        mlp::run(ch, inputs, engine.as_mut(), &mut |_, _| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A tiny CNN's job (2 hidden layers of 3 channels on 7 x 9 pixels), run as its graph as
/// the servers run it, on one engine.
struct CnnPeerJob {
    engine: EngineKind,
    shares: [GraphPlan; 2],
    h: usize,
    w: usize,
    image: [Vec<u64>; 2],
    deal: ppdenoise::dealer::graph::Deal,
}

fn tiny_cnn_shares() -> [GraphPlan; 2] {
    let meta = CnnMeta {
        sigma: 25.0,
        residual: true,
    };
    let g = Graph::from_cnn(&random_cnn(&[1, 3, 3, 1], 3, 4, meta)).unwrap();
    let plan = GraphPlan::from_graph(&g, Default::default()).unwrap();
    let public = plan.public();
    GraphModelShare::split(&plan, &[5; 32]).map(|s| s.share_plan(&public).unwrap())
}

/// The dealer's job seeds of the peer-frame exchanges.
fn fixed_seeds() -> ppdenoise::dealer::DealSeeds {
    ppdenoise::dealer::DealSeeds {
        job: [[21; 32], [22; 32]],
        model_mask: None,
    }
}

fn cnn_peer_job(engine: EngineKind) -> CnnPeerJob {
    let shares = tiny_cnn_shares();
    let (h, w) = (7, 9);
    let pixels = ndarray::Array2::from_shape_fn((h, w), |(i, j)| ((i * 5 + j) % 13) as f64);
    let s = shares[0].params.s;
    let enc = ppdenoise::ring::cnn::encode_image(&pixels, &[], &Preprocess::identity(), s);
    let image = [
        share_with_seed(&enc, &[3; 32], Stream::ImageShare),
        expand(&[3; 32], Stream::ImageShare, enc.len()),
    ];
    let deal = ppdenoise::dealer::graph::generate_with(
        &shares[0],
        h,
        w,
        engine,
        40,
        &fixed_seeds(),
        engine.deal_setup_with(&mut ChaCha12Rng::seed_from_u64(24)),
    )
    .unwrap();
    CnnPeerJob {
        engine,
        shares,
        h,
        w,
        image,
        deal,
    }
}

impl PeerRun for CnnPeerJob {
    fn name(&self) -> String {
        format!("CNN job, {}", self.engine)
    }

    fn play(&self, p: Party, ch: &mut dyn Channel) -> Result<(), String> {
        let (rand, setup) = self.deal.party(p);
        let mut engine = engine_for(self.engine, p, setup).map_err(|e| e.to_string())?;
        let inputs = GraphJobInputs {
            party: p,
            plan: &self.shares[p.index()],
            height: self.h,
            width: self.w,
            image: &self.image[p.index()],
            rand,
            session_tag: vec![2; 48],
            weights: Weights::PerJob,
            relu_batch: 40,
        };
        ppdenoise::twopc::graph::run(ch, inputs, engine.as_mut(), &mut |_, _| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `open-weights`: the servers open U = W - A of a model once, under a model mask.
enum OpenWeights {
    Mlp(Box<[Plan; 2]>),
    Cnn([GraphPlan; 2]),
}

impl PeerRun for OpenWeights {
    fn name(&self) -> String {
        match self {
            OpenWeights::Mlp(_) => "open-weights, MLP".into(),
            OpenWeights::Cnn(_) => "open-weights, CNN".into(),
        }
    }

    fn play(&self, p: Party, ch: &mut dyn Channel) -> Result<(), String> {
        let seed = [11 + u8::from(p); 32];
        let r = match self {
            OpenWeights::Mlp(s) => {
                let mask = ppdenoise::corr::masks::mask_shares(&seed, &s[p.index()]);
                ppdenoise::twopc::weights::open_weights(ch, p, &s[p.index()], mask)
            }
            OpenWeights::Cnn(s) => {
                let mask = ppdenoise::twopc::graph::mask_shares(&seed, &s[p.index()]);
                ppdenoise::twopc::graph::open_graph_weights(ch, p, &s[p.index()], mask)
            }
        };
        r.map(|_| ()).map_err(|e| e.to_string())
    }
}

fn peer_job(engine: EngineKind, relu: bool) -> PeerJob {
    let mut model = tiny_mlp();
    if relu {
        model.meta.activation = Activation::Relu;
    }
    let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
    let shares = ModelShare::split(&plan, &model.meta, &[7; 32])
        .iter()
        .map(|s| s.share_plan().unwrap())
        .collect();
    let (h, w) = (9, 11);
    let pre = Preprocess::new(25.0, 25.0, false);
    let job = JobParams {
        height: h,
        width: w,
        bit_depth: 8,
        stride: 2,
        scale: FixedParams::default().s,
        pre,
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let pixels =
        ndarray::Array2::from_shape_fn((h, w), |(i, j)| ((i * 7 + j * 3) % 11) as f64 / 11.0);
    let enc = oracle::encode_image(&pixels, &pre, job.scale);
    let image = [
        share_with_seed(&enc, &[9; 32], Stream::ImageShare),
        expand(&[9; 32], Stream::ImageShare, h * w),
    ];
    let deal = NonlinearDeal::new(engine, &plan.circuits());
    // Fixed seeds: the same exchanges on every machine.
    let (t0, t1) = ppdenoise::dealer::generate_with(
        &job,
        &plan.widths(),
        plan.patch,
        16,
        &deal,
        &fixed_seeds(),
        engine.deal_setup_with(&mut ChaCha12Rng::seed_from_u64(23)),
    );
    PeerJob {
        engine,
        relu,
        shares,
        job,
        image,
        triplets: [t0, t1],
    }
}

/// A channel that alters the `at`-th message it sends.
struct Altering<C> {
    inner: C,
    sent: usize,
    at: usize,
    rng: ChaCha12Rng,
}

impl<C: Channel> Channel for Altering<C> {
    fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        self.sent += 1;
        if self.sent - 1 != self.at {
            return self.inner.send(msg);
        }
        let mut m = msg.to_vec();
        let r = &mut self.rng;
        if m.is_empty() || r.gen_bool(0.2) {
            if r.gen_bool(0.5) && !m.is_empty() {
                m.truncate(m.len() - r.gen_range(1..=m.len().min(8)));
            } else {
                m.extend((0..r.gen_range(1..8)).map(|_| r.gen::<u8>()));
            }
        } else {
            for _ in 0..r.gen_range(1..=4) {
                let i = r.gen_range(0..m.len());
                m[i] ^= 1 << r.gen_range(0..8);
            }
        }
        self.inner.send(&m)
    }
    fn recv(&mut self, expect: Expect) -> Result<Vec<u8>, ChannelError> {
        self.inner.recv(expect)
    }
    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }
}

/// Runs the job with message `at` of server `sender` altered (none when `at` is past the
/// end). Returns how many servers ended with an error and how many messages each sent;
/// `Err` names a panic.
fn run_altered(
    j: &dyn PeerRun,
    sender: u8,
    at: usize,
    seed: u64,
) -> Result<(usize, [usize; 2]), String> {
    let (c0, c1) = mem_pair();
    let wrap = |inner, p: u8| Altering {
        inner,
        sent: 0,
        at: if p == sender { at } else { usize::MAX },
        rng: ChaCha12Rng::seed_from_u64(seed),
    };
    let (a, b) = (wrap(c0, 0), wrap(c1, 1));
    let party = |p: Party, ch: &mut dyn Channel| j.play(p, ch);
    // Each thread owns its channel end, so a server that stops closes it and the other
    // one's receive fails at once instead of waiting for the channel's timeout.
    let own = |p: Party, mut ch: Altering<_>| {
        let r = catch_unwind(AssertUnwindSafe(|| party(p, &mut ch)));
        (r, ch.sent)
    };
    let [(r0, n0), (r1, n1)] = std::thread::scope(|sc| {
        let h0 = sc.spawn(|| own(Party::S0, a));
        let h1 = sc.spawn(|| own(Party::S1, b));
        [h0.join().unwrap(), h1.join().unwrap()]
    });
    let outcome = [r0, r1];
    let mut errors = 0;
    for (p, o) in outcome.into_iter().enumerate() {
        match o {
            Ok(Ok(())) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => {
                return Err(format!(
                    "S{p} panicked: {}, message {at} of S{sender} altered (alteration seed {seed})",
                    j.name()
                ))
            }
        }
    }
    Ok((errors, [n0, n1]))
}

/// Alters one random message of a random server per run, within `budget` (a run counts as
/// 5 file inputs); returns runs, runs in which a server refused (the rest finished, with a
/// wrong result), and the crashes.
fn fuzz_peer_frames(rng: &mut ChaCha12Rng, budget: Budget) -> (u64, u64, Vec<String>) {
    let mlp = ModelShare::split(
        &Plan::from_model(&tiny_mlp(), FixedParams::default()).unwrap(),
        &tiny_mlp().meta,
        &[6; 32],
    )
    .map(|s| s.share_plan().unwrap());
    let jobs: Vec<Box<dyn PeerRun>> = vec![
        Box::new(peer_job(EngineKind::Gmw, false)),
        Box::new(peer_job(EngineKind::Gc, false)),
        Box::new(peer_job(EngineKind::Gmw, true)),
        Box::new(peer_job(EngineKind::Gc, true)),
        Box::new(cnn_peer_job(EngineKind::Gmw)),
        Box::new(cnn_peer_job(EngineKind::Gc)),
        Box::new(OpenWeights::Mlp(Box::new(mlp))),
        Box::new(OpenWeights::Cnn(tiny_cnn_shares())),
    ];
    let mut sent = Vec::new();
    for j in &jobs {
        let (errors, n) =
            run_altered(j.as_ref(), 0, usize::MAX, 0).expect("the unaltered job runs");
        assert_eq!(errors, 0, "the unaltered {} fails", j.name());
        assert!(n[0] > 0 && n[1] > 0);
        sent.push(n);
    }
    let (start, mut runs, mut refused, mut crashes) = (Instant::now(), 0u64, 0u64, Vec::new());
    while budget.allows(runs, start, 5) {
        let k = (runs % jobs.len() as u64) as usize;
        let sender = rng.gen_range(0..2u8);
        let at = rng.gen_range(0..sent[k][sender as usize]);
        runs += 1;
        match run_altered(jobs[k].as_ref(), sender, at, rng.gen()) {
            Ok((e, _)) => refused += (e > 0) as u64,
            Err(m) => crashes.push(format!("peer frames: {m}")),
        }
    }
    (runs, refused, crashes)
}

/// The seed runs and the targets built on them, in `dir` (made there unless already made).
fn setup(dir: &Path) -> Vec<Target> {
    std::fs::create_dir_all(dir).unwrap();
    let (mlp, cnn) = seed_runs(dir);
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let targets = targets(&mlp, &cnn, &scratch);
    SIGNERS.get_or_init(|| {
        use ppdenoise::formats::signing::{Role, Signer};
        [&mlp, &cnn]
            .iter()
            .flat_map(|d| {
                Role::ALL.map(|r| {
                    Signer::load(&d.join(format!("keys/{}.sign-key", r.name())), r).unwrap()
                })
            })
            .collect()
    });
    targets
}

#[test]
#[ignore = "the fuzzing pass: `make test` runs it (and `make fuzz-mutation` at length)"]
fn fuzz_every_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let targets = setup(tmp.path());
    let (budget, seed) = Budget::from_env();
    // PPDENOISE_FUZZ_THREADS: targets fuzzed at once (each has its own random stream, so the
    // inputs do not depend on it); the machine's cores by default.
    let threads = std::env::var("PPDENOISE_FUZZ_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    eprintln!("fuzz: PPDENOISE_FUZZ_SEED={seed}, {budget:?} per target, {threads} at once");
    // PPDENOISE_FUZZ_ONLY: the targets whose names contain it, for a long run of a few.
    let only = std::env::var("PPDENOISE_FUZZ_ONLY").unwrap_or_default();
    // PPDENOISE_FUZZ_SKIP: comma-separated parts of names of targets left out.
    let skip = std::env::var("PPDENOISE_FUZZ_SKIP").unwrap_or_default();
    let wanted = |name: &str| {
        name.contains(&only)
            && !skip
                .split(',')
                .any(|k| !k.trim().is_empty() && name.contains(k.trim()))
    };
    let peer = "peer frames (MLP, CNN, open-weights)";
    // The peer frames first: their runs are the slowest.
    let mut work: Vec<Option<&Target>> = Vec::new();
    if wanted(peer) {
        work.push(None);
    }
    work.extend(targets.iter().filter(|t| wanted(t.name)).map(Some));
    // A filter that matches nothing (a typo) would pass having checked nothing.
    assert!(
        !work.is_empty(),
        "no fuzz target matches PPDENOISE_FUZZ_ONLY={only:?} and PPDENOISE_FUZZ_SKIP={skip:?}"
    );
    // Panics are counted here; their messages would drown the report.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (crashes, total) = (
        std::sync::Mutex::new(Vec::new()),
        std::sync::atomic::AtomicU64::new(0),
    );
    std::thread::scope(|sc| {
        for _ in 0..threads.min(work.len()) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(job) = work.get(i) else { break };
                let (n, found) = match job {
                    Some(t) => {
                        // A panic outside the parser (in the harness) names its target
                        // rather than ending this worker without a word.
                        let r = match catch_unwind(AssertUnwindSafe(|| fuzz_target(t, budget, seed))) {
                            Ok(r) => r,
                            Err(p) => {
                                let m = panic_message(p.as_ref());
                                eprintln!("fuzz: {}: the harness panicked: {m}", t.name);
                                crashes.lock().unwrap().push(format!("{}: harness: {m}", t.name));
                                continue;
                            }
                        };
                        eprintln!(
                            "fuzz: {:<42} {:>7} inputs in {:.0} s ({} accepted), {} kinds of refusal, corpus {}+{}, {} regression inputs, {} crashes",
                            t.name,
                            r.inputs,
                            r.secs,
                            r.accepted,
                            r.kinds,
                            r.corpus.0,
                            r.corpus.1,
                            r.regressions,
                            r.crashes.len()
                        );
                        (r.inputs, r.crashes)
                    }
                    None => {
                        let mut rng = target_rng(seed, peer);
                        let (runs, refused, found) = fuzz_peer_frames(&mut rng, budget);
                        eprintln!(
                            "fuzz: {peer:<42} {runs:>7} runs, {refused} refused by a server, {} crashes",
                            found.len()
                        );
                        (runs, found)
                    }
                };
                total.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                crashes.lock().unwrap().extend(found);
            });
        }
    });
    std::panic::set_hook(hook);
    let crashes = crashes.into_inner().unwrap();
    eprintln!(
        "fuzz: {} targets, {} inputs, {} crashes",
        work.len(),
        total.into_inner(),
        crashes.len()
    );
    assert!(crashes.is_empty(), "crashes:\n{}", crashes.join("\n"));
}
