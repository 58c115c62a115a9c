use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hqsync::cli::Cli::parse().run()
}
