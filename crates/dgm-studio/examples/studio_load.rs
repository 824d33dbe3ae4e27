//! Load on a running studio (bench/studio_load starts one): ROUNDS rounds of N requests sent at once from N
//! threads — a third each the page, the run list and a sample job of RUN — then the server's memory from
//! /proc/PID/status. Prints one JSON object per round: statuses counted, server errors (5xx other than the full
//! queue's 503), latency percentiles, and the server's resident and peak memory after the round.
//!   usage: studio_load BASE_URL PID RUN [N] [ROUNDS]     (defaults 200 5)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: studio_load BASE_URL PID RUN [N] [ROUNDS]");
        std::process::exit(2);
    }
    let (base, pid, run) = (&args[1], &args[2], &args[3]);
    let n: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(200);
    let rounds: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(5);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    for round in 0..rounds {
        let results: Vec<(u16, f64)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let agent = agent.clone();
                    s.spawn(move || {
                        let t0 = Instant::now();
                        let r = match i % 3 {
                            0 => agent.get(format!("{base}/")).call(),
                            1 => agent.get(format!("{base}/api/runs")).call(),
                            _ => agent
                                .post(format!("{base}/api/sample"))
                                .header("content-type", "application/json")
                                .send(format!(r#"{{"run":"{run}","n":16,"seed":{i}}}"#)),
                        };
                        let status = match r {
                            Ok(mut r) => {
                                let _ = r.body_mut().read_to_vec();
                                r.status().as_u16()
                            }
                            Err(_) => 0,
                        };
                        (status, t0.elapsed().as_secs_f64() * 1e3)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or((0, 0.0)))
                .collect()
        });
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        for (st, _) in &results {
            *counts.entry(*st).or_default() += 1;
        }
        let errors = results
            .iter()
            .filter(|(st, _)| *st == 0 || (*st >= 500 && *st != 503))
            .count();
        let mut ms: Vec<f64> = results.iter().map(|r| r.1).collect();
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        // let the accepted jobs finish before reading the memory
        std::thread::sleep(Duration::from_millis(500));
        let (rss, hwm) = rss_kib(pid);
        let statuses: Vec<String> = counts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!(
            "{{\"round\":{},\"requests\":{n},\"statuses\":{{{}}},\"server_errors\":{errors},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"rss_mib\":{:.1},\"peak_rss_mib\":{:.1}}}",
            round + 1,
            statuses.join(","),
            q(0.5),
            q(0.99),
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
}
