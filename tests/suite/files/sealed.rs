//! Files at rest sealed to the party that reads them (issue 12): `demo` seals every server's
//! file to that server and the output shares to the receiver, and the result stays bit-exact;
//! a file sealed to another party, one byte changed, a truncated file, or a missing identity
//! is refused naming the file, before any randomness is claimed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AGE: &[u8] = b"age-encryption.org/v1\n";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

fn ppd(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run ppdenoise")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A refusal: non-zero exit, one `error:` line naming `file` and mentioning `what`.
fn refused(o: &Output, file: &Path, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a refusal: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(s(file)),
        "error does not name {}: {line}",
        file.display()
    );
    assert!(line.contains(what), "error does not say {what:?}: {line}");
}

fn sealed(p: &Path) -> bool {
    std::fs::read(p).unwrap().starts_with(AGE)
}

/// One demo run with sealed files (the default); returns its work folder.
fn demo(dir: &Path) -> PathBuf {
    let w = dir.join("demo");
    let o = ppd(&[
        "--json",
        "demo",
        "--image",
        "builtin:phantom:24",
        "--workdir",
        s(&w),
        // The spent triplet files are the sealed inputs the refusals below are tried on.
        "--keep-triplets",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["max_abs_diff_secure_oracle"], 0.0,
        "sealed demo not bit-exact: {v}"
    );
    w
}

/// `serve --party p` on `files` (model, image, triplets), with `identity` when given, and a
/// fresh state directory: every refusal here comes before the link.
fn serve(w: &Path, p: u8, files: [&Path; 3], identity: Option<&Path>, state: &Path) -> Output {
    let k = w.join("keys");
    let me = format!("s{p}");
    let mut args = vec![
        "serve".to_string(),
        "--party".into(),
        p.to_string(),
        "--model".into(),
        s(files[0]).into(),
        "--image".into(),
        s(files[1]).into(),
        "--triplets".into(),
        s(files[2]).into(),
        "--weights".into(),
        s(&w.join(format!("weights.p{p}"))).into(),
        "--key".into(),
        s(&k.join(format!("{me}.key"))).into(),
        "--cert".into(),
        s(&k.join(format!("{me}.crt"))).into(),
        "--peer-cert".into(),
        s(&k.join(format!("s{}.crt", 1 - p))).into(),
        "--trust".into(),
        s(&k.join("trust")).into(),
        "--timeout".into(),
        "2".into(),
        "--state-dir".into(),
        s(state).into(),
        "--out".into(),
        s(&state.join("out")).into(),
    ];
    if let Some(id) = identity {
        args.extend(["--identity".into(), s(id).into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::fs::create_dir_all(state).unwrap();
    ppd(&args)
}

/// Nothing claimed, consumed or written in `state`.
fn untouched(state: &Path) {
    let left: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "state dir not empty: {left:?}");
}

#[test]
fn sealed_files_work_and_refuse_the_wrong_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let w = demo(tmp.path());
    let f = |n: &str| w.join(n);
    for stem in ["model", "image", "triplets", "mask", "weights", "out"] {
        for p in 0..2 {
            let path = f(&format!("{stem}.p{p}"));
            assert!(sealed(&path), "{} is not sealed", path.display());
        }
    }
    for public in ["model.pub", "image.pub", "mask.dealer"] {
        assert!(
            !sealed(&f(public)),
            "{public} should stay readable by the dealer"
        );
    }
    let (id0, id1) = (f("keys/s0.age-identity"), f("keys/s1.age-identity"));
    let mine = |p: u8| {
        [
            f(&format!("model.p{p}")),
            f(&format!("image.p{p}")),
            f(&format!("triplets.p{p}")),
        ]
    };
    let [m0, i0, t0] = mine(0);
    let state = tmp.path().join("state");

    // `inspect` opens a sealed file with its reader's identity (a scheduler's script reads
    // the triplet id so), and names the missing identity otherwise.
    let o = ppd(&["inspect", s(&t0), "--identity", s(&id0)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["kind"], "Triplets", "{j}");
    assert!(j["triplet_id"].is_string(), "{j}");
    refused(&ppd(&["inspect", s(&t0)]), &t0, "--identity");
    // S1's image share given to S0: sealed to S1, so S0 cannot open it.
    let i1 = f("image.p1");
    let o = serve(&w, 0, [&m0, &i1, &t0], Some(&id0), &state);
    refused(&o, &i1, "not encrypted to this party");
    untouched(&state);
    // S0 with S1's identity: none of its files open.
    let o = serve(&w, 0, [&m0, &i0, &t0], Some(&id1), &state);
    refused(&o, &m0, "not encrypted to this party");
    untouched(&state);
    // No identity at all.
    let o = serve(&w, 0, [&m0, &i0, &t0], None, &state);
    refused(&o, &m0, "--identity");
    untouched(&state);
    // Valid sealed inputs, but no --out-to: the share would land on disk unencrypted.
    let o = serve(&w, 0, [&m0, &i0, &t0], Some(&id0), &state);
    refused(&o, &state.join("out"), "--out-to");
    untouched(&state);

    // A crafted age header far longer than ours (age's parser would crawl through it).
    let mut huge = b"age-encryption.org/v1\n-> X25519 ".to_vec();
    huge.extend(std::iter::repeat_n(b'A', 2_000_000));
    let crafted = tmp.path().join("crafted.p0");
    std::fs::write(&crafted, &huge).unwrap();
    let t = std::time::Instant::now();
    let o = serve(&w, 0, [&m0, &i0, &crafted], Some(&id0), &state);
    refused(&o, &crafted, "malformed age header");
    assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
    untouched(&state);

    // One byte changed, in the age header, in the payload, or a truncated file.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let original = std::fs::read(&t0).unwrap();
    let mac = original.windows(4).position(|x| x == b"\n---").unwrap() + 6;
    for (name, at) in [
        ("recipient-stanza", 30usize),
        ("header-mac", mac),
        ("payload", original.len() / 2),
        ("truncated", 0),
    ] {
        let mut bytes = original.clone();
        let path = bad.join(format!("triplets-{name}.p0"));
        match name {
            "truncated" => bytes.truncate(bytes.len() - 20),
            _ => bytes[at] ^= 0x04,
        }
        std::fs::write(&path, &bytes).unwrap();
        let o = serve(&w, 0, [&m0, &i0, &path], Some(&id0), &state);
        refused(&o, &path, "");
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(
            err.contains("verify")
                || err.contains("malformed age header")
                || err.contains("header was modified"),
            "{name}: {err}"
        );
        untouched(&state);
    }

    // The receiver: its identity opens the output shares, a server's does not.
    let (o0, o1, png) = (f("out.p0"), f("out.p1"), tmp.path().join("r.png"));
    let args = |id: &Path| {
        vec![
            "reconstruct".to_string(),
            "--share0".into(),
            s(&o0).into(),
            "--share1".into(),
            s(&o1).into(),
            "--out".into(),
            s(&png).into(),
            "--identity".into(),
            s(id).into(),
            "--trust".into(),
            s(&f("keys/trust")).into(),
            "--job-id".into(),
            common::job_id_of(&f("image.pub")),
        ]
    };
    let run = |a: Vec<String>| ppd(&a.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&run(args(&id0)), &o0, "not encrypted to this party");
    assert!(!png.exists());
    let o = run(args(&f("keys/rx.age-identity")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&png).unwrap(),
        std::fs::read(f("denoised.png")).unwrap()
    );
}

#[test]
fn a_pair_is_sealed_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("keys");
    let kg = ppd(&["keygen", "--name", "s0", "--out-dir", s(&k)]);
    assert!(kg.status.success());
    let out = tmp.path().join("image");
    let (r0, id0) = (k.join("s0.age-recipient"), k.join("s0.age-identity"));
    // share-image with these sealing flags must be refused, saying `what`, writing nothing.
    let refuses = |flags: &[&str], what: &str| {
        let mut args = vec![
            "share-image",
            "--sigma",
            "25",
            "--image",
            "builtin:phantom:16",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(flags);
        let o = ppd(&args);
        assert!(!o.status.success(), "{flags:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(what), "{flags:?}: {err}");
        let n = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(n, 1, "{flags:?}: files were written");
    };
    refuses(&["--to-s0", s(&r0)], "--to-s0 and --to-s1 go together");
    // One recipient for both servers would let one key open both shares.
    refuses(&["--to-s0", s(&r0), "--to-s1", s(&r0)], "same recipient");
    // A private identity given as a recipient is refused as such.
    refuses(
        &["--to-s0", s(&r0), "--to-s1", s(&id0)],
        "is a private identity",
    );
    // A recipient that is not one is named.
    refuses(
        &["--to-s0", "age1notakey", "--to-s1", s(&r0)],
        "age1notakey",
    );
}
