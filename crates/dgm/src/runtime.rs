//! Process-wide CPU runtime settings for programs built on dgm (the `dgm` binary, the benchmarks).
//!
//! Measured on this project's 2-core machine (bench/step_throughput, bench/conv_kernels): with the
//! calling thread outside rayon's pool and candle's own elementwise worker threads spinning 25 000 times
//! after every op, three to four threads compete for two cores and a training step loses 10–15 %.
//! [`init_cpu_runtime`] makes the calling (main) thread one of rayon's workers, so the thread count is
//! what `RAYON_NUM_THREADS` says, and shortens candle's spin unless the user set it.

use crate::{Error, Result};

/// Spins of candle's elementwise worker threads before they park, unless `CANDLE_BARRIER_POOL_SPIN_LIMIT`
/// is set (candle's default is 25 000).
pub const CANDLE_SPIN_LIMIT: &str = "500";

/// Call first thing in `main`, before any other thread exists and before any tensor op: makes the calling
/// thread a worker of rayon's global pool and sets candle's spin limit (see the module docs). Does
/// nothing to a pool that is already built.
pub fn init_cpu_runtime() -> Result<()> {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
    match rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
    {
        Ok(()) => Ok(()),
        // already built (e.g. by an earlier call): keep it
        Err(e) if rayon::current_num_threads() > 0 && e.to_string().contains("already") => Ok(()),
        Err(e) => Err(Error::invalid("threads", e.to_string())),
    }
}
