//! The servers' commands: `keygen` (link identity) and `serve` (parsed here; one job run by
//! [`crate::job::server`], a study's slices by [`crate::study::serve`]).

use crate::ring::Party;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser;
use clap::Args;
use zeroize::Zeroize;

use super::keys::{IdentityArgs, ServerSignArgs, TrustArgs};
use super::owner::with_suffix;
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::fileio::atomic;
use crate::formats::sealed::{self, Recipient};
use crate::job::progress::Mode;
use crate::job::server::{serve_job, JobPaths, ServeJob, ServeKeys};
use crate::net::identity::keygen as make_identity;
use crate::server::session::LinkConfig;

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
    pub fn check(&self, party: Party) -> Result<()> {
        if party.is_s1() && !self.peer_addr.is_empty() {
            bail!("--peer-addr: S0's allow-list of S1's addresses; S1 connects to --addr");
        }
        if party.is_s1() && self.port_file.is_some() {
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
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1).try_map(Party::try_from))]
    pub party: Party,
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
        return serve_study(&a, dir, mode);
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
    Ok(serve_job(&a.job(), &serve_keys(&a)?, &paths, mode)?.0)
}

/// What a server loads once, before any file is read: [`ServeKeys`].
fn serve_keys(a: &ServeArgs) -> Result<ServeKeys> {
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

impl ServeArgs {
    /// The job-level options of these arguments (the same for every slice of a study).
    fn job(&self) -> ServeJob {
        ServeJob {
            party: self.party,
            model: self.model.clone(),
            weights: self.weights.clone(),
            engine: self.engine,
            state_dir: self.link.state_dir.clone(),
            keys: [&self.link.key, &self.link.cert, &self.link.peer_cert]
                .into_iter()
                .cloned()
                .chain(self.identity.identity.clone())
                .chain(self.signing.sign_key.clone())
                .collect(),
            plain_out: self.plain_out,
            keep_triplets: self.keep_triplets,
        }
    }
}

/// `serve --study`: the slices one after another ([`crate::study::serve`]).
fn serve_study(a: &ServeArgs, dir: &Path, mode: Mode) -> Result<Summary> {
    let study = crate::study::serve::StudyServe {
        dir,
        slices: a.slices.as_deref(),
        keep_going: a.keep_going,
    };
    crate::study::serve::serve_study(&study, &a.job(), &|| serve_keys(a), mode)
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
        assert!(a.check(Party::S0).is_ok());
        let e = a.check(Party::S1).unwrap_err().to_string();
        assert!(e.contains("--port-file"), "{e}");
    }

    /// `--peer-addr` is S0's allow-list: refused on S1, and for an address that names no peer.
    #[test]
    fn peer_addr_refusals() {
        assert!(link_args(&["10.0.0.7", "::1"]).check(Party::S0).is_ok());
        assert!(link_args(&[]).check(Party::S1).is_ok());
        let e = link_args(&["10.0.0.7"])
            .check(Party::S1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("S0's allow-list"), "{e}");
        for unspecified in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            let e = link_args(&["10.0.0.7", unspecified])
                .check(Party::S0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("names no address"), "{unspecified}: {e}");
        }
    }
}
