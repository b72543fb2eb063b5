//! A small open-loop load generator for `bench/run.py`.
//!
//! Sends requests at a fixed rate (or, with `--rate 0`, as fast as `--connections` workers
//! can), measures each one from its *scheduled* start to its last body byte (so a slow server
//! cannot hide queueing: no coordinated omission), and prints one JSON line of counts and
//! latency percentiles in microseconds. Run it pinned to one CPU (`taskset`); it uses a
//! single-threaded runtime.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::{Mutex, Semaphore};

#[derive(Debug, Parser)]
struct Args {
    /// Target URL.
    url: String,
    /// Requests per second; 0 = closed loop (each connection sends again when answered).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Seconds of warm-up before measuring (not recorded).
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Concurrent connections at most.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// JSON body to POST (GET when absent).
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Give every request its own `X-Forwarded-For` (a distinct IPv4 address), to pass many
    /// client IPs through a gateway that trusts this load generator as a proxy.
    #[arg(long)]
    unique_forwarded_for: bool,
    /// First address number for `--unique-forwarded-for` (so runs can continue a sequence).
    #[arg(long, default_value_t = 0)]
    forwarded_for_offset: u64,
    /// Closed loop only: stop after this many requests (0: run for the duration).
    #[arg(long, default_value_t = 0)]
    requests: u64,
}

/// Request counter for `--unique-forwarded-for` and `--requests`.
static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut headers = reqwest::header::HeaderMap::new();
    for header in &args.header {
        let (name, value) = header.split_once(':').ok_or("header must be Name: value")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            value.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .build()?;
    let request = Arc::new((
        client,
        args.url.clone(),
        args.body.clone(),
        args.unique_forwarded_for,
        args.forwarded_for_offset,
    ));

    run(
        &args,
        request.clone(),
        Duration::from_secs(args.warmup_s),
        None,
    )
    .await;
    SENT.store(0, std::sync::atomic::Ordering::Relaxed);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    run(
        &args,
        request,
        Duration::from_secs(args.duration_s),
        Some(tally.clone()),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    let mut tally = tally.lock().await;
    tally.latencies_us.sort_unstable();
    let count = tally.latencies_us.len();
    let at = |q: f64| {
        tally
            .latencies_us
            .get(((count as f64 * q) as usize).min(count.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let line = serde_json::json!({
        "ok": count,
        "errors": tally.errors,
        "seconds": elapsed,
        "throughput": count as f64 / elapsed,
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": tally.latencies_us.last().copied().unwrap_or(0),
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// What every request is made of: client, URL, body, unique X-Forwarded-For, its offset.
type Target = (reqwest::Client, String, Option<String>, bool, u64);

async fn run(
    args: &Args,
    request: Arc<Target>,
    duration: Duration,
    tally: Option<Arc<Mutex<Tally>>>,
) {
    let end = Instant::now() + duration;
    let permits = Arc::new(Semaphore::new(args.connections));
    let mut tasks = tokio::task::JoinSet::new();
    if args.rate == 0 {
        let limit = if tally.is_some() { args.requests } else { 0 };
        for _ in 0..args.connections {
            let (request, tally) = (request.clone(), tally.clone());
            tasks.spawn(async move {
                while Instant::now() < end
                    && (limit == 0 || SENT.load(std::sync::atomic::Ordering::Relaxed) < limit)
                {
                    one(&request, Instant::now(), tally.as_deref()).await;
                }
            });
        }
    } else {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while Instant::now() < end {
            let scheduled = ticker.tick().await.into_std();
            let (request, tally, permits) = (request.clone(), tally.clone(), permits.clone());
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                one(&request, scheduled, tally.as_deref()).await;
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn one(request: &Target, scheduled: Instant, tally: Option<&Mutex<Tally>>) {
    let (client, url, body, unique_forwarded_for, offset) = request;
    let mut builder = match body {
        Some(body) => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone()),
        None => client.get(url),
    };
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + offset;
    if *unique_forwarded_for {
        // Distinct IPv4 addresses from 11.0.0.0 on.
        let address = std::net::Ipv4Addr::from(0x0b00_0000u32.wrapping_add(n as u32));
        builder = builder.header("x-forwarded-for", address.to_string());
    }
    let ok = match builder.send().await {
        Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
        _ => false,
    };
    let elapsed = scheduled.elapsed();
    if let Some(tally) = tally {
        let mut tally = tally.lock().await;
        if ok {
            tally.latencies_us.push(elapsed.as_micros() as u64);
        } else {
            tally.errors += 1;
        }
    }
}
