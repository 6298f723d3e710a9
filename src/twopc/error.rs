//! The error of a secure job's protocol and of its engines: the link failed, the dealer's
//! randomness ran out or was malformed, or the job's setup was refused.

use crate::corr::randomness::RandomnessError;
use crate::twopc::channel::ChannelError;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    #[error("{0}")]
    Setup(String),
}
