//! The `ppdenoise` command line: one subcommand per party's step, plus plaintext tools.

mod bench;
mod bench_kernels;
mod bench_tiles;
mod colour;
pub mod dealer;
mod demo;
mod figures;
mod folders;
mod gateway;
mod inputs;
mod keys;
mod owner;
mod pacs;
mod pipeline;
mod procs;
pub mod receiver;
mod relay;
mod server;
pub mod study;
mod table;
mod tools;
mod weights;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ppdenoise",
    version,
    about = "Privacy-preserving neural image denoising on two non-colluding servers",
    long_about = "ppdenoise denoises images with an MLP (Burger et al.) on two servers that never see \
the image, the result or the network's weights (Zheng et al., TDSC 2019). A gateway secret-shares \
the noisy image, a model owner secret-shares the model, a trusted dealer makes correlated randomness, \
the two servers run a two-party protocol and a receiver reconstructs the result. Every hand-over is a file.\n\n\
Pipeline:\n  keygen -> share-model -> share-image -> gen-triplets -> serve --party 0 & serve --party 1 -> reconstruct\n\n\
A study (a DICOM series or a folder of images), every slice its own job, resumable:\n  share-study -> gen-triplets --study -> serve --study (both) -> study-status -> reconstruct --study\n\n\
Once per model, so that its jobs do not open the masked weights again:\n  gen-model-mask -> open-weights --party 0 & open-weights --party 1; then every job: gen-triplets --model-mask, serve --weights\n\n\
Wherever an input image is expected, `builtin:phantom` (or `builtin:phantom:<size>`) names the built-in \
Shepp-Logan phantom."
)]
pub struct Cli {
    /// Append one JSON line to this audit file for the command: when, what, which party, the
    /// ids, the blake3 of its input and output files, the keys and certificates it used, the
    /// archive and study UID, the result; never a path, a patient's name or ID, or a pixel
    /// (docs/security.md). Default: the file PPDENOISE_AUDIT names; without either, none.
    #[arg(long, global = true, value_name = "FILE")]
    audit: Option<std::path::PathBuf>,
    /// Print a one-line JSON summary instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress and no per-slice lines on stderr (results and errors are still printed).
    /// Every command takes it, so that a script can pass it to each.
    #[arg(long, global = true)]
    quiet: bool,
    /// Convert a colour PNG or TIFF to its luma (BT.601) for a gray model, instead of refusing
    /// it; the summary names each file converted.
    #[arg(long, global = true)]
    as_gray: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(server::KeygenArgs),
    ShareModel(owner::ShareModelArgs),
    ShareImage(gateway::ShareImageArgs),
    ShareStudy(study::ShareStudyArgs),
    GenModelMask(dealer::GenModelMaskArgs),
    GenTriplets(dealer::GenTripletsArgs),
    OpenWeights(weights::OpenWeightsArgs),
    Serve(server::ServeArgs),
    Reconstruct(receiver::ReconstructArgs),
    StudyStatus(study::StudyStatusArgs),
    FileSeries(pacs::FileSeriesArgs),
    Receive(pacs::ReceiveArgs),
    Denoise(tools::DenoiseArgs),
    AddNoise(gateway::AddNoiseArgs),
    Metrics(tools::MetricsArgs),
    Inspect(tools::InspectArgs),
    Demo(demo::DemoArgs),
    Bench(bench::BenchArgs),
    BenchKernels(bench_kernels::BenchKernelsArgs),
    BenchTiles(bench_tiles::BenchTilesArgs),
    /// Evaluation table (PSNR/SSIM of plaintext and secure runs, time, traffic) and figures.
    Table(table::TableArgs),
    Relay(relay::RelayArgs),
}

pub use crate::job::Summary;

/// Runs one command line (the program's name first) in this process and returns its
/// summary: what `main` does, without the printing and the exit code (the fuzzing of
/// `table --resume` calls the table command this way).
pub fn run_args<I, T>(args: I) -> anyhow::Result<Summary>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    dispatch(cli.command, cli.json, cli.quiet, cli.as_gray)
}

fn dispatch(command: Command, json: bool, quiet: bool, as_gray: bool) -> anyhow::Result<Summary> {
    crate::image::colour::set_as_gray(as_gray);
    let mut s = run_command(command, json, quiet)?;
    let converted = crate::image::colour::converted();
    if !converted.is_empty() {
        s.lines.push(format!(
            "--as-gray: colour converted to its luma (BT.601): {}",
            converted.join(", ")
        ));
        if let Some(m) = s.json.as_object_mut() {
            m.insert("as_gray".into(), converted.into());
        }
    }
    Ok(s)
}

fn run_command(command: Command, json: bool, quiet: bool) -> anyhow::Result<Summary> {
    // `--quiet` before the subcommand, for those that have their own.
    let command = match command {
        Command::ShareStudy(mut a) => {
            a.quiet |= quiet;
            Command::ShareStudy(a)
        }
        Command::GenTriplets(mut a) => {
            a.quiet |= quiet;
            Command::GenTriplets(a)
        }
        Command::Serve(mut a) => {
            a.quiet |= quiet && !a.progress;
            Command::Serve(a)
        }
        Command::Demo(mut a) => {
            a.run.quiet |= quiet;
            Command::Demo(a)
        }
        Command::Table(mut a) => {
            a.quiet |= quiet;
            Command::Table(a)
        }
        Command::FileSeries(mut a) => {
            a.quiet |= quiet;
            Command::FileSeries(a)
        }
        Command::Receive(mut a) => {
            a.quiet |= quiet;
            Command::Receive(a)
        }
        other => other,
    };
    match command {
        Command::Keygen(a) => server::keygen(a),
        Command::ShareModel(a) => owner::share_model(a),
        Command::ShareImage(a) => gateway::share_image(a),
        Command::ShareStudy(a) => study::share_study(a),
        Command::GenModelMask(a) => dealer::gen_model_mask(a),
        Command::GenTriplets(a) => dealer::gen_triplets(a),
        Command::OpenWeights(a) => weights::open_weights_cmd(a),
        Command::Serve(a) => server::serve(a, json),
        Command::Reconstruct(a) => receiver::reconstruct(a),
        Command::StudyStatus(a) => study::study_status(a),
        Command::FileSeries(a) => pacs::file_series(a),
        Command::Receive(a) => pacs::receive(a, AUDIT.get().cloned()),
        Command::Denoise(a) => tools::denoise(a),
        Command::AddNoise(a) => gateway::add_noise(a),
        Command::Metrics(a) => tools::metrics(a),
        Command::Inspect(a) => tools::inspect(a),
        Command::Demo(a) => demo::demo(a, json),
        Command::Bench(a) => bench::bench(a),
        Command::BenchKernels(a) => bench_kernels::bench_kernels(a),
        Command::BenchTiles(a) => bench_tiles::bench_tiles(a),
        Command::Table(a) => table::table(a, json),
        Command::Relay(a) => relay::relay(a, json),
    }
}

/// The audit file of this run, for a command that writes lines of its own as it goes
/// (`receive`: one per association).
static AUDIT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    if let Some(f) = crate::audit::file(cli.audit.clone()) {
        let _ = AUDIT.set(f);
    }
    // The audit file opened (to append) before the command runs: one that cannot be written
    // fails the command before it has any effect.
    let audit = crate::audit::file(cli.audit.clone()).map(|f| {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        crate::audit::Trail::open(&f).map(|t| (t, crate::audit::Plan::of(&args)))
    });
    let res = match audit {
        Some(Err(e)) => Err(e),
        Some(Ok((mut trail, plan))) => {
            let res = dispatch(cli.command, json, cli.quiet, cli.as_gray);
            // The line is appended before the result is told: a command whose line could not
            // be written fails.
            let line = crate::audit::line(&plan, res.as_ref().map(|s| &s.json).map_err(|_| ()));
            let audited = trail.append(&line);
            res.and_then(|s| audited.map(|()| s))
        }
        None => dispatch(cli.command, json, cli.quiet, cli.as_gray),
    };
    match res {
        Ok(mut s) => {
            if json {
                if let Some(m) = s.json.as_object_mut() {
                    m.insert("peak_rss_bytes".into(), peak_rss_bytes().into());
                }
                println!("{}", s.json);
            } else {
                for l in s.lines {
                    println!("{l}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": format!("{e:#}")})
                );
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This process's peak resident memory (VmHWM), for the benchmark's memory figures.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_accepts_quiet() {
        Cli::command().debug_assert();
        let mut cli = Cli::command();
        cli.build();
        let names: Vec<String> = cli
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        assert!(names.len() > 15, "{names:?}");
        for name in names {
            let sub = cli.find_subcommand(&name).unwrap();
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some("quiet")),
                "{name} lacks --quiet"
            );
        }
    }
}
