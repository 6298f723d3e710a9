//! Fuzzing of the parsers of untrusted bytes (issue 12): every file kind a party reads from
//! another (container headers and bodies of every kind, the triplet stream, output shares,
//! public headers through the dealer, model `.npz` files), mutated from valid files.
//!
//! Valid files come from two real `demo` runs on tiny random models (an MLP with the
//! boolean engine, a CNN with the garbled-circuit engine). Each input is the valid file with
//! 1-8 random mutations (bit flips, interesting bytes and 32/64-bit values at length fields,
//! cuts, insertions, copied chunks), and for containers the trailing BLAKE3 re-sealed most of
//! the time (the checksum is unkeyed, so an attacker does that too). Each input goes through
//! the same calls a server, the dealer or the receiver makes; it must give `Ok` or an error,
//! never a panic, and never ask for more than [`ALLOC_LIMIT`] bytes at once (the test
//! binary's allocator refuses larger requests, which aborts the process; the input being
//! parsed is then left in `target/fuzz/<target>.input`).
//!
//! `cargo test --release --test fuzz` runs each target for `PPDENOISE_FUZZ_SECS` seconds
//! (default 4: about a minute in all, in CI); `make fuzz` runs longer. Seeded from
//! `PPDENOISE_FUZZ_SEED` (default: fresh, printed). Every crash is saved in `target/fuzz/`
//! and fails the test; the inputs in `fixtures/fuzz/` (crashes found earlier) run first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use ppdenoise::formats::bodies::{
    load, CnnModelShare, DealerMask, ImageShare, ModelMask, ModelShare, OpenedWeights,
};
use ppdenoise::formats::container::Kind;
use ppdenoise::formats::triplet_stream;
use ppdenoise::plain::cnn::{random_cnn, CnnMeta};
use ppdenoise::plain::model::{random_model, Activation, ModelMeta};

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

/// Two demo runs on tiny models: every file kind the parties exchange.
fn seed_runs(dir: &Path) -> (PathBuf, PathBuf) {
    let (mlp, cnn) = (dir.join("mlp"), dir.join("cnn"));
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 0.0,
    };
    random_model(&[25, 6, 9], 1, meta)
        .save(&dir.join("mlp.npz"))
        .unwrap();
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
        ]);
    }
    (mlp, cnn)
}

/// What a party does with an input (`f`), given the valid file it was made from.
type Parse = Box<dyn Fn(&Path, &Path)>;

/// One parser under test: the valid files it starts from and what a party does with them.
struct Target {
    name: &'static str,
    seeds: Vec<PathBuf>,
    container: bool,
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
            container: true,
            parse: Box::new(|f, _| {
                if let Ok((_, ms)) = load::<ModelShare>(f, Kind::ModelShare, None) {
                    let _ = ms.share_plan();
                }
            }),
        },
        Target {
            name: "model share (CNN)",
            seeds: both(cnn, "model"),
            container: true,
            parse: Box::new(|f, _| {
                if let Ok((_, ms)) = load::<CnnModelShare>(f, Kind::CnnModelShare, None) {
                    let _ = ms.share_plan();
                }
            }),
        },
        Target {
            name: "image share",
            seeds: [both(mlp, "image"), both(cnn, "image")].concat(),
            container: true,
            parse: Box::new(|f, _| {
                if let Ok((_, is)) = load::<ImageShare>(f, Kind::ImageShare, None) {
                    // Up to MAX_PIXELS (2^28) a job is valid by design, and S1's seed then
                    // expands to that many values (what `serve` does): expanded here only
                    // when small, so that the time goes to parsing.
                    let n = is.job.height.saturating_mul(is.job.width);
                    if is.job.validate().is_ok() && n <= 1 << 16 {
                        let _ = is
                            .data
                            .materialise(ppdenoise::ring::share::Stream::ImageShare, n);
                    }
                }
            }),
        },
        Target {
            name: "triplet stream",
            seeds: [both(mlp, "triplets"), both(cnn, "triplets")].concat(),
            container: true,
            parse: Box::new(|f, _| {
                for party in 0..2 {
                    if let Ok((_, mut ts)) = triplet_stream::open(f, party) {
                        loop {
                            let left = ts.corrections.len() - ts.corrections.position();
                            if left == 0 || ts.corrections.take(left.min(4096) as usize).is_err() {
                                break;
                            }
                        }
                        let _ = ts.corrections.finish();
                    }
                }
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
            container: true,
            parse: Box::new(|f, _| {
                let _ = load::<ModelMask>(f, Kind::ModelMask, None);
                let _ = load::<DealerMask>(f, Kind::DealerMask, None);
                let _ = load::<OpenedWeights>(f, Kind::OpenedWeights, None);
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
            container: true,
            parse: Box::new(move |f, seed| {
                let _ = if seed == o0 {
                    ppdenoise::cli::receiver::combine(f, &o1)
                } else {
                    ppdenoise::cli::receiver::combine(&o0, f)
                };
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
            container: true,
            parse: Box::new(move |f, seed| {
                let (model, image) = if seed == m {
                    (f.to_path_buf(), i.clone())
                } else {
                    (m.clone(), f.to_path_buf())
                };
                let args = ppdenoise::cli::dealer::GenTripletsArgs {
                    model,
                    image,
                    batch: None,
                    engine: Default::default(),
                    model_mask: None,
                    out: out.clone(),
                };
                let _ = ppdenoise::cli::dealer::gen_triplets(args);
            }),
        });
    }
    // The model owner's inputs: model files (zip of .npy arrays).
    t.push(Target {
        name: "model .npz (MLP and CNN)",
        seeds: vec![
            mlp.parent().unwrap().join("mlp.npz"),
            mlp.parent().unwrap().join("cnn.npz"),
        ],
        container: false,
        parse: Box::new(|f, _| {
            let _ = ppdenoise::plain::model::Model::load(f);
            let _ = ppdenoise::plain::cnn::Cnn::load(f);
        }),
    });
    t
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

fn mutate(rng: &mut ChaCha12Rng, valid: &[u8], container: bool) -> Vec<u8> {
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
    if container && b.len() >= 32 && rng.gen_bool(0.85) {
        let n = b.len() - 32;
        let sum = blake3::hash(&b[..n]);
        b[n..].copy_from_slice(sum.as_bytes());
    }
    b
}

fn secs() -> f64 {
    std::env::var("PPDENOISE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0)
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

/// Runs `parse` on `input` (written to `path`), catching a panic.
fn try_one(t: &Target, input: &[u8], path: &Path, seed: &Path) -> Result<(), String> {
    std::fs::write(path, input).unwrap();
    catch_unwind(AssertUnwindSafe(|| (t.parse)(path, seed))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

#[test]
fn fuzz_every_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let (mlp, cnn) = seed_runs(tmp.path());
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let targets = targets(&mlp, &cnn, &scratch);
    let seed: u64 = std::env::var("PPDENOISE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("fuzz: PPDENOISE_FUZZ_SEED={seed}, {} s per target", secs());
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let crashes_at = crash_dir();
    // Panics are counted here; their messages would drown the report.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut crashes = Vec::new();
    let mut total = 0u64;
    for t in &targets {
        let current = crashes_at.join(format!("{}.input", slug(t.name)));
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
        let (start, budget) = (Instant::now(), Duration::from_secs_f64(secs()));
        let mut n = 0u64;
        while start.elapsed() < budget {
            let k = (rng.next_u32() as usize) % valid.len();
            let input = mutate(&mut rng, &valid[k], t.container);
            n += 1;
            if let Err(m) = try_one(t, &input, &current, &t.seeds[k]) {
                let saved = crashes_at.join(format!("{}-{n}.bin", slug(t.name)));
                std::fs::write(&saved, &input).unwrap();
                crashes.push(format!("{}: {m} (input {})", t.name, saved.display()));
            }
        }
        total += n;
        eprintln!(
            "fuzz: {:<42} {n:>7} inputs, {regressions} regression inputs, {} crashes",
            t.name,
            crashes.iter().filter(|c| c.starts_with(t.name)).count()
        );
    }
    std::panic::set_hook(hook);
    eprintln!(
        "fuzz: {} targets, {total} inputs, {} crashes",
        targets.len(),
        crashes.len()
    );
    assert!(crashes.is_empty(), "crashes:\n{}", crashes.join("\n"));
}
