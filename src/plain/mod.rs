//! Plaintext side: images, models, patch geometry, metrics and float inference.
pub mod cnn;
pub mod denoise;
pub mod frame;
pub mod geometry;
pub mod im2col;
pub mod image;
pub mod metrics;
pub mod model;
pub mod noise_estimate;
pub mod noise_map;
pub mod npz;
pub mod onnx;
pub mod par_conv;
pub mod phantom;
pub mod preprocess;
pub mod safetensors;
pub mod suspect;
