use std::process::ExitCode;

fn main() -> ExitCode {
    ppdenoise::cli::main()
}
