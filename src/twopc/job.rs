//! What every secure job shares, whatever its model family: the trait `server` runs a job
//! through ([`SecureJob`]), the job's error and report, where its masked weights come from,
//! and the two steps every job begins with (the session check, the weights' opening).

use crate::ring::Party;
use std::time::Instant;

use serde::Serialize;

use crate::corr::randomness::PartyRandomness;
use crate::formats::bodies::OutputShare;
use crate::twopc::channel::{exchange, Channel, ChannelError, LinkStats};
use crate::twopc::error::ProtocolError;
use crate::twopc::nonlinear::{EngineCounters, Nonlinear};
use crate::twopc::weights::{open_layers, Opened};

/// One secure job of a model family (the MLP's patches, a CNN graph's whole image), its
/// inputs checked and held: `server` dispatches on the model's family once, when it builds
/// the job, and then runs every job through this.
pub(crate) trait SecureJob: Send {
    /// Runs the protocol over `ch` as `party`, with the job's randomness, the session tag
    /// both servers must hold and the engine; `progress` is told each step done (out of
    /// [`Self::steps`]). Returns this party's output share and the report.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        ch: &mut dyn Channel,
        party: Party,
        rand: PartyRandomness,
        session_tag: Vec<u8>,
        engine: &mut dyn Nonlinear,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(OutputShare, Report), ProtocolError>;
    /// How many steps `progress` counts up to, and what they are ("patches", "steps").
    fn steps(&self) -> (usize, &'static str);
    /// What the report's count counts ("patches" or "pixels").
    fn unit(&self) -> &'static str;
    /// The network the output share's header names (`None`: the MLP, which names none).
    fn network(&self) -> Option<&'static str>;
    /// What the output share's header says of the job's tile (empty: the whole image).
    fn tile_facts(&self) -> Vec<(String, String)>;
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// 0 or 1 (`u8::from(Party)`), as the JSON summary prints it.
    pub party: u8,
    pub patches: usize,
    pub batches: usize,
    pub seconds_setup: f64,
    pub seconds_linear: f64,
    /// A graph job's part of `seconds_linear` in its products alone (packing and multiplying,
    /// the kernel's work), without the openings (which wait on the peer) and the randomness.
    pub seconds_products: f64,
    pub seconds_nonlinear: f64,
    pub seconds_polynomial: f64,
    pub seconds_total: f64,
    pub link: LinkStats,
    pub engine: EngineCounters,
    /// Multiply-adds of the job's secret products (weights times a secret map), counted
    /// once: each party computes two such products (docs/protocol.md), so the linear
    /// phase's rate is `2 macs / seconds_linear` per party. 0 where not counted (an MLP).
    pub macs: u64,
    /// A graph job's figures per op kind, in the order first met (`OpenWeights`: the
    /// opening of its weights when it opens them itself); empty for other jobs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpFigures>,
}

/// One op kind's part of a graph job, as one party saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpFigures {
    /// ONNX's name of the op (`Trunc`: the plan's rescalings; `OpenWeights`: the opening
    /// of the masked weights at the job's start).
    pub op: &'static str,
    pub steps: usize,
    pub seconds: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub engine_rounds: u64,
    pub and_gates: u64,
    /// The plan's counts for the op kind (`inspect`'s): circuit elements and multiply-adds.
    pub comparisons: u64,
    pub macs: u64,
}

impl OpFigures {
    /// Adds one step: the time since `t` and what the link and the engine did between the
    /// two readings of each.
    pub fn add_step(
        &mut self,
        t: Instant,
        (l, l2): (LinkStats, LinkStats),
        (e, e2): (EngineCounters, EngineCounters),
    ) {
        self.steps += 1;
        self.seconds += t.elapsed().as_secs_f64();
        self.bytes_sent += l2.bytes_sent - l.bytes_sent;
        self.bytes_received += l2.bytes_received - l.bytes_received;
        self.messages_sent += l2.messages_sent - l.messages_sent;
        self.engine_rounds += e2.rounds - e.rounds;
        self.and_gates += e2.and_gates - e.and_gates;
    }
}

/// Where the masked weights U = W - A come from (see [`crate::twopc::weights`]).
pub enum Weights<'a> {
    /// Opened at the start of this job, A from the job's randomness.
    PerJob,
    /// Opened once for the model; the job's matrix triples were made against its A.
    Opened(&'a Opened),
}

/// Opens U = W - A in a job without a model mask: A is this job's own, one weight mask per
/// layer (each served once). `layers`: this party's weight shares and the count each must
/// have (a share of another length is refused, not opened).
pub(crate) fn open_in_job(
    ch: &mut dyn Channel,
    party: Party,
    rand: &mut PartyRandomness,
    layers: &[(&[u64], usize)],
) -> Result<Opened, ProtocolError> {
    let mask = layers
        .iter()
        .enumerate()
        .map(|(l, &(_, n))| rand.weight_mask(l as u32, n))
        .collect::<Result<_, _>>()?;
    let w: Vec<&[u64]> = layers.iter().map(|&(w, _)| w).collect();
    Ok(open_layers(ch, party, &w, mask)?)
}

/// Exchanges the session tags (job, model and randomness ids): a peer holding the files of
/// another job, model or dealer run is refused before anything secret is sent.
pub(crate) fn same_session(
    ch: &mut dyn Channel,
    party: Party,
    tag: &[u8],
) -> Result<(), ChannelError> {
    if exchange(ch, party, tag)? != tag {
        return Err(ChannelError::Mismatch(
            "the peer server holds files of a different job, model or dealer run".into(),
        ));
    }
    Ok(())
}
