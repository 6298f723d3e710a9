//! Party 1's explicit values of the boolean engine's correlations, a function of both parties'
//! seeds: the dealer writes them into party 1's file (`crate::dealer::boolean`), and tests of
//! the engines deal a run with them directly. Party 0's shares and both parties' masks follow
//! from their seeds (`crate::corr::randomness`).

use crate::circuit::bitslice::{bit, unslice};
use crate::circuit::netlist::Netlist;
use crate::corr::pack::low_mask;
use crate::corr::randomness::{and_masks, dabit_masks, eda_masks, keep_owned, relu_select_masks};
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::ring::share::Seed;
use crate::ring::Party;

/// Party 1's explicit values for one run of `net` over `elements` at `at`, handed to `emit`
/// with their widths: its AND triple shares `c1 = (a0 ⊕ a1)(b0 ⊕ b1) ⊕ c0` with the `b` of
/// the triple's group leader (bit-sliced words, 64 bits; an AND of the parties' own bits
/// with one share of each mask zeroed, [`keep_owned`]), its daBit shares
/// `[r]_1 = r - [r]_0`, then its edaBit shares
/// `[r]_1 = r - [r]_0` with `r = sum_j 2^j (r0_j ⊕ r1_j)`, these at `out_bits`: the circuit's
/// outputs are read only mod 2^out_bits, and so are the additive shares they are made of (a
/// ReLU's daBits at min(k, out_bits), [`RunShape::dabit_bits`]); then a ReLU selection's
/// `a r_s - [a r_s]_0` at that width and, when it extends its result, `r - [r]_0` at
/// `out_bits` and its top bit's share at `out_bits - k` (docs/protocol.md, "The ReLU by
/// selection").
pub fn explicit_into<E>(
    seeds: &[Seed; 2],
    at: Slot,
    net: &Netlist,
    elements: usize,
    out_bits: u32,
    emit: &mut crate::corr::pack::Emit<'_, E>,
) -> Result<(), E> {
    let shape = RunShape::of(net, elements);
    let (gw, w, e) = (shape.and_gates * shape.words, shape.words, shape.elements);
    let (mut a0, mut b0, mut p0) = and_masks(&seeds[0], at.layer, at.batch, gw);
    let (mut a1, mut b1, _) = and_masks(&seeds[1], at.layer, at.batch, gw);
    let owned = net.owned_ands();
    keep_owned(&owned, Party::S0, &mut a0, &mut b0, w);
    keep_owned(&owned, Party::S1, &mut a1, &mut b1, w);
    let c0 = p0.vec(gw);
    // An AND takes the `b` of its group's leader (ANDs sharing an input, `Level::leader`).
    let mut c = Vec::with_capacity(gw);
    for (g, s) in net.b_sources().into_iter().enumerate() {
        let (t, tb) = (g * w, s * w);
        c.extend((0..w).map(|k| ((a0[t + k] ^ a1[t + k]) & (b0[tb + k] ^ b1[tb + k])) ^ c0[t + k]));
    }
    emit(&c, 64)?;
    drop(c);
    let sw = shape.dabit_bits(out_bits);
    let mut out = Vec::with_capacity(shape.dabits * e);
    let ow = shape.dabits * w;
    let (r0, mut q0) = dabit_masks(&seeds[0], at.layer, at.batch, ow);
    let (r1, _) = dabit_masks(&seeds[1], at.layer, at.batch, ow);
    let arith0 = q0.vec(shape.dabits * e);
    for j in 0..shape.dabits {
        let (w0, w1) = (&r0[j * w..(j + 1) * w], &r1[j * w..(j + 1) * w]);
        let a0 = &arith0[j * e..(j + 1) * e];
        out.extend((0..e).map(|i| (bit(w0, i) ^ bit(w1, i)).wrapping_sub(a0[i])));
    }
    emit(&out, sw)?;
    if shape.edas > 0 {
        out.clear();
        let rw = shape.r_bits * w;
        let (r0, mut q0) = eda_masks(&seeds[0], at.layer, at.batch, rw);
        let (r1, _) = eda_masks(&seeds[1], at.layer, at.batch, rw);
        let arith0 = q0.vec(shape.edas * e);
        let mut first = 0;
        for (k, &m) in net.eda_bits.iter().enumerate() {
            let a0 = &arith0[k * e..(k + 1) * e];
            let at = |j: usize, word: usize| (first + j) * w + word;
            let r = unslice(m as usize, e, |j, word| r0[at(j, word)] ^ r1[at(j, word)]);
            out.extend(r.iter().zip(a0).map(|(r, a)| r.wrapping_sub(*a)));
            first += m as usize;
        }
        emit(&out, out_bits)?;
    }
    if let Some(p) = shape.select {
        // The sign is the last output; its daBit's bit r_s is what a multiplies. Each value
        // is made in the buffer of party 0's share it is taken from, each buffer dropped
        // once emitted: a few element-sized vectors at a time, not eleven.
        let sign = (shape.dabits - 1) * w;
        let rs = |i: usize| bit(&r0[sign..], i) ^ bit(&r1[sign..], i);
        let (a0, mut r, mut q0) = relu_select_masks(&seeds[0], at.layer, at.batch, e);
        let (a1, u1, _) = relu_select_masks(&seeds[1], at.layer, at.batch, e);
        let mut ar = q0.vec(e);
        for (i, v) in ar.iter_mut().enumerate() {
            *v = a0[i]
                .wrapping_add(a1[i])
                .wrapping_mul(rs(i))
                .wrapping_sub(*v);
        }
        drop((a0, a1));
        emit(&ar, sw)?;
        drop(ar);
        if shape.extends(out_bits) {
            // r = (u0 ⊕ u1) mod 2^k, known to neither party.
            for (u, v) in r.iter_mut().zip(&u1) {
                *u = (*u ^ v) & low_mask(p.k);
            }
            drop(u1);
            let mut r1 = q0.vec(e);
            for (v, r) in r1.iter_mut().zip(&r) {
                *v = r.wrapping_sub(*v);
            }
            emit(&r1, out_bits)?;
            let mut m1 = r1;
            q0.fill(&mut m1);
            for (v, r) in m1.iter_mut().zip(&r) {
                *v = ((r >> (p.k - 1)) & 1).wrapping_sub(*v);
            }
            emit(&m1, out_bits - p.k)?;
        }
    }
    Ok(())
}

/// [`explicit_into`] gathered, each value reduced to its width as the dealer file holds it.
pub fn explicit_for(
    seeds: &[Seed; 2],
    at: Slot,
    net: &Netlist,
    elements: usize,
    out_bits: u32,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(RunShape::of(net, elements).explicit_values());
    explicit_into(seeds, at, net, elements, out_bits, &mut |v, bits| {
        out.extend(v.iter().map(|x| x & low_mask(bits)));
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|e| match e {});
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::activation::{ActCircuit, ActParams, TruncParams};
    use crate::corr::randomness::{PartyRandomness, ReluSelection};

    /// Issue 31, item 3, the dealer's side: from fixed seeds, what both parties draw in the
    /// engine's order satisfies the correlations exactly: c = a ∧ b for every AND triple (b
    /// its group leader's), a
    /// daBit's XOR-shared bit equals its additive shares' sum, and an edaBit's bits are its
    /// additive value's binary digits. A wrong `explicit_for` (a share of the wrong party, a
    /// sign) breaks one of them for almost every value. At a width below 64 the additive
    /// shares add up mod 2^width (party 1's bits above it are not kept).
    #[test]
    fn dealt_correlations_hold_for_fixed_seeds() {
        // tanh*'s netlist has groups of ANDs sharing an input, daBits and edaBits; the ReLU's
        // a selection, extended at 64 and 23 bits, not at 7 (below k).
        let tanh = ActCircuit::TanhSelect(ActParams {
            sh: 36,
            k: 19,
            a_fix: 1556,
            b_fix: 2632,
        });
        let relu = ActCircuit::Relu(TruncParams { sh: 5, k: 9 });
        for bits in [64, 23] {
            dealt_correlations_hold_at(&tanh, bits);
        }
        for bits in [64, 23, 7] {
            dealt_correlations_hold_at(&relu, bits);
        }
    }

    fn dealt_correlations_hold_at(circ: &ActCircuit, bits: u32) {
        let net = Netlist::record(circ);
        let e = 70; // two words of elements, the second partly filled
        let at = Slot { layer: 2, batch: 7 };
        let seeds = [[3u8; 32], [11u8; 32]];
        let shape = RunShape::of(&net, e);
        let sw = shape.dabit_bits(bits);
        let low = low_mask(sw);
        assert!(shape.and_gates > 0 && shape.dabits > 0, "{shape:?}");
        assert!(shape.edas > 0 || shape.select.is_some(), "{shape:?}");
        let mut r = [
            PartyRandomness::new(Party::S0, seeds[0], Vec::new()),
            PartyRandomness::new(Party::S1, seeds[1], explicit_for(&seeds, at, &net, e, bits)),
        ];
        let w = shape.words;
        let mut t = r.each_mut().map(|p| {
            p.and_triples(at.layer, at.batch, shape.and_gates, w)
                .unwrap()
        });
        // The ReLU's first carry ANDs S1's bit 0 with S0's: its `a` is S1's alone, its `b`
        // S0's alone, as the engine keeps them.
        let owned = net.owned_ands();
        for (p, tp) in Party::BOTH.into_iter().zip(t.iter_mut()) {
            tp.keep_owned(&owned, p, w);
        }
        if shape.select.is_some() {
            assert_eq!(owned[0], Some(1), "{owned:?}");
            assert!(owned[1..].iter().all(Option::is_none), "{owned:?}");
            assert!(t[0].a[..w].iter().chain(&t[1].b[..w]).all(|&v| v == 0));
            assert!(t[1].a[..w].iter().any(|&v| v != 0) && t[0].b[..w].iter().any(|&v| v != 0));
        }
        // c = a ∧ b with the `b` of the triple's group leader; tanh*'s ANDs share inputs,
        // so some triples lead others.
        let src = net.b_sources();
        if shape.select.is_none() {
            assert!(
                src.iter().enumerate().any(|(g, &l)| g != l),
                "no shared input"
            );
        }
        for i in 0..shape.and_gates * w {
            let ib = src[i / w] * w + i % w;
            let (a, b) = (t[0].a[i] ^ t[1].a[i], t[0].b[ib] ^ t[1].b[ib]);
            assert_eq!(a & b, t[0].c[i] ^ t[1].c[i], "AND triple word {i}");
        }
        let d = r.each_mut().map(|p| {
            p.dabits(at.layer, at.batch, shape.dabits, w, e, sw)
                .unwrap()
        });
        let dabit = |j: usize, i: usize| bit(&d[0].bits[j * w..], i) ^ bit(&d[1].bits[j * w..], i);
        for j in 0..shape.dabits {
            for i in 0..e {
                let a = d[0].arith[j * e + i].wrapping_add(d[1].arith[j * e + i]);
                assert_eq!(dabit(j, i), a & low, "daBit {j}, element {i}");
            }
        }
        let q = r.each_mut().map(|p| {
            p.edabits(at.layer, at.batch, shape.r_bits, w, shape.edas, e, bits)
                .unwrap()
        });
        let mut first = 0;
        for (k, &m) in net.eda_bits.iter().enumerate() {
            for i in 0..e {
                let v: u64 = (0..m as usize)
                    .map(|j| {
                        let at = (first + j) * w;
                        (bit(&q[0].bits[at..], i) ^ bit(&q[1].bits[at..], i)) << j
                    })
                    .sum();
                let a = q[0].arith[k * e + i].wrapping_add(q[1].arith[k * e + i]);
                assert_eq!(v, a & low_mask(bits), "edaBit {k}, element {i}");
                assert!(v < 1 << m);
            }
            first += m as usize;
        }
        if let Some(p) = shape.select {
            // a r_s for the sign's daBit r_s (the last); r < 2^k and its top bit.
            let extend = shape.extends(bits).then_some((bits, p.k));
            assert_eq!(extend.is_some(), bits > p.k);
            let s = r
                .each_mut()
                .map(|q| q.relu_select(at.layer, at.batch, e, sw, extend).unwrap());
            let sum = |f: fn(&ReluSelection) -> &Vec<u64>, i: usize| {
                f(&s[0])[i].wrapping_add(f(&s[1])[i])
            };
            let mut tops = 0;
            for i in 0..e {
                let a = sum(|s| &s.a, i);
                let rs = dabit(shape.dabits - 1, i);
                assert_eq!(
                    sum(|s| &s.ar, i) & low,
                    a.wrapping_mul(rs) & low,
                    "a r_s, {i}"
                );
                if extend.is_some() {
                    let rv = sum(|s| &s.r, i) & low_mask(bits);
                    assert!(rv < 1 << p.k, "r {rv} of element {i} is not below 2^k");
                    let top = (rv >> (p.k - 1)) & 1;
                    tops += top;
                    assert_eq!(sum(|s| &s.msb, i) & low_mask(bits - p.k), top, "msb {i}");
                } else {
                    assert!(s[0].r.is_empty() && s[1].msb.is_empty());
                }
            }
            assert!(
                extend.is_none() || (10..60).contains(&tops),
                "{tops} top bits set"
            );
        }
        // Every value dealt was drawn, once.
        r[0].finish().unwrap();
        r[1].finish().unwrap();
    }
}
