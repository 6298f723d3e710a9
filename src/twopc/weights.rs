//! The masked weights U = W - A of the linear layers' Beaver products (docs/protocol.md).
//!
//! The weights W are fixed per model, so their mask A can belong to the model rather than to
//! a job: U is then opened once (`open-weights`) and every job's matrix triples C = A B are
//! made against the same A with a fresh B. A job without a model mask opens U itself, with A
//! from the job's own randomness; both paths use [`open_weights`].

use crate::corr::masks::weight_count;
use crate::ring::plan::Plan;
use crate::ring::share::sub;
use crate::ring::Party;
use crate::twopc::channel::{open, Channel, ChannelError};

/// What a party holds of the linear layers' weight masking once U is open.
#[derive(Clone, Debug)]
pub struct Opened {
    /// U = W - A, per layer (the same at both parties).
    pub u: Vec<Vec<u64>>,
    /// This party's share of A, per layer.
    pub mask: Vec<Vec<u64>>,
}

impl Opened {
    /// Splits a flat U (layer after layer) by the plan's layer shapes.
    pub fn from_flat(plan: &Plan, u: &[u64], mask: Vec<Vec<u64>>) -> Result<Opened, String> {
        if u.len() != weight_count(plan) {
            return Err(format!(
                "holds {} masked weights but the model has {}",
                u.len(),
                weight_count(plan)
            ));
        }
        let mut off = 0;
        let u = plan
            .layers
            .iter()
            .map(|ly| {
                let n = ly.inputs * ly.outputs;
                off += n;
                u[off - n..off].to_vec()
            })
            .collect();
        Ok(Opened { u, mask })
    }

    /// U flattened layer after layer (the `OpenedWeights` file body).
    pub fn flat_u(&self) -> Vec<u64> {
        self.u.concat()
    }
}

/// Opens U = W - A for all layers at once: one message each way. `plan` holds this party's
/// weight shares, `mask` its shares of A (fresh dealer randomness, never used for another W).
pub fn open_weights(
    ch: &mut dyn Channel,
    party: Party,
    plan: &Plan,
    mask: Vec<Vec<u64>>,
) -> Result<Opened, ChannelError> {
    if !plan.holds_weight_shares() {
        return Err(ChannelError::Mismatch(
            "the weight shares do not have the model's shape".into(),
        ));
    }
    let w: Vec<&[u64]> = plan.layers.iter().map(|l| l.w.as_slice()).collect();
    open_layers(ch, party, &w, mask)
}

/// [`open_weights`] for any layered model: `w[l]` is this party's share of layer l's
/// weights, `mask[l]` its share of their mask (same lengths).
pub fn open_layers(
    ch: &mut dyn Channel,
    party: Party,
    w: &[&[u64]],
    mask: Vec<Vec<u64>>,
) -> Result<Opened, ChannelError> {
    if mask.len() != w.len() || w.iter().zip(&mask).any(|(w, a)| w.len() != a.len()) {
        return Err(ChannelError::Mismatch(
            "the weight shares and their masks differ in shape".into(),
        ));
    }
    let mut share = Vec::with_capacity(w.iter().map(|l| l.len()).sum());
    for (wl, a) in w.iter().zip(&mask) {
        share.extend(sub(wl, a));
    }
    let flat = open(ch, party, &share, "masked weights")?;
    drop(share);
    let mut off = 0;
    let u = w
        .iter()
        .map(|wl| {
            off += wl.len();
            flat[off - wl.len()..off].to_vec()
        })
        .collect();
    Ok(Opened { u, mask })
}
