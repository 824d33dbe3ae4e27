//! The matrix products of a training step, timed alone: the three products of every fully connected layer
//! (forward `y = x Wᵀ`, weight gradient `dW = gᵀ x`, input gradient `dx = g W`) of the GPT's nanoGPT CPU
//! config (768 tokens, width 128) and of the MLP VAE (batch 128, 784-512-512-32), in the memory layouts dgm's
//! `dense` / `linear` ops hand to the `gemm` crate. Each product is timed two ways on `RAYON_NUM_THREADS`
//! threads: split into blocks of rows with a single-threaded gemm per block (dgm's `dense`, the GPT's layers)
//! and as one gemm call with gemm's own threading (dgm's `linear`, the VAE's layers). `bench/gemm_shapes`
//! puts the same products through PyTorch (`bench/torch/gemm_shapes.py`) beside them.
//! Prints one JSON line: per product the median milliseconds of each way.
//!   usage: cargo run --release --example gemm_shapes [REPEATS]

mod common;

use std::time::Instant;

use dgm::rng::Rng;
use rayon::prelude::*;

/// A product `dst (m × n) = a (m × k) · b (k × n)` with its operands' (row, column) strides.
struct Product {
    name: String,
    /// How many times one training step computes it.
    count: usize,
    m: usize,
    n: usize,
    k: usize,
    a_strides: (usize, usize),
    b_strides: (usize, usize),
}

/// The three products of a layer `x (m × d_in) → (m × d_out)` used `count` times per step; `dx` only when the
/// layer's input needs a gradient.
fn layer(net: &str, count: usize, m: usize, d_in: usize, d_out: usize, dx: bool) -> Vec<Product> {
    let p = |what: &str, (m, n, k), a_strides, b_strides| Product {
        name: format!("{net} {d_in}->{d_out} {what}"),
        count,
        m,
        n,
        k,
        a_strides,
        b_strides,
    };
    let mut v = vec![
        // y (m × out) = x (m × in) · Wᵀ, W stored (out × in)
        p("fwd", (m, d_out, d_in), (d_in, 1), (1, d_in)),
        // dW (out × in) = gᵀ (out × m) · x (m × in), g stored (m × out)
        p("dW", (d_out, d_in, m), (1, d_out), (d_in, 1)),
    ];
    if dx {
        // dx (m × in) = g (m × out) · W (out × in)
        v.push(p("dx", (m, d_in, d_out), (d_out, 1), (d_in, 1)));
    }
    v
}

/// `dst = a · b` for rows `r0 .. r0 + dst.len() / n` of the product, on `threads` gemm threads.
fn gemm_rows(p: &Product, a: &[f32], b: &[f32], r0: usize, dst: &mut [f32], threads: usize) {
    let rows = dst.len() / p.n;
    let a = &a[r0 * p.a_strides.0..];
    assert!((rows - 1) * p.a_strides.0 + (p.k - 1) * p.a_strides.1 < a.len());
    assert!((p.k - 1) * p.b_strides.0 + (p.n - 1) * p.b_strides.1 < b.len());
    let par = match threads {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    // SAFETY: the asserts above keep every element read inside `a` and `b`; `dst` holds rows × n elements.
    unsafe {
        gemm::gemm(
            rows,
            p.n,
            p.k,
            dst.as_mut_ptr(),
            1,
            p.n as isize,
            false,
            a.as_ptr(),
            p.a_strides.1 as isize,
            p.a_strides.0 as isize,
            b.as_ptr(),
            p.b_strides.1 as isize,
            p.b_strides.0 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Median milliseconds of `f` over `repeats` runs after two warm-up runs.
fn median_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let times = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    common::quartiles(times).0
}

fn main() -> dgm::Result<()> {
    common::init();
    let repeats: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .map_err(|e| dgm::Error::invalid("REPEATS", format!("{e}: a positive integer")))?
        .unwrap_or(50)
        .max(1);
    let threads = rayon::current_num_threads();
    let (tokens, width, batch) = (768, 128, 128);
    let mut products = vec![];
    // GPT: 4 blocks of attention (qkv, projection) and MLP (fc, fc2), then the 65-character head
    products.extend(layer("gpt", 4, tokens, width, 3 * width, true));
    products.extend(layer("gpt", 4, tokens, width, width, true));
    products.extend(layer("gpt", 4, tokens, width, 4 * width, true));
    products.extend(layer("gpt", 4, tokens, 4 * width, width, true));
    products.extend(layer("gpt", 1, tokens, width, 65, true));
    // MLP VAE: encoder 784-512-512-(2 × 32), decoder 32-512-512-784
    products.extend(layer("vae", 1, batch, 784, 512, false));
    products.extend(layer("vae", 2, batch, 512, 512, true));
    products.extend(layer("vae", 1, batch, 512, 64, true));
    products.extend(layer("vae", 1, batch, 32, 512, true));
    products.extend(layer("vae", 1, batch, 512, 784, true));
    let mut rng = Rng::new(0);
    let mut rows = vec![];
    for p in &products {
        let a_len = (p.m - 1) * p.a_strides.0 + (p.k - 1) * p.a_strides.1 + 1;
        let b_len = (p.k - 1) * p.b_strides.0 + (p.n - 1) * p.b_strides.1 + 1;
        let a: Vec<f32> = (0..a_len).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..b_len).map(|_| rng.normal()).collect();
        let mut dst = vec![0f32; p.m * p.n];
        // dgm's `dense`: blocks of rows (at least 32 each), one per thread, a single-threaded gemm per block
        let parts = threads.min(p.m / 32).max(1);
        let block = p.m.div_ceil(parts) * p.n;
        let split = median_ms(repeats, || {
            dst.par_chunks_mut(block)
                .enumerate()
                .for_each(|(i, d)| gemm_rows(p, &a, &b, i * block / p.n, d, 1));
        });
        let whole = median_ms(repeats, || gemm_rows(p, &a, &b, 0, &mut dst, threads));
        rows.push(format!(
            "{{\"name\":\"{}\",\"count\":{},\"m\":{},\"n\":{},\"k\":{},\"row_split_ms\":{split:.4},\"gemm_threads_ms\":{whole:.4}}}",
            p.name, p.count, p.m, p.n, p.k
        ));
    }
    println!(
        "{{\"impl\":\"dgm\",\"threads\":{threads},\"repeats\":{repeats},\"products\":[{}]}}",
        rows.join(",")
    );
    Ok(())
}
