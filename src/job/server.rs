//! One server's job-level step: its files checked into a ready job (src/server/), the
//! output guarded, the link brought up, the protocol run, the output share written and the
//! spent triplet file cut (`serve`, and a study's slices).

use crate::ring::Party;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::progress::{Mode, Progress};
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::formats::sealed::Recipient;
use crate::formats::signing::{Signer, Trust};
use crate::server::session::{self, LinkConfig};
use crate::server::state::check_output;
use crate::server::{self, JobFiles};
use crate::twopc::channel::with_queued_link;

/// One server's part of a job, its arguments parsed: what `serve` and every slice of a
/// study share.
pub struct ServeJob {
    /// 0 (listens; evaluates garbled circuits) or 1 (connects; garbles).
    pub party: Party,
    /// This party's model share.
    pub model: PathBuf,
    /// This party's opened weights, when the triplets were made against a model mask.
    pub weights: Option<PathBuf>,
    /// The engine asked for (default: the triplet file's).
    pub engine: Option<EngineKind>,
    /// Where consumed correlated randomness is recorded.
    pub state_dir: PathBuf,
    /// The files the output may not replace besides the inputs: the link's key and
    /// certificates, the identity and the signing key.
    pub keys: Vec<PathBuf>,
    /// Write the output share unencrypted although the inputs are sealed.
    pub plain_out: bool,
    /// Keep a triplet file whole once its randomness is consumed.
    pub keep_triplets: bool,
}

/// What a server loads once, before any file is read, for one job or a study's slices: whose
/// files it accepts, its identity (registered for this process's reads), the receiver it
/// seals to, the key it signs with and how it reaches its peer.
pub struct ServeKeys {
    pub trust: Trust,
    /// The receiver the output share is sealed to.
    pub out_to: Option<Recipient>,
    pub signer: Option<Signer>,
    /// A study's S0 puts the socket it listens on for every slice here.
    pub link: LinkConfig,
}

/// One job's files (the rest of a `serve` comes from its arguments).
pub struct JobPaths {
    pub image: PathBuf,
    pub triplets: PathBuf,
    pub out: PathBuf,
}

/// Runs one job: the summary, and the run's job and triplet ids.
pub fn serve_job(
    a: &ServeJob,
    k: &ServeKeys,
    paths: &JobPaths,
    mode: Mode,
) -> Result<(Summary, server::RunIds)> {
    let label = format!("serve S{}", a.party);
    let mut model = None;
    let held = server::Held {
        check_image: &|_| Ok(()),
        model: &mut model,
        triplets: None,
    };
    serve_job_as(a, k, paths, mode, &label, held)
}

/// [`serve_job`], its progress shown under `label` (a study's says which slice), with what
/// the caller holds across jobs ([`server::Held`]).
pub fn serve_job_as(
    a: &ServeJob,
    k: &ServeKeys,
    paths: &JobPaths,
    mode: Mode,
    label: &str,
    held: server::Held,
) -> Result<(Summary, server::RunIds)> {
    let p = a.party;
    let files = JobFiles {
        party: p,
        model: a.model.clone(),
        image: paths.image.clone(),
        triplets: paths.triplets.clone(),
        weights: a.weights.clone(),
        engine: a.engine,
        state_dir: a.state_dir.clone(),
        trust: k.trust.clone(),
    };
    // Checked before anything is claimed (ServeKeys::load): bad keys or a bad --out burn no
    // randomness.
    let out_to = k.out_to.as_ref();
    let inputs: Vec<&std::path::Path> = [&a.model, &paths.image, &paths.triplets]
        .into_iter()
        .chain(a.weights.as_ref())
        .map(|p| p.as_path())
        .collect();
    // Nor may it replace a key file.
    let guarded: Vec<&std::path::Path> = inputs
        .iter()
        .copied()
        .chain(a.keys.iter().map(|p| p.as_path()))
        .collect();
    check_output(&paths.out, &guarded)?;
    // `prepare` opens each input once; under --insecure-unsigned it refuses sealed ones.
    let job = server::prepare_held(files, held)?;
    if out_to.is_none() && !a.plain_out {
        if let Some(i) = job.sealed_input() {
            bail!(
                "{}: the inputs are sealed ({} is) but the output share would be written unencrypted: give --out-to with the receiver's <name>.age-recipient, or --plain-out",
                paths.out.display(),
                i.display()
            );
        }
    }
    let triplets_sealed = job.triplets_sealed();
    let mut link = session::connect(&job, &k.link)?;
    // Consumed from here: whatever happens next, the file's values are spent.
    let ran = run_consumed(a, k, paths, job, &mut link, mode, label, out_to);
    if !a.keep_triplets {
        if let Err(e) = crate::server::state::spend_opened(&paths.triplets, triplets_sealed) {
            eprintln!("warning: {e:#} (its randomness is consumed all the same)");
        }
    }
    ran
}

/// The protocol and the output share of a job whose randomness is consumed.
#[allow(clippy::too_many_arguments)]
fn run_consumed(
    a: &ServeJob,
    k: &ServeKeys,
    paths: &JobPaths,
    job: server::ReadyJob,
    link: &mut crate::net::Link,
    mode: Mode,
    label: &str,
    out_to: Option<&Recipient>,
) -> Result<(Summary, server::RunIds)> {
    let p = a.party;
    let (len, unit) = job.steps();
    let bar = Progress::new(mode, label, len as u64, unit);
    let mut done = with_queued_link(link, |ch| job.run(ch, &mut |d| bar.set(d as u64)))??;
    // The bytes as the link framed them (the queued channel saw the same messages).
    let ls = link.stats();
    done.report.link.bytes_sent = ls.bytes_sent;
    done.report.link.bytes_received = ls.bytes_received;
    bar.finish();
    let out_bytes = done.write(&paths.out, out_to, k.signer.as_ref())?;
    let r = &done.report;
    let summary = Summary {
        lines: vec![format!(
            "S{p} ({} engine): {} {} in {:.1} s; sent {} bytes, received {} bytes in {} messages; {} AND gates; wrote {}",
            done.engine_kind,
            r.patches,
            done.unit,
            r.seconds_total,
            r.link.bytes_sent,
            r.link.bytes_received,
            r.link.messages_sent,
            r.engine.and_gates,
            paths.out.display()
        )],
        json: serde_json::json!({"ok": true, "command": "serve", "party": p, "engine": done.engine_kind.name(), "report": r,
            "output": paths.out, "download_bytes": out_bytes}),
    };
    Ok((summary, done.ids()))
}
