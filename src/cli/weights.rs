//! The servers' one-time step per model: `open-weights` opens U = W - A under the model's
//! weight mask A, so that no later job of the model sends anything derived from the weights.

use crate::ring::Party;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::builder::TypedValueParser;
use clap::Args;

use super::server::LinkArgs;
use super::Summary;
use crate::corr::masks::{mask_shares, opened_mac, OPENED_MAC};
use crate::formats::bodies::{ModelMask, ModelShare, OpenedWeights};
use crate::formats::checks::{check_same_model, mask_id_of};
use crate::formats::container::{self, Header, Kind};
use crate::formats::inputs::{open_signed, Maker};
use crate::server::session::link_up;
use crate::server::state::{check_output, check_unused, Claim, Record};
use crate::twopc::channel::with_queued_link;
use crate::twopc::weights::open_weights;

/// Open a model's masked weights once, on both servers (S0 listens, S1 connects), and write
/// this server's opened weights for every later job of the model (`serve --weights`).
///
/// Needs the model mask share from the dealer's `gen-model-mask`; the mask is single-use
/// (recorded in --state-dir): its opened weights are what every job reuses.
#[derive(Args)]
pub struct OpenWeightsArgs {
    /// 0 (listens) or 1 (connects).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1).try_map(Party::try_from))]
    pub party: Party,
    /// This party's model share (model.pN).
    #[arg(long)]
    pub model: PathBuf,
    /// This party's share of the model's weight mask (mask.pN, from `gen-model-mask`).
    #[arg(long)]
    pub mask: PathBuf,
    #[command(flatten)]
    pub link: LinkArgs,
    /// This party's opened weights (weights.pN), for `serve --weights`; sealed to this
    /// party's own identity (--identity) when its mask share was sealed.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub identity: super::keys::IdentityArgs,
    #[command(flatten)]
    pub trust: super::keys::TrustArgs,
}

pub fn open_weights_cmd(a: OpenWeightsArgs) -> Result<Summary> {
    let t = Instant::now();
    let p = a.party;
    a.link.check(p)?;
    let own = a.identity.load()?;
    let trust = a.trust.load()?;
    // Each input opened once (issue 46 item 1): a sealed one refused under
    // --insecure-unsigned before it is decrypted, and its maker checked against the pinned
    // key, both on its header before a body is read; the body, checksum and signature come
    // from the same handle.
    let model = open_signed(&a.model, &trust, Maker::Party)?;
    let mask = open_signed(&a.mask, &trust, Maker::Party)?;
    let (mh, ms): (Header, ModelShare) = model.read(Kind::ModelShare, Some(p))?;
    mask.expect(Kind::ModelMask, Some(p))?;
    check_same_model(&a.mask, mask.header(), &a.model, &mh)?;
    let mask_id = mask_id_of(&a.mask, mask.header())?;
    let mask_sealed = mask.is_sealed();
    let (_, km): (Header, ModelMask) = mask.read(Kind::ModelMask, Some(p))?;
    let plan = ms
        .share_plan()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    // The output must be writable before the mask is consumed.
    check_output(&a.out, &[&a.model, &a.mask])?;
    check_unused(&a.link.state_dir, p, Record::ModelMask, &mask_id, &a.mask)?;
    // The opened weights are as protected at rest as the mask share they come from; decided
    // now, before the mask is consumed.
    let seal = own.filter(|_| mask_sealed);

    let mut tag = mh.model_id.expect("checked above").to_vec();
    tag.extend_from_slice(mask_id.as_bytes());
    tag.extend_from_slice(b"open-weights");
    let claim = Claim::take(&a.link.state_dir, p, Record::ModelMask, &mask_id, &a.mask)?;
    let (mut link, claim) = link_up(p, &a.link.config(), claim, &tag, |_| {
        "the peer server holds another model or another model mask".into()
    })?;
    // The mask opens these weights and no others, whatever happens next.
    claim.consume()?;
    let t_open = Instant::now();
    let opened = with_queued_link(&mut link, |ch| {
        open_weights(ch, p, &plan, mask_shares(&km.seed, &plan))
    })??;
    let secs_open = t_open.elapsed().as_secs_f64();
    let stats = link.stats();

    let mut h = Header::new(Kind::OpenedWeights, p, mh.scale);
    h.model_id = mh.model_id;
    h.shapes = mh
        .shapes
        .iter()
        .filter(|(n, _)| n == "layers")
        .cloned()
        .collect();
    h.info
        .push((crate::formats::facts::MODEL_MASK.into(), mask_id.clone()));
    let u = opened.flat_u();
    h.info.push((
        OPENED_MAC.into(),
        opened_mac(&km.seed, &u).to_hex().to_string(),
    ));
    let body = OpenedWeights { seed: km.seed, u };
    container::write(&a.out, &h, &body, container::Seal::new(seal.as_ref(), None))
        .with_context(|| format!("writing {}", a.out.display()))?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![format!(
            "S{p}: opened {} masked weights under model mask {mask_id} in {secs_open:.2} s; sent {} bytes, received {} bytes; wrote {} (give it to `serve --weights` for every job of this model)",
            body.u.len(),
            stats.bytes_sent,
            stats.bytes_received,
            a.out.display()
        )],
        json: serde_json::json!({"ok": true, "command": "open-weights", "party": p, "model_mask": mask_id,
            "weights": body.u.len(), "seconds": secs, "seconds_open": secs_open,
            "bytes_sent": stats.bytes_sent, "bytes_received": stats.bytes_received, "output": a.out}),
    })
}
