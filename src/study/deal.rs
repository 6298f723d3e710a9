//! `gen-triplets --study`: the slices not finished on both servers (or the ones named), each
//! dealt as its own job with fresh randomness.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::records::unfinished_for_dealer;
use super::ServerDirs;
use crate::formats::container::{self, id_hex, Kind};
use crate::formats::facts::job_from_header;
use crate::formats::signing::Trust;
use crate::formats::study::{parse_slices, slice_dir, slices_spec, Manifest, MANIFEST};
use crate::job::dealer::{deal, DealJob, DealModel, GraphDeal};
use crate::job::offline;
use crate::job::progress;
use crate::job::space::human_bytes;
use crate::job::{Outputs, Summary};
use crate::ring::Party;
use crate::server::session::LinkConfig;

/// A study's dealing, its arguments parsed.
pub struct StudyDeal<'a> {
    /// The study folder (its public parts: study.json and slice<I>/image.pub).
    pub dir: &'a Path,
    /// Every slice's job as the dealer makes it; its image and output prefix are the
    /// slice's own.
    pub job: DealJob,
    /// These slices only (e.g. `0-9,12`); default: every slice not finished.
    pub slices: Option<&'a str>,
    /// Where the servers' completion records are.
    pub dirs: ServerDirs,
    /// No line per slice dealt.
    pub quiet: bool,
    /// Dealt by this server with its peer, no dealer (`gen-triplets --party`): the party
    /// and how it reaches the peer.
    pub together: Option<(Party, LinkConfig)>,
}

/// `gen-triplets --study`: each slice's randomness, as `gen-triplets` makes a job's. Whose
/// completion records count (`records`) is loaded only when the slices are not named; the
/// seal and signing key (`outputs`) once for every slice, as for a job.
pub fn deal_study(
    a: &StudyDeal,
    records: &dyn Fn() -> Result<Trust>,
    outputs: &dyn Fn() -> Result<Outputs>,
) -> Result<Summary> {
    let t = Instant::now();
    let dir = a.dir;
    if a.job.tile.is_some() {
        bail!("--tile: a study's slices run in one piece each");
    }
    let m = Manifest::read(dir)?;
    let (slices, warnings) = match a.slices {
        Some(s) => (parse_slices(s, m.len())?, Vec::new()),
        // Finished by records the pinned servers' keys signed, when given.
        None => unfinished_for_dealer(&m, &a.dirs.of(dir)?, &records()?),
    };
    // Said whatever --quiet: a record not taken is someone else's doing, or a server's
    // fault.
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    // The model's header (and the dealer's mask record) read once for every slice, and each
    // slice's public header once, checked before any randomness is drawn and dealt from.
    let model = DealModel::read(&a.job)?;
    let mh = &model.header;
    let mut headers = Vec::with_capacity(slices.len());
    for &i in &slices {
        let p = slice_dir(dir, i).join("image.pub");
        let h = container::verify(&p)?;
        container::expect(&p, &h, Kind::PublicJob, None)?;
        let job = job_from_header(&p, &h)?;
        if job.scale != mh.scale {
            bail!(
                "{}: image encoded at scale {} but the model {} uses scale {}",
                p.display(),
                job.scale,
                a.job.model.display(),
                mh.scale
            );
        }
        let id = h.job_id.as_ref().map(id_hex).unwrap_or_default();
        if id != m.slices[i] {
            bail!(
                "{}: job {id}, but {} names job {} for slice {i}",
                p.display(),
                dir.join(MANIFEST).display(),
                m.slices[i]
            );
        }
        headers.push(h);
    }
    let slice_job = |i: usize| {
        let mut one = a.job.clone();
        one.image = slice_dir(dir, i).join("image.pub");
        one.out = slice_dir(dir, i).join("triplets");
        one
    };
    // Without a dealer: every slice checked before the peer is met, then one link for all
    // of them, the two servers first agreeing on which.
    let mut together = match &a.together {
        Some((p, cfg)) => {
            offline::check_supported(&a.job, mh)?;
            let deals = slices
                .iter()
                .zip(&headers)
                .map(|(&i, ih)| {
                    GraphDeal::check(&slice_job(i), (mh, ih)).with_context(|| format!("slice {i}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let need = deals
                .iter()
                .map(|d| offline::own_bytes(*p, &d.tiles[0]))
                .sum();
            let what = format!("this server's triplets of {} slices", deals.len());
            offline::check_space(&dir.join(MANIFEST), need, &what)?;
            let mut link = offline::meet(*p, cfg)?;
            let list = format!("{} {}", m.study_id, slices_spec(&slices));
            offline::agree_on(&mut link, *p, "slices", &list)?;
            Some((*p, link, deals))
        }
        None => None,
    };
    let mut bytes = 0u64;
    let total = slices.len() as u64;
    for (k, (&i, ih)) in slices.iter().zip(&headers).enumerate() {
        let one = slice_job(i);
        let started = Instant::now();
        let s = match &mut together {
            Some((p, link, deals)) => {
                let d = &deals[k];
                offline::deal_on(link, *p, &one, (mh, ih), (d, &d.tiles[0]))
            }
            None => outputs().and_then(|to| deal(&one, &model, ih, &to)),
        };
        let s = s.with_context(|| format!("slice {i}"))?;
        let b = s.json["dealer_bytes"]
            .as_u64()
            .or(s.json["bytes"].as_u64())
            .unwrap_or(0);
        bytes += b;
        // Each slice's line as it is dealt (a study of 200 slices takes half an hour).
        if !a.quiet {
            let (at, elapsed) = (k as u64 + 1, t.elapsed());
            eprintln!(
                "slice {at}/{total} (slice{i}): dealt {} in {}; {}",
                human_bytes(b),
                progress::human(started.elapsed()),
                progress::line(
                    "study",
                    at,
                    total,
                    "slices",
                    elapsed,
                    progress::eta(elapsed, at, total, 0),
                    at == total
                )
            );
        }
    }
    let spec = slices_spec(&slices);
    let mut lines = if slices.is_empty() {
        vec![format!(
            "study {}: every slice is finished on both servers; nothing dealt",
            m.study_id
        )]
    } else {
        vec![format!(
            "study {}: dealt {} of {} slices ({spec}) into {}/slice<I>/triplets.{}",
            m.study_id,
            slices.len(),
            m.len(),
            dir.display(),
            match &a.together {
                Some((p, _)) => format!("p{} (with the peer server, no dealer)", p.index()),
                None => "p0 and .p1".into(),
            }
        )]
    };
    lines.extend(warnings.iter().map(|w| format!("warning: {w}")));
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "gen-triplets", "study_id": m.study_id,
            "dealt": slices, "dealt_spec": spec, "dealer_bytes": bytes, "warnings": warnings,
            "seconds": t.elapsed().as_secs_f64()}),
    })
}
