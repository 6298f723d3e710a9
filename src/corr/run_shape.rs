//! The size of the boolean engine's correlations for one circuit run.

use crate::circuit::activation::TruncParams;
use crate::circuit::bitslice::words;
use crate::circuit::netlist::Netlist;
use crate::corr::pack::Tally;

/// What the dealer and the servers must agree on for one run of `circ` over `elements`:
/// the AND triples' and daBits' sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunShape {
    pub and_gates: usize,
    /// Outputs opened masked by a daBit (one daBit each).
    pub dabits: usize,
    /// edaBits per element, and their bits.
    pub edas: usize,
    pub r_bits: usize,
    pub words: usize,
    pub elements: usize,
    /// A ReLU finished in the ring ([`Netlist::select`]).
    pub select: Option<TruncParams>,
}

impl RunShape {
    pub fn of(net: &Netlist, elements: usize) -> RunShape {
        RunShape {
            and_gates: net.and_gates(),
            dabits: net.dabits(),
            edas: net.eda_bits.len(),
            r_bits: net.r_bits(),
            words: words(elements),
            elements,
            select: net.select,
        }
    }

    /// The width of the daBits' additive shares for outputs read at `out_bits`: a ReLU
    /// finished in the ring works mod 2^k below that, then extends its result (see
    /// [`crate::corr::randomness::ReluSelection`]).
    pub fn dabit_bits(&self, out_bits: u32) -> u32 {
        match self.select {
            Some(p) => out_bits.min(p.k),
            None => out_bits,
        }
    }

    /// Whether a ReLU finished in the ring extends its result from 2^k to 2^out_bits.
    pub fn extends(&self, out_bits: u32) -> bool {
        self.select.is_some_and(|p| out_bits > p.k)
    }

    /// Party 1's explicit values for this run: AND triple shares c, then daBit shares, then
    /// edaBit shares, then a ReLU selection's (at most 3 per element: an upper bound, for a
    /// buffer's capacity).
    pub fn explicit_values(&self) -> usize {
        let select = if self.select.is_some() { 3 } else { 0 };
        self.and_gates * self.words + (self.dabits + self.edas + select) * self.elements
    }

    /// [`Self::explicit_values`] at their widths: the AND shares are bit-sliced words (64
    /// bits), the daBit shares at [`Self::dabit_bits`], the edaBit shares at `out_bits`, the
    /// width at which the circuit's outputs are read. A ReLU selection's: the product share
    /// at the daBits' width, and when it extends its result, the mask's share at `out_bits`
    /// and its top bit's at `out_bits - k`.
    pub fn explicit(&self, out_bits: u32) -> Tally {
        let (e, sw) = (self.elements, self.dabit_bits(out_bits));
        let select = match self.select {
            Some(p) if self.extends(out_bits) => {
                Tally::of(e, sw) + Tally::of(e, out_bits) + Tally::of(e, out_bits - p.k)
            }
            Some(_) => Tally::of(e, sw),
            None => Tally::default(),
        };
        Tally::of(self.and_gates * self.words, 64)
            + Tally::of(self.dabits * e, sw)
            + Tally::of(self.edas * e, out_bits)
            + select
    }
}
