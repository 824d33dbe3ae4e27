//! The long fuzz campaign of the loaders (issue 13): runs the harness of `tests/fuzz/` on every target (or
//! those named) for `--inputs` inputs each and prints one JSON object per target. `bench/fuzz_loaders`
//! runs it and prints the table.
//!
//!   cargo run --release -p dgm --example fuzz_loaders -- [--inputs N] [--seed S] [--only a,b]
//!       [--findings DIR]

#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

use std::path::PathBuf;

#[global_allocator]
static ALLOC: fuzz::TrackingAlloc = fuzz::TrackingAlloc;

fn main() {
    if let Err(e) = run() {
        eprintln!("fuzz_loaders: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut inputs = 1_000_000usize;
    let mut seed = 0u64;
    let mut only: Vec<String> = fuzz::targets::NAMES.iter().map(|s| s.to_string()).collect();
    let mut findings = PathBuf::from("target/fuzz-findings");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--inputs" => inputs = val()?.parse().map_err(|e| format!("--inputs: {e}"))?,
            "--seed" => seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--only" => only = val()?.split(',').map(|s| s.to_string()).collect(),
            "--findings" => findings = PathBuf::from(val()?),
            _ => {
                return Err(format!(
                "unknown argument '{a}'; valid: --inputs N, --seed S, --only a,b, --findings DIR"
            ))
            }
        }
    }
    for name in &only {
        if !fuzz::targets::NAMES.contains(&name.as_str()) {
            return Err(format!(
                "unknown target '{name}'; valid: {}",
                fuzz::targets::NAMES.join(", ")
            ));
        }
        let (name2, dir) = (name.clone(), findings.clone());
        let rep = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                fuzz::targets::target(&name2).map(|t| fuzz::campaign(&t, inputs, seed, &dir))
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| format!("the fuzz thread of {name} panicked"))?
            .ok_or(format!("unknown target '{name}'"))?;
        let findings: Vec<String> = rep
            .findings
            .iter()
            .map(|(i, kind, msg, path)| format!("input {i}: {kind}: {msg} (saved as {path})"))
            .collect();
        let json = serde_json::json!({
            "target": rep.name,
            "loader": rep.loader,
            "inputs": rep.inputs,
            "ok": rep.ok,
            "errors": rep.errors,
            "panics": rep.panics,
            "big_allocs": rep.big_allocs,
            "multiline": rep.multiline,
            "distinct_errors": rep.distinct_errors,
            "largest_alloc": rep.largest_alloc,
            "slowest_ms": rep.slowest_ms,
            "wall_s": rep.wall_s,
            "clean": rep.clean(),
            "bad_seeds": rep.bad_seeds,
            "findings": findings,
        });
        println!("{json}");
        eprintln!("{rep}");
    }
    Ok(())
}
