//! `dgm studio`: serves the local web page of `dgm-studio` over a runs folder.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{bail, Result};
use dgm_studio::{serve_blocking, StudioOptions};

use crate::cli::StudioArgs;

pub(super) fn studio_cmd(a: StudioArgs) -> Result<ExitCode> {
    if a.queue == 0 {
        bail!(dgm::Error::invalid("--queue", "must be at least 1"));
    }
    let addr = SocketAddr::new(a.bind, a.port);
    if !dgm_studio::is_loopback(&addr) {
        eprintln!(
            "warning: listening on {addr}: other machines can reach the studio, which has no login; \
             prefer --bind 127.0.0.1 and SSH port forwarding (ssh -L {p}:127.0.0.1:{p} HOST)",
            p = a.port
        );
    }
    let mut opts = StudioOptions::new(&a.runs);
    opts.queue = a.queue;
    opts.data_dir = dgm::data::data_dir(a.data_dir.data_dir.as_deref());
    let runs = a.runs.display().to_string();
    serve_blocking(addr, opts, move |local| {
        // stdout, flushed: a script (or a test) waiting for the address reads this line
        println!("dgm studio on http://{local}/ (runs in {runs}; Ctrl-C to stop)");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
