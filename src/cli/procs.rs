//! Running pipeline steps as separate `ppdenoise` processes (demo, bench, table): every
//! party is its own process, as in a real deployment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot locate the ppdenoise executable")
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `ppdenoise --json <args>`; returns wall seconds and its JSON summary.
pub fn timed(args: &[String]) -> Result<(f64, Value)> {
    let t = Instant::now();
    let out = Command::new(exe()?)
        .arg("--json")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run ppdenoise {}", args[0]))?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("ppdenoise {}: unreadable output {text:?}", args[0]))?;
    if !out.status.success() {
        bail!("ppdenoise {} failed: {}", args[0], v["error"]);
    }
    Ok((secs, v))
}

/// [`timed`] without the time.
pub fn step(args: &[String]) -> Result<Value> {
    Ok(timed(args)?.1)
}

/// Runs `serve` for both parties at once on a free localhost port, with the files laid out
/// as `<dir>/{model,image,triplets,out}.pN`, `<dir>/state` and `<keys>/sN.{key,crt}`.
/// Returns the wall seconds of the pair and each server's JSON summary. `addrs`: S0's listen
/// address and the address S1 connects to (a relay in between), else one free port for both.
pub fn run_servers(
    dir: &Path,
    keys: &Path,
    extra: &[&str],
    addrs: Option<(SocketAddr, SocketAddr)>,
) -> Result<(f64, Vec<Value>)> {
    let addrs = match addrs {
        Some(a) => a,
        None => {
            let a = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            (a, a)
        }
    };
    let f = |name: String| s(&dir.join(name));
    let t = Instant::now();
    let children: Vec<_> = (0..2u8)
        .map(|p| {
            let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
            Command::new(exe()?)
                .args(["--json", "serve", "--party", &p.to_string()])
                .args(extra)
                .args(["--model", &f(format!("model.p{p}"))])
                .args(["--image", &f(format!("image.p{p}"))])
                .args(["--triplets", &f(format!("triplets.p{p}"))])
                .args(["--key", &s(&keys.join(format!("{me}.key")))])
                .args(["--cert", &s(&keys.join(format!("{me}.crt")))])
                .args(["--peer-cert", &s(&keys.join(format!("{peer}.crt")))])
                .args(["--addr", &[addrs.0, addrs.1][p as usize].to_string()])
                .args(["--state-dir", &f("state".into())])
                .args(["--out", &f(format!("out.p{p}"))])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start a server process")
        })
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    for (p, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output()?;
        let v: Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or_default();
        if !out.status.success() {
            bail!("server S{p} failed: {}", v["error"]);
        }
        reports.push(v);
    }
    Ok((t.elapsed().as_secs_f64(), reports))
}
