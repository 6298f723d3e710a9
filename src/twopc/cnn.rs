//! One secure CNN job between S0 and S1: the layer loop over the whole image.
//!
//! Per layer l (docs/protocol.md, "Secure CNN"):
//! 1. open V = X - B, the layer's input map masked by a fresh map-sized dealer mask B
//!    (after a boolean-engine ReLU, whose result held mod 2^k it first extends by its
//!    shares' top bits: `open_extending`);
//! 2. per block of output rows, the convolution as a Beaver matrix product on the columns:
//!    [W cols(X)]_i = i U cols(V) + U cols([B]_i) + [A]_i cols(V) + [C]_i, with U = W - A
//!    opened once per job (or once per model) and C = A cols(B) from the dealer: cols() is
//!    a public linear map, so each server applies it to what it holds;
//! 3. a hidden layer's pre-activation map goes through the engine's ReLU circuit (exact
//!    truncation by ws folded in), in runs of the dealer's batch size; the last layer's is
//!    the output, subtracted from the shifted input for a residual model. Nothing else is
//!    opened.
//!
//! Around the layers, the plan's frame (FFDNet: pixel-unshuffle and the noise-map channel
//! in, pixel-shuffle out) is a public rearrangement each server applies to its own shares.

use crate::ring::Party;
use std::time::Instant;

use crate::corr::batches::batches;
use crate::corr::pack::low_mask;
use crate::corr::randomness::PartyRandomness;
use crate::corr::slot::Slot;
use crate::ring::cnn::{put_block, row_blocks, CnnPlan};
use crate::ring::matmul::{ConvCols, Rhs};
use crate::ring::share::sub;
use crate::twopc::beaver::{pack_weights, product_share};
use crate::twopc::channel::{open_bits, Channel, ChannelError};
use crate::twopc::protocol::{
    open_in_job, same_session, LayerFigures, Nonlinear, OpFigures, ProtocolError, Report, Weights,
};
use crate::twopc::weights::{open_layers, Opened};

pub struct CnnJobInputs<'a> {
    pub party: Party,
    /// The plan with this party's weight and bias shares.
    pub plan: &'a CnnPlan,
    pub height: usize,
    pub width: usize,
    /// This party's share of the encoded image (row-major, scale s), followed by its share
    /// of the noise map when the plan takes one ([`CnnPlan::input_len`]).
    pub image: &'a [u64],
    pub rand: PartyRandomness,
    /// Bytes both parties must agree on (job, model and randomness ids).
    pub session_tag: Vec<u8>,
    pub weights: Weights<'a>,
    /// ReLU elements per circuit run (the dealer's choice, in the triplet file): a layer's
    /// pre-activations go through the engine in runs of this many.
    pub relu_batch: usize,
}

/// This party's share of every layer's weight mask, from `seed` (a job's or a model mask's).
pub fn mask_shares(seed: &crate::ring::share::Seed, plan: &CnnPlan) -> Vec<Vec<u64>> {
    plan.layers
        .iter()
        .enumerate()
        .map(|(l, ly)| crate::corr::masks::mask_share(seed, l as u32, ly.weight_count()))
        .collect()
}

/// Opens U = W - A of every layer (one message each way).
pub fn open_cnn_weights(
    ch: &mut dyn Channel,
    party: Party,
    plan: &CnnPlan,
    mask: Vec<Vec<u64>>,
) -> Result<Opened, ChannelError> {
    if plan.layers.iter().any(|l| l.w.len() != l.weight_count()) {
        return Err(ChannelError::Mismatch(
            "the weight shares do not have the model's shape".into(),
        ));
    }
    let w: Vec<&[u64]> = plan.layers.iter().map(|l| l.w.as_slice()).collect();
    open_layers(ch, party, &w, mask)
}

#[cfg(test)]
thread_local! {
    /// The negative control of the multi-block test (`server::cnn`'s unit tests): block 0 of
    /// a layer with more than one block is put one row too low (unit tests only, per thread:
    /// per server).
    static SHIFT_FIRST_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Turns the negative control on or off for this thread's runs.
#[cfg(test)]
pub(crate) fn shift_first_block(on: bool) {
    SHIFT_FIRST_BLOCK.with(|s| s.set(on));
}

/// Rows to move block `blk` (ending at row `end` of `h`) by: 0, except in the negative
/// control.
#[allow(unused_variables)]
fn block_shift(blk: u32, h: usize, end: usize) -> usize {
    #[cfg(test)]
    if blk == 0 && end < h && SHIFT_FIRST_BLOCK.with(|s| s.get()) {
        return 1;
    }
    0
}

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

/// Runs the job; returns this party's share of the output image (at the plan's out_scale:
/// [`CnnPlan::output_of`]).
pub fn run(
    ch: &mut dyn Channel,
    mut inp: CnnJobInputs<'_>,
    engine: &mut dyn Nonlinear,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<u64>, Report), ProtocolError> {
    let t_start = Instant::now();
    let (party, plan) = (inp.party, inp.plan);
    let (ih, iw) = (inp.height, inp.width);
    if inp.image.len() != plan.input_len(ih, iw) {
        return Err(ProtocolError::Setup(format!(
            "image share of {} values for a {ih} x {iw} image ({} expected)",
            inp.image.len(),
            plan.input_len(ih, iw)
        )));
    }
    let mut rep = Report {
        party: party.into(),
        patches: ih * iw,
        ..Default::default()
    };
    same_session(ch, party, &inp.session_tag)?;
    let per_job;
    let wts: &Opened = match inp.weights {
        Weights::Opened(o) => o,
        Weights::PerJob => {
            let (t, link0, eng0) = (Instant::now(), ch.stats(), engine.counters());
            let layers: Vec<(&[u64], usize)> = plan
                .layers
                .iter()
                .map(|ly| (ly.w.as_slice(), ly.weight_count()))
                .collect();
            per_job = open_in_job(ch, party, &mut inp.rand, &layers)?;
            let mut f = OpFigures {
                op: "OpenWeights",
                ..Default::default()
            };
            f.add_step(t, (link0, ch.stats()), (eng0, engine.counters()));
            rep.ops.push(f);
            &per_job
        }
    };
    if wts.u.len() != plan.layers.len()
        || plan
            .layers
            .iter()
            .zip(&wts.u)
            .any(|(l, u)| u.len() != l.weight_count())
    {
        return Err(ProtocolError::Setup(
            "opened weights do not have the model's shape".into(),
        ));
    }
    rep.seconds_setup = t_start.elapsed().as_secs_f64();

    let p = plan.params;
    let nl = plan.layers.len();
    let fused = engine.fuses_relu_extension();
    let (mut x, resid, (h, w)) = plan.stack_of(inp.image, ih, iw);
    let hw = h * w;
    for (l, ly) in plan.layers.iter().enumerate() {
        let t = Instant::now();
        let (link0, eng0) = (ch.stats(), engine.counters());
        let mut fig = LayerFigures {
            macs: (ly.cout * ly.fan_in() * hw) as u64,
            ..Default::default()
        };
        let li = l as u32;
        let b_map = inp.rand.act_mask(li, 0, ly.cin * hw)?;
        // Only the low bits the layer's output needs are sent (docs/protocol.md, "Ring width").
        let bits = plan.open_bits(l);
        let v = if fused && plan.extends_input(l) {
            open_extending(ch, party, &mut inp.rand, li, &x, &b_map, p.k, bits)?
        } else {
            open_bits(ch, party, &sub(&x, &b_map), bits, "masked activations")?
        };
        let mut z = vec![0u64; ly.cout * hw];
        // One product per block: [U | A_1], or [U | U + A_0] at party 0 (packed once for the
        // layer), times the columns of [B_i; V], packed straight from the two maps (no im2col
        // copy, no map-sized V + B_0).
        let tp = Instant::now();
        let ua = pack_weights(party, &wts.u[l], &wts.mask[l], ly.cout, ly.fan_in());
        fig.seconds_products += tp.elapsed().as_secs_f64();
        for (blk, row0, rows) in row_blocks(ly, h, w) {
            let n = rows * w;
            let cols = ConvCols::same(vec![&b_map, &v], ly.cin, h, w, ly.ksize, row0, rows);
            let c_i = inp
                .rand
                .mat_triple(li, blk, ly.cout * n, plan.product_bits(l))?;
            let tp = Instant::now();
            let mut zb = product_share(&ua, Rhs::Cols(&cols), c_i);
            fig.seconds_products += tp.elapsed().as_secs_f64();
            for (row, &b) in zb.chunks_mut(n).zip(&ly.b) {
                row.iter_mut().for_each(|v| *v = v.wrapping_add(b));
            }
            put_block(&mut z, &zb, hw, row0 + block_shift(blk, h, row0 + rows), w);
            // Row blocks, not just layers: a DnCNN layer takes seconds at 512x512.
            progress(l * h + row0 + rows, nl * h);
        }
        drop((v, b_map));
        fig.seconds_linear = t.elapsed().as_secs_f64();
        rep.seconds_linear += fig.seconds_linear;
        rep.seconds_products += fig.seconds_products;
        rep.batches += 1;
        let link1 = ch.stats();
        fig.open_bytes_sent = link1.bytes_sent - link0.bytes_sent;
        fig.open_bytes_received = link1.bytes_received - link0.bytes_received;
        if l + 1 < nl {
            let t = Instant::now();
            x = Vec::with_capacity(z.len());
            for (b, start, n) in batches(z.len(), inp.relu_batch.max(1)) {
                let at = Slot {
                    layer: li,
                    batch: b,
                };
                let part = &z[start..start + n];
                let bits = if fused {
                    plan.fused_relu_bits(l)
                } else {
                    plan.relu_out_bits(l)
                };
                x.extend(engine.relu(ch, &mut inp.rand, at, p.ws, p.k, bits, part)?);
            }
            fig.seconds_nonlinear = t.elapsed().as_secs_f64();
            rep.seconds_nonlinear += fig.seconds_nonlinear;
            fig.relus = z.len() as u64;
        } else {
            // Shares: the wrap count means nothing here.
            x = plan.output_of(z, &resid, ih, iw).0;
        }
        let (link2, eng2) = (ch.stats(), engine.counters());
        fig.circuit_bytes_sent = link2.bytes_sent - link1.bytes_sent;
        fig.circuit_bytes_received = link2.bytes_received - link1.bytes_received;
        fig.messages_sent = link2.messages_sent - link0.messages_sent;
        fig.engine_rounds = eng2.rounds - eng0.rounds;
        fig.and_gates = eng2.and_gates - eng0.and_gates;
        rep.layers.push(fig);
    }
    inp.rand.finish()?;
    rep.macs = rep.layers.iter().map(|f| f.macs).sum();
    rep.seconds_total = t_start.elapsed().as_secs_f64();
    rep.link = ch.stats();
    rep.engine = engine.counters();
    Ok((x, rep))
}
