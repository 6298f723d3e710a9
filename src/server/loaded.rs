//! The model share (and the MLP's opened weights) a server reads once and keeps for every
//! job it runs with them: a study's slices are jobs of one model, so its share (the paper
//! MLP's is 222 MB) is opened, verified and turned into this party's plan once, not once per
//! slice. What depends on a job (its image, its triplets, the mask they were dealt against)
//! is still checked per job.

use crate::ring::Party;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};

use super::JobFiles;
use crate::corr::masks::{mask_seed_digest, mask_shares, opened_digest, opened_mac, weight_count};
use crate::formats::bodies::{GraphModelShare, ModelShare, OpenedWeights};
use crate::formats::checks::{check_same_model, graph_plan_from_header, mask_id_of};
use crate::formats::container::{Header, Kind, Opened};
use crate::formats::facts::TripletFacts;
use crate::ring::graph::GraphPlan;
use crate::ring::plan::Plan;
use crate::twopc::weights;

/// A model share read and checked once: its header, and this party's plan with its weight
/// shares (its bias shares alone when its weights were opened once for the model), shared
/// (not copied) by every job that runs it.
pub struct LoadedModel {
    pub(super) path: PathBuf,
    /// The opened weights' path it was read with (`--weights`), if any.
    pub(super) weights_path: Option<PathBuf>,
    pub(super) header: Header,
    /// The model's name, as its owner published it (read from the header at open).
    pub(super) name: Option<String>,
    /// Whether the share was sealed at rest (then each output share is sealed too).
    pub(super) sealed: bool,
    pub(super) family: Family,
}

pub(super) enum Family {
    Mlp {
        plan: Arc<Plan>,
        /// The sigma the model was trained for (the gateway scaled the image for it).
        sigma: f64,
        weights: Option<Arc<LoadedWeights>>,
    },
    /// A CNN graph's plan with this party's shares, rebuilt from its public description.
    Graph(Arc<GraphPlan>),
}

/// An MLP's opened weights (`open-weights`, `--weights`) read once: what the file alone
/// proves is checked here (its model, its MAC under its own mask seed); the seed against
/// the dealer's digest and the mask against the triplets' are each job's
/// ([`LoadedWeights::check_for`]).
pub(super) struct LoadedWeights {
    pub(super) path: PathBuf,
    pub(super) sealed: bool,
    mask_id: String,
    /// The digest of this party's mask seed (what the dealer's header names): the seed
    /// itself is not kept.
    seed_digest: String,
    /// The digest of U that the session tag binds.
    pub(super) digest: [u8; 32],
    pub(super) opened: weights::Opened,
}

impl LoadedModel {
    /// Reads party `f.party`'s model share `model` (opened once, its maker checked) and,
    /// for an MLP, its opened weights `opened` (opened with the job's other inputs).
    pub(super) fn read(f: &JobFiles, model: Opened, opened: Option<Opened>) -> Result<LoadedModel> {
        let p = f.party;
        let at = |e: String| anyhow::anyhow!("{}: {e}", f.model.display());
        let sealed = model.is_sealed();
        let kind = model.header().kind;
        if kind == Kind::GraphModelShare {
            if let Some(w) = &opened {
                bail!(
                    "{}: weights opened once per model are not supported for CNNs and CNN graphs yet; run without --weights",
                    w.path().display()
                );
            }
        }
        let (header, family) = if kind == Kind::GraphModelShare {
            let (mh, ms): (_, GraphModelShare) = model.read(Kind::GraphModelShare, Some(p))?;
            // The plan from the public description in the header this body was read with,
            // each party's own rebuild (docs/graph.md, milestone 5).
            let (_, public) = graph_plan_from_header(&f.model, &mh)?;
            (
                mh,
                Family::Graph(Arc::new(ms.share_plan(&public).map_err(at)?)),
            )
        } else {
            let (mh, ms): (Header, ModelShare) = model.read(Kind::ModelShare, Some(p))?;
            // With weights opened once for the model, its jobs multiply by U and this
            // party's share of A: the share of W stays unread (a job that would open it
            // per job is refused, its triplets naming no model mask).
            let plan = match opened {
                Some(_) => ms.bias_plan(),
                None => ms.share_plan(),
            }
            .map_err(at)?;
            let weights = opened
                .map(|o| LoadedWeights::read(o, p, (&f.model, &mh), &plan))
                .transpose()?
                .map(Arc::new);
            let family = Family::Mlp {
                plan: Arc::new(plan),
                sigma: ms.meta.sigma,
                weights,
            };
            (mh, family)
        };
        // The header's facts once the read verified it (checksum, signature): a header
        // altered on disk is told as such, not as a malformed entry.
        let name = crate::formats::facts::ModelFacts::read(&f.model, &header)?.name;
        Ok(LoadedModel {
            path: f.model.clone(),
            weights_path: f.weights.clone(),
            header,
            name,
            sealed,
            family,
        })
    }

    /// The opened weights' file, when it was sealed at rest.
    pub(super) fn sealed_weights(&self) -> Option<&Path> {
        match &self.family {
            Family::Mlp {
                weights: Some(w), ..
            } if w.sealed => Some(&w.path),
            _ => None,
        }
    }
}

impl LoadedWeights {
    /// Reads party `p`'s opened weights (`o`, opened once) for the model of `model` (header
    /// `mh`, plan `plan`). Nobody signs this file (the server wrote it), so each part is
    /// checked against what does not come from it: U against its MAC under the file's mask
    /// seed (written by `open-weights`) here; the seed against the digest in the dealer's
    /// signed triplet header, per job; U against the peer server's U through the session
    /// tag.
    fn read(o: Opened, p: Party, (model, mh): (&Path, &Header), plan: &Plan) -> Result<Self> {
        let path = o.path().to_path_buf();
        let sealed = o.is_sealed();
        o.expect(Kind::OpenedWeights, Some(p))?;
        let h = o.header();
        check_same_model(&path, h, model, mh)?;
        let mask_id = mask_id_of(&path, h)?;
        let (h, ow): (Header, OpenedWeights) = o.read_any()?;
        if ow.u.len() != weight_count(plan) {
            bail!(
                "{}: holds {} masked weights but the model has {}",
                path.display(),
                ow.u.len(),
                weight_count(plan)
            );
        }
        let mac = crate::formats::facts::opened_mac(&path, &h)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: holds no check value of its opened weights (written by an older open-weights): ask the dealer for a fresh gen-model-mask and open the weights again",
                path.display()
            )
        })?;
        // blake3::Hash compares in constant time.
        if mac != opened_mac(&ow.seed, &ow.u) {
            bail!(
                "{}: its opened weights are not the ones this server opened under its mask seed: the file was altered",
                path.display()
            );
        }
        let digest = opened_digest(&ow.u);
        let opened = weights::Opened::from_flat(plan, &ow.u, mask_shares(&ow.seed, plan))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(LoadedWeights {
            path,
            sealed,
            mask_id,
            seed_digest: mask_seed_digest(&ow.seed),
            digest,
            opened,
        })
    }

    /// That these weights were opened under the mask a job's triplets (`triplets`, header
    /// `th`) were dealt against: its id, then party `p`'s seed against the dealer's digest.
    pub(super) fn check_for(
        &self,
        p: Party,
        (triplets, facts): (&Path, &TripletFacts),
        mask_id: &str,
    ) -> Result<()> {
        let path = &self.path;
        if self.mask_id != mask_id {
            bail!(
                "{}: opened under model mask {}, but the triplets were made against mask {mask_id}",
                path.display(),
                self.mask_id
            );
        }
        let named = facts.mask_seed(p).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: names no digest of the model mask's seeds (made by an older gen-triplets): deal the job again",
                triplets.display()
            )
        })?;
        if named != self.seed_digest {
            bail!(
                "{}: its mask seed is not the one the dealer's {} names: the file was altered, or is not this server's opened weights",
                path.display(),
                triplets.display()
            );
        }
        Ok(())
    }
}
