//! Bringing up a job's link: claim the single-use randomness, connect to the peer over TLS,
//! compare session tags, and only then record the randomness as consumed.

use crate::ring::Party;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::state::{Claim, Record};
use super::ReadyJob;
use crate::corr::engine_kind::EngineKind;
use crate::net::identity::{load_peer_cert, Identity};
use crate::net::link::Link;

/// How a server reaches its peer.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// This server's private key and certificate (from keygen).
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The only certificate the peer may present.
    pub peer_cert: PathBuf,
    /// S0 listens on it, S1 connects to it.
    pub addr: SocketAddr,
    /// How long to wait for the peer to appear, and for any single message.
    pub timeout: Duration,
    /// S0: the only addresses a connection is handshaken from (empty: any).
    pub peer_addrs: Vec<std::net::IpAddr>,
    /// S0: where to write the port it listens on, once bound.
    pub port_file: Option<PathBuf>,
    /// S0: a socket already listening (bound once for a study's slices, [`listen`]); none:
    /// each link binds `addr` itself.
    pub listener: Option<Arc<TcpListener>>,
}

/// Brings up the TLS link to the peer and checks that it holds the same `tag`, before
/// anything derived from a share is sent. On any failure `claim` is released (nothing was
/// consumed) and `mismatch` explains a differing peer tag; on success it is handed back,
/// still held, for the caller to [`Claim::consume`] before the protocol starts.
pub fn link_up(
    p: Party,
    cfg: &LinkConfig,
    claim: Claim,
    tag: &[u8],
    mismatch: impl FnOnce(&[u8]) -> String,
) -> Result<(Link, Claim)> {
    match open_link(p, cfg, tag) {
        Ok((link, peer_tag)) if peer_tag == tag => Ok((link, claim)),
        Ok((_, peer_tag)) => {
            claim.release();
            bail!("{}; nothing was consumed", mismatch(&peer_tag))
        }
        Err(e) => {
            claim.release();
            Err(e)
        }
    }
}

/// Brings up the TLS link to the peer (S0 listens, S1 connects) and exchanges `tag`, a
/// control message, before anything else: the link and the peer's tag, for the caller to
/// compare.
pub fn open_link(p: Party, cfg: &LinkConfig, tag: &[u8]) -> Result<(Link, Vec<u8>)> {
    let me = Identity::load(&cfg.key, &cfg.cert)?;
    let peer = load_peer_cert(&cfg.peer_cert)?;
    let timeout = cfg.timeout.max(Duration::from_secs(1));
    let mut link = if p.is_s0() {
        let bound;
        let listener = match &cfg.listener {
            Some(l) => l.as_ref(),
            None => {
                bound = listen(cfg)?;
                &bound
            }
        };
        Link::accept(listener, &me, &peer, timeout, &cfg.peer_addrs)?
    } else {
        Link::connect(cfg.addr, &me, &peer, timeout)?
    };
    link.set_io_timeout(timeout);
    // A control message: a frame longer than MAX_CONTROL is refused unread.
    let peer_tag = crate::twopc::channel::exchange(&mut link, p, tag)?;
    Ok((link, peer_tag))
}

/// S0's listening socket on `cfg.addr`, its port written to `cfg.port_file` when given.
pub fn listen(cfg: &LinkConfig) -> Result<TcpListener> {
    let listener = Link::bind(cfg.addr)?;
    if let Some(f) = &cfg.port_file {
        write_port(f, &listener)?;
    }
    Ok(listener)
}

/// Writes the port `listener` is bound to, and a line end, to `path` (atomically: whoever
/// waits for the file reads the whole port).
fn write_port(path: &std::path::Path, listener: &std::net::TcpListener) -> Result<()> {
    use anyhow::Context;
    let port = listener
        .local_addr()
        .context("reading the listening address")?
        .port();
    crate::fileio::atomic::write_bytes(path, format!("{port}\n").as_bytes())
        .with_context(|| format!("--port-file {}: cannot write", path.display()))
}

/// Claims the job's triplets, brings up the link and compares session tags; on success the
/// randomness is marked used. A mismatch is explained and consumes nothing.
pub fn connect(job: &ReadyJob, cfg: &LinkConfig) -> Result<Link> {
    let p = job.party;
    let claim = Claim::take(
        // The state directory `prepare` checked the triplets against.
        &job.files.state_dir,
        p,
        Record::Triplets,
        &job.triplet_id,
        &job.files.triplets,
    )?;
    let (engine_kind, mask_field) = (job.engine_kind, job.mask_field.as_str());
    let (link, claim) = link_up(p, cfg, claim, &job.tag, |peer_tag| {
        explain_mismatch(peer_tag, &job.tag, engine_kind, mask_field)
    })?;
    // From here on the randomness counts as used, whatever happens next.
    claim.consume()?;
    Ok(link)
}

/// Why the peer's session tag `peer_tag` differs from this server's `own_tag` (of a job on
/// `engine_kind` with weights `mask_field`), most basic difference first: another build's
/// message format, another engine or engine version, other weights, another dealing.
fn explain_mismatch(
    peer_tag: &[u8],
    own_tag: &[u8],
    engine_kind: EngineKind,
    mask_field: &str,
) -> String {
    let rest = String::from_utf8_lossy(
        peer_tag
            .get(super::IDS_LEN + super::LEAD_LEN..)
            .unwrap_or_default(),
    );
    // "<mask>/<engine>/wire<N>"; a build before wire revision 2 sent "<mask>/<engine>".
    let (rest, peer_wire) = match rest.rsplit_once('/') {
        Some((head, w)) if w.starts_with("wire") => (head, Some(w)),
        _ => (&rest[..], None),
    };
    let own_wire = format!("wire{}", super::WIRE_REVISION);
    if peer_wire != Some(own_wire.as_str()) {
        let peer = peer_wire.map_or("none (a build before wire revision 2)".into(), |w| {
            format!("revision {}", w.trim_start_matches("wire"))
        });
        return format!(
            "the peer server's job messages are of wire format {peer}, this one's of revision {}: run the same ppdenoise version on both servers",
            super::WIRE_REVISION
        );
    }
    let (peer_mask, peer_engine) = rest.rsplit_once('/').unwrap_or(("?", "?"));
    let weights = |m: &str| match m {
        "per-job" => "opens the weights in the job".to_string(),
        id => format!("uses the weights opened under model mask {id}"),
    };
    let peer_base = peer_engine.split('+').next().unwrap_or(peer_engine);
    if peer_engine != engine_kind.wire_name() && peer_base == engine_kind.name() {
        format!(
            "the peer server runs another version of the {peer_base} engine ({peer_engine}, this one {}): run the same ppdenoise version on both servers",
            engine_kind.wire_name()
        )
    } else if peer_engine != engine_kind.wire_name() {
        format!(
            "the peer server runs the {peer_base} engine, this one {engine_kind}: start both with the same --engine and triplets from one `gen-triplets` run"
        )
    } else if peer_mask != mask_field {
        format!(
            "the peer server {}, this one {}: give both servers triplets from one `gen-triplets` run and the opened weights of one `open-weights` run",
            weights(peer_mask),
            weights(mask_field)
        )
    } else if peer_tag.get(..super::IDS_LEN) == own_tag.get(..super::IDS_LEN) {
        "the peer server's triplet file names the same job, model and dealer run but another public lead (widths, batch, engine, circuit, model mask or base OTs), or its opened weights differ from this one's: the two files are not halves of one dealing, or one server's --weights was altered".into()
    } else {
        "the peer server holds files of a different job, model or dealer run".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(ids: u8, tail: &str) -> Vec<u8> {
        let mut t = vec![ids; super::super::IDS_LEN];
        t.extend_from_slice(&[9; super::super::LEAD_LEN]);
        t.extend_from_slice(tail.as_bytes());
        t
    }

    /// A peer of another wire revision, or of a build before revisions, is refused naming
    /// both revisions (before any other difference its tag shows); the other differences
    /// are still told apart.
    #[test]
    fn a_peer_of_another_wire_revision_is_refused_naming_both() {
        let gmw = EngineKind::Gmw;
        let own = tag(1, &super::super::tag_tail("per-job", gmw));
        assert!(own.ends_with(format!("/gmw/wire{}", super::super::WIRE_REVISION).as_bytes()));
        let why = |peer: &[u8]| explain_mismatch(peer, &own, gmw, "per-job");
        let now = super::super::WIRE_REVISION;
        let before = now - 1;
        let e = why(&tag(1, "per-job/gmw"));
        assert!(
            e.contains(&format!(
                "wire format none (a build before wire revision 2), this one's of revision {now}"
            )),
            "{e}"
        );
        let e = why(&tag(1, &format!("per-job/gmw/wire{before}")));
        assert!(
            e.contains(&format!(
                "wire format revision {before}, this one's of revision {now}"
            )),
            "{e}"
        );
        // An older build on another engine too: the format is named first.
        let e = why(&tag(1, "per-job/gc"));
        assert!(e.contains("wire format none"), "{e}");
        let e = why(&tag(1, &format!("per-job/gc+tccr2/wire{now}")));
        assert!(e.contains("runs the gc engine"), "{e}");
        let e = why(&tag(1, &format!("ab12/gmw/wire{now}")));
        assert!(e.contains("model mask ab12"), "{e}");
        let e = why(&tag(2, &format!("per-job/gmw/wire{now}")));
        assert!(e.contains("different job, model or dealer run"), "{e}");
    }
}
