//! Each folder of src/ imports only folders on floors below its own (issue 46, item 3). The
//! floors are read from docs/architecture.md, so the page and this test cannot disagree; an
//! import is any `crate::<folder>` path (in `use` lines or inline, unit tests included) or a
//! `super::` chain that climbs to the crate root, found in each file with comments and string
//! literals removed.
//!
//! Violations still to be removed would be listed in [`KNOWN`] (and on the page), each with
//! what removes it; the list is empty and only shrinks: a new upward import fails the build,
//! and so does an entry whose import is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The page whose floors this test enforces, and the markers of its two machine-read blocks.
const DOC: &str = "docs/architecture.md";
const FLOORS_MARK: &str = "<!-- floors: read by tests/suite/house/layers.rs -->";
const KNOWN_MARK: &str = "<!-- known violations: read by tests/suite/house/layers.rs -->";

/// Upward imports still to be removed: (file under src/, the folder it imports, what removes
/// it). Empty since issue 46 (items 3 and 4); only ever remove entries, never add one.
const KNOWN: &[(&str, &str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The source with comments, string literals and char literals blanked out (newlines kept, so
/// that line numbers still hold).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            continue;
        }
        let prev_ident = i > 0 && ident(b[i - 1]);
        // Raw strings: r"..", r#".."#, br"..".
        if !prev_ident && (c == 'r' || (c == 'b' && next == Some('r'))) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                j += 1;
                'scan: while j < b.len() {
                    if b[j] == '"' && (1..=hashes).all(|h| b.get(j + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break 'scan;
                    }
                    j += 1;
                }
                for &x in &b[i..j.min(b.len())] {
                    blank(&mut out, x);
                }
                i = j;
                continue;
            }
        }
        if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            for &x in &b[i..(j + 1).min(b.len())] {
                blank(&mut out, x);
            }
            i = j + 1;
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'); otherwise a lifetime or a label.
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(e) = end {
                for &x in &b[i..=e] {
                    blank(&mut out, x);
                }
                i = e + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The top-level items of a `{a::b, c, d::{e, f}}` group starting at `s[0] == '{'`.
fn group_items(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&s[start..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The first identifier of each top-level item of a `{a::b, c, d::{e, f}}` group starting at
/// `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<String> {
    group_items(s)
        .iter()
        .filter_map(|h| {
            let w: String = h
                .trim_start()
                .chars()
                .take_while(|&c| c.is_alphanumeric() || c == '_')
                .collect();
            (!w.is_empty()).then_some(w)
        })
        .collect()
}

/// Each `(module, name)` step of the path at the start of `rest`, `prefix` being the module
/// it starts from: `a::{b, c::d}` from [] gives ([], a), ([a], b), ([a], c), ([a, c], d).
fn walk(rest: &str, prefix: &[String], line: usize, out: &mut Vec<(Vec<String>, String, usize)>) {
    let rest = rest.trim_start();
    if rest.starts_with('{') {
        for item in group_items(rest) {
            walk(item, prefix, line, out);
        }
        return;
    }
    let w: String = rest
        .chars()
        .take_while(|&c| c.is_alphanumeric() || c == '_')
        .collect();
    if w.is_empty() || w == "self" {
        return;
    }
    out.push((prefix.to_vec(), w.clone(), line));
    if let Some(next) = rest[w.len()..].trim_start().strip_prefix("::") {
        let mut p = prefix.to_vec();
        p.push(w);
        walk(next, &p, line, out);
    }
}

/// Every module path a file names, as steps `(module, name, line)` (see [`walk`]): `crate::`
/// paths start from the crate root, `super::` chains from the module they climb to, `here`
/// being the file's module path (src/a/b.rs: [a, b]; src/a/mod.rs: [a]) and inline
/// `mod x { .. }` blocks adding one level each; chains that stay inside the file are left out.
fn references(src: &str, here: &[String]) -> Vec<(Vec<String>, String, usize)> {
    let s = strip(src);
    let b = s.as_bytes();
    let mut found = Vec::new();
    // Per open brace: whether it opened an inline module.
    let mut braces: Vec<bool> = Vec::new();
    let mut line = 1;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => line += 1,
            b'{' => {
                let before = s[..i].trim_end();
                let word_start = before
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |p| p + 1);
                let opens_mod = word_start > 0
                    && before[..word_start].trim_end().ends_with("mod")
                    && !before[..word_start]
                        .trim_end()
                        .strip_suffix("mod")
                        .is_some_and(|x| x.ends_with(|c: char| c.is_alphanumeric() || c == '_'));
                braces.push(opens_mod);
            }
            b'}' => {
                braces.pop();
            }
            _ => {}
        }
        let starts = i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'$' || b[i - 1] == b':');
        if starts && s[i..].starts_with("crate::") {
            walk(&s[i + 7..], &[], line, &mut found);
            i += 7;
            continue;
        }
        if starts && s[i..].starts_with("super::") {
            let mut k = 0;
            let mut j = i;
            while s[j..].starts_with("super::") {
                k += 1;
                j += 7;
            }
            let level = here.len() + braces.iter().filter(|&&m| m).count();
            let at = level.saturating_sub(k);
            if at <= here.len() {
                walk(&s[j..], &here[..at], line, &mut found);
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

/// Every top-level module a file names, with the first line naming it. `depth` is the file's
/// module depth below the crate root (src/a/mod.rs: 1, src/a/b.rs: 2).
fn imports(src: &str, depth: usize) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for (from, name, line) in references(src, &vec![String::new(); depth]) {
        if from.is_empty() {
            found.entry(name).or_insert(line);
        }
    }
    found
}

/// A file's module path under src/: a/b.rs is [a, b], a/mod.rs is [a], lib.rs is [].
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Within each folder, which of its modules names which other (a module's files being its
/// own file or everything under its folder): `(folder, from, to)`. The crate root's folders
/// are left to the floors.
fn sibling_imports(files: &[(String, String)]) -> BTreeSet<(String, String, String)> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module_path(p)).collect();
    let mut edges = BTreeSet::new();
    for (path, src) in files {
        let here = module_path(path);
        let refs = references(src, &here);
        for n in 1..here.len() {
            let (folder, from) = (&here[..n], &here[n]);
            for (base, name, _) in &refs {
                let mut to = folder.to_vec();
                to.push(name.clone());
                if base == folder && name != from && modules.contains(&to) {
                    edges.insert((folder.join("/"), from.clone(), name.clone()));
                }
            }
        }
    }
    edges
}

/// The modules on a circle of `edges`, per folder: "folder: a, b, c".
fn circles(edges: &BTreeSet<(String, String, String)>) -> Vec<String> {
    let reaches = |folder: &str, from: &str, goal: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for (f, a, b) in edges {
                if f == folder && *a == m && seen.insert(b.clone()) {
                    if b == goal {
                        return true;
                    }
                    todo.push(b.clone());
                }
            }
        }
        false
    };
    let mut on: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (f, a, _) in edges {
        if reaches(f, a, a) {
            on.entry(f).or_default().insert(a);
        }
    }
    on.iter()
        .map(|(f, ms)| {
            format!(
                "src/{f}/: {}",
                ms.iter().copied().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

/// The floors, bottom first; each a set of sibling folders.
fn parse_floors(doc: &str) -> Vec<Vec<String>> {
    let block = marked_block(doc, FLOORS_MARK);
    let mut floors: Vec<Vec<String>> = block
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|f| !f.is_empty())
        .collect();
    floors.reverse();
    floors
}

/// The fenced block right after a marker line.
fn marked_block<'a>(doc: &'a str, mark: &str) -> &'a str {
    let at = doc
        .find(mark)
        .unwrap_or_else(|| panic!("{DOC} has no line {mark}"));
    let after = &doc[at + mark.len()..];
    let open = after.find("```").expect("a fenced block after the marker");
    let body = &after[open..];
    let body = &body[body.find('\n').expect("a line after ```") + 1..];
    &body[..body.find("```").expect("the block's closing ```")]
}

/// One upward import: the file (under src/), its line, the folder imported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Upward {
    file: String,
    folder: String,
    line: usize,
}

/// Every import in `files` (path under src/, source) that is not strictly downward, and every
/// import of a name that is no folder on a floor.
fn upward(files: &[(String, String)], floors: &[Vec<String>]) -> (Vec<Upward>, Vec<String>) {
    let floor_of: BTreeMap<&str, usize> = floors
        .iter()
        .enumerate()
        .flat_map(|(n, f)| f.iter().map(move |d| (d.as_str(), n)))
        .collect();
    let mut up = Vec::new();
    let mut unknown = Vec::new();
    for (path, src) in files {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 {
            continue; // lib.rs, main.rs: the crate root
        }
        let folder = parts[0];
        let depth = if parts.last() == Some(&"mod.rs") {
            parts.len() - 1
        } else {
            parts.len()
        };
        let Some(&own) = floor_of.get(folder) else {
            unknown.push(format!("src/{folder}/ is on no floor of {DOC}"));
            continue;
        };
        for (name, line) in imports(src, depth) {
            if name == folder {
                continue;
            }
            match floor_of.get(name.as_str()) {
                None => unknown.push(format!(
                    "src/{path}:{line} names crate::{name}, which is no folder on a floor of {DOC}"
                )),
                Some(&f) if f >= own => up.push(Upward {
                    file: path.clone(),
                    folder: name,
                    line,
                }),
                Some(_) => {}
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    (up, unknown)
}

/// What a tree's imports and a known list disagree on: new upward imports, and known entries
/// that no longer exist.
fn ratchet(up: &[Upward], known: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let known: BTreeSet<(&str, &str)> = known.iter().copied().collect();
    let found: BTreeSet<(&str, &str)> = up
        .iter()
        .map(|u| (u.file.as_str(), u.folder.as_str()))
        .collect();
    let new = up
        .iter()
        .filter(|u| !known.contains(&(u.file.as_str(), u.folder.as_str())))
        .map(|u| format!("src/{}:{} imports src/{}/", u.file, u.line, u.folder))
        .collect();
    let gone = known
        .difference(&found)
        .map(|(f, d)| format!("src/{f} -> {d}"))
        .collect();
    (new, gone)
}

fn rs_files(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn tree() -> Vec<(String, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rs_files(&src, &src, &mut files);
    files
}

fn doc() -> String {
    std::fs::read_to_string(root().join(DOC)).expect("docs/architecture.md")
}

fn known_pairs() -> Vec<(&'static str, &'static str)> {
    KNOWN.iter().map(|&(f, d, _)| (f, d)).collect()
}

#[test]
fn every_folder_of_src_sits_on_exactly_one_floor() {
    let floors = parse_floors(&doc());
    let mut on_floors: Vec<&str> = floors.iter().flatten().map(String::as_str).collect();
    on_floors.sort();
    let before = on_floors.len();
    on_floors.dedup();
    assert_eq!(before, on_floors.len(), "a folder on two floors of {DOC}");
    let mut folders: Vec<String> = std::fs::read_dir(root().join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(
        on_floors, folders,
        "the floors of {DOC} (left) and the folders of src/ (right) differ: place a new folder \
         on a floor, remove a gone one"
    );
}

#[test]
fn no_folder_imports_a_folder_above_it_beyond_the_known_list() {
    let floors = parse_floors(&doc());
    let (up, unknown) = upward(&tree(), &floors);
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    let (new, gone) = ratchet(&up, &known_pairs());
    assert!(
        new.is_empty(),
        "imports of a folder on the same floor or above ({DOC}, \"The floors\"); import downward, \
         or move what is shared below both:\n{}",
        new.join("\n")
    );
    assert!(
        gone.is_empty(),
        "known violations that no longer exist: remove them from KNOWN in tests/suite/house/layers.rs and \
         from {DOC}, so that they cannot come back:\n{}",
        gone.join("\n")
    );
}

#[test]
fn the_page_lists_the_same_known_violations() {
    let d = doc();
    let listed: BTreeSet<(String, String)> = marked_block(&d, KNOWN_MARK)
        .lines()
        .filter_map(|l| {
            let (f, rest) = l.split_once("->")?;
            let folder = rest.split_whitespace().next()?;
            Some((
                f.trim().trim_start_matches("src/").to_string(),
                folder.to_string(),
            ))
        })
        .collect();
    let here: BTreeSet<(String, String)> = known_pairs()
        .iter()
        .map(|&(f, d)| (f.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        listed, here,
        "{DOC}'s known violations (left) against KNOWN (right)"
    );
}

#[test]
fn imports_are_found_in_paths_and_groups_not_in_comments_or_strings() {
    let src = r##"
use crate::ring::share::Seed;
use crate::{corr::slot::Slot, formats::{atomic, bodies}};
// use crate::cli::nothing;
/* crate::server:: /* nested */ crate::server */
/// [`crate::dealer::generate`]
const S: &str = "crate::net::x";
const R: &str = r#"crate::twopc::y"#;
const C: char = '"'; fn f<'a>(x: &'a u8) -> u8 { let _ = crate::image::phantom::builtin; *x }
pub(crate) fn g() {}
macro_rules! m { () => { $crate::circuit::x } }
"##;
    let got: Vec<String> = imports(src, 2).into_keys().collect();
    assert_eq!(got, ["corr", "formats", "image", "ring"]);
    assert_eq!(imports(src, 2)["image"], 9);
}

#[test]
fn super_chains_count_when_they_climb_to_the_crate_root() {
    // src/ring/x.rs: super is ring, super::super the root.
    let chain = "use super::super::model::mlp;\nuse super::share;";
    assert_eq!(imports(chain, 2).into_keys().collect::<Vec<_>>(), ["model"]);
    // Inside an inline test module one more super stays in the folder.
    let inline = "mod tests {\n    use super::super::share;\n}";
    assert!(imports(inline, 2).is_empty());
    // src/ring/mod.rs: one super is the root.
    assert_eq!(
        imports("use super::{net::link, cli};", 1)
            .into_keys()
            .collect::<Vec<_>>(),
        ["cli", "net"]
    );
}

#[test]
fn the_ratchet_refuses_a_new_upward_import_and_a_stale_entry() {
    let floors: Vec<Vec<String>> = [&["low"][..], &["left", "right"], &["top"]]
        .iter()
        .map(|f| f.iter().map(|s| s.to_string()).collect())
        .collect();
    let files = |srcs: &[(&str, &str)]| -> Vec<(String, String)> {
        srcs.iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect()
    };
    let tree = files(&[
        ("top/mod.rs", "use crate::left::a; use crate::low::b;"),
        ("left/a.rs", "use crate::low::b;"),
        ("low/b.rs", "fn f() { crate::top::run() }"),
        ("right/c.rs", "use crate::left::a;"),
    ]);
    let (up, unknown) = upward(&tree, &floors);
    assert!(unknown.is_empty());
    let pairs: Vec<(&str, &str)> = up
        .iter()
        .map(|u| (u.file.as_str(), u.folder.as_str()))
        .collect();
    // Upward, and sideways between siblings; downward is fine.
    assert_eq!(pairs, [("low/b.rs", "top"), ("right/c.rs", "left")]);
    let (new, gone) = ratchet(&up, &[("low/b.rs", "top")]);
    assert_eq!(new, ["src/right/c.rs:1 imports src/left/"]);
    assert!(gone.is_empty());
    let (new, gone) = ratchet(
        &up,
        &[
            ("low/b.rs", "top"),
            ("right/c.rs", "left"),
            ("left/a.rs", "top"),
        ],
    );
    assert!(new.is_empty());
    assert_eq!(gone, ["src/left/a.rs -> top"]);
    // A folder on no floor, or a name that is no folder, is refused.
    let (_, unknown) = upward(
        &files(&[("attic/x.rs", ""), ("low/y.rs", "use crate::nowhere;")]),
        &floors,
    );
    assert_eq!(unknown.len(), 2, "{unknown:?}");
}

/// Issue 46, item 3: the circles inside a folder are gone too (formats' container, sealed and
/// signing named each other until the header and the errors had a module of their own).
#[test]
fn no_modules_of_a_folder_name_each_other_in_a_circle() {
    let found = circles(&sibling_imports(&tree()));
    assert!(
        found.is_empty(),
        "modules of one folder that import each other in a circle (move what both need to \
         a module below them):\n{}",
        found.join("\n")
    );
}

#[test]
fn circles_are_found_through_super_crate_paths_groups_and_subfolders() {
    let files = |fs: &[(&str, &str)]| -> Vec<(String, String)> {
        fs.iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect()
    };
    let tree = files(&[
        ("f/mod.rs", "pub mod a; pub mod b; pub struct Item;"),
        ("f/a.rs", "use super::b::X; use super::Item;"),
        ("f/b.rs", "use crate::f::{c, a::Y};"),
        ("f/c.rs", "mod tests { use super::super::d; }"),
        ("f/d/mod.rs", "use super::e;"),
        ("f/d/x.rs", "use super::super::a; use super::y;"),
        ("f/d/y.rs", ""),
        ("f/e.rs", "// use super::a;"),
    ]);
    let edges = sibling_imports(&tree);
    let e = |f: &str, a: &str, b: &str| (f.to_string(), a.to_string(), b.to_string());
    let want: BTreeSet<_> = [
        e("f", "a", "b"),
        e("f", "b", "a"),
        e("f", "b", "c"),
        e("f", "c", "d"),
        e("f", "d", "a"),
        e("f", "d", "e"),
        e("f/d", "x", "y"),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, want);
    assert_eq!(circles(&edges), ["src/f/: a, b, c, d"]);
    // Without b's import of a, the circle through d remains.
    let mut fewer = edges.clone();
    fewer.remove(&e("f", "b", "a"));
    assert_eq!(circles(&fewer), ["src/f/: a, b, c, d"]);
    fewer.remove(&e("f", "d", "a"));
    assert!(circles(&fewer).is_empty());
}

/// cli modules allowed to call another cli module's command (none since the demo's pipeline
/// moved to cli/pipeline.rs, which `demo` and `table` both call):
/// (file under src/cli/, `module::command`, why). Only ever remove entries.
const KNOWN_COMMAND_CALLS: &[(&str, &str, &str)] = &[];

/// The commands of src/cli/: each module's `pub fn`s that take a clap argument struct (a
/// parameter type named `...Args`), as `module::name`, for the modules directly in src/cli/.
fn commands(files: &[(String, String)]) -> Vec<(String, String)> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (path, src) in files {
        let Some(rest) = path.strip_prefix("cli/") else {
            continue;
        };
        let module = match rest.strip_suffix("/mod.rs") {
            Some(m) => m,
            None => match rest.strip_suffix(".rs") {
                Some(m) if !m.contains('/') && m != "mod" => m,
                _ => continue,
            },
        };
        let s = strip(src);
        let mut at = 0;
        while let Some(k) = s[at..].find("pub fn ") {
            let start = at + k + "pub fn ".len();
            let name: String = s[start..].chars().take_while(|&c| ident(c)).collect();
            at = start;
            let Some(open) = s[start..].find('(') else {
                break;
            };
            let params = &s[start + open..];
            let params = &params[..params.find(')').unwrap_or(params.len())];
            let takes_args = params
                .split(|c: char| !ident(c))
                .any(|w| w.ends_with("Args") && w.len() > 4);
            if takes_args {
                out.push((module.to_string(), name));
            }
        }
    }
    out
}

/// Every `(file, module::command)` where a file of src/cli/ names another cli module's
/// command, by path (`super::demo::demo`, `crate::cli::demo::demo`) or in a `use` group.
fn command_calls(files: &[(String, String)]) -> Vec<(String, String)> {
    let cmds = commands(files);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (path, src) in files {
        let Some(rest) = path.strip_prefix("cli/") else {
            continue;
        };
        // src/cli/mod.rs dispatches to every command: that is its job.
        if rest == "mod.rs" {
            continue;
        }
        let own = rest.split(['/', '.']).next().unwrap_or("");
        let s = strip(src);
        for (module, name) in &cmds {
            if module == own {
                continue;
            }
            let head = format!("{module}::");
            let mut at = 0;
            let mut hit = false;
            while let Some(k) = s[at..].find(&head) {
                let i = at + k;
                at = i + head.len();
                if s[..i].chars().next_back().is_some_and(ident) {
                    continue;
                }
                let after = &s[at..];
                let named = if after.starts_with('{') {
                    group_heads(after).contains(name)
                } else {
                    after.starts_with(name.as_str())
                        && !after[name.len()..].starts_with(|c: char| ident(c))
                };
                hit |= named;
            }
            if hit {
                found.push((rest.to_string(), format!("{module}::{name}")));
            }
        }
    }
    found
}

/// Issue 46, item 2: the commands in src/cli/ call the study and job layers, never another
/// cli module's command (a study's steps once called the party commands, and they called
/// the study back).
#[test]
fn no_cli_module_calls_another_cli_modules_command() {
    let tree = tree();
    let cmds = commands(&tree);
    // The finder sees the commands it is to watch.
    for c in [
        "dealer::gen_triplets",
        "server::serve",
        "receiver::reconstruct",
        "demo::demo",
    ] {
        assert!(
            cmds.iter().any(|(m, n)| format!("{m}::{n}") == c),
            "{c} not found among the commands: {cmds:?}"
        );
    }
    let calls = command_calls(&tree);
    let known: Vec<(String, String)> = KNOWN_COMMAND_CALLS
        .iter()
        .map(|&(f, c, _)| (f.to_string(), c.to_string()))
        .collect();
    let new: Vec<String> = calls
        .iter()
        .filter(|c| !known.contains(c))
        .map(|(f, c)| format!("src/cli/{f} calls {c}"))
        .collect();
    assert!(
        new.is_empty(),
        "a cli module calls another cli module's command: move the step it needs into \
         src/job/ or src/study/ and call it there from both:\n{}",
        new.join("\n")
    );
    let gone: Vec<String> = known
        .iter()
        .filter(|k| !calls.contains(k))
        .map(|(f, c)| format!("src/cli/{f} -> {c}"))
        .collect();
    assert!(
        gone.is_empty(),
        "command calls that no longer exist: remove them from KNOWN_COMMAND_CALLS:\n{}",
        gone.join("\n")
    );
}

#[test]
fn a_command_called_from_another_cli_module_is_found() {
    let files: Vec<(String, String)> = [
        (
            "cli/dealer.rs",
            "pub fn gen_triplets(a: GenTripletsArgs) -> R { todo!() }\npub fn dealer_record(p: &Path) {}",
        ),
        (
            "cli/study.rs",
            "use super::dealer::{gen_triplets, GenTripletsArgs};\nfn f() { super::dealer::dealer_record(p) }",
        ),
        ("cli/demo.rs", "fn g() { crate::cli::dealer::gen_triplets(a) }"),
        ("cli/owner.rs", "// super::dealer::gen_triplets(a)\nfn h() { xdealer::gen_triplets(a) }"),
        ("cli/table/mod.rs", "use super::super::dealer::gen_triplets;"),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    assert_eq!(
        commands(&files),
        [("dealer".to_string(), "gen_triplets".to_string())]
    );
    let calls: Vec<String> = command_calls(&files)
        .into_iter()
        .map(|(f, c)| format!("{f} {c}"))
        .collect();
    assert_eq!(
        calls,
        [
            "study.rs dealer::gen_triplets",
            "demo.rs dealer::gen_triplets",
            "table/mod.rs dealer::gen_triplets"
        ]
    );
}
