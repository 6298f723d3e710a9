//! The opening of a map held mod 2^k, a boolean-engine ReLU's result, extended to a wider
//! ring by its shares' top bits before it is opened (docs/protocol.md, "The ReLU by
//! selection"): the one step of the graph job that needs both a selection's result and the
//! next product's mask.

use crate::corr::pack::low_mask;
use crate::corr::randomness::PartyRandomness;
use crate::ring::Party;
use crate::twopc::channel::{open_bits, Channel};
use crate::twopc::error::ProtocolError;

/// Opens V = y - B mod 2^bits, y a ReLU's result held mod 2^k (0 <= y < 2^(k-1)), in two
/// messages (docs/protocol.md, "The ReLU by selection"). The two shares, each below 2^k, add
/// up to y + 2^k w, and since y's top bit is clear, w = m_0 ∨ m_1 for the shares' top bits
/// m_i. Each party sends its m_i under its own seed's bit ρ_i (one bit), makes its share of
/// w = m_0 + m_1 - m_0 m_1 from the dealer's shares of ρ_0 ρ_1 (stream `MapExtend(l)`), and
/// then sends its share of V at `bits`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_extending(
    ch: &mut dyn Channel,
    party: Party,
    rand: &mut PartyRandomness,
    layer: u32,
    y: &[u64],
    b: &[u64],
    k: u32,
    bits: u32,
) -> Result<Vec<u64>, ProtocolError> {
    #[allow(unused_mut)]
    let (mut rho, mut prod) = rand.map_extension(layer, y.len(), bits - k)?;
    #[cfg(test)]
    if TOP_BITS_BARE.with(|s| s.get()) {
        // Both parties as if the dealer's bits and product were zero: still exact.
        rho.fill(0);
        prod.fill(0);
    }
    let top = |v: u64| (v >> (k - 1)) & 1;
    let d: Vec<u64> = y.iter().zip(&rho).map(|(&v, r)| top(v) ^ r).collect();
    // Opened mod 2: d_0 ⊕ d_1, from which each party takes the peer's bit.
    let both = open_bits(ch, party, &d, 1, "masked top bits of the shares")?;
    let low = low_mask(k);
    // The share of V made in the product's buffer: m_0 m_1 = m_0 d_1 + (1 - 2 d_1) m_0 ρ_1,
    // m_0 ρ_1 = d_0 ρ_1 + (1 - 2 d_0) ρ_0 ρ_1; party 0 holds m_0, party 1 ρ_1.
    for (i, v) in prod.iter_mut().enumerate() {
        let (own, peer) = (d[i], both[i] ^ d[i]);
        let (d0, d1) = if party.is_s0() {
            (own, peer)
        } else {
            (peer, own)
        };
        let pp = if d0 ^ d1 == 1 { v.wrapping_neg() } else { *v };
        let m = top(y[i]);
        let mm = if party.is_s0() {
            (m & d1).wrapping_add(pp)
        } else {
            let r = d0 & rho[i];
            (if d1 == 1 { r.wrapping_neg() } else { r }).wrapping_add(pp)
        };
        let w = m.wrapping_sub(mm);
        *v = (y[i] & low).wrapping_sub(w << k).wrapping_sub(b[i]);
    }
    drop((rho, d, both));
    Ok(open_bits(ch, party, &prod, bits, "masked activations")?)
}

#[cfg(test)]
thread_local! {
    /// Negative control of the extension's masking: each party sends its shares' top bits
    /// without ρ, and takes ρ_0 ρ_1 as 0 (exact, and a leak the masking test must see).
    static TOP_BITS_BARE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Turns the negative control on or off for this thread's runs.
#[cfg(test)]
pub(crate) fn top_bits_bare(on: bool) {
    TOP_BITS_BARE.with(|s| s.set(on));
}
