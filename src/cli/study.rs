//! The study commands: `share-study` and `study-status`, and the arguments `gen-triplets
//! --study`, `serve --study` and `reconstruct --study` share; parsed here, run by
//! [`crate::study`].

use std::path::PathBuf;

use anyhow::{bail, Result};
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

pub fn share_study(a: ShareStudyArgs) -> Result<Summary> {
    if let Some(m) = &a.opts.noise.noise_map {
        bail!(
            "--noise-map {}: one map is for one image; a study takes --sigma, or --noise (a map \
             computed from each slice)",
            m.display()
        );
    }
    let sharer = a.opts.sharer()?;
    let study = ShareStudy {
        input: a.input,
        series: a.series,
        out: a.out,
        sources: a.sources,
        quiet: a.quiet,
    };
    crate::study::share::share_study(&study, &sharer)
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
