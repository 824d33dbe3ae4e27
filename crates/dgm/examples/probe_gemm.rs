use std::time::Instant;
fn main() {
    let shapes: Vec<(usize, usize, usize)> = std::env::args()
        .skip(1)
        .map(|s| {
            let v: Vec<usize> = s.split('x').map(|t| t.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    for (m, n, k) in shapes {
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut c = vec![0f32; m * n];
        let reps = (10e9 / (2.0 * (m * n * k) as f64)).max(1.0) as usize;
        let t0 = Instant::now();
        for _ in 0..reps {
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "{m}x{n}x{k}: {:.1} GF/s single thread ({reps} reps)",
            2.0 * (m * n * k * reps) as f64 / dt / 1e9
        );
    }
}
