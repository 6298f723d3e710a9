//! A party's nonlinearity engine, built from its kind ([`EngineKind`]) and its part of the
//! dealer's per-job setup (base OTs for the garbled-circuit engine, nothing for GMW).

use crate::corr::engine_kind::EngineKind;
use crate::ring::Party;
use crate::twopc::error::ProtocolError;
use crate::twopc::gc::engine::{GcEvaluator, GcGarbler};
use crate::twopc::gmw::GmwParty;
use crate::twopc::nonlinear::Nonlinear;

/// Party `party`'s engine of kind `kind`, from its part of the dealer's setup
/// ([`crate::corr::base_ots::deal_gc_setup`] for the garbled-circuit engine).
pub fn engine_for(
    kind: EngineKind,
    party: Party,
    setup: &[u8],
) -> Result<Box<dyn Nonlinear + Send>, ProtocolError> {
    Ok(match (kind, party) {
        (EngineKind::Gc, Party::S0) => Box::new(GcEvaluator::new(setup)?),
        (EngineKind::Gc, Party::S1) => Box::new(GcGarbler::new(setup)?),
        (EngineKind::Gmw, p) => {
            if !setup.is_empty() {
                return Err(ProtocolError::Setup(
                    "triplets: unexpected base-OT data for the boolean engine".into(),
                ));
            }
            Box::new(GmwParty::new(p))
        }
    })
}

/// [`engine_for`] with the garbler's wire labels drawn from `label_seeds`: tests that must
/// be reproducible only; `serve` always uses [`engine_for`].
#[doc(hidden)]
pub fn seeded_engine_for(
    kind: EngineKind,
    party: Party,
    setup: &[u8],
    label_seeds: [u64; 2],
) -> Result<Box<dyn Nonlinear + Send>, ProtocolError> {
    match (kind, party) {
        (EngineKind::Gc, Party::S1) => {
            Ok(Box::new(GcGarbler::with_label_seeds(setup, label_seeds)?))
        }
        _ => engine_for(kind, party, setup),
    }
}
