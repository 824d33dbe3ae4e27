//! `dgm`: train, sample, score and inspect deep generative models from the command line.
//!
//! Errors are printed once, on one line; bad input (unknown names, bad values, missing or corrupt files,
//! mismatched checkpoints) exits with code 2, other failures with 1.

use std::process::ExitCode;

use mimalloc::MiMalloc;

mod cli;
mod commands;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!(
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            let user = match e.downcast_ref::<dgm::Error>() {
                Some(d) => d.is_user_error(),
                None => true, // errors raised by the CLI itself are about its input
            };
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
