use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the ingress path allocates and frees
/// small buffers per request on every worker thread, where glibc's arenas
/// spend a measurable share of the CPU (`hqsync bench ingress` under perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hqsync::cli::Cli::parse().run()
}
