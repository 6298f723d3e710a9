//! How a party's correlated randomness is laid out, shared by the dealer (who makes it) and
//! the servers (who consume it), so both walk it in the same order.
//!
//! Each party holds a seed; masks and party 0's triple shares come from ChaCha streams named
//! by purpose, layer and batch ([`Stream`]). Party 1's triple shares (`c` of C = A B and of
//! the elementwise triples) are explicit "corrections", consumed in the order
//! batch -> layer -> (matrix triple, then elementwise triples of a hidden layer).

use crate::ring::plan::MLP_OPEN_BITS;
use crate::ring::share::{Prg, Seed, Stream};
use crate::ring::Party;

/// Elementwise correlations for one hidden layer and batch (`e` elements): a square pair
/// (sa, sa^2) for tc^2 and two Beaver triples for the selections g1 p1 and g2 p2.
#[derive(Clone, Debug, Default)]
pub struct ElemTriples {
    pub sq_a: Vec<u64>,
    pub sq_c: Vec<u64>,
    pub a: [Vec<u64>; 2],
    pub b: [Vec<u64>; 2],
    pub c: [Vec<u64>; 2],
}

/// Bit-sliced AND triples for one run of a boolean circuit: `gates * words` words each,
/// gate after gate (see [`crate::twopc::gmw`]); c = a AND b once both parties' are XORed,
/// with the `b` of the triple's group leader where ANDs share an input
/// ([`crate::circuit::netlist::Netlist::b_sources`]).
#[derive(Clone, Debug, Default)]
pub struct AndTriples {
    pub a: Vec<u64>,
    pub b: Vec<u64>,
    pub c: Vec<u64>,
}

impl AndTriples {
    /// Party `party`'s masks of the ANDs of the parties' own bits (`owned`, per triple:
    /// [`crate::circuit::netlist::Netlist::owned_ands`]): such an AND's `a` (masking its
    /// first input, party p's bit) is p's alone and its `b` the other party's alone, so
    /// each party zeroes its share of the mask of the other's input. The dealer does the
    /// same to both parties' draws before making `c` ([`keep_owned`]).
    pub fn keep_owned(&mut self, owned: &[Option<u8>], party: Party, words: usize) {
        keep_owned(owned, party, &mut self.a, &mut self.b, words);
    }
}

/// [`AndTriples::keep_owned`] on party `party`'s seed-drawn `a` and `b` (`words` words a
/// triple).
pub fn keep_owned(owned: &[Option<u8>], party: Party, a: &mut [u64], b: &mut [u64], words: usize) {
    for (t, o) in owned.iter().enumerate() {
        let Some(p) = *o else { continue };
        let zero = if u8::from(party) == p {
            &mut *b
        } else {
            &mut *a
        };
        zero[t * words..(t + 1) * words].fill(0);
    }
}

/// daBits for one run: random bits r, XOR-shared and bit-sliced (`outputs * words` words),
/// and additively shared in Z_2^64 (`outputs * elements` values, output after output).
#[derive(Clone, Debug, Default)]
pub struct DaBits {
    pub bits: Vec<u64>,
    pub arith: Vec<u64>,
}

/// edaBits for one run: per element, random values r_e < 2^(m_e), as XOR-shared bits
/// (`r_bits * words` words, the bits of all of an element's edaBits in order, bit-sliced) and
/// as additive shares in Z_2^64 (`edas * elements` values, edaBit after edaBit).
#[derive(Clone, Debug, Default)]
pub struct EdaBits {
    pub bits: Vec<u64>,
    pub arith: Vec<u64>,
}

/// The boolean engine's ReLU selection for one circuit run (docs/protocol.md, "The ReLU by
/// selection"), this party's additive shares per element: `a` of a random a mod 2^sw (sw the
/// daBits' width) and `ar` of a r_s, r_s the sign's daBit, for the product of the truncated
/// sum with the sign; when the result is extended to the readers' width, `r` of a random
/// r < 2^k (correct mod 2^out) and `msb` of r's bit k - 1 (correct mod 2^(out - k)).
#[derive(Clone, Debug, Default)]
pub struct ReluSelection {
    pub a: Vec<u64>,
    pub ar: Vec<u64>,
    pub r: Vec<u64>,
    pub msb: Vec<u64>,
}

/// Party 1's explicit values read in consumption order from outside memory (the dealer
/// file, [`crate::formats::triplet_stream::CorrectionReader`]): values of varying widths
/// packed one after another ([`crate::corr::pack::Packed`]), so lengths and positions
/// count bits.
pub trait CorrectionSource: Send {
    /// Number of bits in the source.
    fn len(&self) -> u64;
    /// Bits read so far.
    fn position(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where they come from, to name in errors.
    fn origin(&self) -> &std::path::Path;
    /// The next `n` values of `bits` bits each (their higher bits zero: a reader uses them
    /// only mod 2^bits).
    fn take(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, String>;
    /// After the last `take`: were the values read exactly the verified ones?
    fn finish(&self) -> Result<(), String>;
}

/// Where party 1's explicit values come from.
enum Corrections {
    /// One value per u64 (tests' deals in memory: [`crate::dealer::graph::Deal`]); a
    /// `take` at `bits` hands them on as they are, so lengths and positions count values.
    Memory { values: Vec<u64>, cursor: usize },
    /// Packed at their widths, as in the dealer file (a decoded triplet body).
    Packed {
        p: crate::corr::pack::Packed,
        /// Bytes handed to `reader` so far.
        at: usize,
        reader: crate::corr::pack::BitReader,
        read: u64,
    },
    /// Read from the dealer file in consumption order (the server's case).
    File(Box<dyn CorrectionSource>),
}

/// Source of one party's randomness for a job.
pub struct PartyRandomness {
    pub party: Party,
    seed: Seed,
    corrections: Corrections,
    /// Triple streams handed out so far: a second claim of one is refused, not served again.
    claimed: std::collections::HashSet<(Purpose, u32, u32)>,
}

/// The single-use correlations, for the reuse check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Purpose {
    MatTriple,
    ElemTriple,
    AndTriple,
    DaBit,
    EdaBit,
    ReluSelect,
    MapExtend,
    WeightMask,
    ImageMask,
    ActMask,
}

#[derive(Debug, thiserror::Error)]
pub enum RandomnessError {
    #[error("the correlated randomness is exhausted ({need} more {unit} needed at offset {at} of {len}): it was made for a different job size")]
    Exhausted {
        need: u64,
        at: u64,
        len: u64,
        unit: &'static str,
    },
    #[error("the correlated randomness holds more than this job uses ({at} of {len} {unit} used): it was made for a different job")]
    Leftover {
        at: u64,
        len: u64,
        unit: &'static str,
    },
    #[error("{0}")]
    Unreadable(String),
    #[error("the correlated randomness of {what} for layer {layer}, batch {batch} was already used; using it twice would leak data")]
    Reused {
        what: &'static str,
        layer: u32,
        batch: u32,
    },
}

impl PartyRandomness {
    pub fn new(party: Party, seed: Seed, corrections: Vec<u64>) -> Self {
        PartyRandomness {
            party,
            seed,
            corrections: Corrections::Memory {
                values: corrections,
                cursor: 0,
            },
            claimed: Default::default(),
        }
    }

    /// Party randomness whose explicit values are a decoded triplet body's, packed at their
    /// widths as in the file.
    pub fn packed(party: Party, seed: Seed, corrections: crate::corr::pack::Packed) -> Self {
        PartyRandomness {
            party,
            seed,
            corrections: Corrections::Packed {
                p: corrections,
                at: 0,
                reader: Default::default(),
                read: 0,
            },
            claimed: Default::default(),
        }
    }

    /// Party randomness whose explicit values are streamed from the dealer file.
    pub fn streaming(
        party: Party,
        seed: Seed,
        corrections: impl CorrectionSource + 'static,
    ) -> Self {
        PartyRandomness {
            party,
            seed,
            corrections: Corrections::File(Box::new(corrections)),
            claimed: Default::default(),
        }
    }

    /// Prefixes an error with the dealer file's path when the values come from one.
    fn naming_file(&self, e: RandomnessError) -> RandomnessError {
        match &self.corrections {
            Corrections::File(r) => {
                RandomnessError::Unreadable(format!("{}: {e}", r.origin().display()))
            }
            Corrections::Memory { .. } | Corrections::Packed { .. } => e,
        }
    }

    /// Records a claim of a single-use stream; the second claim of one is an error.
    fn claim(&mut self, p: Purpose, layer: u32, batch: u32) -> Result<(), RandomnessError> {
        if self.claimed.insert((p, layer, batch)) {
            return Ok(());
        }
        let what = match p {
            Purpose::MatTriple => "a matrix triple",
            Purpose::ElemTriple => "elementwise triples",
            Purpose::AndTriple => "AND triples",
            Purpose::DaBit => "daBits",
            Purpose::EdaBit => "edaBits",
            Purpose::ReluSelect => "a ReLU selection",
            Purpose::MapExtend => "a map's extension",
            Purpose::WeightMask => "a weight mask",
            Purpose::ImageMask => "the image mask",
            Purpose::ActMask => "an activation mask",
        };
        Err(RandomnessError::Reused { what, layer, batch })
    }

    /// (read, held, unit) of the explicit values.
    fn position(&self) -> (u64, u64, &'static str) {
        match &self.corrections {
            Corrections::Memory { values, cursor } => {
                (*cursor as u64, values.len() as u64, "values")
            }
            Corrections::Packed { p, read, .. } => (*read, p.bits(), "bits"),
            Corrections::File(r) => (r.position(), r.len(), "bits"),
        }
    }

    /// The weight mask of a job that opens its own weights (no model mask). Like every mask
    /// of a value that is opened, it is served once: a second opening under the same mask
    /// would reveal the difference of the two values.
    pub fn weight_mask(&mut self, layer: u32, n: usize) -> Result<Vec<u64>, RandomnessError> {
        self.claim(Purpose::WeightMask, layer, 0)?;
        Ok(crate::corr::masks::mask_share(&self.seed, layer, n))
    }

    pub fn image_mask(&mut self, n: usize) -> Result<Vec<u64>, RandomnessError> {
        self.claim(Purpose::ImageMask, 0, 0)?;
        Ok(image_mask_of(&self.seed, n))
    }

    pub fn act_mask(
        &mut self,
        layer: u32,
        batch: u32,
        n: usize,
    ) -> Result<Vec<u64>, RandomnessError> {
        self.claim(Purpose::ActMask, layer, batch)?;
        Ok(act_mask_of(&self.seed, layer, batch, n))
    }

    /// The next `n` explicit values, read mod 2^bits by their consumer: the file holds
    /// only those bits (docs/protocol.md, "Ring width").
    fn take(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, RandomnessError> {
        let (at, len, unit) = self.position();
        let need = match &self.corrections {
            Corrections::Memory { .. } => n as u64,
            _ => n as u64 * bits as u64,
        };
        if at + need > len {
            return Err(self.naming_file(RandomnessError::Exhausted {
                need,
                at,
                len,
                unit,
            }));
        }
        match &mut self.corrections {
            Corrections::Memory { values, cursor } => {
                let v = values[*cursor..*cursor + n].to_vec();
                *cursor += n;
                Ok(v)
            }
            Corrections::Packed {
                p,
                at,
                reader,
                read,
            } => {
                let k = reader.bytes_for(n, bits);
                let mut v = Vec::with_capacity(n);
                reader.take(&p.bytes()[*at..*at + k], n, bits, &mut v);
                *at += k;
                *read += need;
                Ok(v)
            }
            Corrections::File(r) => r.take(n, bits).map_err(RandomnessError::Unreadable),
        }
    }

    /// This party's `n` shares of a dealt value, correct mod 2^bits: party 0's from `prg`,
    /// the stream both parties draw the correlation's masks from (whole words), party 1's
    /// its next explicit values (their low `bits`).
    fn shares(&mut self, prg: &mut Prg, n: usize, bits: u32) -> Result<Vec<u64>, RandomnessError> {
        if self.party.is_s0() {
            Ok(prg.vec(n))
        } else {
            self.take(n, bits)
        }
    }

    /// This party's share of C = A B for (layer, batch), n = outputs x batch, correct mod
    /// 2^bits: the width at which the product's result is read (party 0's share is the
    /// seed's whole word, party 1's only its low `bits`; their sum is C mod 2^bits).
    pub fn mat_triple(
        &mut self,
        layer: u32,
        batch: u32,
        n: usize,
        bits: u32,
    ) -> Result<Vec<u64>, RandomnessError> {
        self.claim(Purpose::MatTriple, layer, batch)?;
        // Party 0's stream alone: party 1 never keys it (the masking tests check).
        if self.party.is_s0() {
            Ok(Prg::new(&self.seed, Stream::MatTriple(layer, batch)).vec(n))
        } else {
            self.take(n, bits)
        }
    }

    pub fn elem_triples(
        &mut self,
        layer: u32,
        batch: u32,
        e: usize,
    ) -> Result<ElemTriples, RandomnessError> {
        self.claim(Purpose::ElemTriple, layer, batch)?;
        let (sq_a, a, b, mut prg) = elem_masks(&self.seed, layer, batch, e);
        let w = MLP_OPEN_BITS;
        let sq_c = self.shares(&mut prg, e, w)?;
        let c = [self.shares(&mut prg, e, w)?, self.shares(&mut prg, e, w)?];
        Ok(ElemTriples {
            sq_a,
            sq_c,
            a,
            b,
            c,
        })
    }

    /// The boolean engine's AND triples for one circuit run of (layer, batch).
    pub fn and_triples(
        &mut self,
        layer: u32,
        batch: u32,
        gates: usize,
        words: usize,
    ) -> Result<AndTriples, RandomnessError> {
        self.claim(Purpose::AndTriple, layer, batch)?;
        let (a, b, mut prg) = and_masks(&self.seed, layer, batch, gates * words);
        let c = self.shares(&mut prg, gates * words, 64)?;
        Ok(AndTriples { a, b, c })
    }

    /// The boolean engine's daBits for one circuit run of (layer, batch); their additive
    /// shares correct mod 2^bits, the width at which the circuit's outputs are read.
    pub fn dabits(
        &mut self,
        layer: u32,
        batch: u32,
        outputs: usize,
        words: usize,
        elements: usize,
        width: u32,
    ) -> Result<DaBits, RandomnessError> {
        self.claim(Purpose::DaBit, layer, batch)?;
        let (bits, mut prg) = dabit_masks(&self.seed, layer, batch, outputs * words);
        let arith = self.shares(&mut prg, outputs * elements, width)?;
        Ok(DaBits { bits, arith })
    }

    /// The boolean engine's edaBits for one circuit run of (layer, batch): `r_bits` bits per
    /// element in all, `edas` values per element; their additive shares correct mod
    /// 2^bits, as [`Self::dabits`]'.
    #[allow(clippy::too_many_arguments)]
    pub fn edabits(
        &mut self,
        layer: u32,
        batch: u32,
        r_bits: usize,
        words: usize,
        edas: usize,
        elements: usize,
        width: u32,
    ) -> Result<EdaBits, RandomnessError> {
        if edas == 0 {
            return Ok(EdaBits::default());
        }
        self.claim(Purpose::EdaBit, layer, batch)?;
        let (bits, mut prg) = eda_masks(&self.seed, layer, batch, r_bits * words);
        let arith = self.shares(&mut prg, edas * elements, width)?;
        Ok(EdaBits { bits, arith })
    }

    /// The boolean engine's ReLU selection for one circuit run of (layer, batch) over
    /// `elements`: its product at `sw` bits; `extend`: (the readers' width, k) when the
    /// result is extended from 2^k to it.
    pub fn relu_select(
        &mut self,
        layer: u32,
        batch: u32,
        elements: usize,
        sw: u32,
        extend: Option<(u32, u32)>,
    ) -> Result<ReluSelection, RandomnessError> {
        self.claim(Purpose::ReluSelect, layer, batch)?;
        let (a, _, mut prg) = relu_select_masks(&self.seed, layer, batch, elements);
        let e = elements;
        let ar = self.shares(&mut prg, e, sw)?;
        let (r, msb) = match extend {
            Some((out, k)) => (
                self.shares(&mut prg, e, out)?,
                self.shares(&mut prg, e, out - k)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(ReluSelection { a, ar, r, msb })
    }

    /// Tensor `layer`'s extension before its opening, a ReLU's result held mod 2^k, to
    /// `hi_bits` more bits (the boolean engine's graph steps after a ReLU, `twopc::extend`), `n`
    /// elements: this party's bits ρ_i masking its shares' top bits (0 or 1 each, from its
    /// own seed, which the peer lacks) and its shares of ρ_0 ρ_1, correct mod 2^`hi_bits`.
    pub fn map_extension(
        &mut self,
        layer: u32,
        n: usize,
        hi_bits: u32,
    ) -> Result<(Vec<u64>, Vec<u64>), RandomnessError> {
        self.claim(Purpose::MapExtend, layer, 0)?;
        let mut prg = Prg::new(&self.seed, Stream::MapExtend(layer));
        let rho = extension_bits(&mut prg, n);
        if self.party.is_s0() {
            Ok((rho, prg.vec(n)))
        } else {
            Ok((rho, self.take(n, hi_bits)?))
        }
    }

    /// At the end of a job: every explicit value was consumed and, when they were streamed
    /// from the dealer file, they were exactly the checksum-verified ones.
    pub fn finish(&self) -> Result<(), RandomnessError> {
        let (at, len, unit) = self.position();
        if at != len {
            return Err(self.naming_file(RandomnessError::Leftover { at, len, unit }));
        }
        match &self.corrections {
            Corrections::Memory { .. } | Corrections::Packed { .. } => Ok(()),
            Corrections::File(r) => r.finish().map_err(RandomnessError::Unreadable),
        }
    }
}

/// `n` bits of `prg`, 64 to a word drawn, one per value (0 or 1): a party's masks of its
/// shares' top bits in a map's extension ([`PartyRandomness::map_extension`]).
pub(crate) fn extension_bits(prg: &mut Prg, n: usize) -> Vec<u64> {
    bits_of(&extension_words(prg, n), n)
}

/// The words [`extension_bits`] takes its `n` bits from, as drawn: the dealer draws both
/// parties' through this and ANDs them before spreading them to one bit a value.
pub(crate) fn extension_words(prg: &mut Prg, n: usize) -> Vec<u64> {
    prg.vec(n.div_ceil(64))
}

/// The first `n` bits of `words`, low bit first, one per value (0 or 1).
pub(crate) fn bits_of(words: &[u64], n: usize) -> Vec<u64> {
    (0..n).map(|i| (words[i / 64] >> (i % 64)) & 1).collect()
}

/// The seed-derived part of a party's elementwise triples: (sq_a, a, b) and the stream
/// positioned where party 0's `c` shares follow.
pub type ElemMasks = (Vec<u64>, [Vec<u64>; 2], [Vec<u64>; 2], Prg);

pub fn elem_masks(seed: &Seed, layer: u32, batch: u32, e: usize) -> ElemMasks {
    let mut prg = Prg::new(seed, Stream::ElemTriple(layer, batch));
    let sq_a = prg.vec(e);
    let a = [prg.vec(e), prg.vec(e)];
    let b = [prg.vec(e), prg.vec(e)];
    (sq_a, a, b, prg)
}

/// The seed-derived part of a party's AND triples: (a, b) and the stream positioned where
/// party 0's `c` follows.
pub fn and_masks(seed: &Seed, layer: u32, batch: u32, words: usize) -> (Vec<u64>, Vec<u64>, Prg) {
    let mut prg = Prg::new(seed, Stream::AndTriple(layer, batch));
    let a = prg.vec(words);
    let b = prg.vec(words);
    (a, b, prg)
}

/// The seed-derived part of a party's daBits: the XOR-shared bits and the stream positioned
/// where party 0's arithmetic shares follow.
pub fn dabit_masks(seed: &Seed, layer: u32, batch: u32, words: usize) -> (Vec<u64>, Prg) {
    let mut prg = Prg::new(seed, Stream::DaBit(layer, batch));
    let bits = prg.vec(words);
    (bits, prg)
}

/// A party's share of the image mask (the dealer's view: no reuse check).
pub fn image_mask_of(seed: &Seed, n: usize) -> Vec<u64> {
    Prg::new(seed, Stream::ImageMask).vec(n)
}

/// A party's share of the activation mask of (layer, batch) (the dealer's view).
pub fn act_mask_of(seed: &Seed, layer: u32, batch: u32, n: usize) -> Vec<u64> {
    Prg::new(seed, Stream::ActMask(layer, batch)).vec(n)
}

/// The seed-derived part of a party's edaBits: the XOR-shared bits and the stream positioned
/// where party 0's additive shares follow.
pub fn eda_masks(seed: &Seed, layer: u32, batch: u32, words: usize) -> (Vec<u64>, Prg) {
    let mut prg = Prg::new(seed, Stream::EdaBit(layer, batch));
    let bits = prg.vec(words);
    (bits, prg)
}

/// The seed-derived part of a party's ReLU selections for `e` elements: its share of `a`,
/// its part `u` of the extension mask (r = (u0 ⊕ u1) mod 2^k, known to neither party), and
/// the stream positioned where party 0's other shares follow.
pub fn relu_select_masks(
    seed: &Seed,
    layer: u32,
    batch: u32,
    e: usize,
) -> (Vec<u64>, Vec<u64>, Prg) {
    let mut prg = Prg::new(seed, Stream::ReluSelect(layer, batch));
    let a = prg.vec(e);
    let u = prg.vec(e);
    (a, u, prg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triple_stream_is_served_once() {
        let mut r = PartyRandomness::new(Party::S0, [3; 32], Vec::new());
        r.and_triples(1, 2, 4, 3).unwrap();
        r.dabits(1, 2, 4, 3, 150, 64).unwrap();
        r.and_triples(1, 3, 4, 3).unwrap();
        r.elem_triples(1, 2, 5).unwrap();
        r.mat_triple(1, 2, 5, 64).unwrap();
        r.edabits(1, 2, 4, 3, 2, 150, 64).unwrap();
        r.act_mask(1, 2, 10).unwrap();
        r.weight_mask(1, 10).unwrap();
        r.image_mask(10).unwrap();
        for e in [
            r.and_triples(1, 2, 4, 3).err(),
            r.dabits(1, 2, 1, 1, 1, 64).err(),
            r.elem_triples(1, 2, 5).err(),
            r.mat_triple(1, 2, 5, 64).err(),
            r.edabits(1, 2, 4, 3, 2, 150, 64).err(),
            // A mask of an opened value is served once too: a second opening would leak.
            r.act_mask(1, 2, 10).err(),
            r.weight_mask(1, 10).err(),
            r.image_mask(10).err(),
        ] {
            assert!(matches!(e, Some(RandomnessError::Reused { .. })), "{e:?}");
        }
    }

    /// Packed at their widths, the explicit values are counted in bits, exactly: a take
    /// one bit wider than what is left is refused, one bit narrower leaves a bit over.
    #[test]
    fn packed_values_are_counted_exactly_in_bits() {
        let mut p = crate::corr::pack::Packed::default();
        p.push(&[5, u64::MAX, 7], 31);
        let fresh = || PartyRandomness::packed(Party::S1, [1; 32], p.clone());
        let mut r = fresh();
        assert_eq!(r.mat_triple(0, 0, 2, 31).unwrap(), [5, (1 << 31) - 1]);
        let e = r.mat_triple(0, 1, 1, 32).unwrap_err().to_string();
        assert!(e.contains("32 more bits needed at offset 62 of 93"), "{e}");
        let mut r = fresh();
        r.mat_triple(0, 0, 2, 31).unwrap();
        r.mat_triple(0, 1, 1, 30).unwrap();
        let e = r.finish().unwrap_err().to_string();
        assert!(e.contains("92 of 93 bits used"), "{e}");
        let mut r = fresh();
        r.mat_triple(0, 0, 3, 31).unwrap();
        r.finish().unwrap();
    }
}
