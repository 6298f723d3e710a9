//! ppdenoise: privacy-preserving two-server neural image denoising.
//!
//! Layout (docs/architecture.md, top floor last here): `fileio` (atomic writes, `.npy`
//! headers), `image` (images in the clear: PNG, TIFF, DICOM, windows, series), `model` (what a
//! network is: MLP and CNN descriptions, frames, noise maps), `import` (model files: ONNX,
//! safetensors, npz), `inference` (float inference), `metrics` (PSNR/SSIM), `net` (the
//! authenticated S0<->S1 link), `circuit` (boolean circuits written once), `ring` (fixed point
//! in Z_2^64, sharing, the fixed-point plan and its plaintext oracle), `corr` (the
//! correlations: what the dealer writes and the engines read), `formats` (files between
//! parties), `dealer` (the trusted dealer, which makes the correlations), `twopc` (the
//! two-party protocol, which consumes them: Beaver products, garbled circuits, GMW, oblivious
//! transfer), `offline` (the dealer-free offline phase: the servers' own
//! correlations, linear products by lattice encryption), `server` (a server's job: files checked into a ready job, the randomness
//! claimed, the link, the run), `job` (each party's step on one job, on plain options),
//! `study` (a study's slices as jobs, resumable, and their derived series), `cli` (the
//! `ppdenoise` subcommands: arguments parsed, `study` and `job` called).

pub mod audit;
pub mod circuit;
pub mod cli;
pub mod corr;
pub mod dealer;
pub mod fileio;
pub mod formats;
pub mod image;
pub mod import;
pub mod inference;
pub mod job;
pub mod metrics;
pub mod model;
pub mod net;
pub mod offline;
pub mod pacs;
pub mod ring;
pub mod server;
pub mod study;
pub mod twopc;
