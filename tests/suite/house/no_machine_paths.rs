//! No committed file names a path of the machine that made it (issue 45, item 6): the
//! dynamo exporter once wrote its stack traces, with the exporting machine's paths, into two
//! ONNX fixtures. Every file `git ls-files` lists is read as bytes, binary ones too.
//!
//! What counts: an absolute path under a home, root's home, a work tree, a temporary folder
//! (Unix, macOS, Windows), followed by a name, and not itself inside a relative path (so
//! `docs/tmp/x` does not count). Examples in documentation use relative paths or variables
//! (`$TMPDIR`, `~`) instead, which say nothing about a machine.

use std::process::Command;

/// The roots, spelled here in pieces so that this file does not hold them itself.
fn roots() -> Vec<Vec<u8>> {
    let unix = [
        "home",
        "root",
        "work",
        "Users",
        "tmp",
        "var/folders",
        "private/var",
    ];
    let mut r: Vec<Vec<u8>> = unix.iter().map(|n| format!("/{n}/").into_bytes()).collect();
    r.push(format!(":{0}Users{0}", '\\').into_bytes());
    r
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Each absolute machine path in `data`: its offset and some bytes of it.
fn machine_paths(data: &[u8], roots: &[Vec<u8>]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for root in roots {
        let mut i = 0;
        while let Some(p) = data[i..].windows(root.len()).position(|w| w == &root[..]) {
            let at = i + p;
            i = at + 1;
            let after = data.get(at + root.len()).copied();
            // A Windows root comes after its drive letter; a Unix one starts a path.
            let starts = if root[0] == b':' {
                at > 0 && data[at - 1].is_ascii_alphabetic()
            } else {
                at == 0 || !(name_byte(data[at - 1]) || data[at - 1] == b'/')
            };
            if starts && after.is_some_and(name_byte) {
                let end = (at + root.len() + 40).min(data.len());
                let start = at.saturating_sub(if root[0] == b':' { 1 } else { 0 });
                found.push((at, String::from_utf8_lossy(&data[start..end]).into_owned()));
            }
        }
    }
    found
}

#[test]
fn the_finder_sees_machine_paths_and_not_relative_ones() {
    let r = roots();
    let hit = |s: &str| !machine_paths(s.as_bytes(), &r).is_empty();
    assert!(hit(&format!(
        "File \"/{}/main/scripts/x.py\", line 51",
        "work"
    )));
    assert!(hit(&format!("/{}/alice/data", "home")));
    assert!(hit(&format!("C:{0}Users{0}bob{0}x", '\\')));
    assert!(hit(&format!("x=/{}/ppd-1/out", "tmp")));
    assert!(!hit(&format!("docs/{}/x and out/{}/y", "tmp", "work")));
    assert!(!hit(&format!(
        "a /{}/ alone, {}:/ and //{}/",
        "tmp", "root", "home"
    )));
    assert!(!hit("$TMPDIR/ppd and ~/data"));
}

#[test]
fn no_committed_file_names_a_machine_path() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git, to list the committed files");
    assert!(out.status.success(), "git ls-files failed: {out:?}");
    let r = roots();
    let mut bad = Vec::new();
    let mut files = 0;
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let path = std::path::Path::new(root).join(&name);
        // A file deleted in the work tree but still listed is not read.
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        files += 1;
        for (at, text) in machine_paths(&data, &r) {
            bad.push(format!("{name} at byte {at}: {text:?}"));
        }
    }
    assert!(files > 100, "only {files} files listed");
    assert!(
        bad.is_empty(),
        "machine paths in committed files:\n{}",
        bad.join("\n")
    );
}
