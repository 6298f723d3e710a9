//! Models in (src/import/, src/model/): ONNX, safetensors and .npz imports and refusals, the graph
//! in float, FFDNet weights, plaintext denoising.

mod colour_denoise;
mod ffdnet_weights;
mod foundations;
mod graph_export_forms;
mod graph_float;
mod onnx;
mod onnx_refusals;
mod safetensors;
mod torch_graphs;
