//! Studies: a folder of slices (one DICOM series, or PNG/TIFF images), every slice its own
//! job. `share-study` (gateway), `gen-triplets --study` (dealer), `serve --study` (servers),
//! `study-status` and `reconstruct --study` (receiver); the files are those of
//! [`crate::formats::study`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::dealer::{gen_triplets, GenTripletsArgs};
use super::gateway::{ShareOpts, Sharer};
use super::progress::Mode;
use super::receiver::{combine_run, Expect, ReconstructArgs, RunFacts};
use super::server::{serve_job_as, JobPaths, ServeArgs, ServeKeys};
use super::Summary;
use crate::formats::container::{self, fresh_id, id_hex, Kind};
use crate::formats::signing::Trust;
use crate::formats::study::{
    default_binding, default_sources, parse_id, parse_slices, slice_dir, slice_file, slices_spec,
    Done, Manifest, Source, Sources, MANIFEST, MAX_SLICES,
};
use crate::image::dicom::DicomTemplate;
use crate::image::series::{is_dicomdir, scan_frames, scan_series, StudyKind};
use crate::image::window::{Sigma, ValueScale, WindowChoice};
use crate::image::{self, Encoding, Format};
use crate::model::preprocess::Preprocess;

/// Secret-share a study (a folder of one DICOM series, or of PNG/TIFF images) for S0 and S1:
/// every slice a new job, in the series' order.
#[derive(Args)]
pub struct ShareStudyArgs {
    /// The study: a folder holding DICOM series of single-frame slices (an export: its
    /// sub-folders are walked; ordered by InstanceNumber, else by position along the slice
    /// normal, else by name), or PNG and TIFF images (ordered by name, numbers as numbers);
    /// or a DICOMDIR (the files its records name); or one multi-frame DICOM file: every
    /// frame a slice, written back by `reconstruct --study` as one object. Hidden files are
    /// not read; DICOM objects that are not images (a structured report, a presentation
    /// state) are skipped with a line each; any other file is refused.
    #[arg(long = "in", value_name = "DIR|DICOMDIR|FILE")]
    pub input: PathBuf,
    /// Which series of the export to share: its SeriesInstanceUID or Series Number
    /// (`inspect --series DIR` lists them). Needed when the input holds several.
    #[arg(long, value_name = "UID|NUMBER")]
    pub series: Option<String>,
    /// The study folder to write: study.json (public: the study's and slices' job ids, for
    /// the dealer and the servers), slice<I>/image.p0, .p1 and .pub. S0 gets study.json and
    /// the .p0 files, S1 the .p1 files, the dealer the .pub files: seal the shares to their
    /// servers (--to-s0, --to-s1) when one folder is seen by both.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The receiver's map of the slices back to the input's files (their names can name a
    /// patient: never give it to a server or the dealer). Default: <out>.sources.json,
    /// beside the study folder, not in it. The study binding (<sources>.sig: the study's
    /// slices in order, signed with --sign-key) is written beside it.
    #[arg(long, value_name = "FILE")]
    pub sources: Option<PathBuf>,
    /// No line per slice.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub opts: ShareOpts,
}

/// Where each server's files of a study are, when not in the study folder itself.
#[derive(Args, Clone, Default)]
pub struct PartyDirs {
    /// S0's copy of the study folder (its slice<I>/out.p0 and done.p0), when it is not
    /// --study.
    #[arg(long, value_name = "DIR", requires = "study")]
    pub s0_dir: Option<PathBuf>,
    /// S1's copy of the study folder (slice<I>/out.p1 and done.p1).
    #[arg(long, value_name = "DIR", requires = "study")]
    pub s1_dir: Option<PathBuf>,
}

impl PartyDirs {
    pub fn of(&self, study: &Path) -> Result<[PathBuf; 2]> {
        let dirs = [
            self.s0_dir.clone().unwrap_or_else(|| study.to_path_buf()),
            self.s1_dir.clone().unwrap_or_else(|| study.to_path_buf()),
        ];
        for d in &dirs {
            if !d.is_dir() {
                bail!("{}: not a folder", d.display());
            }
        }
        Ok(dirs)
    }
}

/// Which slices of a study both servers have finished, and which not.
#[derive(Args)]
pub struct StudyStatusArgs {
    /// The study folder (from `share-study`).
    #[arg(long, value_name = "DIR")]
    pub study: PathBuf,
    #[command(flatten)]
    pub dirs: PartyDirs,
    /// One server's view, in its own copy of the study folder: the slices it has not
    /// finished with the triplets it holds (what its `serve --study` would run).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1), conflicts_with_all = ["s0_dir", "s1_dir"])]
    pub party: Option<u8>,
    /// With --party: these slices only (e.g. a Slurm array task's).
    #[arg(long, requires = "party")]
    pub slices: Option<String>,
    /// With --party: its identity, to read sealed triplet headers.
    #[command(flatten)]
    pub identity: super::keys::IdentityArgs,
    #[command(flatten)]
    pub records: super::keys::RecordKeysArgs,
}

/// Whether `a` and `b` are one folder (false when either does not exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn share_study(a: ShareStudyArgs) -> Result<Summary> {
    let t = Instant::now();
    if let Some(m) = &a.opts.noise.noise_map {
        bail!(
            "--noise-map {}: one map is for one image; a study takes --sigma, or --noise (a map \
             computed from each slice)",
            m.display()
        );
    }
    let sharer = Sharer::new(&a.opts)?;
    let sources_path = a.sources.clone().unwrap_or_else(|| default_sources(&a.out));
    let binding_path = default_binding(&sources_path);
    for p in [
        a.out.join(MANIFEST),
        sources_path.clone(),
        binding_path.clone(),
    ] {
        if p.exists() {
            bail!(
                "{}: already exists: a study is shared into a new --out (and --sources)",
                p.display()
            );
        }
    }
    if same_dir(&a.input, &a.out) {
        bail!(
            "--out {}: is the input folder; write the study folder elsewhere",
            a.out.display()
        );
    }
    // A file is a multi-frame object (every frame a slice, decoded once and held: a frame
    // is not read alone); a folder is a series or images (every slice read twice, so that
    // a study is never all in memory).
    let (input, frames) = if a.input.is_file() && !is_dicomdir(&a.input) {
        if a.series.is_some() {
            bail!(
                "--series: {} is one multi-frame object (one series); --series picks one series \
                 of a folder or a DICOMDIR",
                a.input.display()
            );
        }
        let (input, n) = scan_frames(&a.input, MAX_SLICES)?;
        // Read once: the frames shared are decoded from the bytes whose hash the binding
        // holds.
        let bytes = image::read_file(&a.input)?;
        let frames = image::windowed_from_bytes(&bytes, &a.input, sharer.window(), true)?;
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        drop(bytes);
        if frames.frames.len() != n {
            bail!(
                "{}: {} frames decoded, {n} declared",
                a.input.display(),
                frames.frames.len()
            );
        }
        (input, Some((frames, blake3)))
    } else {
        (
            scan_series(&a.input, MAX_SLICES, a.series.as_deref())?,
            None,
        )
    };
    if !a.quiet {
        for l in &input.skipped {
            eprintln!("{l}");
        }
    }
    let slices_in: Vec<(&Path, Format, Option<usize>)> = match &frames {
        Some((f, _)) => (0..f.frames.len())
            .map(|k| (input.slices[0].0.as_path(), Format::Dicom, Some(k)))
            .collect(),
        None => input
            .slices
            .iter()
            .map(|(p, f)| (p.as_path(), *f, None))
            .collect(),
    };
    // Every slice on its window (a multi-frame object's one window for all its frames), and
    // the hash of the very bytes it was decoded from: a file is read once each time, so that
    // the hash the binding holds is of what was shared (a file swapped between a hash and a
    // second open would otherwise be bound as the slice's source unchecked).
    type Loaded = (image::GrayImage, ValueScale, String);
    let load = |path: &Path, frame: Option<usize>| -> Result<Loaded> {
        match (frame, &frames) {
            (Some(k), Some((f, blake3))) => Ok((f.frames[k].clone(), f.scale, blake3.clone())),
            _ => {
                let bytes = image::read_file(path)?;
                let mut w = image::windowed_from_bytes(&bytes, path, sharer.window(), false)?;
                let blake3 = blake3::hash(&bytes).to_hex().to_string();
                Ok((w.frames.remove(0), w.scale, blake3))
            }
        }
    };
    let name = |path: &Path, frame: Option<usize>| match frame {
        Some(k) => format!("{} frame {k}", path.display()),
        None => path.display().to_string(),
    };
    // Every slice is checked before any randomness is drawn.
    for &(path, _, frame) in &slices_in {
        let (img, scale, _) = load(path, frame)?;
        sharer.check(&img, &scale, &name(path, frame))?;
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let mut slices: Vec<Source> = Vec::with_capacity(slices_in.len());
    let mut upload = 0;
    let quiet_slices = a.quiet;
    let (mut clipped, mut pixels, mut sigmas) = (0usize, 0usize, (f64::INFINITY, 0.0f64));
    let mut units = image::window::Units::Grey;
    for (i, &(path, format, frame)) in slices_in.iter().enumerate() {
        // Read anew since the first pass: `share` checks it again.
        let (img, scale, blake3) = load(path, frame)?;
        let dir = slice_dir(&a.out, i);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let shared = sharer.share(&img, &scale, &name(path, frame), &dir.join("image"))?;
        upload += shared.upload_bytes;
        if !quiet_slices {
            eprintln!(
                "slice {}/{}: {}",
                i + 1,
                slices_in.len(),
                super::gateway::intensity_line(
                    &name(path, frame),
                    &scale,
                    shared.sigma,
                    a.opts.sigma
                )
            );
        }
        // A multi-frame object's one window counts its clipped pixels once.
        if frame.is_none_or(|k| k == 0) {
            clipped += scale.clipped;
            pixels += scale.pixels;
        }
        let in_units = scale.in_units(shared.sigma);
        sigmas = (sigmas.0.min(in_units), sigmas.1.max(in_units));
        units = scale.units;
        slices.push(Source {
            file: path
                .file_name()
                .expect("a listed file has a name")
                .to_string_lossy()
                .into_owned(),
            format,
            bit_depth: img.bit_depth,
            height: img.height(),
            width: img.width(),
            job_id: id_hex(&shared.job_id),
            blake3,
            frame,
            // The receiver writes the slice back on it (and what it clipped from the file).
            window: (format == Format::Dicom).then_some(scale.window),
            noise_scale: shared.private.then_some(shared.pre.noise_scale),
            sigma: shared.private.then_some(shared.sigma),
        });
    }
    // The slices' folder (one, by the scan): the receiver reads its templates there. A
    // multi-frame file's is its folder; an export's, its series' folder.
    let folder = match input.slices[0].0.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let input_dir = folder
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", folder.display()))?;
    let sources = Sources::new(id_hex(&fresh_id()), input_dir, input.kind, slices);
    // The public manifest last: a study folder without it is an unfinished share-study.
    sources.write(&sources_path)?;
    // The receiver's check that no one swapped the slices or their sources since.
    sources.write_binding(&binding_path, sharer.signer())?;
    sources.manifest().write(&a.out)?;
    let n = sources.slices.len();
    let model_checked = a
        .opts
        .model
        .is_some()
        .then(|| sharer.model_note().is_none());
    let mut lines = vec![
        format!(
            "study {} ({}, {n} slices from {}) shared into {}; upload {upload} bytes in total",
            sources.study_id,
            input.kind.name(),
            a.input.display(),
            a.out.display()
        ),
        format!(
            "noise {:.3} to {:.3} {}{}; {clipped} of {pixels} pixels outside their window \
             (clipped for the model, written back unchanged by the receiver)",
            sigmas.0,
            sigmas.1,
            units.name(),
            if a.opts.sigma == Some(Sigma::Auto) { " (estimated per slice)" } else { "" },
        ),
        format!(
            "give each server study.json and its own slice<I>/image.p<P>, the dealer study.json and slice<I>/image.pub; {} and {} (the study binding{}) are the receiver's alone, with the study id {} (reconstruct --study-id)",
            sources_path.display(),
            binding_path.display(),
            if sharer.signer().is_some() { ", signed" } else { ", unsigned: a receiver that pins keys refuses it" },
            sources.study_id
        ),
    ];
    // Said first: what the gateway took on trust.
    if let Some(note) = sharer.model_note() {
        lines.insert(0, note.to_string());
    }
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "share-study", "study_id": sources.study_id,
            "model_owner_checked": model_checked,
            "kind": input.kind.name(), "slices": n, "skipped": input.skipped, "out": a.out, "sources": sources_path, "binding": binding_path, "upload_bytes": upload,
            "units": units, "sigma_in_units": [sigmas.0, sigmas.1], "clipped": clipped,
            "seconds": t.elapsed().as_secs_f64()}),
    })
}

/// Server `p`'s record of slice `i` when it is sound: of the study's job, with the output
/// share it names intact, signed by the key `trust` pins for server `p` (any key, with
/// none pinned). An unreadable or malformed record, one whose signature does not verify, or
/// one signed by another key, is an error naming it.
fn signed_done(dir: &Path, i: usize, p: u8, job_id: &str, trust: &Trust) -> Result<Option<Done>> {
    let path = slice_file(dir, i, "done", p);
    let Some(rec) = Done::read_if_any(&path)? else {
        return Ok(None);
    };
    if rec.party != p {
        bail!("{}: is S{}'s record", path.display(), rec.party);
    }
    rec.check(&path, trust)?;
    Ok((rec.job_id == job_id && rec.output_intact(&slice_file(dir, i, "out", p))).then_some(rec))
}

/// Whether server `p` finished slice `i` with the triplets it holds now (or with spent ones
/// since removed): what `serve --study` skips. Fresh triplets (dealt again because the peer
/// did not finish) mean the slice is to be redone. A server that signs takes only its own
/// records (`trust` pins its key).
fn finished_here(dir: &Path, i: usize, p: u8, job_id: &str, trust: &Trust) -> Result<bool> {
    let Some(rec) = signed_done(dir, i, p, job_id, trust)? else {
        return Ok(false);
    };
    let triplets = slice_file(dir, i, "triplets", p);
    if !triplets.exists() {
        return Ok(true);
    }
    let current = container::read_header(&triplets)?
        .triplet_id
        .map(|id| id_hex(&id));
    Ok(current.as_deref() == Some(rec.triplet_id.as_str()))
}

/// Whether both servers finished slice `i`, in the same run, by records signed by the
/// keys `trust` pins.
fn finished(dirs: &[PathBuf; 2], i: usize, job_id: &str, trust: &Trust) -> Result<bool> {
    Ok(
        match (
            signed_done(&dirs[0], i, 0, job_id, trust)?,
            signed_done(&dirs[1], i, 1, job_id, trust)?,
        ) {
            (Some(a), Some(b)) => a.triplet_id == b.triplet_id,
            _ => false,
        },
    )
}

fn unfinished_by(m: &Manifest, dirs: &[PathBuf; 2], trust: &Trust) -> Result<Vec<usize>> {
    let mut left = Vec::new();
    for i in 0..m.len() {
        if !finished(dirs, i, &m.slices[i], trust)? {
            left.push(i);
        }
    }
    Ok(left)
}

/// The dealer's [`unfinished_by`]: a record it cannot take (planted, rewritten, signed by
/// another key, unreadable) leaves its slice to be dealt again, with a line naming it,
/// instead of stopping the study (whoever can write the folder could otherwise stop every
/// dealing; deleting a record already gets the slice dealt again).
fn unfinished_for_dealer(
    m: &Manifest,
    dirs: &[PathBuf; 2],
    trust: &Trust,
) -> (Vec<usize>, Vec<String>) {
    let (mut left, mut warnings) = (Vec::new(), Vec::new());
    for i in 0..m.len() {
        match finished(dirs, i, &m.slices[i], trust) {
            Ok(true) => {}
            Ok(false) => left.push(i),
            Err(e) => {
                warnings.push(format!(
                    "slice {i}: record not taken: {e:#}: not finished; dealing it again"
                ));
                left.push(i);
            }
        }
    }
    (left, warnings)
}

/// `gen-triplets --study`: each slice's randomness, as `gen-triplets` makes a job's.
pub fn gen_study_triplets(a: &GenTripletsArgs, dir: &Path) -> Result<Summary> {
    let t = Instant::now();
    if a.tile.is_some() {
        bail!("--tile: a study's slices run in one piece each");
    }
    let m = Manifest::read(dir)?;
    let (slices, warnings) = match &a.slices {
        Some(s) => (parse_slices(s, m.len())?, Vec::new()),
        // Finished by records the pinned servers' keys signed, when given.
        None => unfinished_for_dealer(&m, &a.dirs.of(dir)?, &a.records.load(&[0, 1])?),
    };
    // Said whatever --quiet: a record not taken is someone else's doing, or a server's
    // fault.
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mh = container::verify(&a.model)?;
    // Every slice's public header is checked before any randomness is drawn.
    for &i in &slices {
        let p = slice_dir(dir, i).join("image.pub");
        let h = container::verify(&p)?;
        container::expect(&p, &h, Kind::PublicJob, None)?;
        let job = super::gateway::job_from_header(&p, &h)?;
        if job.scale != mh.scale {
            bail!(
                "{}: image encoded at scale {} but the model {} uses scale {}",
                p.display(),
                job.scale,
                a.model.display(),
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
    }
    let mut bytes = 0u64;
    let total = slices.len() as u64;
    for (k, &i) in slices.iter().enumerate() {
        let mut one = a.clone();
        one.study = None;
        one.slices = None;
        one.image = Some(slice_dir(dir, i).join("image.pub"));
        one.out = slice_dir(dir, i).join("triplets");
        let started = Instant::now();
        let s = gen_triplets(one).with_context(|| format!("slice {i}"))?;
        let b = s.json["dealer_bytes"].as_u64().unwrap_or(0);
        bytes += b;
        // Each slice's line as it is dealt (a study of 200 slices takes half an hour).
        if !a.quiet {
            let (at, elapsed) = (k as u64 + 1, t.elapsed());
            eprintln!(
                "slice {at}/{total} (slice{i}): dealt {} in {}; {}",
                super::space::human_bytes(b),
                super::progress::human(started.elapsed()),
                super::progress::line(
                    "study",
                    at,
                    total,
                    "slices",
                    elapsed,
                    super::progress::eta(elapsed, at, total, 0),
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
            "study {}: dealt {} of {} slices ({spec}) into {}/slice<I>/triplets.p0 and .p1",
            m.study_id,
            slices.len(),
            m.len(),
            dir.display()
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

/// One slice of `serve --study`: checks its image share, removes a stale record, runs it
/// and records it as finished.
fn serve_slice(
    a: &ServeArgs,
    keys: &ServeKeys,
    dir: &Path,
    m: &Manifest,
    i: usize,
    mode: Mode,
    label: &str,
) -> Result<Summary> {
    let p = a.party;
    let paths = JobPaths {
        image: slice_file(dir, i, "image", p),
        triplets: slice_file(dir, i, "triplets", p),
        out: slice_file(dir, i, "out", p),
    };
    let image_job = container::read_header(&paths.image)?
        .job_id
        .map(|id| id_hex(&id));
    if image_job.as_deref() != Some(m.slices[i].as_str()) {
        bail!(
            "{}: is not slice {i}'s image share ({} names job {})",
            paths.image.display(),
            dir.join(MANIFEST).display(),
            m.slices[i]
        );
    }
    // A stale record goes first: a slice being redone is never taken as finished.
    let done_path = slice_file(dir, i, "done", p);
    match std::fs::remove_file(&done_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot remove", done_path.display()))
        }
        _ => {}
    }
    let served = serve_job_as(a, keys, &paths, mode, label);
    // Before the slice counts as done: without this one process's resident memory grew
    // slice by slice (src/cli/freed_memory.rs).
    super::freed_memory::release();
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
pub fn serve_study(a: &ServeArgs, dir: &Path, mode: Mode) -> Result<Summary> {
    let t = Instant::now();
    let p = a.party;
    let m = Manifest::read(dir)?;
    let slices = match &a.slices {
        Some(s) => parse_slices(s, m.len())?,
        None => (0..m.len()).collect(),
    };
    // Once for every slice: whose files to accept, the identity sealed triplet headers are
    // read with, the receiver and this server's signing key.
    let mut keys = ServeKeys::load(a)?;
    if p == 0 {
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
    let mut todo = Vec::with_capacity(slices.len());
    for &i in &slices {
        // A record this server cannot take as its own (planted, rewritten, unreadable) does
        // not stop the study, nor skip the slice: the slice is run again, and its record
        // replaced.
        match finished_here(dir, i, p, &m.slices[i], &own) {
            Ok(true) => skipped.push(i),
            Ok(false) => todo.push(i),
            Err(e) => {
                let l = format!("slice {i}: {e:#}: not taken as finished; running it again");
                if !mode.is_off() {
                    eprintln!("warning: {l}");
                }
                lines.push(l);
                todo.push(i);
            }
        }
    }
    // The study's progress counts the finished slices as done before this run.
    let (total, base) = (slices.len() as u64, skipped.len() as u64);
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (k, &i) in todo.iter().enumerate() {
        let at = base + k as u64 + 1;
        let label = format!("serve S{p} slice {at}/{total} (slice{i})");
        match serve_slice(a, &keys, dir, &m, i, mode, &label) {
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
            Err(e) if a.keep_going => {
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
            let eta = super::progress::eta(elapsed, at, total, base);
            eprintln!(
                "{}",
                super::progress::line(
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

pub fn study_status(a: StudyStatusArgs) -> Result<Summary> {
    let m = Manifest::read(&a.study)?;
    // Whose records count, before any is read.
    let trust = a
        .records
        .load(a.party.as_ref().map_or(&[0, 1][..], std::slice::from_ref))?;
    if let Some(p) = a.party {
        a.identity.load()?;
        let slices = match &a.slices {
            Some(s) => parse_slices(s, m.len())?,
            None => (0..m.len()).collect(),
        };
        let (mut left, mut refused) = (Vec::new(), Vec::new());
        for &i in &slices {
            // A record not taken (as serve --study would not take it) leaves the slice to do.
            match finished_here(&a.study, i, p, &m.slices[i], &trust) {
                Ok(true) => {}
                Ok(false) => left.push(i),
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
        let done = [0u8, 1].map(|p| signed_done(&dirs[p as usize], i, p, &m.slices[i], &trust));
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
    let spec = slices_spec(&left);
    let mut lines = vec![format!(
        "study {}: {} slices, {} finished, {} left",
        m.study_id,
        m.len(),
        m.len() - left.len(),
        left.len()
    )];
    for &i in &left {
        lines.push(format!("  slice {i}: {}", states[i]));
    }
    if !left.is_empty() {
        lines.push(format!(
            "to finish: gen-triplets --study {0} --slices {spec}, then serve --study {0} --slices {spec} on both servers (or sbatch --array={spec})",
            a.study.display()
        ));
    }
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "study-status", "study_id": m.study_id,
            "slices": m.len(), "complete": left.is_empty(), "left": left, "left_spec": spec,
            "states": states}),
    })
}

/// Warns when this server's study folder also holds the peer's image share unsealed: a
/// server that can read both shares sees the image (one folder is for one machine's tests).
fn warn_if_both_shares(dir: &Path, p: u8, m: &Manifest) {
    let peer = slice_file(dir, 0, "image", 1 - p);
    if !m.is_empty() && peer.exists() && !crate::formats::sealed::is_sealed(&peer).unwrap_or(true) {
        eprintln!(
            "warning: {} (S{}'s share, unsealed) is in S{p}'s study folder: a server that reads \
             both shares sees the image; give each server only its own files, or seal them \
             (share-study --to-s0 --to-s1)",
            peer.display(),
            1 - p
        );
    }
}

/// The DICOM template of the slice `s` from its source file's `bytes` (read from `src`,
/// once): they must hash to what was shared, and the template (header and pixels) is made
/// from those very bytes, so that a file swapped between a hash and a second open is never
/// used unchecked.
fn slice_template(bytes: &[u8], src: &Path, s: &Source) -> Result<DicomTemplate> {
    if blake3::hash(bytes).to_hex().as_str() != s.blake3 {
        bail!(
            "{}: is not the file that was shared as this slice (it changed since, or the input \
             folder moved: give --sources a corrected copy)",
            src.display()
        );
    }
    // The slice's window as the gateway recorded it; a study shared before windows existed
    // was on the container's full range.
    let window = s.window.map_or(WindowChoice::Full, WindowChoice::Range);
    Ok(DicomTemplate::from_bytes_windowed(bytes, src, &window)?.0)
}

/// `reconstruct --study`: every slice, in its input's name and format; a DICOM series as one
/// new derived series. Written into a new folder, all slices or none.
pub fn reconstruct_study(a: &ReconstructArgs, dir: &Path) -> Result<Summary> {
    let t = Instant::now();
    // Whose signatures the binding, the shares and the records must carry, and which study
    // is expected, before any file is read.
    let trust = a.signers.load()?;
    let want_id = super::keys::expected_id(
        a.study_id.as_deref(),
        &trust,
        "--study-id",
        "study",
        "share-study",
    )?
    .map(|id| id_hex(&id));
    let sources_path = a.sources.clone().unwrap_or_else(|| default_sources(dir));
    let sources = Sources::read(&sources_path)?;
    // The slices in the order the gateway signed: what the sources file says (the slices'
    // files, facts and job ids) must be it, and each slice's shares are then checked
    // against its signed job id. Unsigned sources alone would let whoever can write them
    // and the study folder swap slices.
    let binding_path = a
        .binding
        .clone()
        .unwrap_or_else(|| default_binding(&sources_path));
    let bound = sources.check_binding(&sources_path, &binding_path, &trust)?;
    // The binding proves the study is whole as the gateway shared it, not that it is the
    // one the receiver waits for: another genuine study of the same gateway (its folder,
    // sources and binding together) put in its place passes it. The id says which.
    let signed_id = bound.as_ref().map_or(&sources.study_id, |b| &b.study_id);
    if let Some(want) = want_id.filter(|w| w != signed_id) {
        bail!(
            "--study-id {want}: {} is study {signed_id} (as {} says), not the study expected: \
             another study put in its place; nothing written",
            dir.display(),
            if bound.is_some() {
                "the gateway's signed study binding"
            } else {
                "its sources file"
            }
        );
    }
    let jobs: Vec<String> = match &bound {
        Some(b) => b.slices.iter().map(|s| s.job_id.clone()).collect(),
        None => sources.slices.iter().map(|s| s.job_id.clone()).collect(),
    };
    let m = Manifest::read(dir)?;
    if m != sources.manifest() || m.slices != jobs {
        bail!(
            "{} and {} are not of one study",
            dir.join(MANIFEST).display(),
            sources_path.display()
        );
    }
    let dicom = sources.kind != StudyKind::Images;
    let multi = sources.kind == StudyKind::MultiFrame;
    if dicom && a.bit_depth.is_some() {
        bail!("--bit-depth: a DICOM series is written at the bit depth of its slices");
    }
    // A new folder (or an empty one): nothing, the inputs least of all, is replaced.
    if a.out.exists() {
        let empty = std::fs::read_dir(&a.out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            bail!(
                "--out {}: exists and is not an empty folder; a study is written into a new one",
                a.out.display()
            );
        }
    }
    a.identity.load()?;
    let dirs = a.dirs.of(dir)?;
    let shares: Vec<PathBuf> = (0..m.len())
        .flat_map(|i| [0u8, 1].map(|p| slice_file(&dirs[p as usize], i, "out", p)))
        .collect();
    let shares: Vec<&Path> = shares.iter().map(|p| p.as_path()).collect();
    a.signers.check_inputs(&shares)?;
    let left = unfinished_by(&m, &dirs, &trust)?;
    if !left.is_empty() {
        bail!(
            "study {}: slice(s) {} not finished on both servers (see study-status); nothing written",
            m.study_id,
            slices_spec(&left)
        );
    }
    // Slice `i`'s pair, read and checked once: signed by the pinned servers' keys and of
    // the job the gateway signed for that place.
    let combine_slice = |i: usize| -> Result<(image::GrayImage, RunFacts)> {
        let [s0, s1] = [0u8, 1].map(|p| slice_file(&dirs[p as usize], i, "out", p));
        let pre = sources.slices[i]
            .noise_scale
            .map(|noise_scale| Preprocess { noise_scale });
        let expect = Expect {
            trust: &trust,
            job: parse_id(&jobs[i]),
        };
        let (img, _, run) =
            combine_run(&s0, &s1, pre, &expect).with_context(|| format!("slice {i}"))?;
        Ok((img, run))
    };
    // Slice 0 first: its verified headers describe the run in every slice's template.
    let (img0, run0) = combine_slice(0)?;
    let mut first = Some(img0);
    // Every encoding (a DICOM slice's template, the very file that was shared) is made
    // before anything is written.
    let series = a.series.derived()?;
    // One description for the series, from its first slice: every slice is one job of
    // one model and sigma.
    let mut described: Option<(String, String)> = None;
    let mut encodings = Vec::with_capacity(m.len());
    // A multi-frame object's frames share one template (the file's): made once.
    for s in sources.slices.iter().take(if multi { 1 } else { m.len() }) {
        let enc = match s.format {
            Format::Dicom => {
                let src = sources.input_dir.join(&s.file);
                let tpl = slice_template(&image::read_file(&src)?, &src, s)?;
                if described.is_none() {
                    described = Some(super::receiver::run_description(&run0, Some(&tpl), s.sigma));
                }
                let (what, derivation) = described.clone().unwrap_or_default();
                let tpl = tpl.with_derivation(derivation).in_series(&series, &what);
                let frames = if multi { m.len() } else { 1 };
                if tpl.frames() != frames {
                    bail!(
                        "{}: has {} frame(s), the study {frames} slice(s) of it",
                        src.display(),
                        tpl.frames()
                    );
                }
                Encoding::Dicom(Box::new(tpl))
            }
            Format::Tiff => Encoding::Tiff(a.bit_depth.unwrap_or(s.bit_depth)),
            Format::Png => Encoding::Png(a.bit_depth.unwrap_or(s.bit_depth)),
        };
        encodings.push(enc);
    }
    // All slices or none: the finished folder is moved into place.
    let mut warnings = Vec::new();
    crate::fileio::atomic::new_folder(&a.out, |staging| {
        let mut frames = Vec::new();
        for (i, s) in sources.slices.iter().enumerate() {
            let (img, run) = match first.take() {
                Some(img) => (img, run0.clone()),
                None => combine_slice(i)?,
            };
            // One series, one model: its description (slice 0's) holds for every slice only
            // if every slice was denoised by the model slice 0 was (a study shared without
            // --model binds no model to its jobs).
            if run.h0.model_id != run0.h0.model_id {
                bail!(
                    "slice {i} ({}): denoised by model {}, but slice 0 by model {}: a study's \
                     slices must be of one model; nothing written",
                    s.file,
                    run.h0.model_id.as_ref().map(id_hex).unwrap_or_default(),
                    run0.h0.model_id.as_ref().map(id_hex).unwrap_or_default()
                );
            }
            if img.pixels.dim() != (s.height, s.width) {
                bail!(
                    "slice {i}: the output is {} x {}, the input {} was {} x {}",
                    img.height(),
                    img.width(),
                    s.file,
                    s.height,
                    s.width
                );
            }
            let enc = &encodings[if multi { 0 } else { i }];
            if let Encoding::Dicom(t) = enc {
                let what = format!("slice {i} ({})", s.file);
                warnings.extend(super::receiver::check_result(
                    &img,
                    (t, if multi { i } else { 0 }),
                    s.sigma.unwrap_or(run.sigma()),
                    a.accept_suspect,
                    &what,
                )?);
            }
            if multi {
                frames.push(img);
            } else {
                encodings[i].save(&img, staging.join(&s.file))?;
            }
        }
        if multi {
            let file = &sources.slices[0].file;
            encodings[0].save_frames(&frames, staging.join(file))?;
        }
        Ok(())
    })?;
    let mut written: Vec<PathBuf> = sources.slices.iter().map(|s| a.out.join(&s.file)).collect();
    written.dedup();
    let what = if multi {
        format!(
            "one multi-frame DICOM of {} frames, in series {}",
            m.len(),
            series.uid
        )
    } else if dicom {
        format!("one derived DICOM series, {}", series.uid)
    } else {
        "images in their input's formats".into()
    };
    let mut lines = warnings;
    lines.push(format!(
        "study {}: wrote {} slices to {} ({what})",
        m.study_id,
        m.len(),
        a.out.display()
    ));
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "reconstruct", "study_id": m.study_id,
            "out": a.out, "files": written, "series_uid": dicom.then_some(&series.uid),
            "seconds": t.elapsed().as_secs_f64()}),
    })
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    use super::*;
    use crate::image::window::Window;

    /// A `size x size` 12-bit CT slice's file bytes, its values from `seed`.
    fn ct(size: usize, seed: u16) -> Vec<u8> {
        let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        let values: Vec<u16> = (0..size * size)
            .map(|i| (i as u16 * 37 + seed * 101) % 4096)
            .collect();
        let obj = InMemDicomObject::from_element_iter([
            s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            s(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.8.498.3",
            ),
            s(tags::MODALITY, VR::CS, "CT"),
            us(tags::SAMPLES_PER_PIXEL, 1),
            s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            us(tags::ROWS, size as u16),
            us(tags::COLUMNS, size as u16),
            us(tags::BITS_ALLOCATED, 16),
            us(tags::BITS_STORED, 12),
            us(tags::HIGH_BIT, 11),
            us(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into())),
        ]);
        let mut b = Vec::new();
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_all(&mut b)
            .unwrap();
        b
    }

    /// Issue 45 (review of the study binding, item 1): a slice's template is made from the
    /// bytes that were hashed, never from its file opened again: with another file (of
    /// another size) at the source's path, or none, the template is still the hashed one's;
    /// bytes that do not hash to what was shared are refused naming the file.
    #[test]
    fn a_slice_template_is_made_from_the_bytes_hashed_not_the_file_opened_again() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.dcm");
        let (shared, other) = (ct(6, 1), ct(8, 2));
        let s = Source {
            file: "a.dcm".into(),
            format: Format::Dicom,
            bit_depth: 16,
            height: 6,
            width: 6,
            job_id: "0123456789abcdef0123456789abcdef".into(),
            blake3: blake3::hash(&shared).to_hex().to_string(),
            frame: None,
            window: Some(Window::new(-500.0, 3000.0).unwrap()),
            noise_scale: None,
            sigma: None,
        };
        // The file swapped after it was read and hashed.
        std::fs::write(&src, &other).unwrap();
        let t = slice_template(&shared, &src, &s).unwrap();
        assert_eq!(t.dim(), (6, 6));
        let frames = t.windowed_frames().expect("on the slice's window");
        assert_eq!(frames[0].dim(), (6, 6));
        std::fs::remove_file(&src).unwrap();
        assert_eq!(slice_template(&shared, &src, &s).unwrap().dim(), (6, 6));
        let e = format!("{:#}", slice_template(&other, &src, &s).unwrap_err());
        assert!(
            e.contains("a.dcm") && e.contains("is not the file that was shared"),
            "{e}"
        );
    }
}
