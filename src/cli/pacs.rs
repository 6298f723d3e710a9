//! The archive's options (`share-study --from`, `reconstruct --to`, `file-series`) and the
//! `file-series` command, parsed here and run by [`crate::pacs`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::Summary;
use crate::pacs::http::{Auth, Client, Options};
use crate::pacs::{push, ArchiveUrl};

/// How to reach a DICOMweb archive.
#[derive(Args, Clone, Default)]
pub struct ArchiveArgs {
    /// The archive's credentials, in this environment variable: `basic:USER:PASSWORD` or
    /// `bearer:TOKEN` (never on the command line, where `ps` shows it).
    #[arg(long, value_name = "VAR", conflicts_with = "archive_auth_file")]
    pub archive_auth_env: Option<String>,
    /// The archive's credentials, the first line of this file (as --archive-auth-env).
    #[arg(long, value_name = "FILE")]
    pub archive_auth_file: Option<PathBuf>,
    /// A PEM file of the CA certificates that sign the archive's TLS certificate (default:
    /// the system's).
    #[arg(long, value_name = "FILE")]
    pub archive_ca: Option<PathBuf>,
    /// Seconds one request to the archive may take, connection to last byte.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub archive_timeout: u64,
    /// How many times a request that may pass (a dropped connection, a timeout, HTTP 408,
    /// 429 or 5xx) is tried again, waiting 0.25 s, then twice as long each time (4 s at most).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub archive_retries: u32,
    /// Allow a plain http:// archive on another machine (without credentials): the study's
    /// pixels and headers then cross the network in the clear. Off: only https, or http on
    /// this machine.
    #[arg(long)]
    pub archive_insecure_http: bool,
}

impl ArchiveArgs {
    /// The client of the archive `url` (`dicomweb:URL`; `what` names its option), its
    /// credentials read.
    pub fn client(&self, url: &str, what: &str) -> Result<Client> {
        let url = ArchiveUrl::parse(url, what)?;
        let auth = match (&self.archive_auth_env, &self.archive_auth_file) {
            (Some(v), _) => Some(Auth::from_env(v)?),
            (_, Some(f)) => Some(Auth::from_file(f)?),
            _ => None,
        };
        Client::new(
            url,
            &Options {
                auth,
                ca: self.archive_ca.clone(),
                timeout: Duration::from_secs(self.archive_timeout),
                retries: self.archive_retries,
                insecure_http: self.archive_insecure_http,
            },
        )
    }
}

/// File a folder of DICOM files (one derived series, as `reconstruct --study` wrote it) into
/// an archive with STOW-RS: the re-run of `reconstruct --to` when filing failed part way
/// (the same instances, so the archive does not hold them twice).
#[derive(Args)]
pub struct FileSeriesArgs {
    /// The folder of the series' DICOM files (every regular file in it with DICM at byte 128, whatever its name).
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// The archive: dicomweb:URL (its DICOMweb root).
    #[arg(long, value_name = "dicomweb:URL")]
    pub to: String,
    /// No line per instance.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

pub fn file_series(a: FileSeriesArgs) -> Result<Summary> {
    let files = push::dicom_files(&a.input)?;
    let c = a.archive.client(&a.to, "--to")?;
    let (line, filed) = push::file_into(&c, &files, a.quiet)?;
    Ok(Summary {
        lines: vec![line],
        json: serde_json::json!({"ok": true, "command": "file-series", "filed": filed}),
    })
}
