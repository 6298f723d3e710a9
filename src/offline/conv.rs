//! A CNN graph's product step as a triple the two servers make alone: C = A (x) B mod
//! 2^bits, A = A0 + A1 the step's weight mask, B = B0 + B1 the map mask it reads, party 0's
//! share C0 its own stream's, party 1 leaving with C - C0, the dealer's correction.
//!
//! Every product step (a convolution of any window, groups, dilation and stride, transposed
//! or not; a per-channel scale) is first rewritten as a stride-1 valid convolution per group
//! ([`Valid`]): input planes Z read from the map (padding; a transposed convolution's zeros
//! between inputs), an effective kernel (dilation's zeros; a transposed convolution's flip)
//! and a step over the outputs (the stride). Then CHEETAH's packing (Huang et al., USENIX
//! Security 2022, HomConv), no rotations ([`ConvBlocks`]): Cn channels of an Hn x Wn block
//! of Z as one polynomial, sum Z[c, i, j] X^(c Hn Wn + i Wn + j); one output channel's
//! kernel over those channels as another, sum K[c, l, l'] X^(O - c Hn Wn - l Wn - l'),
//! O = (Cn - 1) Hn Wn + (kh - 1) Wn + kw - 1. Their product's coefficient O + i Wn + j is the
//! block's valid output (i, j): the exponents of two terms meeting there differ by less than
//! Hn Wn within a channel, so only a channel with itself meets, at one tap; no coefficient
//! at or past N is reached by a term that lands on an output while Cn Hn Wn <= N.
//!
//! C - C0 = A0 B0 + A0 B1 + A1 B0 + A1 B1 - C0. Both parties hold a key ([`Keys`]): each
//! sends its map blocks encrypted and evaluates the peer's with its own kernels in the
//! clear, so no kernel is ever encrypted and the two servers seal their sums at the same
//! time. Party 1 reads A0 B1 + A0 B0 - C0 - R0, party 0 reads A1 B0 - R1 and sends it plus
//! R0; C0 (never sent, the step's own stream) and the fresh R0, R1 hide what each reads.

use anyhow::{ensure, Context, Result};
use fhe::bfv::{Ciphertext, Plaintext};
use rand09::{CryptoRng, Rng};

use super::he::{Guard, He, TERMS_LOG2};
use super::triple::{Evaluator, KeyHolder};
use crate::inference::map::{conv_dims, Map};
use crate::ring::graph::uses::{per_channel, product, Dims};
use crate::ring::graph::Kind;
use crate::ring::Party;
use crate::twopc::channel::{bytes_to_u64s, u64s_to_bytes, Channel, Expect};

/// A product step as `groups` stride-1 valid convolutions: per group, `cin` planes of
/// `z` read from the map, a kernel of `cout` x `cin` x `k`, and the outputs (`out`) at every
/// `step`-th position of the valid convolution's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Valid {
    pub groups: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: [usize; 2],
    pub z: [usize; 2],
    pub step: [usize; 2],
    pub out: [usize; 2],
    src: Src,
}

/// Where Z and the kernel come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Src {
    /// Z[r] is the map's row (column) (r + shift) / up when that divides and is inside it.
    Conv {
        transposed: bool,
        kernel: [usize; 2],
        dilation: [usize; 2],
        shift: [isize; 2],
        up: [usize; 2],
        map: [usize; 2],
    },
    /// A value per channel (or one for all): groups of one channel, a 1 x 1 kernel.
    PerChannel,
}

impl Valid {
    /// The rewriting of product step `kind` reading a map of `d` (channels, rows, columns).
    pub fn of(kind: &Kind, d: Dims) -> Result<Valid> {
        let [c, h, w] = d;
        match kind {
            Kind::Conv { op, .. } => {
                let win = &op.window;
                let (oh, ow) = conv_dims(op, h, w);
                ensure!(
                    oh > 0
                        && ow > 0
                        && op.cin == c
                        && op.groups > 0
                        && op.cin.is_multiple_of(op.groups)
                        && op.cout.is_multiple_of(op.groups),
                    "a convolution of {} to {} channels in {} groups to {oh} x {ow} over a map of \
                     {c} x {h} x {w}",
                    op.cin,
                    op.cout,
                    op.groups
                );
                let eff = |a: usize| win.dilation[a] * (win.kernel[a] - 1) + 1;
                let (step, shift, up) = if op.transposed {
                    let shift = |a: usize| win.pads[a] as isize - (eff(a) - 1) as isize;
                    ([1, 1], [shift(0), shift(1)], win.stride)
                } else {
                    let shift = |a: usize| -(win.pads[a] as isize);
                    (win.stride, [shift(0), shift(1)], [1, 1])
                };
                let out = [oh, ow];
                Ok(Valid {
                    groups: op.groups,
                    cin: op.cin / op.groups,
                    cout: op.cout / op.groups,
                    k: [eff(0), eff(1)],
                    z: [0, 1].map(|a| (out[a] - 1) * step[a] + eff(a)),
                    step,
                    out,
                    src: Src::Conv {
                        transposed: op.transposed,
                        kernel: win.kernel,
                        dilation: win.dilation,
                        shift,
                        up,
                        map: [h, w],
                    },
                })
            }
            Kind::Affine { .. } | Kind::PRelu { .. } => Ok(Valid {
                groups: c,
                cin: 1,
                cout: 1,
                k: [1, 1],
                z: [h, w],
                step: [1, 1],
                out: [h, w],
                src: Src::PerChannel,
            }),
            _ => Err(anyhow::anyhow!("not a product step")),
        }
    }

    /// Output values of the whole step (every group's channels).
    pub fn out_len(&self) -> usize {
        self.groups * self.cout * self.out[0] * self.out[1]
    }

    /// Z of every group, groups x cin x z rows x z columns, from the map `x`.
    pub fn planes(&self, x: &Map<u64>) -> Vec<u64> {
        let Src::Conv { shift, up, map, .. } = self.src else {
            return x.v.clone();
        };
        let at = |r: usize, a: usize| {
            let u = r as isize + shift[a];
            (u >= 0 && (u as usize).is_multiple_of(up[a]) && (u as usize / up[a]) < map[a])
                .then(|| u as usize / up[a])
        };
        let rows: Vec<Option<usize>> = (0..self.z[0]).map(|r| at(r, 0)).collect();
        let cols: Vec<Option<usize>> = (0..self.z[1]).map(|r| at(r, 1)).collect();
        let mut z = vec![0u64; self.groups * self.cin * self.z[0] * self.z[1]];
        for (ch, plane) in z.chunks_mut(self.z[0] * self.z[1]).enumerate() {
            let src = x.plane(ch);
            for (r, row) in plane.chunks_mut(self.z[1]).enumerate() {
                let Some(y) = rows[r] else { continue };
                for (v, col) in row.iter_mut().zip(&cols) {
                    if let Some(xx) = col {
                        *v = src[y * map[1] + xx];
                    }
                }
            }
        }
        z
    }

    /// The effective kernels, groups x cout x cin x k rows x k columns, from the step's
    /// weights (their layout: ONNX's).
    pub fn kernels(&self, w: &[u64]) -> Vec<u64> {
        let [k0, k1] = self.k;
        let mut out = vec![0u64; self.groups * self.cout * self.cin * k0 * k1];
        let Src::Conv {
            transposed,
            kernel: [kh, kw],
            dilation: [d0, d1],
            ..
        } = self.src
        else {
            for (g, v) in out.iter_mut().enumerate() {
                *v = per_channel(w, g);
            }
            return out;
        };
        for g in 0..self.groups {
            for o in 0..self.cout {
                for ci in 0..self.cin {
                    let at = (((g * self.cout + o) * self.cin + ci) * k0) * k1;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let src = if transposed {
                                let cig = g * self.cin + ci;
                                ((cig * self.cout + o) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)
                            } else {
                                (((g * self.cout + o) * self.cin + ci) * kh + ky) * kw + kx
                            };
                            out[at + ky * d0 * k1 + kx * d1] = w[src];
                        }
                    }
                }
            }
        }
        out
    }
}

/// CHEETAH's cut of one group's valid convolution at ring degree N: blocks of `hn` x `wn`
/// of Z (neighbours overlapping by the kernel less one) and `cn` channels per polynomial.
/// Public: both parties compute it from the shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvBlocks {
    pub degree: usize,
    pub hn: usize,
    pub wn: usize,
    pub cn: usize,
    /// Blocks along the rows and the columns, and channel blocks.
    pub bh: usize,
    pub bw: usize,
    pub cb: usize,
}

impl ConvBlocks {
    /// The cut that costs a party the least time; refused when even one kernel does not
    /// fit a polynomial or a sum would hold more products than the noise bound covers.
    pub fn choose(degree: usize, v: &Valid) -> Result<ConvBlocks> {
        let need = [0, 1].map(|a| (v.out[a] - 1) * v.step[a] + 1);
        let [k0, k1] = v.k;
        ensure!(
            k0 * k1 <= degree,
            "a kernel of {k0} x {k1} does not fit a polynomial of {degree}"
        );
        // For each count of blocks along an axis, the smallest block that gives it.
        let sizes = |n: usize| {
            let mut s: Vec<usize> = (1..=n).map(|b| n.div_ceil(b)).collect();
            s.dedup();
            s
        };
        let mut best: Option<(usize, ConvBlocks)> = None;
        for &rh in &sizes(need[0]) {
            for &rw in &sizes(need[1]) {
                let (hn, wn) = (rh + k0 - 1, rw + k1 - 1);
                if hn * wn > degree {
                    continue;
                }
                let cn = (degree / (hn * wn)).min(v.cin);
                let b = ConvBlocks {
                    degree,
                    hn,
                    wn,
                    cn,
                    bh: need[0].div_ceil(rh),
                    bw: need[1].div_ceil(rw),
                    cb: v.cin.div_ceil(cn),
                };
                if b.cb > 1 << TERMS_LOG2 {
                    continue;
                }
                // One party's time in products (each party does the same): encrypting a
                // block ~31 products, encoding a kernel ~4, sealing a sum and decrypting
                // the peer's ~80 (docs/benchmarks.md, "Dealer-free offline").
                let (blocks, kernels) = (b.blocks() * b.cb, v.cout * b.cb);
                let cost = 31 * blocks + 4 * kernels + blocks * v.cout + 80 * b.blocks() * v.cout;
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, b));
                }
            }
        }
        best.map(|(_, b)| b).ok_or_else(|| {
            anyhow::anyhow!(
                "a convolution of {} channels: no cut sums at most 2^{TERMS_LOG2} products",
                v.cin
            )
        })
    }

    /// Spatial blocks of one group.
    pub fn blocks(&self) -> usize {
        self.bh * self.bw
    }

    /// The rows and columns of outputs (of the valid convolution) one block holds.
    fn reach(&self, v: &Valid) -> (usize, usize) {
        (self.hn + 1 - v.k[0], self.wn + 1 - v.k[1])
    }

    fn top(&self, v: &Valid) -> usize {
        (self.cn - 1) * self.hn * self.wn + (v.k[0] - 1) * self.wn + v.k[1] - 1
    }

    /// Block `s` (row-major over bh x bw) of channel block `cb` of one group's planes `z`
    /// (cin x z rows x z columns) as a polynomial's coefficients, each below 2^bits (`mask`).
    pub fn z_poly(&self, v: &Valid, z: &[u64], s: usize, cb: usize, mask: u64) -> Vec<u64> {
        let (rh, rw) = self.reach(v);
        let (y0, x0) = ((s / self.bw) * rh, (s % self.bw) * rw);
        let mut p = vec![0u64; self.degree];
        for c in 0..self.cn.min(v.cin - cb * self.cn) {
            let plane = &z[(cb * self.cn + c) * v.z[0] * v.z[1]..][..v.z[0] * v.z[1]];
            for i in 0..self.hn.min(v.z[0].saturating_sub(y0)) {
                let row = &plane[(y0 + i) * v.z[1]..][..v.z[1]];
                let at = c * self.hn * self.wn + i * self.wn;
                for j in 0..self.wn.min(v.z[1].saturating_sub(x0)) {
                    p[at + j] = row[x0 + j] & mask;
                }
            }
        }
        p
    }

    /// Output channel `o`'s kernel over channel block `cb` of one group's kernels `k`
    /// (cout x cin x k rows x k columns) as a polynomial's coefficients.
    pub fn k_poly(&self, v: &Valid, k: &[u64], o: usize, cb: usize, mask: u64) -> Vec<u64> {
        let [k0, k1] = v.k;
        let top = self.top(v);
        let mut p = vec![0u64; self.degree];
        for c in 0..self.cn.min(v.cin - cb * self.cn) {
            let kern = &k[(o * v.cin + cb * self.cn + c) * k0 * k1..][..k0 * k1];
            for l in 0..k0 {
                for l2 in 0..k1 {
                    p[top - c * self.hn * self.wn - l * self.wn - l2] = kern[l * k1 + l2] & mask;
                }
            }
        }
        p
    }

    /// The outputs block `s` holds: (coefficient, position in one output plane), the
    /// positions of the valid convolution the step keeps (its stride) and inside the output.
    pub fn results(&self, v: &Valid, s: usize) -> Vec<(usize, usize)> {
        let (rh, rw) = self.reach(v);
        let (y0, x0) = ((s / self.bw) * rh, (s % self.bw) * rw);
        let top = self.top(v);
        let mut r = Vec::new();
        for i in 0..rh {
            let y = y0 + i;
            if y % v.step[0] != 0 || y / v.step[0] >= v.out[0] {
                continue;
            }
            for j in 0..rw {
                let x = x0 + j;
                if x % v.step[1] == 0 && x / v.step[1] < v.out[1] {
                    let at = (y / v.step[0]) * v.out[1] + x / v.step[1];
                    r.push((top + i * self.wn + j, at));
                }
            }
        }
        r
    }
}

/// One product step's public facts: its rewriting, its cut, its width.
pub struct ConvShape {
    pub valid: Valid,
    pub blocks: ConvBlocks,
    pub bits: u32,
}

impl ConvShape {
    pub fn new(kind: &Kind, d: Dims, bits: u32, degree: usize) -> Result<ConvShape> {
        let valid = Valid::of(kind, d)?;
        let blocks = ConvBlocks::choose(degree, &valid)?;
        Ok(ConvShape {
            valid,
            blocks,
            bits,
        })
    }

    /// Sums each party returns for the step: one per group, block and output channel.
    pub fn returns(&self) -> usize {
        self.valid.groups * self.blocks.blocks() * self.valid.cout
    }
}

/// One party's keys for a product width: its own secret key (the peer's sums come back
/// under it) and the peer's public key (its own sums are sealed for it).
pub struct Keys {
    own: KeyHolder,
    peer: Evaluator,
    /// Every message received after the keys, as received (the masking controls read them).
    #[cfg(test)]
    pub(super) seen: Vec<Vec<u8>>,
}

impl Keys {
    /// A fresh key for `he`'s width (made for one run, never kept); party 1's public key
    /// travels first, then party 0's, so one message is in flight at a time.
    pub fn start(
        ch: &mut dyn Channel,
        party: Party,
        he: He,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Keys> {
        let (own, peer) = if party.is_s0() {
            let peer = Evaluator::start(ch, he.clone())?;
            (KeyHolder::start(ch, he, rng)?, peer)
        } else {
            let own = KeyHolder::start(ch, he.clone(), rng)?;
            (own, Evaluator::start(ch, he)?)
        };
        Ok(Keys {
            own,
            peer,
            #[cfg(test)]
            seen: Vec::new(),
        })
    }

    /// The negative controls' keys, a step of the sealing left out.
    #[cfg(test)]
    pub(super) fn weakened(mut self, guard: Guard) -> Keys {
        self.peer = self.peer.weakened(guard);
        self
    }

    /// The `i`-th sum received, decrypted with the own key (the masking controls).
    #[cfg(test)]
    pub(super) fn open_seen(&self, i: usize) -> Vec<u64> {
        let he = &self.own.he;
        he.decrypt_return(&self.own.sk, &self.seen[i], "a seen sum")
            .unwrap()
    }

    /// `party`'s side of product step `kind` (`shape` its public facts) for its weight
    /// mask share `a` and map mask share `b`. Party 0 comes with its share C0 (`c0`) and
    /// leaves with nothing more; party 1 leaves with C1 = C - C0 mod 2^bits.
    ///
    /// Per group, each party sends its blocks of Z encrypted under its own key (party 1's
    /// first); then, per output channel and block, each seals for the peer the sum of the
    /// peer's blocks times its own kernels, plus its addend on the kept outputs (party 0:
    /// A0 B0 - C0 - R0; party 1: -R1; R fresh and uniform) and a uniform value on every other
    /// coefficient, and decrypts the peer's. Party 0 then holds A1 B0 - R1 and sends it plus
    /// R0; party 1 holds A0 B1 + A0 B0 - C0 - R0 and adds that message, R1 and A1 B1.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_triple(
        &mut self,
        ch: &mut dyn Channel,
        party: Party,
        kind: &Kind,
        shape: &ConvShape,
        (a, b): (&[u64], &Map<u64>),
        c0: Option<&[u64]>,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Option<Vec<u64>>> {
        let (v, cut) = (&shape.valid, &shape.blocks);
        let he = self.own.he.clone();
        ensure!(
            he.bits == shape.bits && cut.degree == he.set.degree,
            "a product mod 2^{} cut for degree {} under parameters for 2^{}, degree {}",
            shape.bits,
            cut.degree,
            he.bits,
            he.set.degree
        );
        ensure!(
            c0.is_some() == party.is_s0() && c0.is_none_or(|c| c.len() == v.out_len()),
            "party {party}'s C0 for a product of {} values",
            v.out_len()
        );
        self.own.returns += shape.returns();
        self.peer.returns += shape.returns();
        he.check_returns(self.own.returns.max(self.peer.returns))?;
        let guard = self.peer.guard;
        let mask = he.modulus() - 1;
        let (z, k) = (v.planes(b), v.kernels(a));
        let (zg, kg) = (v.cin * v.z[0] * v.z[1], v.cout * v.cin * v.k[0] * v.k[1]);
        let plane = v.out[0] * v.out[1];
        let r: Vec<u64> = (0..v.out_len())
            .map(|_| {
                if guard.runs(Guard::FRESH_R) {
                    rng.random::<u64>()
                } else {
                    0
                }
            })
            .collect();
        let mut add: Vec<u64> = r.iter().map(|x| x.wrapping_neg()).collect();
        if let Some(c0) = c0 {
            let own = product(kind, a, b).v;
            for ((x, o), c) in add.iter_mut().zip(&own).zip(c0) {
                *x = x.wrapping_add(*o).wrapping_sub(*c);
            }
        }
        let mut got = vec![0u64; v.out_len()];
        let sent = cut.blocks() * cut.cb;
        for g in 0..v.groups {
            let (z, k) = (&z[g * zg..][..zg], &k[g * kg..][..kg]);
            // Both encrypt their blocks at once, before either reads the other's (party 0
            // encrypting only after it has read party 1's would put its encryptions on the
            // critical path: FFDNet 512, 216 -> 232 s).
            let mine = (0..sent)
                .map(|i| {
                    let poly = cut.z_poly(v, z, i / cut.cb, i % cut.cb, mask);
                    he.encrypt(&self.own.sk, &poly, rng)
                })
                .collect::<Result<Vec<Vec<u8>>>>()?;
            let mut theirs: Vec<Ciphertext> = Vec::with_capacity(sent);
            let mut receive = |ch: &mut dyn Channel| -> Result<()> {
                for i in 0..sent {
                    let bytes = ch
                        .recv(Expect::AtMost(he.max_ciphertext_bytes()))
                        .context("receiving an encrypted map block")?;
                    theirs.push(he.ciphertext(&bytes, &format!("the peer's map block {i}"))?);
                }
                Ok(())
            };
            if party.is_s0() {
                receive(ch)?;
            }
            for ct in mine {
                ch.send_owned(ct)
                    .context("sending an encrypted map block")?;
            }
            if !party.is_s0() {
                receive(ch)?;
            }
            let results: Vec<Vec<(usize, usize)>> =
                (0..cut.blocks()).map(|s| cut.results(v, s)).collect();
            // Output channel by output channel: its kernels encoded once for every block, and
            // only its own held (all of a wide layer's would take gigabytes).
            for o in 0..v.cout {
                let kp = (0..cut.cb)
                    .map(|c| he.encode(&cut.k_poly(v, k, o, c, mask)))
                    .collect::<Result<Vec<Plaintext>>>()?;
                let p: Vec<&Plaintext> = kp.iter().collect();
                for (s, results) in results.iter().enumerate() {
                    let c: Vec<&Ciphertext> = theirs[s * cut.cb..][..cut.cb].iter().collect();
                    let sum = he.dot(&c, &p)?;
                    let mut m = vec![0u64; he.set.degree];
                    if guard.runs(Guard::MASK_ALL) {
                        m.iter_mut().for_each(|x| *x = rng.random::<u64>() & mask);
                    }
                    let at_out = (g * v.cout + o) * plane;
                    for &(coef, at) in results {
                        m[coef] = add[at_out + at] & mask;
                    }
                    // Both seal at once; then party 1 sends first and party 0 reads first,
                    // so a link that blocks a send until the peer reads cannot deadlock.
                    let sealed = he.seal_return(sum, &m, &self.peer.pk, guard, rng)?;
                    let recv = |ch: &mut dyn Channel| {
                        ch.recv(Expect::AtMost(he.max_ciphertext_bytes()))
                            .context("receiving a convolution sum")
                    };
                    let bytes = if party.is_s0() {
                        let bytes = recv(ch)?;
                        ch.send_owned(sealed).context("sending a convolution sum")?;
                        bytes
                    } else {
                        ch.send_owned(sealed).context("sending a convolution sum")?;
                        recv(ch)?
                    };
                    let coeffs = he.decrypt_return(&self.own.sk, &bytes, "the peer's sum")?;
                    #[cfg(test)]
                    self.seen.push(bytes);
                    for &(coef, at) in results {
                        got[at_out + at] = coeffs[coef];
                    }
                }
            }
        }
        let len = v.out_len();
        if party.is_s0() {
            // A1 B0 - R1 + R0: uniform to party 1 through R0.
            let e: Vec<u64> = got
                .iter()
                .zip(&r)
                .map(|(x, y)| x.wrapping_add(*y) & mask)
                .collect();
            ch.send_owned(u64s_to_bytes(&e))
                .context("sending the cross term")?;
            return Ok(None);
        }
        let bytes = ch
            .recv(Expect::Exactly(8 * len))
            .context("receiving the cross term")?;
        #[cfg(test)]
        self.seen.push(bytes.clone());
        let e = bytes_to_u64s(&bytes, len, "the cross term")?;
        let mut c1 = product(kind, a, b).v;
        for (((x, g), e), r) in c1.iter_mut().zip(&got).zip(&e).zip(&r) {
            *x = x.wrapping_add(*g).wrapping_add(*e).wrapping_add(*r) & mask;
        }
        Ok(Some(c1))
    }
}
