//! Helpers shared by the integration tests (`use crate::common;`; tests/fuzz.rs takes them by
//! path).
// tests/fuzz.rs compiles this module whole and uses part of it.
#![allow(dead_code)]

pub mod graph_job;
pub mod in_process;
pub mod study_job;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// A DICOM slice of series `series`, instance `instance`, at height `z`: a phantom's values.
pub fn dicom_slice(path: &Path, series: &str, instance: i32, z: f64, size: usize, seed: u64) {
    let img = ppdenoise::image::load_input(&format!("builtin:phantom:{size}")).unwrap();
    let noisy = ppdenoise::image::add_noise(&img, 20.0, seed);
    let values: Vec<u16> = noisy
        .pixels
        .iter()
        .map(|v| (v.clamp(0.0, 255.0) * 4095.0 / 255.0).round() as u16)
        .collect();
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let obj = InMemDicomObject::from_element_iter([
        s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        s(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            &format!("{series}.{instance}"),
        ),
        s(tags::MODALITY, VR::CS, "CT"),
        s(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        s(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.7",
        ),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series),
        s(tags::SERIES_DESCRIPTION, VR::LO, "Abdomen"),
        s(tags::INSTANCE_NUMBER, VR::IS, &instance.to_string()),
        s(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("0\\0\\{z}")),
        s(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
    ]);
    write_ct12(path, obj, size, values);
}

/// A multi-frame DICOM (an enhanced-CT-like object) of `frames` noisy phantoms of
/// `size x size`, 12 bits stored: frame k has the noise of seed `seed + k`.
pub fn dicom_multi_frame(path: &Path, frames: usize, size: usize, seed: u64) {
    let img = ppdenoise::image::load_input(&format!("builtin:phantom:{size}")).unwrap();
    let mut values: Vec<u16> = Vec::with_capacity(frames * size * size);
    for k in 0..frames {
        let noisy = ppdenoise::image::add_noise(&img, 20.0, seed + k as u64);
        values.extend(
            noisy
                .pixels
                .iter()
                .map(|v| (v.clamp(0.0, 255.0) * 4095.0 / 255.0).round() as u16),
        );
    }
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let obj = InMemDicomObject::from_element_iter([
        s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2.1"), // Enhanced CT
        s(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.8.1",
        ),
        s(tags::MODALITY, VR::CS, "CT"),
        s(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        s(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.8",
        ),
        s(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.8.2",
        ),
        s(tags::SERIES_DESCRIPTION, VR::LO, "Enhanced"),
        s(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()),
    ]);
    write_ct12(path, obj, size, values);
}

/// Writes `obj` with a 12-bit unsigned MONOCHROME2 image pixel module of `size x size`
/// frames holding `values` (as many frames as `values` fills), explicit VR little endian.
fn write_ct12(path: &Path, mut obj: InMemDicomObject, size: usize, values: Vec<u16>) {
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    for e in [
        us(tags::SAMPLES_PER_PIXEL, 1),
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, size as u16),
        us(tags::COLUMNS, size as u16),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 12),
        us(tags::HIGH_BIT, 11),
        us(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into())),
    ] {
        obj.put(e);
    }
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

/// Whether the generated fixture `rel` (a path in the repository, which `make <target>`
/// writes) is there. When it is not, the test is skipped with a line saying why, so that a
/// plain `cargo test` on a fresh clone passes; `make test` makes every fixture first and sets
/// PPDENOISE_FIXTURES_REQUIRED, under which a missing one fails the test instead.
pub fn have_fixture(rel: &str, target: &str) -> bool {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if p.exists() {
        return true;
    }
    assert!(
        std::env::var_os("PPDENOISE_FIXTURES_REQUIRED").is_none(),
        "{}: missing; run `make {target}`",
        p.display()
    );
    eprintln!(
        "skipped: {} is missing (`make {target}` writes it)",
        p.display()
    );
    false
}

/// [`have_fixture`] of the graph fixtures (`make graph-fixtures`: onnx and onnxruntime from
/// PyPI).
pub fn have_graph_fixtures() -> bool {
    have_fixture("out/graph-fixtures/.ok", "graph-fixtures")
}

/// [`have_fixture`] of pydicom's venv and test data (`make dicom-testdata`: pydicom and
/// OpenJPEG from PyPI).
pub fn have_dicom_testdata() -> bool {
    have_fixture(".venv-dicom/bin/python", "dicom-testdata")
        && have_fixture("out/dicom-testdata/.ok", "dicom-testdata")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

/// `ppdenoise --json ARGS`.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--json")
        .args(args)
        .output()
        .expect("run ppdenoise")
}

/// `ppdenoise --json ARGS`, which must succeed: its JSON summary.
pub fn ok(args: &[&str]) -> serde_json::Value {
    summary(&run(args), &format!("{args:?}"))
}

/// The JSON summary of `o`, a `--json` run that must have succeeded (`what` names it).
pub fn summary(o: &Output, what: &str) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON summary")
}

/// `share-study --sigma SIGMA --in INPUT --out OUT --model model.pub EXTRA`, each name in the
/// test's folder `dir`, which holds the shared model: the run as it is.
/// An empty `sigma` gives no --sigma (`extra` gives the levels).
pub fn share_study(dir: &Path, sigma: &str, input: &str, out: &str, extra: &[&str]) -> Output {
    let p = |n: &str| dir.join(n).display().to_string();
    let (i, o, m) = (p(input), p(out), p("model.pub"));
    let mut args = vec!["share-study", "--in", &i, "--out", &o, "--model", &m];
    if !sigma.is_empty() {
        args.extend(["--sigma", sigma]);
    }
    args.extend(extra);
    run(&args)
}

/// The child's output, killing it after `limit`.
pub fn wait_limit(mut c: Child, limit: Duration) -> Output {
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = c.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

thread_local! {
    static TEST_RNG: std::cell::RefCell<Option<rand_chacha::ChaCha20Rng>> =
        const { std::cell::RefCell::new(None) };
}

/// Draws from this test's randomness (shares, masks, dealer seeds), seeded from
/// `PPDENOISE_TEST_SEED` when set and from the OS otherwise. The seed is printed once per
/// test thread, and cargo shows it with a failure: `PPDENOISE_TEST_SEED=<seed> cargo test
/// <name>` re-runs the same shares and masks.
pub fn with_test_rng<R>(f: impl FnOnce(&mut rand_chacha::ChaCha20Rng) -> R) -> R {
    use rand::SeedableRng;
    TEST_RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rng = slot.get_or_insert_with(|| {
            let seed = std::env::var("PPDENOISE_TEST_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(rand::random::<u64>);
            eprintln!("PPDENOISE_TEST_SEED={seed} re-runs this test's shares and masks");
            rand_chacha::ChaCha20Rng::seed_from_u64(seed)
        });
        f(rng)
    })
}

/// A seed from this test's randomness ([`with_test_rng`]).
pub fn test_seed() -> [u8; 32] {
    with_test_rng(|r| {
        let mut s = [0u8; 32];
        rand::RngCore::fill_bytes(r, &mut s);
        s
    })
}

/// What pydicom (PyPI's, in `make dicom-testdata`'s venv) reads of a DICOM file:
/// scripts/read-dicom.py's JSON.
pub fn pydicom_reads(path: &Path) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(root.join(".venv-dicom/bin/python"))
        .arg(root.join("scripts/read-dicom.py"))
        .arg(path)
        .output()
        .expect("run .venv-dicom/bin/python (make dicom-testdata)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A free port for a program a test starts that must be told its port before it binds it
/// (Orthanc, `receive`, a peer's address). Drawn below the kernel's ephemeral range, which
/// `bind(0)` and every outgoing connection take theirs from, so no parallel test's
/// connection can take it between now and the program's bind (it did: two archive tests
/// failed on CI with Orthanc's port "already in use"); never the same twice in one test
/// process; checked free by binding it. Prefer [`s0_listen_args`] where the program can
/// bind port 0 itself.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The ephemeral range's low end; ports from 10000 to it are for ports chosen so.
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .filter(|&l| l > 12_000 && l <= 65_535)
        .unwrap_or(32_768);
    let span = low - 10_000;
    // Two test runs on one machine start from different places (process id and clock);
    // one process walks on from its start, so it never hands out a port twice.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ clock) % span
    });
    for _ in 0..span {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(10_000 + (start + k) % span).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({low})");
}

/// S0's `--addr` and `--port-file` arguments for a server that binds a port the system
/// picks (port 0) and writes it to `port_file`; [`s0_port`] then reads it. Nothing is
/// released between choosing the port and listening on it, so no other test can take it.
pub fn s0_listen_args(port_file: &Path) -> [String; 4] {
    [
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--port-file".into(),
        port_file.display().to_string(),
    ]
}

/// The port S0 (`s0`, started with [`s0_listen_args`]) listens on, once it has bound it;
/// a panic with its output if it exits first (its file checks refused the job).
pub fn s0_port(port_file: &Path, s0: &mut Child) -> u16 {
    listening_port(port_file, s0).unwrap_or_else(|| {
        let mut err = String::new();
        if let Some(e) = s0.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut err);
        }
        panic!("S0 never listened ({}): {err}", port_file.display());
    })
}

/// The port S0 listens on once it has bound it, or `None` if it ended first (a refusal
/// before the link, its output left for the caller); a panic if neither comes in 2 minutes.
fn listening_port(port_file: &Path, s0: &mut Child) -> Option<u16> {
    let t = Instant::now();
    loop {
        if let Some(port) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(port);
        }
        if s0.try_wait().unwrap().is_some() {
            return None;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = s0.kill();
            panic!("S0 neither listened nor ended ({})", port_file.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts S0 with `start(addr)`, `addr` making it bind a port the system picks and write it
/// to a fresh file in `dir` ([`s0_listen_args`]): S0, and its port once it listens (`None`:
/// it ended first, refusing the job before the link).
pub fn start_s0(dir: &Path, start: impl FnOnce(&[String]) -> Child) -> (Child, Option<u16>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let pf = dir.join(format!("s0-port-{}", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&pf);
    let mut c0 = start(&s0_listen_args(&pf));
    let port = listening_port(&pf, &mut c0);
    (c0, port)
}

/// Starts S0 with `start(0, addr)` ([`start_s0`]), then S1 with `start(1, addr)` once S0
/// listens, `addr` its `--addr`: no port is chosen before S0 holds it. When S0 refuses the
/// job before listening, S1 is pointed at port 0, where nothing can listen, and meets
/// nobody, as it would with S0 not started.
pub fn start_pair(dir: &Path, mut start: impl FnMut(u8, &[String]) -> Child) -> [Child; 2] {
    let (c0, port) = start_s0(dir, |a| start(0, a));
    let c1 = start(
        1,
        &["--addr".into(), format!("127.0.0.1:{}", port.unwrap_or(0))],
    );
    [c0, c1]
}

/// `--addr` for a server that must refuse before the link: port 0, so that nothing is
/// chosen for it (were it to get that far, it listens where the system says, or S1 finds
/// nobody there).
pub fn no_link_addr() -> [String; 2] {
    ["--addr".into(), "127.0.0.1:0".into()]
}

/// The job id a public job header (image.pub) names: what share-image printed and the
/// gateway tells the receiver (`reconstruct --job-id`).
pub fn job_id_of(image_pub: &Path) -> String {
    ok(&["inspect", &image_pub.display().to_string()])["job_id"]
        .as_str()
        .expect("a job header names its job")
        .to_string()
}

/// A signing key of a forger's own (`keygen --signing --name NAME` into `keys`), loaded to
/// sign as `role`: what the tests forge files with.
pub fn own_signer(
    keys: &Path,
    name: &str,
    role: ppdenoise::formats::signing::Role,
) -> ppdenoise::formats::signing::Signer {
    ok(&[
        "keygen",
        "--signing",
        "--name",
        name,
        "--out-dir",
        &keys.display().to_string(),
    ]);
    ppdenoise::formats::signing::Signer::load(&keys.join(format!("{name}.sign-key")), role).unwrap()
}

/// The parties' keys in `keys`: for each of `parties`, its TLS key and certificate and its
/// age identity (`keygen --name`); for each of `signers`, a signing key (`keygen --signing`);
/// and `keys/trust`, the trust file that names the signers' public keys by role.
pub fn party_keys(keys: &Path, parties: &[&str], signers: &[&str]) {
    let out = keys.display().to_string();
    for n in parties {
        ok(&["keygen", "--name", n, "--out-dir", &out]);
    }
    let mut trust = String::new();
    for role in signers {
        let v = ok(&["keygen", "--signing", "--name", role, "--out-dir", &out]);
        trust.push_str(&format!("{role} {}\n", v["public_key"].as_str().unwrap()));
    }
    std::fs::write(keys.join("trust"), trust).unwrap();
}

/// The DICOM file `path`'s attribute `tag` as text, trimmed.
pub fn dicom_attr(path: &Path, tag: dicom_core::Tag) -> String {
    dicom_object::open_file(path)
        .unwrap()
        .element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string()
}

/// One of pydicom's public test files, from `make dicom-testdata`'s venv (PyPI's wheel).
pub fn pydicom_test_file(name: &str) -> std::path::PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-dicom/lib");
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make dicom-testdata`", lib.display()))
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .expect("a python3 folder in .venv-dicom/lib")
        .path();
    python
        .join("site-packages/pydicom/data/test_files")
        .join(name)
}

/// `ADDR` for the walk-through, whose S0 and S1 are both given it (as a deployment gives
/// them a fixed address): the script's port on a loopback address of its own (all of
/// 127.0.0.0/8 is this machine's). Other tests listen on 127.0.0.1 or a port the system
/// picks, and connect from 127.0.0.1, so none can take that port there before S0 binds it.
pub fn own_loopback_addr() -> String {
    let n: u32 = rand::random();
    let octet = |k: u32| 1 + (n >> (8 * k)) % 254;
    format!("127.{}.{}.{}:7455", octet(0), octet(1), octet(2))
}

/// The code blocks of a Markdown `page` fenced as `lang` (`sh`, `json`), in order.
pub fn blocks<'a>(page: &'a str, lang: &str) -> Vec<&'a str> {
    page.split(&format!("```{lang}\n"))
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect()
}

/// Party 1's explicit values as the dealer file gives them (each at its width), with every
/// bit above the width its reader asks for set to garbage from a seeded generator: what a
/// reader computes from them must not depend on those bits (docs/protocol.md, "Ring width").
pub struct Garbled {
    values: std::vec::IntoIter<u64>,
    /// Bits in all and read so far, as the dealer file counts them.
    len: u64,
    read: u64,
    rng: rand_chacha::ChaCha20Rng,
}

impl Garbled {
    /// `values` (each reduced to its width, as `dealer::cnn::CnnDeal` holds them), `bits`
    /// of them in all, garbled from `seed`.
    pub fn new(values: Vec<u64>, bits: u64, seed: u64) -> Garbled {
        use rand::SeedableRng;
        Garbled {
            values: values.into_iter(),
            len: bits,
            read: 0,
            rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        }
    }
}

impl ppdenoise::corr::randomness::CorrectionSource for Garbled {
    fn len(&self) -> u64 {
        self.len
    }
    fn position(&self) -> u64 {
        self.read
    }
    fn origin(&self) -> &std::path::Path {
        std::path::Path::new("garbled")
    }
    fn take(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, String> {
        let high = if bits == 64 { 0 } else { u64::MAX << bits };
        self.read += n as u64 * bits as u64;
        Ok((&mut self.values)
            .take(n)
            .map(|v| {
                assert_eq!(
                    v & high,
                    0,
                    "the dealer's values come reduced to their width"
                );
                v | (rand::Rng::gen::<u64>(&mut self.rng) & high)
            })
            .collect())
    }
    fn finish(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Makes one of the Makefile's targets (a converted model) and returns its path. The tests
/// run in parallel and share the Makefile's venvs: two makes creating one at once fail
/// ("File exists"), so they take turns.
pub fn make_target(target: &str) -> std::path::PathBuf {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("make")
        .args(["-s", target])
        .current_dir(root)
        .status()
        .expect("run make");
    assert!(st.success(), "make {target} failed");
    root.join(target)
}
