//! Where in a job a correlation belongs.

/// Which correlated randomness a nonlinear step draws on: the streams of its layer and batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub layer: u32,
    pub batch: u32,
}
