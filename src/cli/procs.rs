//! Running pipeline steps as separate `ppdenoise` processes (demo, bench, table): every
//! party is its own process, as in a real deployment.

use crate::ring::Party;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::formats::signing::Role;

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

/// Server `p`'s signing role.
pub fn server_role(p: Party) -> Role {
    if p.is_s0() {
        Role::S0
    } else {
        Role::S1
    }
}

/// The signing keys in `keys`: `keygen --signing` for the dealer, the model owner, the
/// gateway and both servers (<role>.sign-key, .sign-pub), and the trust file `<keys>/trust`
/// naming the public keys ([`run_pair`] gives it to both servers, the receiver reads it).
pub fn signing_keys(keys: &Path) -> Result<()> {
    let mut trust = String::from("# who signs the files these servers accept\n");
    for role in Role::ALL {
        let v = step(&[
            "keygen".into(),
            "--signing".into(),
            "--force".into(),
            "--name".into(),
            role.name().into(),
            "--out-dir".into(),
            s(keys),
        ])?;
        let key = v["public_key"]
            .as_str()
            .context("keygen --signing printed no public key")?;
        trust.push_str(&format!("{} {key}\n", role.name()));
    }
    crate::fileio::atomic::write_bytes(&keys.join("trust"), trust.as_bytes())
}

/// The receiver's checks of a job's output shares: the servers' keys from `<keys>/trust`
/// ([`signing_keys`] names s0 and s1 there) and the job's public header `job` (image.pub).
pub fn receiver_checks(keys: &Path, gateway: &Value) -> Result<[String; 4]> {
    let id = gateway["job_id"]
        .as_str()
        .context("share-image's summary names no job_id")?;
    Ok([
        "--trust".into(),
        s(&keys.join("trust")),
        "--job-id".into(),
        id.into(),
    ])
}

/// The receiver's pinned keys, for shares combined in this process (`<keys>/trust`).
pub fn receiver_trust(keys: &Path) -> Result<crate::formats::signing::Trust> {
    Ok(crate::formats::signing::Trust::Pinned(
        crate::formats::signing::Trust::parse_file(&keys.join("trust"))?,
    ))
}

/// `--sign-key <keys>/<role>.sign-key`: a step that makes files as `role` signs them.
pub fn signed_as(keys: &Path, role: Role) -> [String; 2] {
    [
        "--sign-key".into(),
        s(&keys.join(format!("{}.sign-key", role.name()))),
    ]
}

/// Runs one two-server step (`serve`, `open-weights`) for both parties at once, each with
/// `args(p)` and its link arguments: keys `<keys>/sN.{key,crt}`, state dir `<dir>/state`.
/// Returns the wall seconds of the pair and each server's JSON summary. `addrs`: S0's listen
/// address and the address S1 connects to (a relay in between), else one free port for both.
pub(super) fn run_pair(
    dir: &Path,
    keys: &Path,
    args: impl Fn(Party) -> Vec<String>,
    addrs: Option<(SocketAddr, SocketAddr)>,
) -> Result<(f64, Vec<Value>)> {
    let addrs = match addrs {
        Some(a) => a,
        None => {
            let a = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            (a, a)
        }
    };
    let t = Instant::now();
    let children: Vec<_> = Party::BOTH
        .into_iter()
        .map(|p| {
            let (me, peer) = (format!("s{p}"), format!("s{}", p.peer()));
            Command::new(exe()?)
                .arg("--json")
                .args(args(p))
                .args(["--party", &p.to_string()])
                .args(["--key", &s(&keys.join(format!("{me}.key")))])
                .args(["--cert", &s(&keys.join(format!("{me}.crt")))])
                .args(["--peer-cert", &s(&keys.join(format!("{peer}.crt")))])
                .args(["--addr", &[addrs.0, addrs.1][p.index()].to_string()])
                .args(["--state-dir", &s(&dir.join("state"))])
                // Its file-encryption identity (keygen makes one), for sealed inputs.
                .args(["--identity", &s(&keys.join(format!("{me}.age-identity")))])
                // The makers' keys ([`signing_keys`]): only files they signed are accepted.
                .args(["--trust", &s(&keys.join("trust"))])
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

/// Runs `serve` for both parties at once, with the files laid out as
/// `<dir>/{model,image,triplets,out}.pN` (and `<dir>/weights.pN` when `opened`: the model's
/// weights were opened once, [`model_setup`]). `s0_progress`: S0 shows its progress on the
/// shared stderr (`serve --progress`); S1 never does, so that one display is on the screen.
pub fn run_servers(
    dir: &Path,
    keys: &Path,
    extra: &[&str],
    addrs: Option<(SocketAddr, SocketAddr)>,
    opened: bool,
    s0_progress: bool,
) -> Result<(f64, Vec<Value>)> {
    let f = |name: String| s(&dir.join(name));
    let args = |p: Party| {
        let mut v: Vec<String> = vec!["serve".into()];
        v.extend(extra.iter().map(|x| x.to_string()));
        for (flag, file) in [
            ("--model", "model"),
            ("--image", "image"),
            ("--triplets", "triplets"),
            ("--out", "out"),
        ] {
            v.extend([flag.into(), f(format!("{file}.p{p}"))]);
        }
        if opened {
            v.extend(["--weights".into(), f(format!("weights.p{p}"))]);
        }
        if s0_progress && p.is_s0() {
            v.push("--progress".into());
        }
        // Each server signs its output share; the receiver pins both keys.
        v.extend(signed_as(keys, server_role(p)));
        v
    };
    run_pair(dir, keys, args, addrs)
}

/// The one-time setup of a model whose shares are `<dir>/model.pN`: the dealer's
/// `gen-model-mask` (writing `<dir>/mask.{p0,p1,dealer}`), then `open-weights` on both
/// servers (writing `<dir>/weights.pN`; `addrs` as for [`run_servers`]; `seal`: the mask files'
/// `--to-s0`/`--to-s1` flags, or none). Returns its figures; jobs then use
/// `gen-triplets --model-mask <dir>/mask.dealer` and [`run_servers`] with `opened`.
pub fn model_setup(
    dir: &Path,
    keys: &Path,
    addrs: Option<(SocketAddr, SocketAddr)>,
    seal: &[String],
) -> Result<Value> {
    let f = |name: String| s(&dir.join(name));
    let mut mask = vec![
        "gen-model-mask".into(),
        "--model".into(),
        f("model.pub".into()),
        "--out".into(),
        f("mask".into()),
        // A rerun in the same folder shares the model afresh: the old mask is stale.
        "--force".into(),
    ];
    mask.extend(seal.iter().cloned());
    mask.extend(signed_as(keys, Role::Dealer));
    let (t_mask, _) = timed(&mask)?;
    let args = |p: Party| {
        vec![
            "open-weights".into(),
            "--model".into(),
            f(format!("model.p{p}")),
            "--mask".into(),
            f(format!("mask.p{p}")),
            "--out".into(),
            f(format!("weights.p{p}")),
        ]
    };
    let (t_open, reports) = run_pair(dir, keys, args, addrs)?;
    let bytes = reports[0]["bytes_sent"].as_u64().unwrap_or(0)
        + reports[0]["bytes_received"].as_u64().unwrap_or(0);
    Ok(serde_json::json!({
        "seconds": {"gen_model_mask": t_mask, "open_weights": t_open},
        "bytes": {"s0_s1": bytes},
        "peak_rss_bytes": {"s0": reports[0]["peak_rss_bytes"], "s1": reports[1]["peak_rss_bytes"]},
    }))
}
