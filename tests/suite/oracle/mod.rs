//! The plaintext fixed-point oracle (src/ring/) against float and against the secure protocol in
//! process, and exact rescaling.

mod chain_as_graph;
mod cnn_oracle;
mod graph_oracle;
mod protocol_oracle;
mod rescaling;
