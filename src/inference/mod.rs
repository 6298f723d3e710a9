//! Plaintext float inference, the baseline the secure results are measured against: the MLP
//! over patches (`mlp`), the CNN's convolution stack (`cnn`) and the CNN graph (`graph`), and the convolution layout
//! the CNN shares with the fixed-point oracle, the dealer and the servers' shares: im2col
//! columns (`im2col`) computed by blocks of output rows on every thread (`par_conv`). A
//! graph's maps, their window geometry and direct convolution loops are `map` (the oracle's);
//! its convolutions as matrix products for any element type, `conv_gemm`.
pub mod cnn;
pub mod conv_gemm;
pub mod graph;
pub mod im2col;
pub mod map;
pub mod mlp;
pub mod par_conv;
