//! Studies: a folder of slices (one DICOM series, or PNG/TIFF images), every slice its own
//! job. A layer above the jobs ([`crate::job`]): the study is shared slice by slice
//! (`share.rs`), the slices not finished are dealt (`deal.rs`) and served (`serve.rs`), each
//! finished slice leaves a signed completion record from which a study that died resumes
//! (`records.rs`, `status.rs`), and the slices come back as one derived series
//! (`series.rs`). The files are those of [`crate::formats::study`]; the commands of
//! src/cli/ parse their arguments and call these.

pub mod deal;
pub mod records;
pub mod series;
pub mod serve;
pub mod share;
pub mod status;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Where each server's files of a study are, when not in the study folder itself.
#[derive(Clone, Default)]
pub struct ServerDirs {
    /// S0's copy of the study folder (its slice<I>/out.p0 and done.p0).
    pub s0_dir: Option<PathBuf>,
    /// S1's copy (slice<I>/out.p1 and done.p1).
    pub s1_dir: Option<PathBuf>,
}

impl ServerDirs {
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
