//! `serve --study`: one server runs a study's slices one after another over one link
//! address, each as the job of [`crate::job::server`], skipping those it finished with the
//! triplets it holds, and records each slice it finishes (signed), so that a study that
//! died resumes where it stopped.

use crate::ring::Party;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::records::{finished_here, Here, Serving};
use crate::formats::container::{id_hex, Header, Opened};
use crate::formats::inputs::{open_signed, Maker};
use crate::formats::signing::Trust;
use crate::formats::study::{parse_slices, slice_file, slices_spec, Done, Manifest, MANIFEST};
use crate::job::freed_memory::release;
use crate::job::progress::{self, Mode};
use crate::job::server::{serve_job_as, JobPaths, ServeJob, ServeKeys};
use crate::job::Summary;
use crate::server::{Held, LoadedModel};

/// A study's serving, its arguments parsed (the job's are a [`ServeJob`]).
pub struct StudyServe<'a> {
    /// This server's copy of the study folder.
    pub dir: &'a Path,
    /// These slices only (e.g. one Slurm array task's); default: every slice.
    pub slices: Option<&'a str>,
    /// Go on past a slice that fails, and list every failure at the end.
    pub keep_going: bool,
}

/// One slice of `serve --study`: checks its image share, removes a stale record, runs it
/// and records it as finished.
fn serve_slice(
    a: &ServeJob,
    keys: &ServeKeys,
    dir: &Path,
    m: &Manifest,
    (i, label): (usize, &str),
    mode: Mode,
    (kept, triplets): (&mut Option<Arc<LoadedModel>>, Option<Opened>),
) -> Result<Summary> {
    let p = a.party;
    let paths = JobPaths {
        image: slice_file(dir, i, "image", p),
        triplets: slice_file(dir, i, "triplets", p),
        out: slice_file(dir, i, "out", p),
    };
    // Checked on the header of the job's own open of the image share (review finding L4),
    // before anything else of the job is.
    let image = paths.image.clone();
    let of_slice = |h: &Header| -> Result<()> {
        if h.job_id.map(|id| id_hex(&id)).as_deref() != Some(m.slices[i].as_str()) {
            bail!(
                "{}: is not slice {i}'s image share ({} names job {})",
                image.display(),
                dir.join(MANIFEST).display(),
                m.slices[i]
            );
        }
        Ok(())
    };
    // Held until the slice is recorded (or failed): `study-status` then tells it apart from
    // a slice whose server stopped, and does not offer to deal it again.
    let _serving = Serving::take(dir, i, p)?;
    // A stale record goes first: a slice being redone is never taken as finished.
    let done_path = slice_file(dir, i, "done", p);
    match std::fs::remove_file(&done_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot remove", done_path.display()))
        }
        _ => {}
    }
    let held = Held {
        check_image: &of_slice,
        model: kept,
        triplets,
    };
    let served = serve_job_as(a, keys, &paths, mode, label, held);
    // Before the slice counts as done: without this one process's resident memory grew
    // slice by slice (src/job/freed_memory.rs).
    release();
    let (summary, (job, run)) = served?;
    let (job, run) = match (job, run) {
        (Some(j), Some(r)) => (id_hex(&j), id_hex(&r)),
        _ => bail!("slice {i}: the run has no job or triplet id"),
    };
    Done::of_output(p, job, run, &paths.out, keys.signer.as_ref())?.write(&done_path)?;
    Ok(summary)
}

/// `serve --study`: the slices one after another over the same link address, skipping those
/// this party finished with the triplets it holds now.
/// Whose files to accept and the other keys (`keys`) are loaded once, after the slice list
/// is read.
pub fn serve_study(
    study: &StudyServe,
    a: &ServeJob,
    keys: &dyn Fn() -> Result<ServeKeys>,
    mode: Mode,
) -> Result<Summary> {
    let t = Instant::now();
    let dir = study.dir;
    let p = a.party;
    let m = Manifest::read(dir)?;
    let slices = match study.slices {
        Some(s) => parse_slices(s, m.len())?,
        None => (0..m.len()).collect(),
    };
    // Once for every slice: whose files to accept, the identity sealed triplet headers are
    // read with, the receiver and this server's signing key.
    let mut keys = keys()?;
    if p.is_s0() {
        // Bound once, not per slice: S1 finds S0 at the same port throughout (with --addr
        // port 0 and --port-file, the one the system picked), and no other program can take
        // the port between two slices. The study tests start S0 so: bound per slice, their
        // S1 finds nobody from the second slice on.
        keys.link.listener = Some(std::sync::Arc::new(crate::server::session::listen(
            &keys.link,
        )?));
    }
    // Only this server's own records say a slice is finished here.
    let own = match &keys.signer {
        Some(s) => Trust::Pinned(vec![(s.role(), s.public())]),
        None => Trust::InsecureUnsigned,
    };
    warn_if_both_shares(dir, p, &m);
    let (mut ran, mut skipped, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed: Vec<(usize, String)> = Vec::new();
    // The model share (and opened weights), read by the first slice run and kept for the
    // others: one open for the study, and its plan shared by every slice's job.
    let mut kept = None;
    // A slice's triplets are opened with the job's trust when its record must be compared
    // with them, and the job goes on from that open.
    let open = |t: &Path| open_signed(t, &keys.trust, Maker::Party);
    let total = slices.len() as u64;
    for (k, &i) in slices.iter().enumerate() {
        // A record this server cannot take as its own (planted, rewritten, unreadable) does
        // not stop the study, nor skip the slice: the slice is run again, and its record
        // replaced. Decided slice by slice, just before it runs, so that no slice's triplet
        // file is held open while others run.
        let triplets = match finished_here(dir, i, p, &m.slices[i], &own, &open) {
            Ok(Here::Finished) => {
                skipped.push(i);
                continue;
            }
            Ok(Here::ToRun(t)) => t.map(|t| *t),
            Err(e) => {
                let l = format!("slice {i}: {e:#}: not taken as finished; running it again");
                if !mode.is_off() {
                    eprintln!("warning: {l}");
                }
                lines.push(l);
                None
            }
        };
        // The study's progress counts the finished slices as done before this run.
        let (at, base) = (k as u64 + 1, skipped.len() as u64);
        let label = format!("serve S{p} slice {at}/{total} (slice{i})");
        let held = (&mut kept, triplets);
        match serve_slice(a, &keys, dir, &m, (i, &label), mode, held) {
            Ok(summary) => {
                let said: Vec<String> = summary
                    .lines
                    .into_iter()
                    .map(|l| format!("slice {i}: {l}"))
                    .collect();
                if !mode.is_off() {
                    for l in &said {
                        eprintln!("{l}");
                    }
                }
                lines.extend(said);
                ran.push(i);
            }
            Err(e) if study.keep_going => {
                if !mode.is_off() {
                    eprintln!("slice {i}: FAILED (going on: --keep-going): {e:#}");
                }
                failed.push((i, format!("{e:#}")));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "study {}, slice {i} (`study-status --study` lists what is left; deal it \
                         again with `gen-triplets --study ... --slices`, then run `serve --study` \
                         again on both servers; --keep-going goes past a failed slice)",
                        dir.display()
                    )
                })
            }
        }
        if !mode.is_off() {
            let elapsed = t.elapsed();
            let eta = progress::eta(elapsed, at, total, base);
            eprintln!(
                "{}",
                progress::line(
                    &format!("S{p} study"),
                    at,
                    total,
                    "slices",
                    elapsed,
                    eta,
                    at == total
                )
            );
        }
    }
    if !failed.is_empty() {
        let spec = slices_spec(&failed.iter().map(|f| f.0).collect::<Vec<_>>());
        let mut msg = format!(
            "S{p}: study {}: {} of {} slice(s) failed ({spec}); ran {} ({}), skipped {} finished",
            m.study_id,
            failed.len(),
            slices.len(),
            ran.len(),
            slices_spec(&ran),
            skipped.len()
        );
        for (i, e) in &failed {
            msg.push_str(&format!("\n  slice {i}: {e}"));
        }
        msg.push_str(&format!(
            "\nto redo them: gen-triplets --study {0} --slices {spec}, then serve --study {0} \
             --slices {spec} on both servers (study-status --study {0} shows what is left)",
            dir.display()
        ));
        bail!(msg);
    }
    lines.push(format!(
        "S{p}: study {}: ran {} slice(s) ({}), skipped {} finished ({})",
        m.study_id,
        ran.len(),
        slices_spec(&ran),
        skipped.len(),
        slices_spec(&skipped)
    ));
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "serve", "party": p, "study_id": m.study_id,
            "ran": ran, "skipped": skipped, "seconds": t.elapsed().as_secs_f64()}),
    })
}

/// Warns when this server's study folder also holds the peer's image share unsealed: a
/// server that can read both shares sees the image (one folder is for one machine's tests).
fn warn_if_both_shares(dir: &Path, p: Party, m: &Manifest) {
    let peer = slice_file(dir, 0, "image", p.peer());
    if !m.is_empty() && peer.exists() && !crate::formats::sealed::is_sealed(&peer).unwrap_or(true) {
        eprintln!(
            "warning: {} (S{}'s share, unsealed) is in S{p}'s study folder: a server that reads \
             both shares sees the image; give each server only its own files, or seal them \
             (share-study --to-s0 --to-s1)",
            peer.display(),
            p.peer()
        );
    }
}
