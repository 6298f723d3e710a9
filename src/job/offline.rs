//! The two servers dealing one job between themselves, no dealer (`gen-triplets --party`):
//! each server runs this with the same public headers, they meet over their pinned TLS link,
//! and each leaves with its own triplet file, the very file a dealer would have written it
//! for the seeds the two drew (docs/protocol.md, "Dealing without a dealer"). So far the
//! gc engine's CNN graph jobs (whole, in tiles, a study's slices): their products by lattice
//! encryption (`offline::graph`), the engine's base OTs by the same product protocol
//! (`offline::base_ot`); the boolean engine's circuit correlations and the MLP's 64-bit
//! products are refused by name.
//!
//! Order on the link: the job's facts (both must be asked for the same job), party 0's
//! triplet id, both halves of the label seed, the base OTs, the products, the base OTs'
//! digests; each then writes its file and says so, and a file whose peer did not say so is
//! removed.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand09::rngs::StdRng;
use rand09::{Rng, SeedableRng};

use super::dealer::{
    dealer_header, pair_bytes, tile_prefix, write_own, DealJob, GraphDeal, GraphTile,
};
use super::{with_ext, Outputs, Summary};
use crate::corr::base_ots::{base_ot_digest, BaseOtForReceiver, BaseOtForSender, BASE_OT};
use crate::corr::engine_kind::EngineKind;
use crate::corr::operands::GraphOperands;
use crate::formats::bodies::{is_graph, TripletsLead};
use crate::formats::container::{fresh_id, id_hex, Header, Kind};
use crate::net::link::Link;
use crate::offline::graph::GraphProducts;
use crate::offline::{base_ot, graph::StepCorrection};
use crate::ring::share::fresh_seed;
use crate::ring::Party;
use crate::server::session::{open_link, LinkConfig};
use crate::twopc::channel::{exchange, Channel, Expect};

/// The version of this exchange: servers of builds either side refuse each other by it.
const REVISION: &str = "deal-together 1";

/// One server's half of a dealing without a dealer.
pub struct DealTogether {
    /// The job, as `gen-triplets` takes it (its `out` the prefix of this server's file).
    pub job: DealJob,
    pub party: Party,
    pub link: LinkConfig,
}

/// The facts both servers must agree on before anything is drawn, one per line, each
/// named: a differing line is the reason given.
fn job_facts(
    a: &DealJob,
    (mh, ih): (&Header, &Header),
    d: &GraphDeal,
    tile: &GraphTile,
) -> Result<Vec<(&'static str, String)>> {
    let id = |what: &str, id: Option<[u8; 16]>| {
        id.map(|i| id_hex(&i))
            .with_context(|| format!("the {what} header lacks its id"))
    };
    let header = d.header((mh, ih), a.engine, tile, [0; 16], Party::S0);
    // The builds' exchange and wire revisions were compared once, when the two met (`meet`).
    Ok(vec![
        ("the model", id("model", mh.model_id)?),
        ("the image", id("image", ih.job_id)?),
        ("the engine", a.engine.wire_name().to_string()),
        ("the ReLU batch", d.batch.to_string()),
        ("the tile", tile.label()),
        ("the padded size", format!("{}x{}", tile.rows, d.pw)),
        (
            "the digest of the model's public description and circuits",
            blake3::hash(&serde_json::to_vec(&header.info).expect("strings serialise"))
                .to_hex()
                .to_string(),
        ),
    ])
}

/// Refuses what this build cannot deal without a dealer, by name, before any file is read
/// past the model's header or the peer is met.
pub fn check_supported(a: &DealJob, mh: &Header) -> Result<()> {
    if !is_graph(mh) {
        bail!(
            "{}: an MLP's jobs are not yet dealt without a dealer (its output layer's 64-bit \
             products and tanh*'s are still the dealer's): use `gen-triplets` without --party",
            a.model.display()
        );
    }
    if a.engine != EngineKind::Gc {
        bail!(
            "--engine {}: the boolean engine's AND triples, daBits and extensions are not yet \
             made without a dealer; deal the job for --engine gc, or use `gen-triplets` \
             without --party",
            a.engine
        );
    }
    Ok(())
}

/// The bytes party `p`'s file of `tile` will take.
pub fn own_bytes(p: Party, tile: &GraphTile) -> u64 {
    let base = match p {
        Party::S0 => BaseOtForReceiver::BYTES,
        Party::S1 => BaseOtForSender::BYTES,
    } + 16;
    pair_bytes(tile.bits, base, base)[p.index()]
}

/// Refuses `need` bytes that the folder of `path` cannot hold (`what` names them).
pub fn check_space(path: &std::path::Path, need: u64, what: &str) -> Result<()> {
    use super::space::{check, folder_of, free_bytes};
    let dir = folder_of(path);
    check(dir, need, free_bytes(dir)?, what)
}

/// Agrees with the peer on the pieces (tiles, slices) both will deal, by a digest of their
/// list (a long list would not fit a control message): the same, or refused naming
/// `what` and this server's list.
pub fn agree_on(link: &mut Link, p: Party, what: &str, list: &str) -> Result<()> {
    let mut h = blake3::Hasher::new_derive_key("ppdenoise pieces dealt together v1");
    h.update(what.as_bytes());
    h.update(list.as_bytes());
    let digest = h.finalize();
    let theirs =
        exchange(link, p, digest.as_bytes()).with_context(|| format!("agreeing on the {what}"))?;
    if theirs != digest.as_bytes() {
        let said: String = list.chars().take(200).collect();
        let more = if said.len() < list.len() { "..." } else { "" };
        bail!(
            "the peer server would deal other {what} than this one's ({said}{more}): give both the same; nothing was made"
        );
    }
    Ok(())
}

/// What the two builds must share to deal together at all.
fn greeting() -> String {
    format!("{REVISION}/wire{}", crate::server::WIRE_REVISION)
}

/// Meets the peer server over the pinned link for dealing (S0 listens, S1 connects); both
/// builds must deal alike.
pub fn meet(p: Party, cfg: &LinkConfig) -> Result<Link> {
    let hello = greeting();
    let (link, peer) = open_link(p, cfg, hello.as_bytes())?;
    if peer != hello.as_bytes() {
        bail!(
            "the peer server deals with {:?}, this one with {hello:?}: run `gen-triplets --party` \
             of one ppdenoise version on both; nothing was made",
            String::from_utf8_lossy(&peer)
        );
    }
    Ok(link)
}

/// This server's half of one job's dealing (`gen-triplets --party`): headers read and
/// checked, the peer met, [`deal_on`].
pub fn deal_together(t: &DealTogether) -> Result<Summary> {
    let (a, p) = (&t.job, t.party);
    let mh = dealer_header(&a.model, Kind::PublicModel, Kind::ModelShare)?;
    check_supported(a, &mh)?;
    let ih = dealer_header(&a.image, Kind::PublicJob, Kind::ImageShare)?;
    let d = GraphDeal::check(a, (&mh, &ih))?;
    let out = with_ext(&a.out, p);
    let need = d.tiles.iter().map(|t| own_bytes(p, t)).sum();
    check_space(
        &out,
        need,
        &format!("this server's triplets {}", out.display()),
    )?;
    let mut link = meet(p, &t.link)?;
    let labels: Vec<String> = d.tiles.iter().map(GraphTile::label).collect();
    agree_on(&mut link, p, "tiles", &labels.join(","))?;
    // A tiled job's tiles one after another over the one link.
    let mut said = Vec::new();
    for (tile, label) in d.tiles.iter().zip(&labels) {
        let done = deal_on(&mut link, p, a, (&mh, &ih), (&d, tile));
        // The tiles dealt before a failure are whole pairs, kept: said, so they are not
        // dealt again.
        let before = &labels[..said.len()];
        said.push(done.with_context(|| match before.is_empty() {
            true => format!("tile {label}"),
            false => format!(
                "tile {label} (tiles {} were dealt and kept)",
                before.join(", ")
            ),
        })?);
    }
    if said.len() == 1 {
        return Ok(said.pop().expect("one"));
    }
    Ok(Summary {
        lines: said.iter().flat_map(|s| s.lines.clone()).collect(),
        json: serde_json::json!({
            "ok": true, "command": "gen-triplets", "party": p.index(), "dealer": false,
            "tiles": said.iter().map(|s| s.json.clone()).collect::<Vec<_>>(),
        }),
    })
}

/// Deals one job (or one of its tiles) with the peer over `link` as party `p`: the job `a`
/// with its model's and image's headers `mh`, `ih`, checked into `d`
/// ([`GraphDeal::check`]), the piece `tile` of it; writes `<a.out>.p<p>` (a tile's
/// `<a.out>.t<I>.p<p>`). The link may carry several (tiles, a study's slices), one after
/// another; the caller has checked the free space for all of them ([`check_space`]).
pub fn deal_on(
    link: &mut Link,
    p: Party,
    a: &DealJob,
    (mh, ih): (&Header, &Header),
    (d, tile): (&GraphDeal, &GraphTile),
) -> Result<Summary> {
    let start = Instant::now();
    let (sent, received) = (link.stats().bytes_sent, link.stats().bytes_received);
    let out = with_ext(&tile_prefix(&a.out, tile.tile), p);
    let facts = job_facts(a, (mh, ih), d, tile)?;
    let tag = serde_json::to_vec(&facts).expect("strings serialise");
    let ch: &mut dyn Channel = link;
    let peer_tag = exchange(ch, p, &tag).context("exchanging the job's facts")?;
    if peer_tag != tag {
        bail!("{}; nothing was made", explain(&facts, &peer_tag));
    }
    let mut rng = StdRng::from_os_rng();
    let triplet_id: [u8; 16] = if p.is_s0() {
        let id = fresh_id();
        ch.send(&id).context("sending the triplet id")?;
        id
    } else {
        let got = ch
            .recv(Expect::Exactly(16))
            .context("receiving the triplet id")?;
        got.try_into().expect("16 bytes")
    };
    // The garbler's active-label stream and the job's hash key: public between the two (a
    // dealer gives both the same), the XOR of a uniform half from each (semi-honest: each
    // draws its half honestly, so the seed is uniform).
    let half: [u8; 16] = rng.random();
    let other = exchange(ch, p, &half).context("exchanging the label seed")?;
    ensure!(
        other.len() == 16,
        "the peer's half of the label seed is not 16 bytes"
    );
    let label: Vec<u8> = half.iter().zip(&other).map(|(x, y)| x ^ y).collect();
    let mut base = match p {
        Party::S0 => base_ot::send(ch, &mut rng)?.to_bytes(),
        Party::S1 => base_ot::receive(ch, &mut rng)?.to_bytes(),
    };
    base.extend_from_slice(&label);
    let seed = fresh_seed();
    let ops = GraphOperands::new(&d.plan, &seed, &seed);
    let products = GraphProducts {
        plan: &d.plan,
        h: tile.rows,
        w: d.pw,
        engine: a.engine,
    };
    let made = products.run(ch, p, &ops, &mut rng)?;
    let own = base_ot_digest(&base);
    let peer = exchange(ch, p, own.as_bytes()).context("exchanging the base OTs' digests")?;
    let peer = String::from_utf8(peer).ok().filter(|d| {
        d.len() == own.len()
            && d.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    let peer = peer.context("the peer's base-OT digest is malformed")?;
    let digests = match p {
        Party::S0 => format!("{own},{peer}"),
        Party::S1 => format!("{peer},{own}"),
    };
    let mut header = d.header((mh, ih), a.engine, tile, triplet_id, p);
    header.info.push((BASE_OT.into(), digests));
    let lead = TripletsLead {
        job: d.job.clone(),
        widths: d.plan.channels(),
        batch: d.batch,
        seed,
        engine: a.engine,
    };
    let plain = Outputs {
        to: [None, None],
        by: None,
    };
    let bits = if p.is_s1() { tile.bits } else { 0 };
    write_own((p, &out, bits), &header, lead, base, &plain, |emit| {
        for StepCorrection { values, bits, .. } in made {
            emit(&values, bits)?;
        }
        Ok(())
    })?;
    // The peer says it wrote its own; without that word this file is removed. (A fault
    // during this last exchange can still leave one server alone with its file: `serve`
    // refuses it before anything is consumed, as its peer holds no file of this dealing.)
    let done = exchange(ch, p, b"written");
    if !matches!(&done, Ok(v) if v == b"written") {
        let _ = std::fs::remove_file(&out);
        let why = done.map_or_else(|e| e.to_string(), |_| "an unexpected answer".into());
        bail!(
            "the peer server did not write its half of the dealing ({why}): {} was removed; run both again",
            out.display()
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let stats = link.stats();
    let (sent, received) = (stats.bytes_sent - sent, stats.bytes_received - received);
    Ok(Summary {
        lines: vec![format!(
            "{} engine, no dealer: {p}'s correlated randomness for a {}x{} CNN graph job (run at {}x{}) made with the peer server and written to {} ({bytes} bytes, {secs:.2} s; {} bytes sent, {} received); triplet id {}",
            a.engine,
            d.job.height,
            d.job.width,
            d.ph,
            d.pw,
            out.display(),
            sent,
            received,
            id_hex(&triplet_id)
        )],
        json: serde_json::json!({
            "ok": true, "command": "gen-triplets", "party": p.index(), "dealer": false,
            "triplet_id": id_hex(&triplet_id), "network": crate::formats::bodies::GRAPH,
            "pixels": d.job.height * d.job.width, "outputs": [out.display().to_string()],
            "engine": a.engine.name(), "bytes": bytes, "seconds": secs,
            "sent": sent, "received": received,
        }),
    })
}

/// Why the peer's facts `peer` differ from these: the first fact that differs, both values.
fn explain(facts: &[(&'static str, String)], peer: &[u8]) -> String {
    let theirs: Option<Vec<(String, String)>> = serde_json::from_slice(peer).ok();
    let Some(theirs) = theirs else {
        return "the peer server is not dealing a job with this build's exchange (another \
                command, or another ppdenoise version): run `gen-triplets --party` of one \
                version on both"
            .into();
    };
    for (name, own) in facts {
        match theirs.iter().find(|(n, _)| n == name) {
            Some((_, v)) if v == own => {}
            Some((_, v)) => {
                return format!(
                    "the peer server was asked for another job: {name} is {v:?} there, {own:?} here"
                )
            }
            None => return format!("the peer server's build names no {name}"),
        }
    }
    "the peer server was asked for another job".into()
}
