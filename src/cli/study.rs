//! The study commands: `share-study` and `study-status`, and the arguments `gen-triplets
//! --study`, `serve --study` and `reconstruct --study` share; parsed here, run by
//! [`crate::study`].

use crate::ring::Party;
use std::path::{Component, Path, PathBuf};

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser;
use clap::Args;

use super::gateway::ShareOpts;
use super::Summary;
use crate::study::share::ShareStudy;
use crate::study::status::StudyStatus;
use crate::study::ServerDirs;

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
    #[arg(
        long = "in",
        value_name = "DIR|DICOMDIR|FILE",
        required_unless_present = "from",
        conflicts_with = "from"
    )]
    pub input: Option<PathBuf>,
    /// The archive to take the study from instead: dicomweb:URL, its DICOMweb root, or
    /// dimse:AET@HOST:PORT (docs/pacs.md). The series is listed (QIDO-RS; C-FIND) and every
    /// instance fetched (WADO-RS; C-MOVE to --our-aet) into --fetched, then shared as --in
    /// shares a folder; nothing is shared unless every instance came whole.
    #[arg(
        long,
        value_name = "dicomweb:URL|dimse:AET@HOST:PORT",
        requires = "study_uid"
    )]
    pub from: Option<String>,
    /// With --from: the study's Study Instance UID.
    #[arg(long = "study", value_name = "UID", requires = "from")]
    pub study_uid: Option<String>,
    /// With --from: the new folder the fetched instances are kept in, the receiver's alone
    /// like the sources file (`reconstruct --study` makes the derived series from these very
    /// files). Default: <out>.fetched, beside the study folder.
    #[arg(long, value_name = "DIR", requires = "from")]
    pub fetched: Option<PathBuf>,
    #[command(flatten)]
    pub archive: super::pacs::ArchiveArgs,
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
    /// The folders as the study layer takes them.
    pub fn plain(&self) -> ServerDirs {
        ServerDirs {
            s0_dir: self.s0_dir.clone(),
            s1_dir: self.s1_dir.clone(),
        }
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
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1).try_map(Party::try_from), conflicts_with_all = ["s0_dir", "s1_dir"])]
    pub party: Option<Party>,
    /// With --party: these slices only (e.g. a Slurm array task's).
    #[arg(long, requires = "party")]
    pub slices: Option<String>,
    /// With --party: its identity, to read sealed triplet headers.
    #[command(flatten)]
    pub identity: super::keys::IdentityArgs,
    #[command(flatten)]
    pub records: super::keys::RecordKeysArgs,
}

pub fn share_study(a: ShareStudyArgs) -> Result<Summary> {
    if let Some(m) = &a.opts.noise.noise_map {
        bail!(
            "--noise-map {}: one map is for one image; a study takes --sigma, or --noise (a map \
             computed from each slice)",
            m.display()
        );
    }
    let sharer = a.opts.sharer()?;
    let (Some(from), Some(study_uid)) = (&a.from, &a.study_uid) else {
        let study = ShareStudy {
            input: a.input.expect("clap: --in or --from"),
            series: a.series,
            out: a.out,
            sources: a.sources,
            quiet: a.quiet,
        };
        return crate::study::share::share_study(&study, &sharer);
    };
    // The archive's series fetched whole into a new folder, then shared as a folder is. The
    // fetched copy holds whole DICOM headers: never inside the study folder, which goes to the
    // dealer and the servers (`--out study/` once put it at study/.fetched).
    let fetched = a.fetched.clone().unwrap_or_else(|| default_fetched(&a.out));
    if inside(&fetched, &a.out)? {
        bail!(
            "--fetched {}: inside the study folder --out {}, which the dealer and the servers \
             get; the fetched DICOM files (whole headers) must stay the receiver's: give a \
             folder beside it",
            fetched.display(),
            a.out.display()
        );
    }
    let client = a.archive.client(from, "--from")?;
    let t = Instant::now();
    let mut got = None;
    crate::fileio::atomic::new_folder(&fetched, |dir| {
        got = Some(client.fetch_series(study_uid, a.series.as_deref(), dir, a.quiet)?);
        Ok(())
    })
    .with_context(|| format!("--from {client}: nothing shared"))?;
    let got = got.expect("filled");
    let fetch_seconds = t.elapsed().as_secs_f64();
    let study = ShareStudy {
        input: fetched.clone(),
        series: None,
        out: a.out,
        sources: a.sources,
        quiet: a.quiet,
    };
    let mut s = match crate::study::share::share_study(&study, &sharer) {
        Ok(s) => s,
        Err(e) => {
            // Nothing shared: the copy of the study goes too.
            let _ = std::fs::remove_dir_all(&fetched);
            return Err(e.context(format!(
                "--from {client}: series {} of study {study_uid}: nothing shared",
                got.series_uid
            )));
        }
    };
    s.lines.insert(
        0,
        format!(
            "fetched series {} of study {study_uid} from {client}: {} instances, {} bytes in {fetch_seconds:.2} s, into {} (the receiver's)",
            got.series_uid,
            got.instances,
            got.bytes,
            fetched.display()
        ),
    );
    if let Some(m) = s.json.as_object_mut() {
        m.insert(
            "archive".into(),
            serde_json::json!({"url": client.to_string(), "study_uid": study_uid,
                "series_uid": got.series_uid, "instances": got.instances, "bytes": got.bytes,
                "fetched": fetched, "seconds": fetch_seconds}),
        );
    }
    Ok(s)
}

/// Where `share-study --from` keeps the fetched instances by default: `<out>.fetched`, beside
/// the study folder (a trailing slash of `out` dropped, as [`crate::formats::study::default_sources`]
/// does).
fn default_fetched(out: &Path) -> PathBuf {
    let mut f = out.components().as_path().as_os_str().to_os_string();
    f.push(".fetched");
    PathBuf::from(f)
}

/// `p` made absolute and normalised: `.` and `..` taken out lexically, then the longest part
/// that exists resolved (its links followed), the rest appended.
fn resolved(p: &Path) -> Result<PathBuf> {
    let abs = std::env::current_dir()
        .context("the current folder")?
        .join(p);
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                norm.pop();
            }
            c => norm.push(c),
        }
    }
    let mut head = norm.clone();
    let mut tail = Vec::new();
    while !head.exists() {
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(n), Some(parent)) => {
                tail.push(n);
                head = parent.to_path_buf();
            }
            _ => return Ok(norm),
        }
    }
    let mut r = head.canonicalize().unwrap_or(head);
    r.extend(tail.iter().rev());
    Ok(r)
}

/// Whether the folder `inner` is `outer` or inside it.
fn inside(inner: &Path, outer: &Path) -> Result<bool> {
    Ok(resolved(inner)?.starts_with(resolved(outer)?))
}

pub fn study_status(a: StudyStatusArgs) -> Result<Summary> {
    let status = StudyStatus {
        study: a.study.clone(),
        dirs: a.dirs.plain(),
        party: a.party,
        slices: a.slices.clone(),
    };
    crate::study::status::study_status(&status, &|parties| a.records.load(parties), &|| {
        a.identity.load().map(|_| ())
    })
}
