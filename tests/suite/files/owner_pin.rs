//! The gateway pins the model owner's key (issue 45, review of the study binding, item 3):
//! `share-image` and `share-study` read public facts from model.pub (its declared window,
//! noise-level range, network), so with `--owner-key` or a trust file's `owner` line a
//! model.pub signed by another key, or by none, is refused by name before anything is
//! shared; without a pin it is taken as before, with a note that its maker was not checked.

use std::path::Path;

use common::{ok, run};

use crate::common;

/// share-image or share-study of model, to out, with flags.
type Share<'a> = dyn Fn(&str, &str, &[String]) -> std::process::Output + 'a;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_model_pub_not_signed_by_the_pinned_owner_is_refused_before_anything_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let mut trust = String::new();
    for n in ["owner", "mallory", "gateway"] {
        let v = ok(&["keygen", "--signing", "--name", n, "--out-dir", &p("keys")]);
        if n != "mallory" {
            trust.push_str(&format!("{n} {}\n", v["public_key"].as_str().unwrap()));
        }
    }
    std::fs::write(p("trust"), &trust).unwrap();
    std::fs::write(p("trust-no-owner"), trust.lines().nth(1).unwrap()).unwrap();
    let model = fixture("tiny-cnn.npz");
    for (out, key) in [
        ("owned", Some("keys/owner.sign-key")),
        ("forged", Some("keys/mallory.sign-key")),
        ("unsigned", None),
    ] {
        let o = p(out);
        let mut args = vec!["share-model", "--model", &model, "--out", &o];
        let k = key.map(p);
        if let Some(k) = &k {
            args.extend(["--sign-key", k]);
        }
        ok(&args);
    }
    std::fs::create_dir_all(p("in")).unwrap();
    ok(&[
        "add-noise",
        "--image",
        "builtin:phantom:16",
        "--sigma",
        "25",
        "--out",
        &p("in/a.png"),
    ]);
    let owner_pub = p("keys/owner.sign-pub");
    let pins: [Vec<String>; 2] = [
        vec!["--owner-key".into(), owner_pub.clone()],
        vec!["--trust".into(), p("trust")],
    ];
    let share_image = |model: &str, out: &str, pin: &[String]| {
        let (m, o, img) = (p(&format!("{model}.pub")), p(out), p("in/a.png"));
        let mut args = vec![
            "share-image",
            "--sigma",
            "25",
            "--image",
            &img,
            "--model",
            &m,
            "--out",
            &o,
        ];
        args.extend(pin.iter().map(String::as_str));
        run(&args)
    };
    let share_study = |model: &str, out: &str, pin: &[String]| {
        let (m, o, i) = (p(&format!("{model}.pub")), p(out), p("in"));
        let mut args = vec![
            "share-study",
            "--sigma",
            "25",
            "--in",
            &i,
            "--model",
            &m,
            "--out",
            &o,
        ];
        args.extend(pin.iter().map(String::as_str));
        run(&args)
    };
    let refused = |o: &std::process::Output, needles: &[&str]| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "expected a refusal naming {needles:?}");
        for n in needles {
            assert!(err.contains(n), "error lacks {n:?}: {err}");
        }
    };
    for (k, pin) in pins.iter().enumerate() {
        // Signed by another key (as the owner), and unsigned: refused by name, nothing made.
        for (model, why) in [
            ("forged", "not by the pinned owner key"),
            ("unsigned", "not signed"),
        ] {
            let out = format!("img-{model}-{k}");
            refused(
                &share_image(model, &out, pin),
                &[&format!("{model}.pub"), why, "nothing shared"],
            );
            assert!(!Path::new(&p(&format!("{out}.p0"))).exists(), "{out}");
            let study = format!("study-{model}-{k}");
            refused(
                &share_study(model, &study, pin),
                &[&format!("{model}.pub"), why, "nothing shared"],
            );
            assert!(!Path::new(&p(&study)).exists(), "{study}");
        }
        // The owner's own: taken, and said to be checked.
        let o = share_image("owned", &format!("img-owned-{k}"), pin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["model_owner_checked"], true);
        let o = share_study("owned", &format!("study-owned-{k}"), pin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["model_owner_checked"], true);
    }
    // A trust file without an `owner` line pins nothing: refused, not taken as no pin.
    let pin = ["--trust".to_string(), p("trust-no-owner")];
    refused(
        &share_image("owned", "img-x", &pin),
        &["trust-no-owner", "no `owner` line"],
    );
    // A pin without --model has nothing to check.
    let o = run(&[
        "share-image",
        "--sigma",
        "25",
        "--image",
        &p("in/a.png"),
        "--owner-key",
        &owner_pub,
        "--out",
        &p("img-y"),
    ]);
    refused(&o, &["--model"]);
    // A gateway that signs what it shares must pin the owner: refused without, nothing made
    // (issue 45, review 3: a signed job would vouch for facts anyone could write).
    let gw = p("keys/gateway.sign-key");
    let both: [&Share; 2] = [&share_image, &share_study];
    for share in both {
        let o = share("forged", "signed-nopin", &["--sign-key".into(), gw.clone()]);
        refused(&o, &["forged.pub", "pins no model owner", "--owner-key"]);
        assert!(!Path::new(&p("signed-nopin")).exists());
        assert!(!Path::new(&p("signed-nopin.p0")).exists());
    }
    // No pin (and no signature): taken as before, with a note that the maker was not checked.
    let (m, o, img) = (p("forged.pub"), p("img-nopin"), p("in/a.png"));
    let args = [
        "share-image",
        "--sigma",
        "25",
        "--image",
        &img,
        "--model",
        &m,
        "--out",
        &o,
    ];
    assert_eq!(ok(&args)["model_owner_checked"], false);
    let plain = std::process::Command::new(common::bin())
        .args(&args[..7])
        .args(["--out", &p("img-nopin2")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.status.success() && said.contains("forged.pub's maker was not checked"),
        "{said}"
    );
}
