//! What a network is, with no file and no arithmetic behind it: the patch MLP (`mlp`) and the
//! convolution stack (`cnn`) and the CNN graph (`graph`) with their limits and checks, the frame around a CNN (`frame`),
//! how pixels enter (`preprocess`), how an image is cut into an MLP's patches (`geometry`),
//! the noise levels a model with a noise map takes (`noise_map`) and the tanh* activation
//! (`tanhstar`). The files they are read from are `crate::import`'s; the float forward passes
//! are `crate::inference`'s; the fixed-point plans built from them are `crate::ring`'s.
pub mod cnn;
pub mod frame;
pub mod geometry;
pub mod graph;
pub mod mlp;
pub mod noise_map;
pub mod preprocess;
pub mod tanhstar;
