//! File formats (issue 2, item 7): every way a file can be wrong gives a specific error that
//! names the file, from the library (`formats::container::read`, `formats::bodies::load`) and
//! from the command line (non-zero exit): wrong kind, wrong party, unknown version, ids of
//! another job or model, truncation, a flipped byte, absurd sizes (refused before any large
//! allocation), foreign files. And atomic writes: no temporary file left behind, an existing
//! output untouched when writing fails. Crafted files (rewritten with a valid checksum, which
//! is not a signature): every public field of a model share, image share, output share and
//! dealer header is validated before anything is claimed or sized from it.

use ppdenoise::ring::Party;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ppdenoise::fileio::atomic;
use ppdenoise::formats::bodies::{
    load, Data, ImageShare, JobParams, ModelShare, OutputShare, Triplets,
};
use ppdenoise::formats::container::{self, FormatError, Header, Kind, MAGIC, VERSION};
use ppdenoise::model::geometry::Geometry;
use ppdenoise::model::mlp::{random_model, ModelMeta, PatchShape};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::plan::{FixedParams, Hidden};

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

/// `reconstruct` of two files of `f`'s folder into `out`.
fn reconstruct(f: &Files, share0: &str, share1: &str, out: &str) -> Output {
    ppd(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &s(&f.p(share0)),
        "--share1",
        &s(&f.p(share1)),
        "--out",
        &s(&f.p(out)),
    ])
}

/// Non-zero exit and an error text containing every needle.
fn cli_refuses(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_ne!(o.status.code(), Some(0));
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
    err
}

/// A directory with the files of one job: model.p*, image.p*, triplets.p*, keys.
struct Files {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Files {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn new() -> Files {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let f = Files { _tmp: tmp, dir };
        random_model(&[49, 8, 9], 5, ModelMeta::default())
            .save(&f.p("m.npz"))
            .unwrap();
        let run = |args: &[&str]| {
            let o = ppd(args);
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&[
            "share-model",
            "--model",
            &s(&f.p("m.npz")),
            "--out",
            &s(&f.p("model")),
        ]);
        run(&[
            "share-image",
            "--sigma",
            "25",
            "--image",
            "builtin:phantom:16",
            "--out",
            &s(&f.p("image")),
        ]);
        run(&[
            "gen-triplets",
            "--model",
            &s(&f.p("model.p1")),
            "--image",
            &s(&f.p("image.p1")),
            "--batch",
            "10",
            "--out",
            &s(&f.p("triplets")),
        ]);
        for n in ["s0", "s1"] {
            run(&["keygen", "--name", n, "--out-dir", &s(&f.p("keys"))]);
        }
        f
    }

    /// `serve --party p` with the standard files, some replaced. All the refusals tested
    /// here happen before the server opens the link.
    fn serve(&self, p: u8, model: &str, image: &str, triplets: &str) -> Output {
        let (me, peer) = if p == 0 { ("s0", "s1") } else { ("s1", "s0") };
        let port = crate::common::free_port();
        Command::new(bin())
            .args(["serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &s(&self.p(model))])
            .args(["--image", &s(&self.p(image))])
            .args(["--triplets", &s(&self.p(triplets))])
            .args(["--key", &s(&self.p(&format!("keys/{me}.key")))])
            .args(["--cert", &s(&self.p(&format!("keys/{me}.crt")))])
            .args(["--peer-cert", &s(&self.p(&format!("keys/{peer}.crt")))])
            .args(["--addr", &format!("127.0.0.1:{port}"), "--timeout", "2"])
            .args(["--state-dir", &s(&self.p("state"))])
            .args(["--out", &s(&self.p(&format!("out.p{p}")))])
            .output()
            .unwrap()
    }

    fn no_output(&self) {
        for p in ["out.p0", "out.p1"] {
            assert!(!self.p(p).exists(), "{p} was written");
        }
        assert!(
            !self.p("state").exists(),
            "a refused run recorded its randomness as consumed"
        );
    }
}

fn copy_with(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    std::fs::write(dst, b).unwrap();
}

fn header_len(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize
}

#[test]
fn wrong_kind() {
    let f = Files::new();
    // Library.
    let e = load::<ModelShare>(&f.p("image.p0"), Kind::ModelShare, Some(Party::S0)).unwrap_err();
    assert!(matches!(e, FormatError::WrongKind { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("image.p0") && msg.contains("model share") && msg.contains("image share"),
        "{msg}"
    );
    let e = load::<Triplets>(&f.p("model.p0"), Kind::Triplets, Some(Party::S0)).unwrap_err();
    assert!(matches!(e, FormatError::WrongKind { .. }), "{e:?}");
    // An image share given as the model, the model as the triplets.
    let o = f.serve(0, "image.p0", "image.p0", "triplets.p0");
    cli_refuses(&o, &["image.p0", "expected a model share", "image share"]);
    let o = f.serve(1, "model.p1", "image.p1", "model.p1");
    cli_refuses(&o, &["model.p1", "expected a correlated randomness"]);
    // The dealer and the receiver check kinds too.
    let o = ppd(&[
        "gen-triplets",
        "--model",
        &s(&f.p("image.p1")),
        "--image",
        &s(&f.p("image.p1")),
        "--out",
        &s(&f.p("t2")),
    ]);
    cli_refuses(
        &o,
        &["image.p1", "expected a public model header", "image share"],
    );
    let o = reconstruct(&f, "image.p0", "image.p1", "x.png");
    cli_refuses(&o, &["image.p0", "expected a output share"]);
    assert!(!f.p("x.png").exists() && !f.p("t2.p0").exists());
    f.no_output();
}

#[test]
fn wrong_party() {
    let f = Files::new();
    let e = load::<ModelShare>(&f.p("model.p1"), Kind::ModelShare, Some(Party::S0)).unwrap_err();
    assert!(
        matches!(
            e,
            FormatError::WrongParty {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("model.p1"));
    let o = f.serve(0, "model.p1", "image.p0", "triplets.p0");
    cli_refuses(&o, &["model.p1", "party 1", "party 0"]);
    let o = f.serve(1, "model.p1", "image.p1", "triplets.p0");
    cli_refuses(&o, &["triplets.p0", "party 0", "party 1"]);
    // The receiver needs out.p0 as --share0.
    f.no_output();
}

/// Format 7 changed the MLP model share's body (the plan names its hidden activation): one
/// of version 6 is refused by name, not misread; a header of another kind from version 6
/// still reads.
#[test]
fn mlp_model_shares_before_format_7_are_refused_by_name() {
    let f = Files::new();
    let v6 = |b: &mut Vec<u8>| b[8..10].copy_from_slice(&6u16.to_le_bytes());
    copy_with(&f.p("model.p0"), &f.p("old.p0"), v6);
    let o = ppd(&["inspect", &s(&f.p("old.p0"))]);
    cli_refuses(
        &o,
        &[
            "old.p0",
            "format version 6, from an older ppdenoise",
            "share the model again",
        ],
    );
    // (A job's public header: image shares, triplets and output shares before format 9 are
    // refused, their jobs lacking the colour count.)
    copy_with(&f.p("image.pub"), &f.p("oldimg.pub"), v6);
    let h = container::read_header(&f.p("oldimg.pub")).unwrap();
    assert_eq!(h.kind, Kind::PublicJob);
    f.no_output();
}

/// Format 10 draws seeded values from AES-256-CTR streams where 9 drew ChaCha20: a file of
/// version 9 holding values drawn from a seed (model, image and triplet shares of either
/// party) would be misread, so it is refused by name with what to make again, and a server
/// given one stops before claiming any randomness; the public headers still read.
#[test]
fn seeded_files_before_format_10_are_refused_by_name() {
    let f = Files::new();
    let v9 = |b: &mut Vec<u8>| b[8..10].copy_from_slice(&9u16.to_le_bytes());
    let older = ["format version 9, from an older ppdenoise", "ChaCha20"];
    let dealer = ["format version 9, made by an older dealer", "AES-256-CTR"];
    for (name, why, again) in [
        ("model.p0", older, "share the model again"),
        ("model.p1", older, "share the model again"),
        ("image.p0", older, "share the image again"),
        ("image.p1", older, "share the image again"),
        (
            "triplets.p0",
            dealer,
            "deal the job again with `gen-triplets`",
        ),
        (
            "triplets.p1",
            dealer,
            "deal the job again with `gen-triplets`",
        ),
    ] {
        let old = format!("old-{name}");
        copy_with(&f.p(name), &f.p(&old), v9);
        let o = ppd(&["inspect", &s(&f.p(&old))]);
        cli_refuses(&o, &[&old, why[0], why[1], again]);
    }
    for name in ["image.pub", "model.pub"] {
        copy_with(&f.p(name), &f.p("old.pub"), v9);
        assert!(container::read_header(&f.p("old.pub")).is_ok(), "{name}");
    }
    f.no_output();
}

/// Format 10 packs party 1's triplet values at their readers' widths (issue 51): a triplet
/// file of version 9 is refused by name, naming both versions, by either server, before any
/// randomness is claimed (its values would otherwise be misread as packed ones).
#[test]
fn triplet_files_before_format_10_are_refused_by_name() {
    let f = Files::new();
    let v9 = |b: &mut Vec<u8>| b[8..10].copy_from_slice(&9u16.to_le_bytes());
    for p in [0u8, 1] {
        let old = format!("old.p{p}");
        copy_with(&f.p(&format!("triplets.p{p}")), &f.p(&old), v9);
        let e = container::read::<Triplets>(&f.p(&old)).unwrap_err();
        assert!(matches!(e, FormatError::OlderDealer(_, 9)), "{e:?}");
        let o = f.serve(p, &format!("model.p{p}"), &format!("image.p{p}"), &old);
        cli_refuses(
            &o,
            &[
                &old,
                "format version 9, made by an older dealer",
                &format!("triplet files of version {VERSION}"),
                "gen-triplets",
            ],
        );
    }
    f.no_output();
}

#[test]
fn unknown_version() {
    let f = Files::new();
    copy_with(&f.p("model.p0"), &f.p("v2.p0"), |b| {
        b[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes())
    });
    let e = container::read::<ModelShare>(&f.p("v2.p0")).unwrap_err();
    assert!(
        matches!(e, FormatError::Version(_, v) if v == VERSION + 1),
        "{e:?}"
    );
    assert!(e.to_string().contains("v2.p0"));
    let o = ppd(&["inspect", &s(&f.p("v2.p0"))]);
    let want = format!("unsupported format version {}", VERSION + 1);
    cli_refuses(&o, &["v2.p0", &want]);
    let o = f.serve(0, "v2.p0", "image.p0", "triplets.p0");
    cli_refuses(&o, &["v2.p0", "version"]);
    copy_with(&f.p("model.p0"), &f.p("v0.p0"), |b| {
        b[8..10].copy_from_slice(&0u16.to_le_bytes())
    });
    let o = ppd(&["inspect", &s(&f.p("v0.p0"))]);
    cli_refuses(&o, &["v0.p0", "version 0"]);
    f.no_output();
}

#[test]
fn ids_of_another_job_or_model() {
    let f = Files::new();
    // Another job (the same image shared again) and another model share (the same model
    // shared again): the triplets name the job and the model they were made for.
    let o = ppd(&[
        "share-image",
        "--sigma",
        "25",
        "--image",
        "builtin:phantom:16",
        "--out",
        &s(&f.p("imageB")),
    ]);
    assert!(o.status.success());
    let o = ppd(&[
        "share-model",
        "--model",
        &s(&f.p("m.npz")),
        "--out",
        &s(&f.p("modelB")),
    ]);
    assert!(o.status.success());
    let hb = container::read_header(&f.p("imageB.p0")).unwrap();
    let ha = container::read_header(&f.p("image.p0")).unwrap();
    assert_ne!(ha.job_id, hb.job_id);
    let ht = container::read_header(&f.p("triplets.p0")).unwrap();
    assert_eq!(ht.job_id, ha.job_id);
    for p in [0u8, 1] {
        let o = f.serve(
            p,
            &format!("model.p{p}"),
            &format!("imageB.p{p}"),
            &format!("triplets.p{p}"),
        );
        cli_refuses(
            &o,
            &[
                &format!("triplets.p{p}"),
                "made for job",
                &format!("imageB.p{p}"),
            ],
        );
        let o = f.serve(
            p,
            &format!("modelB.p{p}"),
            &format!("image.p{p}"),
            &format!("triplets.p{p}"),
        );
        cli_refuses(
            &o,
            &[
                &format!("triplets.p{p}"),
                "made for model",
                &format!("modelB.p{p}"),
            ],
        );
    }
    f.no_output();

    // Output shares of two different jobs are refused by the receiver (crafted here).
    let job = |h: usize| JobParams {
        height: h,
        width: h,
        bit_depth: 8,
        stride: 3,
        scale: 18,
        pre: Preprocess::identity(),
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let ps = PatchShape {
        input: 7,
        output: 3,
        window_milli: 0,
    };
    let geo = Geometry::new(8, 8, ps, 3);
    for (p, id) in [(Party::S0, [1u8; 16]), (Party::S1, [2u8; 16])] {
        let mut h = Header::new(Kind::OutputShare, p, 18);
        h.job_id = Some(id);
        let body = OutputShare {
            geometry: geo,
            job: job(8),
            scale: 36,
            canvas: vec![0; geo.canvas_h * geo.canvas_w],
        };
        container::write(
            &f.p(&format!("o.p{p}")),
            &h,
            &body,
            ppdenoise::formats::container::Seal::PLAIN,
        )
        .unwrap();
    }
    let o = reconstruct(&f, "o.p0", "o.p1", "r.png");
    cli_refuses(&o, &["o.p0", "o.p1", "different jobs"]);
    assert!(!f.p("r.png").exists());
}

#[test]
fn truncated_files() {
    let f = Files::new();
    let full = std::fs::read(f.p("triplets.p1")).unwrap();
    let hl = header_len(&full);
    // Cut in the checksum, in the body, in the body length, in the header, in the prefix.
    for (name, len) in [
        ("cut-sum", full.len() - 1),
        ("cut-body", full.len() / 2),
        ("cut-blen", 14 + hl + 4),
        ("cut-header", 14 + hl / 2),
        ("cut-prefix", 11),
        ("cut-magic", 5),
    ] {
        let p = f.p(name);
        std::fs::write(&p, &full[..len]).unwrap();
        let e = container::read::<Triplets>(&p).unwrap_err();
        assert!(matches!(e, FormatError::Truncated(..)), "{name}: {e:?}");
        assert!(e.to_string().contains(name), "{e}");
        let o = f.serve(1, "model.p1", "image.p1", name);
        cli_refuses(&o, &[name, "truncated"]);
    }
    // Extra bytes after the checksum are refused as well.
    copy_with(&f.p("triplets.p1"), &f.p("long"), |b| {
        b.extend_from_slice(b"xx")
    });
    let e = container::read::<Triplets>(&f.p("long")).unwrap_err();
    assert!(matches!(e, FormatError::Truncated(..)), "{e:?}");
    f.no_output();
}

#[test]
fn flipped_bytes() {
    let f = Files::new();
    let full = std::fs::read(f.p("image.p0")).unwrap();
    let hl = header_len(&full);
    let body_start = 14 + hl + 8;
    // Every single-bit flip of the body and of the checksum is detected.
    let mut positions: Vec<usize> = (body_start..full.len()).step_by(97).collect();
    positions.push(full.len() - 1);
    positions.push(body_start);
    for &i in &positions {
        let mut b = full.clone();
        b[i] ^= 0x10;
        std::fs::write(f.p("flip"), &b).unwrap();
        let e = container::read::<ImageShare>(&f.p("flip")).unwrap_err();
        assert!(matches!(e, FormatError::Checksum(_)), "byte {i}: {e:?}");
        assert!(e.to_string().contains("flip") && e.to_string().contains("integrity"));
    }
    let o = f.serve(0, "model.p0", "flip", "triplets.p0");
    cli_refuses(&o, &["flip", "integrity check failed"]);
    // inspect checks the whole file too, not only its header.
    let o = ppd(&["inspect", &s(&f.p("flip"))]);
    cli_refuses(&o, &["flip", "integrity check failed"]);
    // A flipped byte in the header is refused too (checksum, or a header that no longer
    // parses or no longer fits the file).
    for i in (14..14 + hl).step_by(7) {
        let mut b = full.clone();
        b[i] ^= 0x01;
        std::fs::write(f.p("hflip"), &b).unwrap();
        assert!(
            container::read::<ImageShare>(&f.p("hflip")).is_err(),
            "header byte {i} flipped went unnoticed"
        );
    }
    f.no_output();
}

#[test]
fn absurd_sizes_are_refused_before_allocation() {
    let f = Files::new();
    let full = std::fs::read(f.p("image.p0")).unwrap();
    let hl = header_len(&full);

    // A header claiming a 2^60-byte body, in a file of a few hundred bytes.
    let mut b = full[..14 + hl].to_vec();
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(f.p("huge-body"), &b).unwrap();
    let e = container::read::<ImageShare>(&f.p("huge-body")).unwrap_err();
    assert!(matches!(e, FormatError::Absurd(..)), "{e:?}");
    assert!(e.to_string().contains("huge-body") && e.to_string().contains("1152921504606846976"));
    let o = f.serve(0, "model.p0", "huge-body", "triplets.p0");
    cli_refuses(&o, &["huge-body", "absurd size"]);

    // A body length that is large but under the cap, with a short file: truncated, not read.
    let mut b = full[..14 + hl].to_vec();
    b.extend_from_slice(&(30u64 << 30).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(f.p("big-body"), &b).unwrap();
    let e = container::read::<ImageShare>(&f.p("big-body")).unwrap_err();
    assert!(
        matches!(e, FormatError::Truncated(..) | FormatError::Absurd(..)),
        "{e:?}"
    );

    // A header length of 2^31.
    let mut b = full.clone();
    b[10..14].copy_from_slice(&(1u32 << 31).to_le_bytes());
    std::fs::write(f.p("huge-header"), &b).unwrap();
    let e = container::read_header(&f.p("huge-header")).unwrap_err();
    assert!(matches!(e, FormatError::Absurd(..)), "{e:?}");
    let o = ppd(&["inspect", &s(&f.p("huge-header"))]);
    cli_refuses(&o, &["huge-header", "absurd size"]);

    // A well-formed, correctly checksummed file whose body claims a vector of 2^60 values:
    // the decoder's size limit refuses it without allocating.
    let job = JobParams {
        height: 2,
        width: 2,
        bit_depth: 8,
        stride: 1,
        scale: 18,
        pre: Preprocess::identity(),
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let marker = [0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888, 9, 10];
    let body = ImageShare {
        job,
        data: Data::Explicit(marker.to_vec()),
    };
    let h = Header::new(Kind::ImageShare, Party::S0, 18);
    let mut bytes = container::encode(&h, &body).unwrap();
    let needle: Vec<u8> = std::iter::once(4u64)
        .chain(marker)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("vector length prefix in the body");
    bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let n = bytes.len();
    let sum = blake3::hash(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(sum.as_bytes());
    std::fs::write(f.p("huge-vec"), &bytes).unwrap();
    let e = container::read::<ImageShare>(&f.p("huge-vec")).unwrap_err();
    assert!(matches!(e, FormatError::Malformed(_, "body", _)), "{e:?}");
    assert!(e.to_string().contains("huge-vec"));
    f.no_output();
}

#[test]
fn foreign_files() {
    let f = Files::new();
    std::fs::write(f.p("empty"), b"").unwrap();
    std::fs::write(
        f.p("text"),
        b"hello, this is not a ppdenoise container at all",
    )
    .unwrap();
    ppdenoise::image::save_png(
        &ppdenoise::image::phantom::shepp_logan(8),
        f.p("pic.png"),
        8,
    )
    .unwrap();
    std::fs::copy(f.p("pic.png"), f.p("pic.p0")).unwrap();
    for name in ["empty", "text", "pic.p0", "m.npz"] {
        let e = container::read::<ModelShare>(&f.p(name)).unwrap_err();
        assert!(matches!(e, FormatError::BadMagic(_)), "{name}: {e:?}");
        assert!(e.to_string().contains(name) && e.to_string().contains("not a ppdenoise file"));
        let o = f.serve(0, name, "image.p0", "triplets.p0");
        cli_refuses(&o, &[name, "not a ppdenoise file"]);
    }
    // A missing file is named too.
    let o = f.serve(0, "nope.p0", "image.p0", "triplets.p0");
    cli_refuses(&o, &["nope.p0"]);
    // The magic itself.
    assert_eq!(&std::fs::read(f.p("model.p0")).unwrap()[..8], MAGIC);
    f.no_output();
}

#[test]
fn good_files_read_back() {
    let f = Files::new();
    let (h, m): (Header, ModelShare) =
        load(&f.p("model.p0"), Kind::ModelShare, Some(Party::S0)).unwrap();
    assert_eq!(
        (h.kind, h.party, h.ring_bits, h.scale),
        (Kind::ModelShare, 0, 64, FixedParams::default().s)
    );
    assert!(h.model_id.is_some() && h.job_id.is_none());
    assert_eq!(h.shape("layers"), Some(&[49u64, 8, 9][..]));
    assert!(matches!(m.data, Data::Explicit(_)));
    let (_, m1): (Header, ModelShare) =
        load(&f.p("model.p1"), Kind::ModelShare, Some(Party::S1)).unwrap();
    assert!(
        matches!(m1.data, Data::Seed(_)),
        "S1's model share is a seed"
    );
    let (hi, _): (Header, ImageShare) = load(&f.p("image.p1"), Kind::ImageShare, None).unwrap();
    let (ht, t): (Header, Triplets) =
        load(&f.p("triplets.p1"), Kind::Triplets, Some(Party::S1)).unwrap();
    assert_eq!(ht.job_id, hi.job_id);
    assert_eq!(ht.model_id, h.model_id);
    assert!(ht.triplet_id.is_some());
    assert_eq!(t.widths, vec![49, 8, 9]);
    let (ht0, t0): (Header, Triplets) =
        load(&f.p("triplets.p0"), Kind::Triplets, Some(Party::S0)).unwrap();
    assert_eq!(ht0.triplet_id, ht.triplet_id);
    assert!(
        t0.corrections.is_empty(),
        "S0's randomness is a seed and base OTs only"
    );
    // inspect prints the header as JSON.
    let o = ppd(&["--json", "inspect", &s(&f.p("triplets.p1"))]);
    assert!(o.status.success());
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["kind"], "Triplets");
    assert_eq!(v["party"], 1);
    assert_eq!(v["job_id"].as_str().unwrap().len(), 32);
    assert_eq!(v["checksum"], "ok");
    assert_eq!(
        v["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(f.p("triplets.p1")).unwrap().len()
    );
}

// ------------------------------------------------------------------------------------------
// Atomic writes

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp") || n.starts_with(".ppdenoise-"))
        .collect()
}

#[test]
fn atomic_writes_leave_no_temp_and_keep_old_output_on_failure() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("out.bin");
    std::fs::write(&target, b"previous content").unwrap();

    // A failing serialisation: the closure writes part of the file, then fails.
    let e = atomic::write_with(&target, |w| {
        use std::io::Write;
        w.write_all(&[7u8; 100_000])?;
        anyhow::bail!("serialisation failed half-way")
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("out.bin"), "{e:#}");
    assert_eq!(std::fs::read(&target).unwrap(), b"previous content");
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );

    // A container whose body cannot be serialised (a map with non-string keys is fine for
    // bincode, so use a failing Serialize impl).
    struct Fails;
    impl serde::Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot serialise this body"))
        }
    }
    let h = Header::new(Kind::OutputShare, Party::S0, 18);
    assert!(container::write(
        &target,
        &h,
        &Fails,
        ppdenoise::formats::container::Seal::PLAIN
    )
    .is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"previous content");
    assert!(temp_files(d.path()).is_empty());

    // A successful write replaces the file and leaves nothing else.
    atomic::write_bytes(&target, b"new").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert!(temp_files(d.path()).is_empty());

    // The target cannot be replaced (it is a non-empty directory): error, no temp file.
    let dir_target = d.path().join("adir");
    std::fs::create_dir(&dir_target).unwrap();
    std::fs::write(dir_target.join("keep"), b"x").unwrap();
    let e = atomic::write_bytes(&dir_target, b"data").unwrap_err();
    assert!(format!("{e:#}").contains("adir"), "{e:#}");
    assert!(dir_target.join("keep").exists());
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );

    // The directory does not exist: error naming the file.
    let e = atomic::write_bytes(&d.path().join("no/such/dir/f"), b"x").unwrap_err();
    assert!(format!("{e:#}").contains("no/such/dir"), "{e:#}");
}

#[test]
fn cli_writes_are_atomic() {
    let f = Files::new();
    // Successful commands leave no temporary files.
    assert!(temp_files(&f.dir).is_empty(), "{:?}", temp_files(&f.dir));
    assert!(temp_files(&f.p("keys")).is_empty());

    // A failing share-model (its second output cannot be placed) leaves no temp file.
    std::fs::create_dir(f.p("blocked.p1")).unwrap();
    std::fs::write(f.p("blocked.p1/keep"), b"x").unwrap();
    let o = ppd(&[
        "share-model",
        "--model",
        &s(&f.p("m.npz")),
        "--out",
        &s(&f.p("blocked")),
    ]);
    cli_refuses(&o, &["blocked.p1"]);
    assert!(temp_files(&f.dir).is_empty(), "{:?}", temp_files(&f.dir));

    // A failing reconstruct leaves an existing output untouched.
    std::fs::write(f.p("den.png"), b"old result").unwrap();
    let o = reconstruct(&f, "model.p0", "model.p1", "den.png");
    cli_refuses(&o, &["model.p0"]);
    assert_eq!(std::fs::read(f.p("den.png")).unwrap(), b"old result");

    // A directory that is not writable (only meaningful when not running as root).
    let ro = f.p("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("model.p0"), b"old").unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    perm.set_mode(0o555);
    std::fs::set_permissions(&ro, perm.clone()).unwrap();
    let probe = std::fs::write(ro.join("probe"), b"x").is_ok();
    if probe {
        eprintln!("running as root: skipping the read-only directory case");
        let _ = std::fs::remove_file(ro.join("probe"));
    } else {
        let o = ppd(&[
            "share-model",
            "--model",
            &s(&f.p("m.npz")),
            "--out",
            &s(&ro.join("model")),
        ]);
        cli_refuses(&o, &["model.p0"]);
        assert_eq!(std::fs::read(ro.join("model.p0")).unwrap(), b"old");
        assert!(temp_files(&ro).is_empty());
    }
    perm.set_mode(0o755);
    std::fs::set_permissions(&ro, perm).unwrap();
}

#[test]
fn written_files_are_readable_by_their_owner_only() {
    // Shares, seeds, masks and images are a party's secrets: every file is created mode
    // 0600, whatever the umask, and a replaced file gets the same mode.
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("share.p1");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let h = Header::new(Kind::OutputShare, Party::S1, 18);
    container::write(
        &target,
        &h,
        &vec![1u64, 2, 3],
        ppdenoise::formats::container::Seal::PLAIN,
    )
    .unwrap();
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let png = d.path().join("bytes.bin");
    atomic::write_bytes(&png, b"x").unwrap();
    let mode = std::fs::metadata(&png).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

// ------------------------------------------------------------------------------------------
// Crafted files: the checksum is not a signature, so a file can be rewritten with a valid
// checksum and any body. Every public field is validated before anything is claimed or sized
// from it (issue 12, item 1).

/// Rewrites container `src` into `dst` (valid checksum) after `f` changes its body.
fn craft<B: serde::de::DeserializeOwned + serde::Serialize>(
    src: &Path,
    dst: &Path,
    f: impl FnOnce(&mut Header, &mut B),
) {
    let (mut h, mut b): (Header, B) = container::read(src).unwrap();
    f(&mut h, &mut b);
    container::write(dst, &h, &b, ppdenoise::formats::container::Seal::PLAIN).unwrap();
}

#[test]
fn crafted_model_and_image_shares_are_refused_before_anything_is_claimed() {
    let f = Files::new();
    type Change = Box<dyn Fn(&mut ModelShare)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "activation constants",
            Box::new(|m: &mut ModelShare| m.plan.acts[0].sh += 1),
            "activation constants differ",
        ),
        (
            // A tanh* plan relabelled ReLU: its scales and constants no longer fit.
            "the hidden activation",
            Box::new(|m: &mut ModelShare| m.plan.hidden = Hidden::Relu),
            "layer 1 has product scale 46 (expected 32)",
        ),
        (
            "a ReLU plan with tanh* constants",
            Box::new(|m: &mut ModelShare| {
                m.plan.hidden = Hidden::Relu;
                m.plan.layers[1].prod_scale = 32;
                m.plan.out_scale = 32;
            }),
            "1 tanh* constants for 1 hidden layers of Relu",
        ),
        (
            "layers that do not chain",
            Box::new(|m: &mut ModelShare| m.plan.layers[1].inputs += 1),
            "takes 9 inputs but layer 0 gives 8",
        ),
        (
            // S1's share is a seed: without the check it would be expanded to 2^36 values.
            "a seed expanded to an absurd size",
            Box::new(|m: &mut ModelShare| {
                m.plan.layers[0].outputs = 1 << 30;
                m.plan.layers[1].inputs = 1 << 30;
            }),
            "more than 134217728 weights",
        ),
        (
            "a product scale",
            Box::new(|m: &mut ModelShare| m.plan.layers[1].prod_scale += 2),
            "product scale",
        ),
        (
            "invalid fixed-point parameters",
            Box::new(|m: &mut ModelShare| m.plan.params.s = 40),
            "fixed-point",
        ),
        (
            // Chosen so that the unchecked u32 sums wrapped to values that passed.
            "integer bits that wrap the checks",
            Box::new(|m: &mut ModelShare| m.plan.params.zbits = u32::MAX - 10),
            "integer bits out of range",
        ),
    ];
    for (what, change, needle) in cases {
        craft(
            &f.p("model.p1"),
            &f.p("crafted.p1"),
            |_, m: &mut ModelShare| change(m),
        );
        let o = f.serve(1, "crafted.p1", "image.p1", "triplets.p1");
        let err = cli_refuses(&o, &["crafted.p1", needle]);
        assert!(!err.contains("panicked"), "{what}: {err}");
        f.no_output();
    }
    // An image share claiming 2^40 pixels (its share is a seed for S1).
    craft(&f.p("image.p1"), &f.p("big.p1"), |_, i: &mut ImageShare| {
        i.job.height = 1 << 20;
        i.job.width = 1 << 20;
    });
    let o = f.serve(1, "model.p1", "big.p1", "triplets.p1");
    cli_refuses(&o, &["big.p1", "pixels"]);
    f.no_output();
    // S1's triplets with one bit of explicit values fewer (a valid checksum): refused on
    // the count before anything is claimed, not when the job runs out of values half-way.
    craft(
        &f.p("triplets.p1"),
        &f.p("short.p1"),
        |_, t: &mut Triplets| {
            t.corrections.truncate(t.corrections.bits() - 1);
        },
    );
    let o = f.serve(1, "model.p1", "image.p1", "short.p1");
    cli_refuses(
        &o,
        &[
            "short.p1",
            "bits of explicit triple shares (packed at their widths) but this job consumes",
        ],
    );
    f.no_output();
    // A stride of 0 (Geometry::new used to assert).
    craft(
        &f.p("image.p1"),
        &f.p("stride.p1"),
        |_, i: &mut ImageShare| i.job.stride = 0,
    );
    let o = f.serve(1, "model.p1", "stride.p1", "triplets.p1");
    cli_refuses(&o, &["stride.p1", "stride 0"]);
    f.no_output();
}

#[test]
fn crafted_public_headers_are_refused_by_the_dealer() {
    let f = Files::new();
    let dealer = |model: &str, image: &str| {
        ppd(&[
            "gen-triplets",
            "--model",
            &s(&f.p(model)),
            "--image",
            &s(&f.p(image)),
            "--out",
            &s(&f.p("t")),
        ])
    };
    // Widths whose "patch" has a larger output than input (the margin would underflow).
    craft(&f.p("model.pub"), &f.p("m1.pub"), |h, _: &mut ()| {
        h.shapes = vec![("layers".into(), vec![1, 4])];
    });
    cli_refuses(&dealer("m1.pub", "image.pub"), &["m1.pub", "centred"]);
    // Widths with a zero and an absurd size.
    craft(&f.p("model.pub"), &f.p("m2.pub"), |h, _: &mut ()| {
        h.shapes = vec![("layers".into(), vec![49, 0, 9])];
    });
    cli_refuses(&dealer("m2.pub", "image.pub"), &["m2.pub", "include 0"]);
    craft(&f.p("model.pub"), &f.p("m3.pub"), |h, _: &mut ()| {
        h.shapes = vec![("layers".into(), vec![49, 1 << 40, 9])];
    });
    cli_refuses(
        &dealer("m3.pub", "image.pub"),
        &["m3.pub", "weights and biases"],
    );
    // Circuit parameters whose sh + k wraps a u32 (the check used to add them unchecked, and
    // recording the circuit then panicked), as a ReLU entry and as tanh* constants; and a
    // header naming both kinds.
    let relu = r#"{"sh":4294967295,"k":2}"#;
    craft(&f.p("model.pub"), &f.p("r1.pub"), |h, _: &mut ()| {
        h.info.retain(|(k, _)| k != "acts");
        h.info.push(("relu".into(), relu.into()));
    });
    cli_refuses(&dealer("r1.pub", "image.pub"), &["r1.pub", "sh + k <= 64"]);
    craft(&f.p("model.pub"), &f.p("r2.pub"), |h, _: &mut ()| {
        for (k, v) in h.info.iter_mut() {
            if k == "acts" {
                *v = v.replacen(r#""sh":"#, r#""sh":4294967295,"was":"#, 1);
            }
        }
    });
    cli_refuses(&dealer("r2.pub", "image.pub"), &["r2.pub", "sh + k > 64"]);
    craft(&f.p("model.pub"), &f.p("r3.pub"), |h, _: &mut ()| {
        h.info.push(("relu".into(), r#"{"sh":16,"k":25}"#.into()));
    });
    cli_refuses(
        &dealer("r3.pub", "image.pub"),
        &["r3.pub", "both tanh* constants and a ReLU circuit"],
    );
    // Job parameters with stride 0, and with 2^40 pixels.
    for (name, json) in [
        ("j1.pub", "stride"),
        ("j2.pub", "pixels"),
        ("j3.pub", "exceeds the 3x3 output patch"),
        ("j4.pub", "exceeds 2^30 values"),
    ] {
        craft(&f.p("image.pub"), &f.p(name), |h, _: &mut ()| {
            let mut job: JobParams =
                serde_json::from_str(h.info.iter().find(|(k, _)| k == "job").unwrap().1.as_str())
                    .unwrap();
            match name {
                "j1.pub" => job.stride = 0,
                "j2.pub" => {
                    job.height = 1 << 20;
                    job.width = 1 << 20;
                }
                // A gap between output patches: pixels without any estimate.
                "j3.pub" => job.stride = 4,
                // Few pixels, but a padded area of 2^28 x 45 values.
                _ => {
                    job.height = 1;
                    job.width = 1 << 28;
                }
            }
            for (k, v) in h.info.iter_mut() {
                if k == "job" {
                    *v = serde_json::to_string(&job).unwrap();
                }
            }
        });
        cli_refuses(&dealer("model.pub", name), &[name, json]);
    }
    assert!(!f.p("t.p1").exists() && !f.p("t.p0").exists());
}

#[test]
fn a_crafted_output_geometry_is_refused_by_the_receiver() {
    let f = Files::new();
    let geo = Geometry::new(
        16,
        16,
        PatchShape {
            input: 7,
            output: 3,
            window_milli: 0,
        },
        3,
    );
    let job = JobParams {
        height: 16,
        width: 16,
        bit_depth: 8,
        stride: 3,
        scale: 16,
        pre: Preprocess::new(25.0, 25.0, false),
        sigma: 25.0,
        model_sigma: 25.0,
        private_pre: false,
        colours: 1,
    };
    let n = geo.canvas_h * geo.canvas_w;
    // Same canvas size, but a patch whose output exceeds its input: not what the job implies
    // (decoding it used to index out of bounds).
    let mut bad = geo;
    bad.patch.output = 9;
    for p in Party::BOTH {
        let mut h = Header::new(Kind::OutputShare, p, 46);
        h.job_id = Some([1; 16]);
        h.model_id = Some([2; 16]);
        h.triplet_id = Some([3; 16]);
        let body = OutputShare {
            geometry: bad,
            job: job.clone(),
            scale: 46,
            canvas: vec![0; n],
        };
        container::write(
            &f.p(&format!("o.p{p}")),
            &h,
            &body,
            ppdenoise::formats::container::Seal::PLAIN,
        )
        .unwrap();
    }
    let o = reconstruct(&f, "o.p0", "o.p1", "o.png");
    cli_refuses(&o, &["o.p0", "geometry does not match"]);
    assert!(!f.p("o.png").exists());
}

#[test]
fn a_set_of_files_appears_together_or_not_at_all() {
    // share-model, share-image and gen-model-mask write their .p0/.p1/.pub (or .dealer) as one
    // staged set: a failure while writing any member leaves every previous member untouched.
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("x.p0"), d.path().join("x.p1"));
    std::fs::write(&a, b"old p0").unwrap();
    std::fs::write(&b, b"old p1").unwrap();
    let mut set = atomic::Staged::default();
    set.add(&a, |w| {
        use std::io::Write;
        w.write_all(b"new p0")?;
        Ok(())
    })
    .unwrap();
    let e = set
        .add(&b, |_| anyhow::bail!("the second member fails"))
        .unwrap_err();
    assert!(format!("{e:#}").contains("x.p1"), "{e:#}");
    drop(set);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        b"old p0",
        "a half-written set moved in"
    );
    assert_eq!(std::fs::read(&b).unwrap(), b"old p1");
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );
    // All written: all in place.
    let mut set = atomic::Staged::default();
    for (p, text) in [(&a, b"new p0"), (&b, b"new p1")] {
        set.add(p, |w| {
            use std::io::Write;
            w.write_all(text)?;
            Ok(())
        })
        .unwrap();
    }
    set.commit().unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"new p0");
    assert_eq!(std::fs::read(&b).unwrap(), b"new p1");
    // A folder where the second member goes: refused before the first is moved in.
    let c = d.path().join("x.pub");
    std::fs::create_dir(&c).unwrap();
    let mut set = atomic::Staged::default();
    for p in [&a, &c] {
        set.add(p, |w| {
            use std::io::Write;
            w.write_all(b"newer")?;
            Ok(())
        })
        .unwrap();
    }
    let e = set.commit().unwrap_err();
    assert!(format!("{e:#}").contains("x.pub: is a folder"), "{e:#}");
    assert_eq!(
        std::fs::read(&a).unwrap(),
        b"new p0",
        "half the set was moved in"
    );
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );
}
