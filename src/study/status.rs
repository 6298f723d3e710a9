//! `study-status`: which slices both servers have finished by their records, and which not;
//! or one server's view, what its `serve --study` would run.

use crate::ring::Party;
use std::path::PathBuf;

use anyhow::Result;

use super::records::{finished_here, in_progress, signed_done, Here};
use super::ServerDirs;
use crate::formats::container::Opened;
use crate::formats::signing::Trust;
use crate::formats::study::{parse_slices, slices_spec, Manifest};
use crate::job::Summary;

/// `study-status`'s arguments parsed.
pub struct StudyStatus {
    /// The study folder.
    pub study: PathBuf,
    /// Where each server's records are, when not in it.
    pub dirs: ServerDirs,
    /// One server's view, in its own copy of the folder.
    pub party: Option<Party>,
    /// With `party`: these slices only.
    pub slices: Option<String>,
}

/// `study-status`. Whose records count (`records`, for the parties read) is loaded before any
/// record is read; one server's identity (`identity`) before its triplet headers are.
pub fn study_status(
    a: &StudyStatus,
    records: &dyn Fn(&[Party]) -> Result<Trust>,
    identity: &dyn Fn() -> Result<()>,
) -> Result<Summary> {
    let m = Manifest::read(&a.study)?;
    // Whose records count, before any is read.
    let trust = records(
        a.party
            .as_ref()
            .map_or(&Party::BOTH[..], std::slice::from_ref),
    )?;
    if let Some(p) = a.party {
        identity()?;
        let slices = match &a.slices {
            Some(s) => parse_slices(s, m.len())?,
            None => (0..m.len()).collect(),
        };
        let (mut left, mut refused) = (Vec::new(), Vec::new());
        for &i in &slices {
            // A record not taken (as serve --study would not take it) leaves the slice to do.
            // Its triplets' header only, whoever made them (the servers check that).
            let open = |t: &std::path::Path| Ok(Opened::open(t)?);
            match finished_here(&a.study, i, p, &m.slices[i], &trust, &open) {
                Ok(Here::Finished) => {}
                Ok(Here::ToRun(_)) => left.push(i),
                Err(e) => {
                    refused.push(format!("  slice {i}: record not taken: {e:#}"));
                    left.push(i);
                }
            }
        }
        let spec = slices_spec(&left);
        let mut lines = vec![format!(
            "study {}: S{p} has {} of {} slice(s) left{}",
            m.study_id,
            left.len(),
            slices.len(),
            if left.is_empty() {
                String::new()
            } else {
                format!(": {spec}")
            }
        )];
        lines.extend(refused);
        return Ok(Summary {
            lines,
            json: serde_json::json!({"ok": true, "command": "study-status", "study_id": m.study_id,
                "party": p, "complete": left.is_empty(), "left": left, "left_spec": spec}),
        });
    }
    let dirs = a.dirs.of(&a.study)?;
    let mut states = Vec::with_capacity(m.len());
    let mut left = Vec::new();
    for i in 0..m.len() {
        let done = Party::BOTH.map(|p| signed_done(&dirs[p.index()], i, p, &m.slices[i], &trust));
        let state = match &done {
            [Ok(Some(x)), Ok(Some(y))] if x.triplet_id == y.triplet_id => "finished".into(),
            [Ok(Some(_)), Ok(Some(_))] => "finished in different runs (to redo)".into(),
            [Ok(Some(_)), Ok(None)] => "finished by S0 only".into(),
            [Ok(None), Ok(Some(_))] => "finished by S1 only".into(),
            [Ok(None), Ok(None)] => "not finished".into(),
            [Err(e), _] | [_, Err(e)] => format!("record not taken: {e:#}"),
        };
        if state != "finished" {
            left.push(i);
        }
        states.push(state);
    }
    // A slice a server is serving now is not finished, but not to be dealt again either:
    // fresh triplets would make its running pair's work count for nothing.
    let serving = in_progress(&dirs, &left);
    for (i, who) in &serving {
        states[*i] = format!("being served now ({who})");
    }
    let busy: Vec<usize> = serving.iter().map(|s| s.0).collect();
    let to_deal: Vec<usize> = left.iter().copied().filter(|i| !busy.contains(i)).collect();
    let (spec, busy_spec, deal_spec) = (
        slices_spec(&left),
        slices_spec(&busy),
        slices_spec(&to_deal),
    );
    let mut lines = vec![format!(
        "study {}: {} slices, {} finished, {} left{}",
        m.study_id,
        m.len(),
        m.len() - left.len(),
        left.len(),
        if busy.is_empty() {
            String::new()
        } else {
            format!(" ({} being served now)", busy.len())
        }
    )];
    for &i in &left {
        lines.push(format!("  slice {i}: {}", states[i]));
    }
    if !busy.is_empty() {
        lines.push(format!(
            "being served now: {busy_spec}; not to be dealt again while they run (study-status \
             again once their servers end)"
        ));
    }
    if !to_deal.is_empty() {
        lines.push(format!(
            "to finish: gen-triplets --study {0} --slices {deal_spec}, then serve --study {0} --slices {deal_spec} on both servers (or sbatch --array={deal_spec})",
            a.study.display()
        ));
    }
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "study-status", "study_id": m.study_id,
            "slices": m.len(), "complete": left.is_empty(), "left": left, "left_spec": spec,
            "in_progress": busy, "in_progress_spec": busy_spec, "to_deal": to_deal,
            "to_deal_spec": deal_spec, "states": states}),
    })
}
