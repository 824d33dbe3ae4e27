//! Process-wide CPU runtime settings for programs built on dgm (the `dgm` binary, the benchmarks).
//!
//! Measured on this project's 2-core machine (bench/step_throughput, bench/conv_kernels): with the
//! calling thread outside rayon's pool and candle's own elementwise worker threads spinning 25 000 times
//! after every op, three to four threads compete for two cores and a training step loses 10–15 %.
//! [`init_cpu_runtime`] makes the calling (main) thread one of rayon's workers, so the thread count is
//! what `RAYON_NUM_THREADS` says, and shortens candle's spin unless the user set it.

/// Spins of candle's elementwise worker threads before they park, unless `CANDLE_BARRIER_POOL_SPIN_LIMIT`
/// is set (candle's default is 25 000).
pub const CANDLE_SPIN_LIMIT: &str = "500";

/// Call first thing in `main`, before any other thread exists and before any tensor op: makes the calling
/// thread a worker of rayon's global pool and sets candle's spin limit (see the module docs). A global pool
/// that already exists (an earlier call, or rayon work done before) is kept as it is: everything still
/// runs, only without the gain.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
    // The only error is "the global pool is already built", which leaves a working pool.
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
    // candle asks for its thread count on every op and, without RAYON_NUM_THREADS, counts the CPUs by reading
    // /proc/cpuinfo each time (≈ 5 % of a UNet step). Name the pool's size once.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var(
            "RAYON_NUM_THREADS",
            rayon::current_num_threads().to_string(),
        );
    }
}
