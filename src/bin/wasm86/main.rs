//! The native command-line host of wasm86.

mod bench;
mod console;
mod disk;
mod http;
mod remote;
mod screen;
mod serve;
mod sst;
mod trace;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wasm86",
    version,
    about = "An x86 PC emulator (native host). Without a subcommand: boot Linux with the serial \
             console on this terminal (Ctrl-A X quits).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    boot: console::BootArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run hardware-recorded single-step CPU tests (*.json.gz) from DIR.
    Sst {
        /// Directory holding the *.json.gz test files.
        dir: PathBuf,
        /// Only run files whose name starts with this (e.g. "F7" or "80.4").
        #[arg(long)]
        only: Option<String>,
        /// Print every failing test, not just the first of each file.
        #[arg(long)]
        verbose: bool,
    },
    /// Benchmark: boot the Linux benchmark guest (images/bench-initramfs.cpio.gz), run its
    /// workloads (isprime, gzip, forkexec) and the same programs natively on this host; print
    /// guest instructions, wall time, MIPS and the slowdown against native, and save the raw
    /// numbers as JSON under target/bench/. `--synthetic`: the hand-assembled CPU micro benchmark.
    Bench(bench::BenchArgs),
    /// Static HTTP/1.1 file server for the page and for streamed disk images: GET/HEAD with
    /// byte ranges, CORS and cross-origin isolation headers. Prints
    /// `wasm86 serve: http://ADDR:PORT/` and serves until killed.
    Serve(serve::ServeArgs),
    /// Boot as without a subcommand (the same options, deterministic time) and print each
    /// instruction the CPU executes from a starting point (`--from N` instructions retired, or
    /// `--until TEXT` on the serial console): the retired count, CS:EIP, the linear address, the
    /// bytes and the Intel-syntax disassembly.
    // Boxed: it holds all the boot options.
    Trace(Box<trace::TraceArgs>),
}

fn main() -> ExitCode {
    // Usage errors exit 1 like every other error (clap's default, 2, means "timeout" here).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Some(Command::Sst { dir, only, verbose }) => {
            match sst::run(&sst::SstOptions {
                dir,
                filter: only,
                verbose,
            }) {
                Ok((_, 0)) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("wasm86 sst: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Bench(args)) => match bench::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasm86 bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve::run(&args),
        Some(Command::Trace(args)) => trace::run(&args),
        None => console::run(&cli.boot),
    }
}
