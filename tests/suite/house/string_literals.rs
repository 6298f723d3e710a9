//! No string literal in src/ carries the indentation of a broken line continuation (issue 45,
//! review of the study binding, item 4): a literal split over lines without its `\` (or one
//! joined back with the next line's indentation kept) reads `slices                  (share-study`
//! in an error message. Found by a small lexer over every `.rs` file under src/: comments are
//! skipped, a `\` before a newline with the next line's leading spaces is a proper
//! continuation; what remains may hold neither a newline nor a run of 8 or more spaces
//! between words (aligned columns, as the demo's tables, use fewer).

use std::path::{Path, PathBuf};

/// Each string literal of Rust source `src`: the line it starts on, its text as written
/// (escapes kept) and whether it is raw.
fn literals(src: &str) -> Vec<(usize, String, bool)> {
    let b = src.as_bytes();
    let line_of = |i: usize| b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            i = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            continue;
        }
        if b[i..].starts_with(b"/*") {
            i = src[i..].find("*/").map_or(b.len(), |p| i + p + 2);
            continue;
        }
        if b[i] == b'\'' {
            // A char literal (its quote may be `"`), else a lifetime.
            if b.get(i + 1) == Some(&b'\\') {
                i = src[i + 2..].find('\'').map_or(b.len(), |p| i + 2 + p + 1);
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        let prefix_ok = i == 0 || !ident(b[i - 1]);
        // A raw string: r"..", r#".."#, br"..".
        let r = if b[i] == b'b' && b.get(i + 1) == Some(&b'r') {
            Some(i + 2)
        } else if b[i] == b'r' {
            Some(i + 1)
        } else {
            None
        };
        if let (true, Some(mut j)) = (prefix_ok, r) {
            let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
            j += hashes;
            if b.get(j) == Some(&b'"') {
                let close = format!("\"{}", "#".repeat(hashes));
                let end = src[j + 1..].find(&close).map_or(b.len(), |p| j + 1 + p);
                out.push((line_of(i), src[j + 1..end].to_string(), true));
                i = end + close.len();
                continue;
            }
        }
        if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.push((line_of(i), src[i + 1..j.min(b.len())].to_string(), false));
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// What is wrong with a literal's text, if anything.
fn defect(text: &str, raw: bool) -> Option<&'static str> {
    if raw {
        return None;
    }
    // Proper continuations: `\`, newline, the next line's leading whitespace.
    let mut joined = String::new();
    let mut rest = text;
    while let Some(p) = rest.find("\\\n") {
        joined.push_str(&rest[..p]);
        rest = rest[p + 2..].trim_start();
    }
    joined.push_str(rest);
    if joined.contains('\n') {
        return Some("a line break inside the literal (a continuation without its `\\`)");
    }
    let t = joined.trim();
    if t.contains("        ") {
        return Some("a run of spaces (a continuation's indentation kept)");
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_lexer_sees_broken_continuations_and_not_proper_ones() {
    let src = "let a = \"one \\\n         two\"; // \"in   a          comment\"\n\
               let c = '\"'; let l: &'static str = \"x\";\n\
               let b = \"broken                  here\";\n\
               let n = \"split\n    over lines\";\n\
               let r = r#\"raw          kept\"#;\n\
               let t = \"PSNR noisy     aligned\";\n";
    // Literal 1 spans two lines (its continuation), so literal 2 starts on line 3.
    let found: Vec<(usize, bool)> = literals(src)
        .iter()
        .map(|(l, t, raw)| (*l, defect(t, *raw).is_some()))
        .collect();
    let want = [
        (1, false),
        (3, false),
        (4, true),
        (5, true),
        (7, false),
        (8, false),
    ];
    assert_eq!(found, want);
}

#[test]
fn no_string_literal_in_src_holds_a_broken_continuation() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 50, "src/ read: {} files", files.len());
    let mut bad = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        for (line, text, raw) in literals(&src) {
            if let Some(why) = defect(&text, raw) {
                let short: String = text.chars().take(60).collect();
                bad.push(format!("{}:{line}: {why}: {short:?}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
