//! `demo`: the main job. Runs the whole pipeline on one machine, every party as its own
//! process, and compares the secure result with the plaintext fixed-point oracle and the
//! float model ([`super::pipeline`]).

use anyhow::Result;
use clap::Args;

use super::pipeline::{self, SecureRun};
use super::Summary;

/// The main job: run the whole secure pipeline on one machine, every party its own process
/// (both servers over authenticated TLS on localhost), and compare the result with the
/// plaintext fixed-point oracle and float inference.
#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub run: SecureRun,
}

pub fn demo(a: DemoArgs, json: bool) -> Result<Summary> {
    pipeline::run(a.run, json)
}
