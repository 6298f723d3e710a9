//! The container image k8s/ and slurm/ refer to (issue 49, item 7): this machine cannot
//! build images (no image registry is reachable), so the recipe's inputs are checked instead.
//! The Dockerfile's runtime stage is read: every file it copies from the build stage exists
//! here; the paths the Kubernetes manifests run (`command`, `PPD_BIN`) and their user are the
//! ones it makes; every shared library the binary needs belongs to a package it installs (as
//! `dpkg -S` says on this Debian machine, the runtime stage's release), and so do the tools
//! the task script calls; and the same file tree, assembled from this machine's build with
//! those libraries, runs the binary under `chroot` (as root) and the task script.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The runtime stage of the Dockerfile: its COPY pairs (source in the build stage,
/// destination), the packages it installs, its user id and entry point.
struct Runtime {
    copies: Vec<(String, String)>,
    packages: BTreeSet<String>,
    user: String,
    entrypoint: String,
}

/// Reads the Dockerfile's last stage, continuation lines joined.
fn runtime() -> Runtime {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("a Dockerfile");
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    assert!(
        lines[..last_from].iter().any(|l| l.starts_with("FROM ")),
        "a build stage before the runtime stage"
    );
    let mut r = Runtime {
        copies: Vec::new(),
        packages: BTreeSet::new(),
        user: String::new(),
        entrypoint: String::new(),
    };
    for l in &lines[last_from + 1..] {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words[0] {
            "COPY" => {
                assert!(
                    words[1].starts_with("--from="),
                    "{l}: the runtime stage copies from the build stage only"
                );
                r.copies.push((words[2].into(), words[3].into()));
            }
            "RUN" => {
                // The packages: the words after `install` and its options, up to `&&`.
                let mut it = words.iter().skip_while(|w| **w != "install").skip(1);
                for w in it.by_ref() {
                    if *w == "&&" {
                        break;
                    }
                    if !w.starts_with('-') {
                        r.packages.insert(w.to_string());
                    }
                }
            }
            "USER" => r.user = words[1].split(':').next().unwrap().into(),
            "ENTRYPOINT" => r.entrypoint = words[1].trim_matches(|c| "[\"],".contains(c)).into(),
            _ => {}
        }
    }
    r
}

/// Where a build-stage path is on this machine: the binary cargo built for the tests, or
/// the repository's file (the build stage's WORKDIR is /src, the repository copied whole).
fn here(build_path: &str) -> PathBuf {
    if build_path == "/src/target/release/ppdenoise" {
        return PathBuf::from(env!("CARGO_BIN_EXE_ppdenoise"));
    }
    let rel = build_path
        .strip_prefix("/src/")
        .unwrap_or_else(|| panic!("{build_path}: not under the build stage's /src"));
    root().join(rel)
}

/// The shared libraries `binary` loads, resolved (ldd), with the dynamic loader.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let o = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            // "libm.so.6 => /lib/.../libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The Debian package that holds `path` (dpkg -S), the link resolved if need be.
fn package_of(path: &Path) -> String {
    let ask = |p: &Path| {
        Command::new("dpkg")
            .arg("-S")
            .arg(p)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let said = ask(path)
        .or_else(|| ask(&path.canonicalize().ok()?))
        // Merged /usr: dpkg knows the file under /usr/lib or /lib, not both.
        .or_else(|| {
            let s = path.to_str()?;
            s.strip_prefix("/usr")
                .map(PathBuf::from)
                .or_else(|| Some(PathBuf::from(format!("/usr{s}"))))
                .and_then(|p| ask(&p))
        })
        .unwrap_or_else(|| panic!("{}: no package holds it (dpkg -S)", path.display()));
    let pkg = said.split(':').next().unwrap().trim();
    pkg.split(',').next().unwrap().trim().to_string()
}

#[test]
fn the_recipes_inputs_paths_user_and_libraries_are_right() {
    let r = runtime();
    let dests: BTreeSet<&str> = r.copies.iter().map(|(_, d)| d.as_str()).collect();
    for (src, dst) in &r.copies {
        assert!(
            here(src).is_file(),
            "COPY {src} {dst}: {} is missing",
            here(src).display()
        );
    }
    assert!(
        dests.contains(r.entrypoint.as_str()),
        "ENTRYPOINT {}: not copied",
        r.entrypoint
    );
    // What the manifests run, and as whom.
    for party in ["s0", "s1"] {
        let job = std::fs::read_to_string(root().join(format!("k8s/{party}/job.yaml"))).unwrap();
        let lines: Vec<&str> = job.lines().map(str::trim).collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(cmd) = l.strip_prefix("command:") {
                let path = cmd.trim().trim_matches(|c| "[\"]".contains(c));
                assert!(
                    dests.contains(path),
                    "k8s/{party}: command {path} is not in the image"
                );
            }
            if *l == "- name: PPD_BIN" {
                let v = lines[i + 1].strip_prefix("value:").unwrap().trim();
                assert!(
                    dests.contains(v),
                    "k8s/{party}: PPD_BIN {v} is not in the image"
                );
            }
            if let Some(uid) = l.strip_prefix("runAsUser:") {
                assert_eq!(
                    uid.trim(),
                    r.user,
                    "k8s/{party}: runAsUser vs the image's USER"
                );
            }
        }
    }
    // The binary's libraries, and the task script's tools, from the packages installed.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ppdenoise"));
    for lib in libraries(&bin) {
        let pkg = package_of(&lib);
        assert!(
            r.packages.contains(&pkg),
            "{} (of package {pkg}) is needed by ppdenoise; the runtime stage installs {:?}",
            lib.display(),
            r.packages
        );
    }
    let task = std::fs::read_to_string(root().join("slurm/serve.sbatch")).unwrap();
    for (tool, pkg) in [
        ("python3", "python3"),
        ("hostname", "hostname"),
        ("bash", "bash"),
    ] {
        assert!(
            task.contains(tool),
            "serve.sbatch no longer runs {tool}: update this list"
        );
        assert!(
            r.packages.contains(pkg),
            "{tool}: the runtime stage lacks {pkg}"
        );
    }
}

#[test]
fn the_same_file_tree_assembled_here_runs() {
    let r = runtime();
    let tree = tempfile::tempdir().unwrap();
    let put = |from: &Path, to: &str| {
        let dst = tree.path().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from, &dst).unwrap();
        dst
    };
    for (src, dst) in &r.copies {
        let d = put(&here(src), dst);
        // The recipe's chmod 0755.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ppdenoise"));
    for lib in libraries(&bin) {
        put(&lib, lib.to_str().unwrap());
    }
    // The task script, as the pod runs it: with no party it stops, saying what it needs.
    let task = tree.path().join("usr/local/bin/ppdenoise-task");
    let o = Command::new("bash")
        .arg(&task)
        .env_clear()
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PPD_PARTY (0 or 1) is required"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The binary with only the tree's files: under chroot as root (CI), else through the
    // tree's own dynamic loader and libraries.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let o = if is_root {
        Command::new("chroot")
            .arg(tree.path())
            .args([&r.entrypoint, "--version"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap()
    } else {
        eprintln!("not root: the tree's binary runs through its own loader, not under chroot");
        let loader = libraries(&bin)
            .into_iter()
            .find(|l| l.to_string_lossy().contains("ld-linux"))
            .expect("a dynamic loader");
        let libdir = tree.path().join("lib/x86_64-linux-gnu");
        Command::new(
            tree.path()
                .join(loader.to_str().unwrap().trim_start_matches('/')),
        )
        .arg("--library-path")
        .arg(libdir)
        .arg(tree.path().join(r.entrypoint.trim_start_matches('/')))
        .arg("--version")
        .output()
        .unwrap()
    };
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ppdenoise"),
        "the tree's ppdenoise: {} {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
