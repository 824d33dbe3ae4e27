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

/// The device a `--device` name asks for: `cpu`, or `cuda` (GPU 0). CUDA needs a build with dgm's `cuda`
/// feature, the NVIDIA driver and cuBLAS, cuRAND and NVRTC on the library path (they are loaded when first
/// used, `vendor/README.md`); each missing piece is an error naming it, never a panic inside cudarc.
pub fn device(name: &str) -> crate::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cuda_device(0),
        other => Err(crate::Error::unknown("device", other, &["cpu", "cuda"])),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> crate::Result<candle_core::Device> {
    use candle_core::cuda_backend::cudarc;
    // SAFETY: each call only tries to open the shared library (libloading) and keeps it if found.
    let libraries = unsafe {
        [
            (
                "the NVIDIA driver (libcuda)",
                cudarc::driver::sys::is_culib_present(),
            ),
            (
                "cuBLAS (libcublas)",
                cudarc::cublas::sys::is_culib_present(),
            ),
            (
                "cuBLASLt (libcublasLt)",
                cudarc::cublaslt::sys::is_culib_present(),
            ),
            (
                "cuRAND (libcurand)",
                cudarc::curand::sys::is_culib_present(),
            ),
            ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
        ]
    };
    if let Some((what, _)) = libraries.iter().find(|(_, found)| !found) {
        return Err(crate::Error::invalid(
            "device",
            format!(
                "cuda is not available: {what} was not found on the library path (LD_LIBRARY_PATH)"
            ),
        ));
    }
    candle_core::Device::new_cuda(ordinal)
        .map_err(|e| crate::Error::invalid("device", format!("cuda is not available: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> crate::Result<candle_core::Device> {
    Err(crate::Error::invalid(
        "device",
        "cuda is not available: this dgm was built without the `cuda` feature (scripts/build-cuda.sh builds one)",
    ))
}
