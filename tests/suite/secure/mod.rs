//! The secure path through the binary (src/twopc/, src/server/, src/dealer/, src/offline/, src/net/): MLP, CNN
//! and graph jobs equal to the oracle, masking of every message, the relay, progress.

mod cnn_pipeline;
mod colour_secure;
mod dealer_free;
mod graph_pipeline;
mod masking;
mod progress;
mod relay;
mod secure_pipeline;
