//! Latency of the component under `wasmtime serve` on loopback, driven by
//! `benches/trigger_latency.sh`. Sequential client, one TCP connection per request (as Pub/Sub
//! push and Eventarc deliveries arrive), the loopback fake of Google from the tests answering the
//! metadata, JWKS and Run Admin API calls. Prints p50/p99 per scenario.
//!
//! Usage: `cargo run --release -p trigger-wasm --example trigger_latency -- [requests]`
//! (`TRIGGER_WASM` and `WASMTIME` as for the tests).

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{
    FakeBehaviour, FakeGoogle, SECRET, Served, base_env, ce_headers, component, good_claims,
    object_body, post, test_key,
};
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn measure(
    port: u16,
    headers: &[(String, String)],
    body: &[u8],
    n: usize,
    want: &str,
) -> (f64, f64) {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for _ in 0..100 {
        let r = post(port, &h, body);
        assert_eq!(
            r.json()["outcome"],
            want,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = post(port, &h, body);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200);
    }
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.50), percentile(&ms, 0.99))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let fake = FakeGoogle::start(FakeBehaviour {
        jwks: test_key().jwks(),
        // Every accepted event goes the whole way: token, jobs.get, jobs.run.
        start_marks_running: false,
        ..FakeBehaviour::default()
    });
    let wasm = component();
    println!(
        "component: {} ({} bytes)",
        wasm.display(),
        std::fs::metadata(&wasm).unwrap().len()
    );
    println!("requests per row: {n} (after 100 warm-up), sequential, new TCP connection each\n");
    println!("{:<62} {:>9} {:>9}", "scenario", "p50 ms", "p99 ms");

    let token = format!("Bearer {}", test_key().sign(&good_claims()));
    let accepted_obj = "raw_training_data/batch/sample_001.png";
    let ignored_obj = "training_datasets/run-1/sft_train.jsonl";
    let jwks_json = String::from_utf8(test_key().jwks()).unwrap();
    // (label, AUTH_MODE, extra `wasmtime serve` arguments, JWKS_JSON preloaded)
    let scenarios: [(&str, &str, &[&str], bool); 4] = [
        (
            "oidc, fresh instance per request (serve default)",
            "oidc",
            &[],
            false,
        ),
        (
            "oidc + JWKS_JSON, fresh instance per request",
            "oidc",
            &[],
            true,
        ),
        (
            "oidc, instance reuse (token + JWKS cached)",
            "oidc",
            &["--max-instance-reuse-count", "100000"],
            false,
        ),
        (
            "shared secret, fresh instance per request",
            "token",
            &[],
            false,
        ),
    ];
    for (label, mode, args, preload) in scenarios {
        let mut env = base_env(&fake);
        env.push(("AUTH_MODE".into(), mode.into()));
        env.push(("TRIGGER_TOKEN".into(), SECRET.into()));
        if preload {
            env.push(("JWKS_JSON".into(), jwks_json.clone()));
        }
        let jwks_fetches = || fake.count(|r| r.path == "/oauth2/v3/certs");
        let fetches_before = jwks_fetches();
        let served = Served::start(&env, args);
        for (what, object, want) in [
            ("accepted", accepted_obj, "started"),
            ("ignored", ignored_obj, "ignored"),
        ] {
            let mut headers = ce_headers("bench", "finalized", object);
            if mode == "oidc" {
                headers.push(("authorization".into(), token.clone()));
            } else {
                headers.push(("x-trigger-token".into(), SECRET.into()));
            }
            let (p50, p99) = measure(served.port, &headers, &object_body(object, "1"), n, want);
            println!(
                "{:<62} {:>9.3} {:>9.3}",
                format!("{what:<9} {label}"),
                p50,
                p99
            );
        }
        if preload {
            assert_eq!(
                jwks_fetches(),
                fetches_before,
                "with JWKS_JSON the component must not fetch the JWKS"
            );
        }
    }
}
