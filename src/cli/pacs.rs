//! The archive's options (`share-study --from`, `reconstruct --to`, `file-series`) and the
//! `file-series` command, parsed here and run by [`crate::pacs`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::Summary;
use crate::pacs::archive::Archive;
use crate::pacs::dimse::retrieve::DimseLocal;
use crate::pacs::dimse::store_scu::Local;
use crate::pacs::dimse::{checked_aet, DimseAddr};
use crate::pacs::http::{Auth, Options};
use crate::pacs::{push, ArchiveUrl};

/// How to reach an archive: DICOMweb (`dicomweb:URL`) or DIMSE (`dimse:AET@HOST:PORT`).
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
    /// DIMSE: the longest, in seconds, one exchange with the archive may last, from our
    /// request to its last answer (a C-FIND's answers, a C-MOVE however often the archive
    /// answers "pending", one C-STORE), however often it answers within --archive-timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub archive_max_secs: u64,
    /// Allow a plain http:// archive on another machine (without credentials): the study's
    /// pixels and headers then cross the network in the clear. Off: only https, or http on
    /// this machine.
    #[arg(long)]
    pub archive_insecure_http: bool,
    /// DIMSE: our AE title, calling the archive and the destination of its C-MOVE (the
    /// archive must know it: docs/pacs.md).
    #[arg(long, value_name = "AET", default_value = "PPDENOISE")]
    pub our_aet: String,
    /// DIMSE: the port our receiving AE listens on while `share-study --from dimse:` moves a
    /// series (the archive's entry for --our-aet names it).
    #[arg(long, value_name = "PORT", default_value_t = 11112)]
    pub our_port: u16,
    /// DIMSE: the address our receiving AE listens on (0.0.0.0: every interface, for an
    /// archive on another machine).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub our_bind: String,
    /// DIMSE: the longest, in seconds, one association into our receiving AE may last while
    /// a series is moved (the archive's carries the whole series; one that lasts longer,
    /// whoever made it, is cut).
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub our_assoc_max_secs: u64,
    /// DIMSE: an address (IP) the archive's C-STOREs come from besides those its host name
    /// resolves to (a NAT, a container, a cluster behind one name); repeatable.
    #[arg(long, value_name = "ADDR")]
    pub archive_from: Vec<std::net::IpAddr>,
}

impl ArchiveArgs {
    /// The options a command repeating this one's filing must be given too (a hint's
    /// `file-series` line): the credentials' source (never the credentials), the CA, plain
    /// http, our AE title; empty when none was given.
    pub fn repeated(&self) -> String {
        let mut o = String::new();
        if let Some(v) = &self.archive_auth_env {
            o += &format!(" --archive-auth-env {v}");
        }
        if let Some(f) = &self.archive_auth_file {
            o += &format!(" --archive-auth-file {}", f.display());
        }
        if let Some(f) = &self.archive_ca {
            o += &format!(" --archive-ca {}", f.display());
        }
        if self.archive_insecure_http {
            o += " --archive-insecure-http";
        }
        if self.our_aet != "PPDENOISE" {
            o += &format!(" --our-aet {}", self.our_aet);
        }
        o
    }

    /// The archive `url` (`dicomweb:URL` or `dimse:AET@HOST:PORT`; `what` names its
    /// option), its credentials read.
    pub fn client(&self, url: &str, what: &str) -> Result<Archive> {
        if url.starts_with("dimse:") {
            let to = DimseAddr::parse(url, what)?;
            if self.archive_auth_env.is_some() || self.archive_auth_file.is_some() {
                anyhow::bail!("{what} {to}: a DIMSE archive takes no credentials (--archive-auth-*): it knows us by our AE title, --our-aet");
            }
            return Ok(Archive::Dimse {
                to,
                local: DimseLocal {
                    scu: Local {
                        aet: checked_aet(&self.our_aet, "--our-aet")?,
                        timeout: Duration::from_secs(self.archive_timeout),
                        exchange: Duration::from_secs(self.archive_max_secs),
                    },
                    bind: self.our_bind.clone(),
                    port: self.our_port,
                    max_instance: crate::pacs::pull::MAX_INSTANCE,
                    assoc_max: Duration::from_secs(self.our_assoc_max_secs),
                    archive_from: self.archive_from.iter().map(|a| a.to_canonical()).collect(),
                },
            });
        }
        let url = ArchiveUrl::parse(url, what)?;
        if !self.archive_from.is_empty() {
            anyhow::bail!("{what} {url}: --archive-from is for a DIMSE archive (dimse:AET@HOST:PORT), whose C-STOREs come to us; a DICOMweb archive only answers our requests");
        }
        let auth = match (&self.archive_auth_env, &self.archive_auth_file) {
            (Some(v), _) => Some(Auth::from_env(v)?),
            (_, Some(f)) => Some(Auth::from_file(f)?),
            _ => None,
        };
        crate::pacs::http::Client::new(
            url,
            &Options {
                auth,
                ca: self.archive_ca.clone(),
                timeout: Duration::from_secs(self.archive_timeout),
                retries: self.archive_retries,
                insecure_http: self.archive_insecure_http,
            },
        )
        .map(Archive::Web)
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
    /// The archive: dicomweb:URL (its DICOMweb root) or dimse:AET@HOST:PORT (C-STORE).
    #[arg(long, value_name = "dicomweb:URL|dimse:AET@HOST:PORT")]
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
    let (line, filed) = c.file_into(&files, a.quiet)?;
    Ok(Summary {
        lines: vec![line],
        json: serde_json::json!({"ok": true, "command": "file-series", "filed": filed}),
    })
}

/// A receiving node for archives that push (a C-STORE SCP): each instance received is written
/// to DIR/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, one folder per series that `share-study
/// --in` takes. Only image storage classes are accepted; an instance past a bound is refused
/// with a C-STORE failure status. Runs until SIGTERM or SIGINT, or as --once and
/// --idle-timeout say; one audit line per association (docs/pacs.md).
#[derive(Args)]
pub struct ReceiveArgs {
    /// Our AE title: the one senders call (an association calling another is rejected).
    #[arg(long, value_name = "AET")]
    pub aet: String,
    /// The port to listen on.
    #[arg(long, value_name = "PORT")]
    pub port: u16,
    /// The address to listen on (0.0.0.0: every interface).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: String,
    /// The folder the series' folders are written into (made when missing).
    #[arg(long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Only associations from these calling AE titles (repeat it; default: any).
    #[arg(long = "allow-aet", value_name = "AET")]
    pub allow_aet: Vec<String>,
    /// The largest instance accepted, in MiB (its data set as sent).
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_instance_mib: u64,
    /// The most written in all by this run, in MiB; past it every instance is refused.
    #[arg(long, value_name = "MIB", default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_total_mib: u64,
    /// Stop after the first association ends.
    #[arg(long)]
    pub once: bool,
    /// Stop after this many seconds without an association (default: never).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: Option<u64>,
    /// The longest wait for a sender's next message within an association, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub assoc_timeout: u64,
    /// The longest one association may last, in seconds, from when the receiver takes its
    /// connection from the queue (a sender that sends a little within each --assoc-timeout
    /// would otherwise hold the receiver, which serves one association at a time): then its connection is shut, an instance still
    /// arriving is not written, and the next association is served.
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub assoc_max_secs: u64,
    /// The longest a connection may take to be associated, in seconds, from when the receiver
    /// takes it (at most --assoc-max-secs): a peer dripping its association request, whose AE
    /// title (--allow-aet) is checked only once the request is whole, is cut then.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub negotiation_secs: u64,
    /// No line per instance.
    #[arg(long)]
    pub quiet: bool,
}

/// Set by SIGTERM and SIGINT while `receive` runs.
static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: what a signal handler may do.
    SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub fn receive(a: ReceiveArgs, audit: Option<PathBuf>) -> Result<Summary> {
    use crate::pacs::dimse::store_scp::{Receiver, ScpOptions, Until};
    let aet = checked_aet(&a.aet, "--aet")?;
    let allow = a
        .allow_aet
        .iter()
        .map(|t| checked_aet(t, "--allow-aet"))
        .collect::<Result<Vec<_>>>()?;
    let mut trail = audit
        .as_deref()
        .map(crate::audit::Trail::open)
        .transpose()?;
    let mut rx = Receiver::bind(ScpOptions {
        aet: aet.clone(),
        bind: a.bind.clone(),
        port: a.port,
        out: a.out.clone(),
        max_instance: a.max_instance_mib << 20,
        max_total: a.max_total_mib << 20,
        calling: (!allow.is_empty()).then_some(allow),
        assoc_timeout: Duration::from_secs(a.assoc_timeout),
        assoc_max: Duration::from_secs(a.assoc_max_secs),
        negotiation: Duration::from_secs(a.negotiation_secs),
        peers: None,
        quiet: a.quiet,
        expect: None,
    })
    .with_context(|| format!("receive --aet {aet}"))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stop = rx.stopper();
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.stopped() {
                if SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
                    stop.stop();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    eprintln!("receiving as {aet} on {}:{}", a.bind, rx.port());
    let (mut stored, mut refused, mut bytes, mut errors) = (0usize, 0usize, 0u64, Vec::new());
    let mut series = std::collections::BTreeSet::new();
    let ran = rx.run(
        Until {
            once: a.once,
            idle: a.idle_timeout.map(Duration::from_secs),
        },
        &mut |r| {
            stored += r.stored;
            refused += r.refused.len();
            bytes += r.bytes;
            series.extend(r.series.keys().cloned());
            if !a.quiet {
                eprintln!(
                    "association from {} ({}): {}, {} instances stored, {} refused",
                    r.peer_aet,
                    r.peer_addr,
                    crate::pacs::printable(&r.end),
                    r.stored,
                    r.refused.len()
                );
            }
            if let Some(t) = trail.as_mut() {
                // Ids, counts and statuses: never a path or a reason naming one.
                let statuses: Vec<u16> = r.refused.iter().map(|f| f.status).collect();
                let ok = r.end == "released";
                let line = serde_json::json!({
                    "time": chrono::Utc::now().to_rfc3339(), "command": "receive",
                    "party": "gateway", "result": if ok { "ok" } else { "error" },
                    "association": {"our_aet": aet, "peer_aet": r.peer_aet,
                        "peer_addr": r.peer_addr, "end": if ok { "released" } else { r.end.split(':').next().unwrap_or("") },
                        "series": r.series, "stored": r.stored, "bytes": r.bytes,
                        "refused": statuses},
                });
                if let Err(e) = t.append(&line) {
                    errors.push(format!("{e:#}"));
                }
            }
        },
    );
    stop.stop();
    let _ = watcher.join();
    let served = ran?;
    if let Some(e) = errors.first() {
        anyhow::bail!("{e}");
    }
    let series: Vec<String> = series.into_iter().collect();
    Ok(Summary {
        lines: vec![format!(
            "received {stored} instances ({bytes} bytes) of {} series in {served} associations \
             as {aet}, refused {refused}, into {}",
            series.len(),
            a.out.display()
        )],
        json: serde_json::json!({"ok": true, "command": "receive", "associations": served,
            "stored": stored, "refused": refused, "bytes": bytes, "series": series}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        archive: ArchiveArgs,
    }

    fn parse(args: &[&str]) -> Result<ArchiveArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.archive)
    }

    /// --archive-from takes IP addresses (repeatable; an IPv4 address written as IPv6 is the
    /// IPv4 one, as a socket reports it) and only for a DIMSE archive; a host name is refused
    /// by the parser, naming the option, since a name could resolve elsewhere later.
    #[test]
    fn archive_from_takes_ip_addresses_for_a_dimse_archive() {
        let a = parse(&[
            "--archive-from",
            "172.17.0.2",
            "--archive-from",
            "::ffff:10.0.0.1",
        ])
        .unwrap();
        let Archive::Dimse { local, .. } = a.client("dimse:PACS@127.0.0.1:4242", "--from").unwrap()
        else {
            panic!("not a DIMSE archive");
        };
        let want: Vec<std::net::IpAddr> =
            vec!["172.17.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        assert_eq!(local.archive_from, want);
        let e = parse(&["--archive-from", "pacs.example"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--archive-from") && e.contains("pacs.example"),
            "{e}"
        );
        let e = parse(&["--archive-from", "172.17.0.2"])
            .unwrap()
            .client("dicomweb:http://127.0.0.1:8042/dicom-web/", "--from")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--archive-from is for a DIMSE archive"), "{e}");
    }
}
