//! The dealer's correlations for the boolean engine: per hidden layer and batch, bit-sliced
//! AND triples for every AND gate of the activation circuit and one daBit per output bit.
//! Party 0's shares and both parties' masks follow from their seeds; party 1's `c` and
//! additive daBit shares are the explicit values written into its file.

use crate::circuit::activation::ActCircuit;
use crate::circuit::netlist::Netlist;
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::ring::plan::MLP_OPEN_BITS;
use crate::ring::share::Seed;
use crate::ring::Party;

use crate::corr::explicit::{explicit_for, explicit_into};
use crate::corr::pack::Tally;

/// The circuits of a model's hidden layers, recorded once.
#[derive(Clone, Debug)]
pub struct BooleanDeal {
    /// One netlist per hidden layer.
    layers: Vec<Netlist>,
}

impl BooleanDeal {
    /// `circuits[l]`: hidden layer l's circuit.
    pub fn new(circuits: &[ActCircuit]) -> BooleanDeal {
        BooleanDeal {
            layers: circuits.iter().map(Netlist::record).collect(),
        }
    }

    /// Party 1's explicit values for a batch of `patches` patches (all hidden layers) of a
    /// model with layer `widths`.
    /// (An MLP's circuit outputs are read at 64 bits.)
    pub fn explicit_values(&self, widths: &[usize], patches: usize) -> Tally {
        self.layers
            .iter()
            .zip(&widths[1..])
            .map(|(net, w)| RunShape::of(net, w * patches).explicit(MLP_OPEN_BITS))
            .sum()
    }

    /// Party 1's explicit values for hidden layer `l` at `at`, over `elements` elements, its
    /// outputs read at `out_bits`, handed to `emit` with their widths.
    pub fn explicit<E>(
        &self,
        seeds: &[Seed; 2],
        at: Slot,
        l: usize,
        elements: usize,
        out_bits: u32,
        emit: &mut crate::corr::pack::Emit<'_, E>,
    ) -> Result<(), E> {
        explicit_into(seeds, at, &self.layers[l], elements, out_bits, emit)
    }

    /// Per hidden layer: (AND gates, daBits, edaBits, AND inputs opened) per element. The
    /// dealer records it in the triplet header; a server built with another circuit,
    /// conversion or grouping of ANDs sharing an input refuses the file before claiming it,
    /// instead of misreading every explicit value.
    pub fn shapes(&self) -> Vec<(usize, usize, usize, usize)> {
        self.layers.iter().map(Netlist::shape).collect()
    }
}

/// Both parties' randomness for one run of `circ` over `elements` at `at`, in memory, from
/// fresh seeds, its outputs read at `out_bits`: for tests and benchmarks of a single circuit
/// outside a job.
pub fn deal_run(
    circ: &ActCircuit,
    elements: usize,
    at: Slot,
    out_bits: u32,
) -> [crate::corr::randomness::PartyRandomness; 2] {
    use crate::corr::randomness::PartyRandomness;
    let seeds = [
        crate::ring::share::fresh_seed(),
        crate::ring::share::fresh_seed(),
    ];
    let net = Netlist::record(circ);
    [
        PartyRandomness::new(Party::S0, seeds[0], Vec::new()),
        PartyRandomness::new(
            Party::S1,
            seeds[1],
            explicit_for(&seeds, at, &net, elements, out_bits),
        ),
    ]
}
