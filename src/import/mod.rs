//! Model files in and out: a `.npz` (size-checked before it is read: `npz`), a `.safetensors`
//! as PyTorch saves one (`safetensors`) or an `.onnx` graph (`onnx`) becomes a checked
//! `crate::model` description; `Model::load` and `save` are in `mlp`, `Cnn::load`, `save` and
//! `is_cnn_file` in `cnn`.
pub mod cnn;
pub mod mlp;
pub mod npz;
pub mod onnx;
pub mod safetensors;
