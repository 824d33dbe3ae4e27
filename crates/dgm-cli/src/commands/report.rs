//! `dgm report`: one page (HTML or Markdown) comparing every run under a directory.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::ReportArgs;

pub(super) fn report_cmd(a: ReportArgs) -> Result<ExitCode> {
    let n = dgm::report::write_report(&a.runs, &a.out)?;
    println!("report of {n} runs written to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
