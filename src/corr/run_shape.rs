//! The size of the boolean engine's correlations for one circuit run.

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
        }
    }

    /// Party 1's explicit values for this run: AND triple shares c, then daBit shares, then
    /// edaBit shares.
    pub fn explicit_values(&self) -> usize {
        self.and_gates * self.words + (self.dabits + self.edas) * self.elements
    }

    /// [`Self::explicit_values`] at their widths: the AND shares are bit-sliced words (64
    /// bits), the daBit and edaBit shares at `out_bits`, the width at which the circuit's
    /// outputs are read.
    pub fn explicit(&self, out_bits: u32) -> Tally {
        Tally::of(self.and_gates * self.words, 64)
            + Tally::of((self.dabits + self.edas) * self.elements, out_bits)
    }
}
