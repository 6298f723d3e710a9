//! The arithmetic half of the secure tanh*: from shares of the circuit's selection bits and
//! of the clipped magnitude tc, compute y = g1 p1(tc) + g2 p2(tc) + g3 K with two rounds of
//! Beaver products. The same algebra runs in clear in [`crate::ring::oracle::activation`].

use crate::circuit::activation::ActConsts;
use crate::corr::randomness::ElemTriples;
use crate::ring::oracle::{pieces, signed_indicators};
use crate::ring::Party;
use crate::twopc::beaver::{elem_mul_share, square_share};
use crate::twopc::channel::{open, Channel, ChannelError};

/// Arithmetic shares of the activation circuit's outputs, one entry per element.
#[derive(Clone, Debug, Default)]
pub struct SelShares {
    pub tc: Vec<u64>,
    pub r1: Vec<u64>,
    pub r2: Vec<u64>,
    pub s1: Vec<u64>,
    pub s2: Vec<u64>,
    pub sgn: Vec<u64>,
}

impl SelShares {
    /// From shares grouped per element as `tc, r1, r2, s1, s2, sgn` (the activation
    /// circuit's B2A layout).
    pub fn from_grouped(shares: &[u64]) -> SelShares {
        let mut out = SelShares::default();
        for el in shares.chunks_exact(6) {
            out.tc.push(el[0]);
            out.r1.push(el[1]);
            out.r2.push(el[2]);
            out.s1.push(el[3]);
            out.s2.push(el[4]);
            out.sgn.push(el[5]);
        }
        out
    }
}

pub fn tanh_star_poly(
    ch: &mut dyn Channel,
    party: Party,
    c: &ActConsts,
    sel: &SelShares,
    t: &ElemTriples,
) -> Result<Vec<u64>, ChannelError> {
    let e = sel.tc.len();
    let one = party as u64;
    // Round 1: tc^2. Opening tc - sa reveals nothing: sa is a fresh uniform mask.
    let d_share: Vec<u64> = (0..e).map(|j| sel.tc[j].wrapping_sub(t.sq_a[j])).collect();
    let d = open(ch, party, &d_share, "masked tc")?;
    let tc2 = square_share(party, &d, &t.sq_a, &t.sq_c);
    let mut p = [Vec::with_capacity(e), Vec::with_capacity(e)];
    let mut g = [
        Vec::with_capacity(e),
        Vec::with_capacity(e),
        Vec::with_capacity(e),
    ];
    for (j, &sq) in tc2.iter().enumerate() {
        let pj = pieces(c, sel.tc[j], sq, one);
        let gj = signed_indicators(sel.r1[j], sel.r2[j], sel.s1[j], sel.s2[j], sel.sgn[j], one);
        for (dst, v) in p.iter_mut().zip(pj) {
            dst.push(v);
        }
        for (dst, v) in g.iter_mut().zip(gj) {
            dst.push(v);
        }
    }
    // Round 2: g1 p1 and g2 p2 in one message: [g1 - a1, g2 - a2, p1 - b1, p2 - b2].
    let mut masked = Vec::with_capacity(4 * e);
    for (gk, ak) in g.iter().zip(&t.a) {
        masked.extend(gk.iter().zip(ak).map(|(x, m)| x.wrapping_sub(*m)));
    }
    for (pk, bk) in p.iter().zip(&t.b) {
        masked.extend(pk.iter().zip(bk).map(|(x, m)| x.wrapping_sub(*m)));
    }
    let opened = open(ch, party, &masked, "masked selections and pieces")?;
    let mut y: Vec<u64> = g[2].iter().map(|v| v.wrapping_mul(c.sat)).collect();
    for k in 0..2 {
        let ek = &opened[k * e..(k + 1) * e];
        let fk = &opened[(2 + k) * e..(3 + k) * e];
        let prod = elem_mul_share(party, ek, fk, &t.a[k], &t.b[k], &t.c[k]);
        for j in 0..e {
            y[j] = y[j].wrapping_add(prod[j]);
        }
    }
    Ok(y)
}
