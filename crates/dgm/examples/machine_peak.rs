//! What this machine can do, printed as one JSON line for the step benchmarks' headers: the CPU model, the
//! instruction set dgm's kernels run on (`DGM_ISA` may force a slower one), the measured fused-multiply-add
//! peak of `RAYON_NUM_THREADS` threads (each thread runs 12 independent chains of FMAs on AVX-512 and on AVX2
//! vectors, so the number is cores × FMA units × lanes × 2 × the clock the cores actually run at), and the
//! best sgemm (2048³ through candle's matmul, i.e. the `gemm` crate) of the same threads.
//!   usage: cargo run --release --example machine_peak

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::nn::kernels::isa::{isa, Isa};

/// FMA passes per thread in one timing.
const ITERS: usize = 40_000_000;

/// GFLOP/s of `threads` threads each running `f` (which returns its flop count), the best of three.
fn gflops(threads: usize, f: fn() -> f64) -> f64 {
    (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let flop: f64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(f)).collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            flop / t0.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    fn chains_512() -> f64 {
        let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-3));
        let mut a = [_mm512_set1_ps(1.0); 12];
        for _ in 0..super::ITERS / 12 {
            for v in a.iter_mut() {
                *v = _mm512_fmadd_ps(*v, b, c);
            }
        }
        let mut out = [0f32; 16];
        // SAFETY: `out` holds 16 floats.
        unsafe {
            _mm512_storeu_ps(
                out.as_mut_ptr(),
                a.iter().fold(c, |s, v| _mm512_add_ps(s, *v)),
            )
        };
        std::hint::black_box(out);
        (super::ITERS / 12 * 12 * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    fn chains_256() -> f64 {
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-3));
        let mut a = [_mm256_set1_ps(1.0); 12];
        for _ in 0..super::ITERS / 12 {
            for v in a.iter_mut() {
                *v = _mm256_fmadd_ps(*v, b, c);
            }
        }
        let mut out = [0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe {
            _mm256_storeu_ps(
                out.as_mut_ptr(),
                a.iter().fold(c, |s, v| _mm256_add_ps(s, *v)),
            )
        };
        std::hint::black_box(out);
        (super::ITERS / 12 * 12 * 8 * 2) as f64
    }

    pub fn avx512() -> f64 {
        // SAFETY: called only when the CPU has AVX-512 F (checked by the caller).
        unsafe { chains_512() }
    }

    pub fn avx2() -> f64 {
        // SAFETY: called only when the CPU has AVX2 and FMA (checked by the caller).
        unsafe { chains_256() }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> dgm::Result<()> {
    common::init();
    let threads = rayon::current_num_threads();
    let detected = Isa::detected();
    #[cfg(target_arch = "x86_64")]
    let (p512, p256) = (
        (detected >= Isa::Avx512).then(|| gflops(threads, fma::avx512)),
        (detected >= Isa::Avx2).then(|| gflops(threads, fma::avx2)),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (p512, p256): (Option<f64>, Option<f64>) = (None, None);
    let n = 2048;
    let a = Tensor::ones((n, n), candle_core::DType::F32, &Device::Cpu)?;
    a.matmul(&a)?; // warm-up
    let best = (0..3)
        .map(|_| -> dgm::Result<f64> {
            let t0 = Instant::now();
            std::hint::black_box(a.matmul(&a)?);
            Ok(2.0 * (n * n * n) as f64 / t0.elapsed().as_secs_f64() / 1e9)
        })
        .collect::<dgm::Result<Vec<f64>>>()?
        .into_iter()
        .fold(0.0, f64::max);
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |g| format!("{g:.1}"));
    println!(
        "{{\"cpu\": {:?}, \"threads\": {threads}, \"isa\": {:?}, \"isa_detected\": {:?}, \
         \"fma_peak_avx512_gflops\": {}, \"fma_peak_avx2_gflops\": {}, \"sgemm_2048_gflops\": {best:.1}}}",
        cpu_model(),
        isa().name(),
        detected.name(),
        opt(p512),
        opt(p256)
    );
    Ok(())
}
