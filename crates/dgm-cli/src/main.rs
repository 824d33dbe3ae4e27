//! `dgm`: train, sample, score and inspect deep generative models from the command line.
//!
//! Errors are printed once, on one line; bad input (unknown names, bad values, missing or corrupt files,
//! mismatched checkpoints) exits with code 2, other failures with 1. The library's errors name its options;
//! [`hints`] prints them with the CLI's flags and commands.

use std::process::ExitCode;

use mimalloc::MiMalloc;

mod cli;
mod commands;
mod hints;
mod progress;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// mimalloc's `purge_delay` option (its index in mimalloc's option enum).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed memory committed instead of returning it to the OS after 10 ms: training frees and
    // re-allocates the same large activation buffers every step, and re-faulting them cost ≈ 29 000 page
    // faults and up to ≈ 10 % of a conv training step (bench/conv_kernels). Peak RSS is unchanged.
    // SAFETY: sets a plain integer option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    dgm::runtime::init_cpu_runtime();
    // A DGM_ISA that names no build this CPU runs is refused here rather than ignored by the kernels.
    if let Err(e) = dgm::nn::kernels::isa::isa_from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let args = <cli::Cli as clap::Parser>::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", hints::message(&e));
            let user = match e.downcast_ref::<dgm::Error>() {
                Some(d) => d.is_user_error(),
                None => true, // errors raised by the CLI itself are about its input
            };
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
