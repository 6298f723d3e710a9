//! Coverage-guided fuzzing under afl++ (`make fuzz`, scripts/fuzz-afl.sh, docs/security.md):
//! each target of this file is one afl++ campaign, in a build made by cargo-afl
//! (`cfg(fuzzing)`: LLVM's sanitizer coverage, afl++'s runtime linked in, overflow checks
//! and debug assertions on). One test, driven by the environment:
//!
//! - `PPDENOISE_AFL_DIR` alone: the export. The seed runs and the targets' files are made
//!   in `<dir>/files` (or found there, when an earlier export made them and its valid files
//!   are still accepted), each target's first inputs are written to `<dir>/in/<target>/`
//!   and the targets' names to `<dir>/targets`.
//! - `PPDENOISE_AFL_TARGET=<target>` too: one target's process. It finds the files the
//!   export made, so that an input's neighbours are the valid files it was made beside,
//!   then runs its inputs: under afl++ in persistent mode (the fork server starts after
//!   the set-up), else the one input on standard input, which replays a crash afl++ saved,
//!   in any build, with its panic message.
//!
//! The test is ignored by a plain `cargo test`; the script runs it with `--ignored`.
//!
//! An input is one byte, then the file. The byte's low 7 bits pick which of the target's
//! valid files the input stands for (the `seed` its reader is given, as in `fuzz_target`);
//! for a container, its high bit clear asks for the BLAKE3 re-sealed and the signature made
//! again ([`reseal`]), as the mutation fuzzer does most of the time. A panic, or an
//! allocation past the test binary's cap, aborts: afl++ records that as a crash.

use std::path::{Path, PathBuf};

use super::{reseal, setup, slug, Shape, Target};

/// afl++ reads no more of an input than this (its `MAX_FILE`).
const AFL_MAX_INPUT: usize = 1 << 20;

#[test]
#[ignore = "an entry point for afl++: scripts/fuzz-afl.sh runs it"]
fn afl_campaign() {
    let dir = std::env::var_os("PPDENOISE_AFL_DIR")
        .map(PathBuf::from)
        .expect("PPDENOISE_AFL_DIR names the campaign's directory (scripts/fuzz-afl.sh)");
    match std::env::var("PPDENOISE_AFL_TARGET") {
        Err(_) => export(&dir),
        Ok(name) => campaign(&dir, &name),
    }
}

/// Makes (or keeps) the targets' files and writes each target's first inputs.
fn export(dir: &Path) {
    let files = dir.join("files");
    let input = dir.join("export.input");
    // Files an older build made may no longer be valid (or a newer harness may want one it
    // did not make): each target needs its valid files accepted, or its campaign tests
    // nothing. They are then made again, and afl++'s queues, grown beside the old files,
    // are dropped; files this build has just made must pass. (The check reads each file as
    // it is, not signed again, so the signing keys of `setup`'s first call do not matter.)
    let kept = std::panic::catch_unwind(|| {
        let targets = setup(&files);
        valid_refused(&targets, &input).map_or(Ok(targets), Err)
    });
    let targets = match kept {
        Ok(Ok(targets)) => targets,
        stale => {
            let why = match stale {
                Ok(Err(why)) => why,
                _ => "the set-up panicked on them".into(),
            };
            eprintln!(
                "afl: the files in {} are made again ({why})",
                files.display()
            );
            for d in [&files, &dir.join("out")] {
                let _ = std::fs::remove_dir_all(d);
            }
            let targets = setup(&files);
            if let Some(why) = valid_refused(&targets, &input) {
                panic!("a file the seed runs made is refused: {why}");
            }
            targets
        }
    };
    let _ = std::fs::remove_dir_all(dir.join("in"));
    let mut names = String::new();
    for t in &targets {
        let at = dir.join("in").join(slug(t.name));
        std::fs::create_dir_all(&at).unwrap();
        for (k, s) in t.seeds.iter().enumerate() {
            let file = std::fs::read(s).unwrap();
            if file.len() >= AFL_MAX_INPUT {
                eprintln!(
                    "afl: {}: valid file {} ({} bytes) is past afl++'s input limit (cut)",
                    t.name,
                    s.display(),
                    file.len()
                );
            }
            std::fs::write(
                at.join(format!("valid-{k}")),
                [&[k as u8][..], &file].concat(),
            )
            .unwrap();
        }
        names += &format!("{}\n", slug(t.name));
    }
    std::fs::write(dir.join("targets"), names).unwrap();
    let _ = std::fs::remove_file(&input);
    eprintln!(
        "afl: {} targets exported to {}",
        targets.len(),
        dir.display()
    );
}

/// The first valid file some target refuses (read as it is: its signature is its maker's).
fn valid_refused(targets: &[Target], input: &Path) -> Option<String> {
    targets.iter().find_map(|t| {
        t.seeds.iter().enumerate().find_map(|(k, s)| {
            let head = [k as u8 | 0x80];
            let file = std::fs::read(s).map_err(|e| e.to_string());
            let r = file.and_then(|f| run_one(t, input, &[&head[..], &f].concat()));
            r.err()
                .map(|e| format!("{}: valid file {}: {e}", t.name, s.display()))
        })
    })
}

/// One target's inputs: afl++'s in a fuzzing build, else the one on standard input.
fn campaign(dir: &Path, name: &str) {
    let files = dir.join("files");
    assert!(
        files.join("seed-runs.done").exists(),
        "no export in {}: run scripts/fuzz-afl.sh (make fuzz)",
        dir.display()
    );
    let targets = setup(&files);
    let t = targets
        .iter()
        .find(|t| slug(t.name) == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"));
    std::fs::create_dir_all(dir.join("input")).unwrap();
    let input = dir.join("input").join(name);
    #[cfg(fuzzing)]
    {
        let t = std::panic::AssertUnwindSafe(t);
        afl::fuzz!(|data: &[u8]| {
            // Refusals are the common case: only a panic or an abort is a finding.
            let _ = run_one(&t, &input, data);
        });
    }
    #[cfg(not(fuzzing))]
    {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).unwrap();
        match run_one(t, &input, &data) {
            Ok(()) => eprintln!("afl: {name}: accepted"),
            Err(e) => eprintln!("afl: {name}: refused: {e}"),
        }
    }
}

/// Runs one input (the byte that picks its valid file, then the file) through `t`'s reader.
fn run_one(t: &Target, input: &Path, data: &[u8]) -> Result<(), String> {
    let Some((&head, file)) = data.split_first() else {
        return Err("empty input".into());
    };
    let seed = &t.seeds[usize::from(head & 0x7f) % t.seeds.len()];
    let mut bytes = file.to_vec();
    if matches!(t.shape, Shape::Container) && head & 0x80 == 0 {
        reseal(&mut bytes);
    }
    std::fs::write(input, &bytes).unwrap();
    (t.parse)(input, seed)
}
