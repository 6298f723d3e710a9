//! Studies through the real binary (issue 27, item 2): a folder of PNG/TIFF images and a
//! DICOM series shared with `share-study`, dealt with `gen-triplets --study`, run by two
//! `serve --study` processes over the TLS link, put together with `reconstruct --study`.
//! Every slice equals the plaintext fixed-point oracle (`denoise --arith fixed`) and keeps
//! its input's name, format and order; a DICOM series comes back as one derived series.
//! A study that dies half-way resumes: finished slices are skipped, a slice one server did
//! not finish is dealt again and redone by both. And the refusals.

use ppdenoise::ring::Party;
use std::path::Path;
use std::process::{Command, Stdio};

use common::dicom_attr as attr;
use common::study_job::{fixture, list, oracle, oracle_at, refused, wait, Dir};
use common::{bin, dicom_multi_frame, dicom_slice, no_link_addr, ok, run, share_study, start_pair};
use dicom_dictionary_std::tags;
use ppdenoise::formats::study::Manifest;

use crate::common;

#[test]
fn a_folder_of_images_is_bit_exact_in_order_and_format_and_resumes() {
    let d = Dir::new("tiny-cnn.npz");
    std::fs::create_dir_all(d.path("in")).unwrap();
    // Name order with numbers as numbers: im1, im2, im3 (TIFF), im10.
    let names = ["im1.png", "im2.png", "im3.tif", "im10.png"];
    for (i, (n, size)) in names.iter().zip([40, 33, 36, 28]).enumerate() {
        let img = format!("builtin:phantom:{size}");
        let out = d.p(&format!("in/{n}"));
        ok(&[
            "add-noise",
            "--image",
            &img,
            "--sigma",
            "25",
            "--seed",
            &i.to_string(),
            "--out",
            &out,
        ]);
    }
    std::fs::write(d.path("in/.hidden"), b"not read").unwrap();
    std::fs::create_dir_all(d.path("in/sub")).unwrap();
    let j = d.shared(d.share_images());
    assert_eq!(j["slices"], 4);
    assert_eq!(j["kind"], "images");
    let sources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("study.sources.json")).unwrap()).unwrap();
    let order: Vec<&str> = sources["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["im1.png", "im2.png", "im3.tif", "im10.png"]);
    // The public manifest names no file.
    let manifest = std::fs::read_to_string(d.path("study/study.json")).unwrap();
    assert!(!manifest.contains("im1"), "{manifest}");

    assert_eq!(list(&d.deal(&[])["dealt"]), [0, 1, 2, 3]);
    // Half the study, then a stop.
    let [s0, s1] = d.serve_pair(&["--slices", "0-1"]);
    assert_eq!(list(&s0["ran"]), [0, 1]);
    assert_eq!(list(&s1["ran"]), [0, 1]);
    // S1 starts slice 2 alone and dies (its peer never comes): its triplets are spent.
    let o = wait(d.serve(1, &no_link_addr(), "1", &["--slices", "2"]));
    refused(&o, &["slice 2", "study-status"]);
    let st = d.status();
    assert_eq!(st["left_spec"], "2-3");
    assert_eq!(st["complete"], false);
    // One server's own view: what its serve --study would run.
    let mine = ok(&[
        "study-status",
        "--study",
        &d.p("study"),
        "--party",
        "0",
        "--slices",
        "1-3",
    ]);
    assert_eq!(mine["left_spec"], "2-3");
    // Nothing is written while a slice is missing.
    let o = d.try_reconstruct("res");
    refused(&o, &["slice(s) 2-3 not finished", "nothing written"]);
    assert!(!d.path("res").exists());
    // A slice run on both servers, its records removed, run again without fresh
    // randomness: both servers refuse its spent triplets by name, before the link (S0
    // listens: no time-out makes the refusal).
    for p in 0..2 {
        std::fs::remove_file(d.path(&format!("study/slice1/done.p{p}"))).unwrap();
    }
    let pair = start_pair(&d.dir, |p, addr| d.serve(p, addr, "30", &["--slices", "1"]));
    for (p, o) in pair.map(wait).iter().enumerate() {
        let triplets = format!("slice1/triplets.p{p}");
        refused(o, &[&triplets, "was already consumed"]);
    }
    assert_eq!(list(&d.deal(&["--slices", "1"])["dealt"]), [1]);
    let [s0, s1] = d.serve_pair(&["--slices", "1"]);
    assert_eq!(list(&s0["ran"]), [1]);
    assert_eq!(list(&s1["ran"]), [1]);
    // The dealer deals only the unfinished slices; the rerun skips the finished ones.
    assert_eq!(list(&d.deal(&[])["dealt"]), [2, 3]);
    planted_records_are_not_taken(&d);
    let [s0, s1] = d.serve_pair(&[]);
    for s in [&s0, &s1] {
        assert_eq!(list(&s["ran"]), [2, 3]);
        assert_eq!(list(&s["skipped"]), [0, 1]);
    }
    assert_eq!(d.status()["complete"], true);
    assert_eq!(list(&d.deal(&[])["dealt"]), Vec::<u64>::new());

    // S1 finished slice 1 in S0's eyes but lost its output before recording it: slice 1 is
    // finished by S0 only, dealt again, and redone by both (S0's record names old triplets).
    std::fs::remove_file(d.path("study/slice1/done.p1")).unwrap();
    let st = d.status();
    assert_eq!(st["left_spec"], "1");
    assert_eq!(st["states"][1], "finished by S0 only");
    assert_eq!(list(&d.deal(&[])["dealt"]), [1]);
    let [s0, s1] = d.serve_pair(&[]);
    assert_eq!(list(&s0["ran"]), [1]);
    assert_eq!(list(&s1["ran"]), [1]);

    let j = d.reconstruct("res");
    assert_eq!(j["files"].as_array().unwrap().len(), 4);
    for n in names {
        let want = oracle(
            &d,
            &d.path(&format!("in/{n}")),
            "tiny-cnn.npz",
            &format!("oracle-{n}"),
        );
        let got = d.path(&format!("res/{n}"));
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(&want).unwrap(),
            "{n}: the study's slice differs from the oracle"
        );
    }

    // A slice's output share replaced by another slice's: not finished, refused.
    let keep = d.path("keep");
    std::fs::create_dir_all(&keep).unwrap();
    let files = ["out.p0", "done.p0", "out.p1", "done.p1"];
    for f in files {
        std::fs::copy(d.path(&format!("study/slice1/{f}")), keep.join(f)).unwrap();
    }
    let from_slice0 = |f: &str| {
        std::fs::copy(
            d.path(&format!("study/slice0/{f}")),
            d.path(&format!("study/slice1/{f}")),
        )
        .unwrap();
    };
    from_slice0("out.p0");
    assert_eq!(d.status()["left_spec"], "1");
    // Found on the receiver's one open of the share, checked against S0's record.
    refused(
        &d.try_reconstruct("res2"),
        &[
            "slice1/out.p0: is not the output share S0's completion record names",
            "slice 1 is not finished; nothing written",
        ],
    );
    assert!(!d.path("res2").exists(), "nothing written");
    // Slice 0's whole finished pair (both shares, both records: genuine, signed, one run,
    // each hash matching its share) put in slice 1: of another slice's job, so slice 1 is
    // still not finished.
    for f in ["done.p0", "out.p1", "done.p1"] {
        from_slice0(f);
    }
    assert_eq!(d.status()["left_spec"], "1");
    refused(&d.try_reconstruct("res2"), &["slice(s) 1 not finished"]);
    assert!(!d.path("res2").exists());
    for f in files {
        std::fs::copy(keep.join(f), d.path(&format!("study/slice1/{f}"))).unwrap();
    }
    records_rewritten_or_signed_by_another_key_are_refused(&d);
    a_signed_share_of_another_job_in_a_slice_is_refused(&d);
    swapped_slices_are_refused(&d);
    a_genuine_study_swapped_in_is_refused(&d);
}

/// Issue 45 (review 2, finding A): the whole study replaced by another genuine study of the
/// same gateway (its folder, sources file and signed binding together, run to the end by
/// the same servers): every signature holds and the files share names (im1.png ...), so
/// only the id the receiver expects tells them apart. `--study-id` of the study it waits
/// for is refused by name and nothing is written; the right id is taken; no id at all,
/// with keys pinned, is refused before anything is read.
fn a_genuine_study_swapped_in_is_refused(d: &Dir) {
    let expected = d.study_id.borrow().clone();
    for f in ["study", "study.sources.json", "study.sources.json.sig"] {
        std::fs::rename(d.path(f), d.path(&format!("kept-{f}"))).unwrap();
    }
    // Study B: the same images shared again by the same gateway, dealt and run.
    let other = d.share_images();
    let other = other["study_id"].as_str().unwrap().to_string();
    assert_ne!(other, expected);
    d.deal(&[]);
    d.serve_pair(&[]);
    refused(
        &d.try_reconstruct("other"),
        &[
            &format!("--study-id {expected}"),
            &format!("is study {other}"),
            "not the study expected",
        ],
    );
    assert!(!d.path("other").exists(), "nothing written");
    let mut a = d.reconstruct_args("other");
    let k = a.iter().position(|x| x == "--study-id").unwrap();
    a.drain(k..k + 2);
    refused(
        &run(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        &["--study-id", "which study the receiver expects"],
    );
    // The study the receiver does expect, B now: taken.
    *d.study_id.borrow_mut() = other.clone();
    let j = d.reconstruct("other");
    assert_eq!(j["study_id"], other.as_str());
    *d.study_id.borrow_mut() = expected;
}

/// Issue 45 (review, item 4): a completion record planted for slice 3 (dealt, not run),
/// signed as S0 by a key of the forger's own over an output of its making, naming the
/// slice's job and S0's current triplets. Where S0's key is pinned, `study-status` does not
/// count it (both views), and the signing `serve --study` neither skips the slice nor stops:
/// it runs it again (the caller checks `ran`), saying why.
fn planted_records_are_not_taken(d: &Dir) {
    use ppdenoise::formats::container::{id_hex, read_header};
    use ppdenoise::formats::study::Done;
    let planter = d.planter();
    let m = Manifest::read(&d.path("study")).unwrap();
    let run = read_header(&d.path("study/slice3/triplets.p0"))
        .unwrap()
        .triplet_id
        .map(|id| id_hex(&id))
        .unwrap();
    let out = d.path("study/slice3/out.p0");
    std::fs::write(&out, b"an output of the planter's making").unwrap();
    Done::of_output(Party::S0, m.slices[3].clone(), run, &out, Some(&planter))
        .unwrap()
        .write(&d.path("study/slice3/done.p0"))
        .unwrap();
    let (k0, k1) = (d.p("keys/s0.sign-pub"), d.p("keys/s1.sign-pub"));
    let st = d.p("study");
    // S0's own view, its key pinned: slice 3 is left, and why.
    let mine = ok(&[
        "study-status",
        "--study",
        &st,
        "--party",
        "0",
        "--s0-key",
        &k0,
    ]);
    assert_eq!(mine["left_spec"], "2-3");
    // Both servers' view, their keys pinned: the record is not taken, by name.
    let all = ok(&[
        "study-status",
        "--study",
        &st,
        "--s0-key",
        &k0,
        "--s1-key",
        &k1,
    ]);
    let state = all["states"][3].as_str().unwrap();
    assert!(
        state.contains("record not taken") && state.contains("not by the pinned s0 key"),
        "{state}"
    );
}

/// Issue 45 (review, item 5): slice 1's place holding slice 0's genuine output shares,
/// with completion records for slice 1 signed by the servers' own keys (what a server
/// that misbehaves could write): the records pass, and the shares are refused against the
/// job the gateway bound to slice 1. Nothing is written.
fn a_signed_share_of_another_job_in_a_slice_is_refused(d: &Dir) {
    use ppdenoise::formats::signing::{Role, Signer};
    use ppdenoise::formats::study::Done;
    let m = Manifest::read(&d.path("study")).unwrap();
    let keep = d.path("keep-foreign");
    std::fs::create_dir_all(&keep).unwrap();
    let files = ["out.p0", "done.p0", "out.p1", "done.p1"];
    for f in files {
        std::fs::copy(d.path(&format!("study/slice1/{f}")), keep.join(f)).unwrap();
    }
    for p in Party::BOTH {
        let role = [Role::S0, Role::S1][p.index()];
        let key = Signer::load(&d.path(&format!("keys/s{p}.sign-key")), role).unwrap();
        let out = d.path(&format!("study/slice1/out.p{p}"));
        std::fs::copy(d.path(&format!("study/slice0/out.p{p}")), &out).unwrap();
        let rec0 = Done::read(&d.path(&format!("study/slice0/done.p{p}"))).unwrap();
        Done::of_output(p, m.slices[1].clone(), rec0.triplet_id, &out, Some(&key))
            .unwrap()
            .write(&d.path(&format!("study/slice1/done.p{p}")))
            .unwrap();
    }
    assert_eq!(d.status()["complete"], true, "the records pass");
    refused(
        &d.try_reconstruct("foreign"),
        &[
            "slice 1",
            "slice1/out.p0",
            "not of the job the receiver expects",
        ],
    );
    assert!(!d.path("foreign").exists());
    for f in files {
        std::fs::copy(keep.join(f), d.path(&format!("study/slice1/{f}"))).unwrap();
    }
}

/// Issue 45 (review, item 1): slices 0 and 1 swapped by someone who can write the study
/// folder and the sources file (the folders exchanged, their job ids exchanged in
/// study.json, and in the sources every fact but the file name: every slice's facts then
/// agree with its shares, and today's checks would write each image under the other's
/// name). The gateway's signed study binding refuses it by name; a binding re-made for the
/// swap and signed by a key that is not the pinned gateway key, an unsigned one and a
/// missing one are refused too. Put back, the study reconstructs.
fn swapped_slices_are_refused(d: &Dir) {
    use ppdenoise::formats::signing::Role;
    use ppdenoise::formats::study::Sources;
    let (manifest, sources, binding) = (
        d.path("study/study.json"),
        d.path("study.sources.json"),
        d.path("study.sources.json.sig"),
    );
    let originals: Vec<Vec<u8>> = [&manifest, &sources, &binding]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let swap_folders = || {
        let (a, b, t) = (
            d.path("study/slice0"),
            d.path("study/slice1"),
            d.path("study/slice-t"),
        );
        std::fs::rename(&a, &t).unwrap();
        std::fs::rename(&b, &a).unwrap();
        std::fs::rename(&t, &b).unwrap();
    };
    swap_folders();
    let mut m: serde_json::Value = serde_json::from_slice(&originals[0]).unwrap();
    m["slices"].as_array_mut().unwrap().swap(0, 1);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let mut src: serde_json::Value = serde_json::from_slice(&originals[1]).unwrap();
    let slices = src["slices"].as_array_mut().unwrap();
    slices.swap(0, 1);
    let f0 = slices[0]["file"].clone();
    slices[0]["file"] = slices[1]["file"].clone();
    slices[1]["file"] = f0;
    std::fs::write(&sources, serde_json::to_vec_pretty(&src).unwrap()).unwrap();
    refused(
        &d.try_reconstruct("swap"),
        &[
            "study.sources.json",
            "signed study binding",
            "slice 0 is job",
        ],
    );
    // The binding made again for the swapped sources, signed as the gateway by another key.
    let mgw = common::own_signer(&d.path("keys"), "mgw", Role::Gateway);
    let swapped = Sources::read(&sources).unwrap();
    swapped.write_binding(&binding, Some(&mgw)).unwrap();
    refused(
        &d.try_reconstruct("swap"),
        &["study.sources.json.sig", "not by the pinned gateway key"],
    );
    swapped.write_binding(&binding, None).unwrap();
    refused(
        &d.try_reconstruct("swap"),
        &["study.sources.json.sig", "not signed", "gateway"],
    );
    std::fs::remove_file(&binding).unwrap();
    refused(
        &d.try_reconstruct("swap"),
        &["study.sources.json.sig", "no study binding"],
    );
    assert!(!d.path("swap").exists());
    // Put back: without the gateway's key pinned, the binding cannot be checked (refused,
    // not skipped); with it, the study reconstructs.
    swap_folders();
    for (p, bytes) in [&manifest, &sources, &binding].iter().zip(&originals) {
        std::fs::write(p, bytes).unwrap();
    }
    let mut a = d.reconstruct_args("swap");
    let k = a.iter().position(|x| x == "--gateway-key").unwrap();
    a.drain(k..k + 2);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&o, &["study.sources.json.sig", "whose key was not given"]);
    d.reconstruct("swap");
}

/// A finished study's completion record rewritten (its fields changed, the signature kept),
/// or signed by a key that is not the server's: `reconstruct --study` refuses it by name,
/// and writes nothing. The record holds no hash of an unsealed unsigned share.
fn records_rewritten_or_signed_by_another_key_are_refused(d: &Dir) {
    use ppdenoise::formats::signing::Role;
    use ppdenoise::formats::study::Done;
    let rec = d.path("study/slice2/done.p0");
    let original = std::fs::read(&rec).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let done: Done = serde_json::from_str(&text).unwrap();
    assert!(done.signature.is_some() && done.blake3.is_some(), "{text}");
    // 1. Another size and hash (a forger's share), the signature kept.
    let mut forged = done.clone();
    forged.bytes += 1;
    forged.blake3 = Some("ab".repeat(32));
    std::fs::write(&rec, serde_json::to_vec(&forged).unwrap()).unwrap();
    refused(
        &d.try_reconstruct("res3"),
        &["slice2/done.p0", "signature does not verify"],
    );
    // 2. The signer's entries taken out: unsigned.
    forged.signer = None;
    forged.signature = None;
    std::fs::write(&rec, serde_json::to_vec(&forged).unwrap()).unwrap();
    refused(
        &d.try_reconstruct("res3"),
        &["slice2/done.p0", "not signed"],
    );
    // 3. Made afresh for the share as it is, signed as S0 by a key of the forger's own.
    let mallory = common::own_signer(&d.path("keys"), "mallory", Role::S0);
    let out = d.path("study/slice2/out.p0");
    Done::of_output(
        Party::S0,
        done.job_id.clone(),
        done.triplet_id.clone(),
        &out,
        Some(&mallory),
    )
    .unwrap()
    .write(&rec)
    .unwrap();
    refused(
        &d.try_reconstruct("res3"),
        &["slice2/done.p0", "not by the pinned s0 key"],
    );
    assert!(!d.path("res3").exists());
    std::fs::write(&rec, original).unwrap();
    d.reconstruct("res3");
}

#[test]
fn a_dicom_series_comes_back_as_one_derived_series_in_its_order() {
    let d = Dir::new("tiny-mlp.npz");
    std::fs::create_dir_all(d.path("ct")).unwrap();
    let series = "1.2.826.0.1.3680043.8.498.7.1";
    // File names in another order than the series': by InstanceNumber it is b, c, a.
    for (name, instance, z) in [("a", 3, 10.0), ("b", 1, 0.0), ("c", 2, 5.0)] {
        dicom_slice(
            &d.path(&format!("ct/{name}")),
            series,
            instance,
            z,
            24,
            instance as u64,
        );
    }
    std::fs::write(d.path("ct/DICOMDIR"), b"an index, not read").unwrap();
    let j = d.shared(ok(&[
        "share-study",
        "--in",
        &d.p("ct"),
        "--out",
        &d.p("study"),
        "--sigma",
        "321.176HU",
        "--model",
        &d.p("model.pub"),
        "--sign-key",
        &d.gateway_key(),
        "--trust",
        &d.p("keys/trust"),
    ]));
    assert_eq!(j["kind"], "dicom-series");
    let sources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path("study.sources.json")).unwrap()).unwrap();
    let order: Vec<&str> = sources["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["b", "c", "a"]);
    d.deal(&["--engine", "gc"]);
    d.serve_pair(&[]);
    // Never over anything, the input least of all.
    let o = d.try_reconstruct("ct");
    refused(&o, &["exists and is not an empty folder"]);
    // A DICOM output is made like the very file that was shared.
    let a = std::fs::read(d.path("ct/a")).unwrap();
    dicom_slice(&d.path("ct/a"), series, 3, 10.0, 24, 99);
    let o = d.try_reconstruct("out");
    refused(&o, &["ct/a", "is not the file that was shared"]);
    assert!(!d.path("out").exists(), "nothing written");
    std::fs::write(d.path("ct/a"), a).unwrap();
    let j = d.reconstruct("out");
    let new_series = j["series_uid"].as_str().unwrap().to_string();
    assert_ne!(new_series, series);
    let mut sops = Vec::new();
    for name in ["a", "b", "c"] {
        let (src, out) = (
            d.path(&format!("ct/{name}")),
            d.path(&format!("out/{name}")),
        );
        assert_eq!(attr(&out, tags::SERIES_INSTANCE_UID), new_series);
        let desc = attr(&out, tags::SERIES_DESCRIPTION);
        assert!(
            desc.starts_with("Abdomen (denoised, tiny-mlp, sigma 321.176 HU) #"),
            "{desc}"
        );
        assert_eq!(
            attr(&out, tags::INSTANCE_NUMBER),
            attr(&src, tags::INSTANCE_NUMBER)
        );
        assert_eq!(
            attr(&out, tags::STUDY_INSTANCE_UID),
            attr(&src, tags::STUDY_INSTANCE_UID)
        );
        assert!(attr(&out, tags::IMAGE_TYPE).starts_with("DERIVED"));
        sops.push(attr(&out, tags::SOP_INSTANCE_UID));
        // The MLP oracle of the same slice at the study's sigma, written like it.
        let want = d.p(&format!("oracle-{name}.dcm"));
        ok(&[
            "denoise",
            "--image",
            &src.display().to_string(),
            "--model",
            &fixture("tiny-mlp.npz"),
            "--arith",
            "fixed",
            "--sigma",
            "321.176HU",
            "--out",
            &want,
            "--like",
            &src.display().to_string(),
        ]);
        let (a, b) = (
            ppdenoise::image::load(&out).unwrap(),
            ppdenoise::image::load(&want).unwrap(),
        );
        assert_eq!(a, b, "{name}: the study's slice differs from the oracle");
    }
    sops.sort();
    sops.dedup();
    assert_eq!(sops.len(), 3, "every slice a new SOP instance");
    // Issue 71, item 13: a second run of the same source files a series a viewer tells
    // apart from the first's (and from the source's): another number, another description.
    // The first run's series is in the study by now (here: beside the source, in the
    // folder the gateway shared), so the second knows it and steps past its number.
    std::fs::create_dir_all(d.path("ct/earlier")).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::copy(
            d.path(&format!("out/{name}")),
            d.path(&format!("ct/earlier/{name}")),
        )
        .unwrap();
    }
    d.reconstruct("again");
    let (first, again) = (d.path("out/a"), d.path("again/a"));
    let source = dicom_object::open_file(d.path("ct/a")).unwrap();
    for tag in [tags::SERIES_NUMBER, tags::SERIES_DESCRIPTION] {
        let (x, y) = (attr(&first, tag), attr(&again, tag));
        let src = source
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok().map(|v| v.trim().to_string()));
        assert!(
            x != y && Some(&x) != src.as_ref() && Some(&y) != src.as_ref(),
            "{tag:?}: {x:?}, again {y:?}, source {src:?}"
        );
    }
}

/// A multi-frame object (issue 28, item 2): every frame a slice of a study, run by two real
/// server processes, written back as one object of as many frames, each equal to the
/// fixed-point oracle of that frame.
#[test]
fn a_multi_frame_object_is_a_study_of_its_frames_and_comes_back_whole() {
    let d = Dir::new("tiny-cnn.npz");
    std::fs::create_dir_all(d.path("in")).unwrap();
    dicom_multi_frame(&d.path("in/enhanced.dcm"), 3, 24, 5);
    let j = d.shared(ok(&[
        "share-study",
        "--sigma",
        "401.471HU",
        "--in",
        &d.p("in/enhanced.dcm"),
        "--out",
        &d.p("study"),
        "--model",
        &d.p("model.pub"),
        "--sign-key",
        &d.gateway_key(),
        "--trust",
        &d.p("keys/trust"),
    ]));
    assert_eq!(
        (j["kind"].as_str(), j["slices"].as_u64()),
        (Some("multi-frame"), Some(3))
    );
    d.deal(&[]);
    d.serve_pair(&[]);
    let j = d.reconstruct("out");
    assert_eq!(j["files"].as_array().unwrap().len(), 1);
    let out = d.path("out/enhanced.dcm");
    assert_eq!(attr(&out, tags::NUMBER_OF_FRAMES), "3");
    assert_eq!(
        attr(&out, tags::SOP_CLASS_UID),
        "1.2.840.10008.5.1.4.1.1.2.1"
    );
    let desc = attr(&out, tags::SERIES_DESCRIPTION);
    assert!(
        desc.starts_with("Enhanced (denoised, tiny-cnn, sigma 401.471 HU) #"),
        "{desc}"
    );
    // The oracle: `denoise` of the whole object, every frame in fixed point.
    let want = oracle_at(
        &d,
        &d.path("in/enhanced.dcm"),
        "tiny-cnn.npz",
        "oracle.dcm",
        "401.471HU",
    );
    let (got, want) = (
        ppdenoise::image::load_frames(&out).unwrap(),
        ppdenoise::image::load_frames(&want).unwrap(),
    );
    assert_eq!(got.len(), 3);
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "frame {k}: the study's frame differs from the oracle");
    }
    assert_ne!(got[0], got[1], "frames are distinct images");
}

#[test]
fn bad_studies_are_refused_by_name_before_anything_is_made() {
    let d = Dir::new("tiny-cnn.npz");
    let share =
        |input: &str, out: &str, extra: &[&str]| share_study(&d.dir, "25", input, out, extra);
    std::fs::create_dir_all(d.path("empty")).unwrap();
    refused(&share("empty", "s1", &[]), &["empty", "no slices"]);
    // Two series in one folder.
    std::fs::create_dir_all(d.path("two")).unwrap();
    dicom_slice(&d.path("two/x"), "1.2.3.4", 1, 0.0, 16, 1);
    dicom_slice(&d.path("two/y"), "1.2.3.5", 2, 1.0, 16, 2);
    refused(
        &share("two", "s2", &[]),
        &["two/x", "two/y", "different series"],
    );
    // DICOM mixed with PNG; a stray file.
    std::fs::create_dir_all(d.path("mixed")).unwrap();
    dicom_slice(&d.path("mixed/x"), "1.2.3.4", 1, 0.0, 16, 1);
    ok(&[
        "add-noise",
        "--sigma",
        "25",
        "--image",
        "builtin:phantom:16",
        "--out",
        &d.p("mixed/y.png"),
    ]);
    refused(&share("mixed", "s3", &[]), &["mixes DICOM", "y.png"]);
    std::fs::create_dir_all(d.path("stray")).unwrap();
    ok(&[
        "add-noise",
        "--sigma",
        "25",
        "--image",
        "builtin:phantom:16",
        "--out",
        &d.p("stray/y.png"),
    ]);
    std::fs::write(d.path("stray/notes.txt"), b"hello").unwrap();
    refused(
        &share("stray", "s4", &[]),
        &["notes.txt", "neither DICOM, PNG nor TIFF"],
    );
    std::fs::remove_file(d.path("stray/notes.txt")).unwrap();
    // One map is not a study's.
    refused(
        &share("stray", "s5", &["--noise-map", &d.p("stray/y.png")]),
        &["--noise-map", "one map"],
    );
    // Nothing was made by any refusal.
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        assert!(!d.path(s).exists(), "{s} was made");
    }
    // A study is never shared over another (its jobs would be lost).
    ok(&[
        "share-study",
        "--sigma",
        "25",
        "--in",
        &d.p("stray"),
        "--out",
        &d.p("study"),
        "--model",
        &d.p("model.pub"),
    ]);
    refused(
        &share("stray", "study", &[]),
        &["study.json", "already exists"],
    );
    std::fs::remove_file(d.path("study/study.json")).unwrap();
    refused(
        &share("stray", "study", &[]),
        &["study.sources.json", "already exists"],
    );
    Manifest::read(&d.path("study")).unwrap_err();
    let (st, m) = (d.p("study2"), d.p("model.pub"));
    ok(&[
        "share-study",
        "--sigma",
        "25",
        "--in",
        &d.p("stray"),
        "--out",
        &st,
        "--model",
        &m,
    ]);
    std::fs::remove_dir_all(d.path("study")).unwrap();
    std::fs::rename(d.path("study2"), d.path("study")).unwrap();
    std::fs::rename(d.path("study2.sources.json"), d.path("study.sources.json")).unwrap();
    // --slices belongs to a study.
    let p = d.p("study/slice0/image.pub");
    let o = run(&[
        "gen-triplets",
        "--model",
        &m,
        "--image",
        &p,
        "--slices",
        "0",
    ]);
    refused(&o, &["--slices: applies to a study"]);
    // A slice list outside the study; a slice's image share swapped with another's.
    let s = d.p("study");
    refused(
        &run(&[
            "gen-triplets",
            "--study",
            &s,
            "--model",
            &d.p("model.pub"),
            "--slices",
            "1",
        ]),
        &["slice 1 is not in the study"],
    );
    d.deal(&[]);
    ok(&[
        "share-image",
        "--sigma",
        "25",
        "--image",
        &d.p("stray/y.png"),
        "--model",
        &d.p("model.pub"),
        "--out",
        &d.p("study/slice0/image"),
    ]);
    refused(
        &run(&["gen-triplets", "--study", &s, "--model", &d.p("model.pub")]),
        &["image.pub", "names job"],
    );
    let o = wait(d.serve(0, &no_link_addr(), "5", &[]));
    refused(&o, &["image.p0", "is not slice 0's image share"]);
    assert!(
        !d.path("state0").exists()
            || std::fs::read_dir(d.path("state0"))
                .unwrap()
                .next()
                .is_none(),
        "nothing claimed"
    );
}

/// Issue 45 (review of the study binding, item 2): a completion record the dealer cannot take
/// (signed as S0 by a key of a planter's own, unsigned, or its signature broken), planted
/// over slice 0's genuine one in a finished study, no longer stops `gen-triplets --study`: it
/// deals slice 0 again (and only it), says why naming the record, and exits 0.
/// `study-status` agrees: slice 0 left, the record named. The genuine record put back, no
/// slice is dealt.
#[test]
fn the_dealer_deals_again_a_slice_whose_record_is_not_taken() {
    use ppdenoise::formats::study::Done;
    let d = Dir::new("tiny-cnn.npz");
    std::fs::create_dir_all(d.path("in")).unwrap();
    for (i, size) in [20, 18].iter().enumerate() {
        let (img, out) = (
            format!("builtin:phantom:{size}"),
            d.p(&format!("in/im{i}.png")),
        );
        ok(&[
            "add-noise",
            "--image",
            &img,
            "--sigma",
            "25",
            "--seed",
            "1",
            "--out",
            &out,
        ]);
    }
    d.share_images();
    d.deal(&[]);
    d.serve_pair(&[]);
    let (k0, k1) = (d.p("keys/s0.sign-pub"), d.p("keys/s1.sign-pub"));
    let pins = ["--s0-key", k0.as_str(), "--s1-key", k1.as_str()];
    assert_eq!(list(&d.deal(&pins)["dealt"]), Vec::<u64>::new());
    let rec = d.path("study/slice0/done.p0");
    let genuine = std::fs::read(&rec).unwrap();
    let done: Done = serde_json::from_slice(&genuine).unwrap();
    let planter = d.planter();
    let out = d.path("study/slice0/out.p0");
    let by_planter = Done::of_output(
        Party::S0,
        done.job_id.clone(),
        done.triplet_id.clone(),
        &out,
        Some(&planter),
    )
    .unwrap();
    let mut unsigned = done.clone();
    (unsigned.signer, unsigned.signature) = (None, None);
    let mut broken = done.clone();
    broken.bytes += 1;
    // (record, with the servers' keys pinned or not, what the warning says)
    let cases: [(&Done, bool, &str); 3] = [
        (&by_planter, true, "not by the pinned s0 key"),
        (&unsigned, true, "not signed"),
        (&broken, false, "signature does not verify"),
    ];
    for (planted, pinned, why) in cases {
        planted.write(&rec).unwrap();
        let (s, m, k) = (d.p("study"), d.p("model.pub"), d.p("keys/dealer.sign-key"));
        let mut args = vec![
            "gen-triplets",
            "--study",
            &s,
            "--model",
            &m,
            "--sign-key",
            &k,
        ];
        if pinned {
            args.extend(pins);
        }
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{why}: the dealer stopped: {err}");
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(list(&j["dealt"]), [0], "{why}");
        assert!(
            err.contains("warning: slice 0")
                && err.contains("slice0/done.p0")
                && err.contains(why)
                && err.contains("dealing it again"),
            "{why}: {err}"
        );
        let mut st = vec!["study-status", "--study", &s];
        if pinned {
            st.extend(pins);
        }
        let st = ok(&st);
        assert_eq!(st["left_spec"], "0", "{why}");
        let state = st["states"][0].as_str().unwrap();
        assert!(
            state.contains("record not taken") && state.contains("slice0/done.p0"),
            "{state}"
        );
    }
    std::fs::write(&rec, genuine).unwrap();
    assert_eq!(list(&d.deal(&pins)["dealt"]), Vec::<u64>::new());
}

/// A study shared without `--model` (possible only unsigned: a signing gateway must name the
/// model) binds no model to its jobs, so each slice can be dealt and served with another
/// model; `reconstruct --study` describes the series by slice 0's model, so it refuses a
/// study whose slices were denoised by two models, naming both, and writes nothing. The two
/// models are one file shared twice: two model ids, as two owners' models would be.
#[test]
fn a_study_denoised_by_two_models_is_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n).display().to_string();
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &p("keys")]);
    }
    for m in ["model-a", "model-b"] {
        ok(&[
            "share-model",
            "--model",
            &fixture("tiny-mlp.npz"),
            "--out",
            &p(m),
        ]);
    }
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for i in 0..2 {
        ok(&[
            "add-noise",
            "--image",
            "builtin:phantom:24",
            "--sigma",
            "25",
            "--seed",
            &i.to_string(),
            "--out",
            &p(&format!("in/im{i}.png")),
        ]);
    }
    ok(&[
        "share-study",
        "--sigma",
        "25",
        "--in",
        &p("in"),
        "--out",
        &p("study"),
    ]);
    for (slice, model) in [("0", "model-a"), ("1", "model-b")] {
        let m = p(&format!("{model}.pub"));
        ok(&[
            "gen-triplets",
            "--study",
            &p("study"),
            "--model",
            &m,
            "--slices",
            slice,
        ]);
        let serve = |party: u8, addr: &[String]| {
            let (me, peer) = (format!("s{party}"), format!("s{}", 1 - party));
            Command::new(bin())
                .args(["--json", "serve", "--quiet", "--insecure-unsigned"])
                .args(["--party", &party.to_string()])
                .args(["--model", &p(&format!("{model}.p{party}"))])
                .args(["--study", &p("study"), "--slices", slice])
                .args(["--key", &p(&format!("keys/{me}.key"))])
                .args(["--cert", &p(&format!("keys/{me}.crt"))])
                .args(["--peer-cert", &p(&format!("keys/{peer}.crt"))])
                .args(addr)
                .args(["--timeout", "60"])
                .args(["--state-dir", &p(&format!("state{party}"))])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start serve")
        };
        for c in start_pair(dir, serve) {
            let o = wait(c);
            assert!(
                o.status.success(),
                "serve slice {slice} with {model}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let o = run(&[
        "reconstruct",
        "--study",
        &p("study"),
        "--out",
        &p("out"),
        "--insecure-unsigned",
    ]);
    let id = |m: &str| model_id_of(&dir.join(format!("{m}.pub")));
    refused(
        &o,
        &[
            "slice 1 (im1.png)",
            &format!("denoised by model {}", id("model-b")),
            &format!("slice 0 by model {}", id("model-a")),
            "must be of one model",
        ],
    );
    assert!(!dir.join("out").exists(), "nothing is written");
}

/// The model id a public model header (model.pub) names.
fn model_id_of(model_pub: &Path) -> String {
    ok(&["inspect", &model_pub.display().to_string()])["model_id"]
        .as_str()
        .expect("a model header names its model")
        .to_string()
}

/// Issue 71, item 12: `study-status` during a run tells the slice being served (its
/// server holds `serving.pP`) from one not finished, and offers to deal only the others;
/// the dealer leaves it alone too. Once its server is gone (killed: the record stays, its
/// lock goes), the slice is simply not finished again.
#[test]
fn a_slice_being_served_is_told_apart_and_not_dealt_again() {
    let d = Dir::new("tiny-cnn.npz");
    std::fs::create_dir_all(d.path("in")).unwrap();
    for (i, n) in ["a.png", "b.png"].iter().enumerate() {
        let out = d.p(&format!("in/{n}"));
        let seed = i.to_string();
        ok(&[
            "add-noise",
            "--image",
            "builtin:phantom:28",
            "--sigma",
            "25",
            "--seed",
            &seed,
            "--out",
            &out,
        ]);
    }
    d.shared(d.share_images());
    assert_eq!(list(&d.deal(&[])["dealt"]), [0, 1]);
    // S0 alone on slice 0: it waits for its peer, serving the slice (ended however the
    // test ends).
    struct Ends(std::process::Child);
    impl Drop for Ends {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut s0 = Ends(d.serve(0, &no_link_addr(), "120", &["--slices", "0"]));
    let record = d.path("study/slice0/serving.p0");
    let t = std::time::Instant::now();
    // The file is made before it is locked and written: wait for its text.
    while std::fs::metadata(&record).map_or(true, |m| m.len() == 0) {
        assert!(
            t.elapsed().as_secs() < 60,
            "S0 never took slice 0's serving record"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let st = d.status();
    assert_eq!(st["left_spec"], "0-1");
    assert_eq!(list(&st["in_progress"]), [0]);
    assert_eq!(st["to_deal_spec"], "1");
    let state = st["states"][0].as_str().unwrap();
    assert!(state.starts_with("being served now (S0 on "), "{state}");
    // What a person reads: slice 0 named as being served, the dealing line without it.
    let o = Command::new(bin())
        .args(["study-status", "--study", &d.p("study")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("being served now: 0;"), "{text}");
    let deal_line = text
        .lines()
        .find(|l| l.contains("gen-triplets"))
        .unwrap_or_default();
    assert!(
        deal_line.contains("--slices 1,") || deal_line.contains("--slices 1 "),
        "{text}"
    );
    assert!(!deal_line.contains("--slices 0"), "{text}");
    // The dealer, asked for what is not finished, leaves the slice being served alone.
    assert_eq!(list(&d.deal(&[])["dealt"]), [1]);
    s0.0.kill().unwrap();
    s0.0.wait().unwrap();
    assert!(record.exists(), "a killed server leaves its record behind");
    let st = d.status();
    assert_eq!(list(&st["in_progress"]), Vec::<u64>::new());
    assert_eq!(st["to_deal_spec"], "0-1");
    assert_eq!(st["states"][0], "not finished");
}

/// `serving_now` on slice 0 of `dir` as server 0, within five seconds (a hang fails).
fn serving_now_soon(dir: &Path) -> Option<String> {
    let dir = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ppdenoise::study::records::serving_now(&dir, 0, Party::S0));
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("serving_now hung on the serving record")
}

#[test]
fn a_serving_record_that_is_a_fifo_a_symlink_or_hostile_text_is_read_safely() {
    let d = Dir::new("tiny-cnn.npz");
    let dir = d.path("study");
    std::fs::create_dir_all(dir.join("slice0")).unwrap();
    let record = dir.join("slice0/serving.p0");
    // A FIFO: no hang, no claim.
    assert!(Command::new("mkfifo")
        .arg(&record)
        .status()
        .unwrap()
        .success());
    assert_eq!(serving_now_soon(&dir), None);
    std::fs::remove_file(&record).unwrap();
    // A symlink to an endless file: not followed.
    std::os::unix::fs::symlink("/dev/zero", &record).unwrap();
    assert_eq!(serving_now_soon(&dir), None);
    std::fs::remove_file(&record).unwrap();
    // A huge record, held by a live process, with a terminal escape: bounded, and the
    // escape not echoed.
    let mut text = b"\x1b]0;pwned\x07S0 on host\x1b[2J".to_vec();
    text.resize(1 << 20, b'x');
    std::fs::write(&record, &text).unwrap();
    let held = std::fs::File::open(&record).unwrap();
    held.lock().unwrap();
    let who = serving_now_soon(&dir).expect("a held record is a claim");
    assert!(who.len() <= 256, "{} bytes", who.len());
    assert!(who.bytes().all(|b| (b' '..=b'~').contains(&b)), "{who:?}");
    assert!(who.starts_with("]0;pwnedS0 on host[2J"), "{who:?}");
    // The refusal to serve it names the process in printable text as well.
    let e = ppdenoise::study::records::Serving::take(&dir, 0, Party::S0)
        .err()
        .expect("a held record is refused");
    let e = format!("{e:#}");
    assert!(e.contains("being served by another S0 process"), "{e}");
    assert!(!e.contains('\x1b') && !e.contains('\x07'), "{e:?}");
    assert!(e.len() < 1024, "{} bytes", e.len());
}

#[test]
fn a_symlink_planted_as_the_serving_record_is_refused_and_its_target_kept() {
    let d = Dir::new("tiny-cnn.npz");
    let dir = d.path("study");
    std::fs::create_dir_all(dir.join("slice0")).unwrap();
    let target = d.path("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("slice0/serving.p0")).unwrap();
    let e = ppdenoise::study::records::Serving::take(&dir, 0, Party::S0)
        .err()
        .expect("a symlink is refused");
    assert!(format!("{e:#}").contains("serving.p0"), "{e:#}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}
