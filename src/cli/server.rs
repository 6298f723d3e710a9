//! The servers' steps: `keygen` (link identity) and `serve` (the two-party protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroize::Zeroize;

use super::keys::{IdentityArgs, ServerSignArgs, TrustArgs};
use super::owner::with_suffix;
use super::progress::{Mode, Progress};
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::formats::atomic;
use crate::formats::sealed::{self, Recipient};
use crate::net::identity::keygen as make_identity;
use crate::server::session::{self, LinkConfig};
use crate::server::state::check_output;
use crate::server::{self, JobFiles};
use crate::twopc::channel::with_queued_link;

/// Create a party's keys: for the S0<->S1 link, <out-dir>/<name>.key (private, mode 0600)
/// and <out-dir>/<name>.crt (self-signed certificate to give to the other server); for files
/// at rest, <out-dir>/<name>.age-identity (age identity, private, mode 0600) and <name>.age-recipient (its
/// recipient, to give to whoever makes this party's files: `--to-s0`, `--to-s1`, `--out-to`).
/// With --signing, instead: a file-signing key for the dealer, the model owner or the
/// gateway, <out-dir>/<name>.sign-key (private, mode 0600, for their --sign-key) and
/// <name>.sign-pub (its public key, for the servers' --dealer-key, --owner-key,
/// --gateway-key or trust file).
#[derive(Args)]
pub struct KeygenArgs {
    /// Identity name, e.g. s0 or s1 (also the certificate's subject name).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Replace existing key and certificate files.
    #[arg(long)]
    pub force: bool,
    /// Make a file-signing key pair (for the dealer, the model owner or the gateway) instead
    /// of a server's link and file-encryption keys.
    #[arg(long)]
    pub signing: bool,
}

/// `keygen --signing`: <name>.sign-key and <name>.sign-pub.
fn keygen_signing(a: &KeygenArgs) -> Result<Summary> {
    let prefix = a.out_dir.join(&a.name);
    let (key, public) = (
        with_suffix(&prefix, ".sign-key"),
        with_suffix(&prefix, ".sign-pub"),
    );
    if !a.force {
        for p in [&key, &public] {
            if p.exists() {
                bail!(
                    "{}: already exists; refusing to overwrite it (remove it first, or give --force)",
                    p.display()
                );
            }
        }
    }
    let (mut text, pk) = crate::formats::signing::new_key(&a.name)?;
    // A temporary file is made 0600, and the rename keeps its mode.
    let written = atomic::write_bytes(&key, text.as_bytes());
    text.zeroize();
    written?;
    atomic::write_bytes(
        &public,
        format!("# ppdenoise signing public key of {}\n{pk}\n", a.name).as_bytes(),
    )?;
    Ok(Summary {
        lines: vec![format!(
            "wrote {} (private: --sign-key of whoever makes files as {}) and {} (give it to both servers: --dealer-key, --owner-key or --gateway-key, or a trust file line `<role> {pk}`)",
            key.display(),
            a.name,
            public.display()
        )],
        json: serde_json::json!({"ok": true, "command": "keygen", "sign_key": key,
            "sign_pub": public, "public_key": pk.to_string()}),
    })
}

pub fn keygen(a: KeygenArgs) -> Result<Summary> {
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
    if a.signing {
        return keygen_signing(&a);
    }
    let prefix = a.out_dir.join(&a.name);
    let (age_id, age_pub) = (
        with_suffix(&prefix, ".age-identity"),
        with_suffix(&prefix, ".age-recipient"),
    );
    if !a.force {
        for p in [&age_id, &age_pub] {
            if p.exists() {
                bail!(
                    "{}: already exists; refusing to overwrite it (remove it first, or give --force)",
                    p.display()
                );
            }
        }
    }
    let id = make_identity(&a.name)?;
    id.save(&prefix, a.force)?;
    let fp = id.fingerprint().to_string();
    let (mut secret, recipient) = sealed::new_identity();
    let mut text = format!(
        "# ppdenoise file-encryption identity of {}\n# public key: {recipient}\n{secret}\n",
        a.name
    );
    let written = atomic::write_bytes(&age_id, text.as_bytes());
    secret.zeroize();
    text.zeroize();
    written?;
    atomic::write_bytes(&age_pub, format!("{recipient}\n").as_bytes())?;
    Ok(Summary {
        lines: vec![
            format!(
                "wrote {0}.key (private) and {0}.crt (give it to the peer server); fingerprint {fp}",
                prefix.display()
            ),
            format!(
                "wrote {} (private) and {} (give it to whoever makes this party's files); recipient {recipient}",
                age_id.display(),
                age_pub.display()
            ),
        ],
        json: serde_json::json!({"ok": true, "command": "keygen", "key": format!("{}.key", prefix.display()),
            "cert": format!("{}.crt", prefix.display()), "fingerprint": fp,
            "age_identity": age_id, "age_recipient": recipient.to_string()}),
    })
}

/// How a server reaches its peer, and where it records consumed randomness.
#[derive(Args)]
pub struct LinkArgs {
    /// This server's private key and certificate (from keygen).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub cert: PathBuf,
    /// The only certificate the peer server may present.
    #[arg(long)]
    pub peer_cert: PathBuf,
    /// Address: S0 listens on it, S1 connects to it.
    #[arg(long, default_value = "127.0.0.1:7455")]
    pub addr: SocketAddr,
    /// Seconds to wait for the peer to appear, and for any single message.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Where consumed correlated randomness is recorded.
    #[arg(long, default_value = ".ppdenoise-state")]
    pub state_dir: PathBuf,
    /// S0: handshake only with connections from these addresses (the peer's, e.g.
    /// `--peer-addr 10.0.0.7`; repeat or comma-separate for several); others are closed at
    /// once. Default: any address (the pinned certificate still decides who the peer is).
    #[arg(long, value_delimiter = ',')]
    pub peer_addr: Vec<std::net::IpAddr>,
    /// S0: write the port it listens on to this file once bound; with `--addr
    /// 127.0.0.1:0` the system picks a free one, and whoever starts S1 reads it there
    /// (scripts, tests). A study's S0 binds once and keeps listening there for every slice.
    #[arg(long, value_name = "FILE")]
    pub port_file: Option<PathBuf>,
}

impl LinkArgs {
    /// What only makes sense for one party, and addresses that name no peer, refused.
    pub fn check(&self, party: u8) -> Result<()> {
        if party == 1 && !self.peer_addr.is_empty() {
            bail!("--peer-addr: S0's allow-list of S1's addresses; S1 connects to --addr");
        }
        if party == 1 && self.port_file.is_some() {
            bail!("--port-file: where S0 writes the port it listens on; S1 connects to --addr");
        }
        if let Some(a) = self
            .peer_addr
            .iter()
            .find(|a| a.to_canonical().is_unspecified())
        {
            bail!("--peer-addr {a}: names no address; give the peer's");
        }
        Ok(())
    }

    pub fn config(&self) -> LinkConfig {
        LinkConfig {
            key: self.key.clone(),
            cert: self.cert.clone(),
            peer_cert: self.peer_cert.clone(),
            addr: self.addr,
            timeout: Duration::from_secs(self.timeout),
            peer_addrs: self.peer_addr.clone(),
            port_file: self.port_file.clone(),
            listener: None,
        }
    }
}

/// Run one server of the two-party protocol on its shares and write its output share.
///
/// S0 listens, S1 connects; the link is TLS 1.3 with both certificates pinned. Correlated
/// randomness is recorded as consumed in --state-dir before use and refused a second time.
#[derive(Args)]
pub struct ServeArgs {
    /// 0 (listens; evaluates garbled circuits) or 1 (connects; garbles).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub party: u8,
    /// This party's model share (model.pN).
    #[arg(long)]
    pub model: PathBuf,
    /// This party's image share (image.pN).
    #[arg(long, required_unless_present = "study")]
    pub image: Option<PathBuf>,
    /// This party's correlated randomness (triplets.pN).
    #[arg(long, required_unless_present = "study")]
    pub triplets: Option<PathBuf>,
    /// This party's opened weights (from `open-weights`), when the triplets were made against
    /// a model mask (`gen-triplets --model-mask`).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Output share (out.pN).
    #[arg(long, required_unless_present = "study")]
    pub out: Option<PathBuf>,
    /// Run a study's slices one after another instead of one job: this party's copy of the
    /// study folder from `share-study` (slice<I>/image.pN and triplets.pN in, slice<I>/out.pN
    /// and a completion record done.pN out). A slice this party finished with its current
    /// triplets is skipped, so a study that died resumes where it stopped.
    #[arg(long, conflicts_with_all = ["image", "triplets", "out"])]
    pub study: Option<PathBuf>,
    /// With --study: these slices only, e.g. `3` (one Slurm array task) or `0-9,12`; the
    /// peer server must be given the same. Default: every slice, in order.
    #[arg(long, requires = "study")]
    pub slices: Option<String>,
    /// Seal the output share to the receiver: its `age1...` recipient, or the file keygen
    /// wrote for it (<name>.age-recipient); `reconstruct --identity` then opens it.
    #[arg(long, value_name = "RECIPIENT")]
    pub out_to: Option<String>,
    /// Write the output share unencrypted although the inputs are sealed.
    #[arg(long, conflicts_with = "out_to")]
    pub plain_out: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub signing: ServerSignArgs,
    /// Show no progress (on a terminal a bar; otherwise a line every few seconds, on stderr).
    #[arg(long)]
    pub quiet: bool,
    /// Show progress on stderr even with --json (`demo` runs S0 so).
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// Keep a triplet file whole once its randomness is recorded as consumed. By default a
    /// run that consumed it cuts it to its header (a sealed one is removed): the values can
    /// never be used again, and a study's files are large (about 1.9 GB for a 512x512
    /// FFDNet slice). The header stays, so that a second run is refused by name.
    #[arg(long)]
    pub keep_triplets: bool,
    /// With --study: go on past a slice that fails, and list every failure at the end with
    /// the slices to deal and serve again (the run still fails). Both servers should be
    /// given it.
    #[arg(long, requires = "study")]
    pub keep_going: bool,
    /// Nonlinearity engine (gc or gmw); must match the triplet file (default: the file's).
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
}

pub fn serve(a: ServeArgs, json: bool) -> Result<Summary> {
    let mode = if a.progress {
        Mode::shown()?
    } else {
        Mode::new(a.quiet, json)?
    };
    if let Some(dir) = &a.study {
        return super::study::serve_study(&a, dir, mode);
    }
    if a.slices.is_some() {
        bail!("--slices: applies to a study (--study) only");
    }
    let need = |p: &Option<PathBuf>| p.clone().expect("clap requires it without --study");
    let paths = JobPaths {
        image: need(&a.image),
        triplets: need(&a.triplets),
        out: need(&a.out),
    };
    Ok(serve_job(&a, &ServeKeys::load(&a)?, &paths, mode)?.0)
}

/// What a server loads once, before any file is read, for one job or a study's slices: whose
/// files it accepts, its identity (registered for this process's reads), the receiver it
/// seals to, the key it signs with and how it reaches its peer.
pub struct ServeKeys {
    pub trust: crate::formats::signing::Trust,
    out_to: Option<Recipient>,
    pub signer: Option<crate::formats::signing::Signer>,
    /// A study's S0 puts the socket it listens on for every slice here.
    pub link: LinkConfig,
}

impl ServeKeys {
    pub fn load(a: &ServeArgs) -> Result<ServeKeys> {
        // A server that takes unsigned inputs must not vouch for what it made of them: a
        // forger who can write its plain inputs would get a pair the receiver accepts.
        if a.trust.insecure_unsigned {
            if let Some(k) = &a.signing.sign_key {
                bail!(
                    "--sign-key {}: a server run with --insecure-unsigned takes inputs whoever made them, so its signature would vouch for files anyone can write; sign only with the makers' keys pinned (--dealer-key, --owner-key, --gateway-key or --trust), or leave out --sign-key",
                    k.display()
                );
            }
        }
        let trust = a.trust.load()?;
        a.link.check(a.party)?;
        a.identity.load()?;
        let out_to = a.out_to.as_deref().map(Recipient::parse).transpose()?;
        let signer = a.signing.load(a.party, out_to.is_some(), &trust)?;
        Ok(ServeKeys {
            trust,
            out_to,
            signer,
            link: a.link.config(),
        })
    }
}

/// One job's files (the rest of a `serve` comes from its arguments).
pub struct JobPaths {
    pub image: PathBuf,
    pub triplets: PathBuf,
    pub out: PathBuf,
}

/// Runs one job: the summary, and the run's job and triplet ids.
pub fn serve_job(
    a: &ServeArgs,
    k: &ServeKeys,
    paths: &JobPaths,
    mode: Mode,
) -> Result<(Summary, server::RunIds)> {
    serve_job_as(a, k, paths, mode, &format!("serve S{}", a.party))
}

/// [`serve_job`], its progress shown under `label` (a study's says which slice).
pub fn serve_job_as(
    a: &ServeArgs,
    k: &ServeKeys,
    paths: &JobPaths,
    mode: Mode,
    label: &str,
) -> Result<(Summary, server::RunIds)> {
    let p = a.party;
    let files = JobFiles {
        party: p,
        model: a.model.clone(),
        image: paths.image.clone(),
        triplets: paths.triplets.clone(),
        weights: a.weights.clone(),
        engine: a.engine,
        state_dir: a.link.state_dir.clone(),
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
    let keys = [&a.link.key, &a.link.cert, &a.link.peer_cert];
    let guarded: Vec<&std::path::Path> = inputs
        .iter()
        .copied()
        .chain(keys.into_iter().map(|p| p.as_path()))
        .chain(a.identity.identity.as_deref())
        .chain(a.signing.sign_key.as_deref())
        .collect();
    check_output(&paths.out, &guarded)?;
    // `prepare` opens each input once; under --insecure-unsigned it refuses sealed ones.
    let job = server::prepare(files)?;
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
    a: &ServeArgs,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link_args(peer_addr: &[&str]) -> LinkArgs {
        LinkArgs {
            key: "k".into(),
            cert: "c".into(),
            peer_cert: "p".into(),
            addr: "127.0.0.1:7455".parse().unwrap(),
            timeout: 60,
            state_dir: "s".into(),
            peer_addr: peer_addr.iter().map(|a| a.parse().unwrap()).collect(),
            port_file: None,
        }
    }

    /// `--port-file` is where S0 says its port: refused on S1.
    #[test]
    fn port_file_is_s0s() {
        let mut a = link_args(&[]);
        a.port_file = Some("port".into());
        assert!(a.check(0).is_ok());
        let e = a.check(1).unwrap_err().to_string();
        assert!(e.contains("--port-file"), "{e}");
    }

    /// `--peer-addr` is S0's allow-list: refused on S1, and for an address that names no peer.
    #[test]
    fn peer_addr_refusals() {
        assert!(link_args(&["10.0.0.7", "::1"]).check(0).is_ok());
        assert!(link_args(&[]).check(1).is_ok());
        let e = link_args(&["10.0.0.7"]).check(1).unwrap_err().to_string();
        assert!(e.contains("S0's allow-list"), "{e}");
        for unspecified in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            let e = link_args(&["10.0.0.7", unspecified])
                .check(0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("names no address"), "{unspecified}: {e}");
        }
    }
}
