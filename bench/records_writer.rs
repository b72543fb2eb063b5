//! How many audit records per second the writer stores: `bench/run.py --only records` runs this
//! against SQLite and PostgreSQL.
//!
//! Queues `--records` realistic records through the same `Recorder` and writer the gateway
//! uses (default batch and flush settings), waits for the drain, checks every record is stored,
//! and prints one JSON line: engine, records, seconds, records per second.

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use tollgate::config::{Config, Env};
use tollgate::openai::usage::Usage;
use tollgate::records::{Record, RecordWriter};

#[derive(Debug, Parser)]
struct Args {
    /// `sqlite://…` or `postgres://…` (an empty database or schema).
    #[arg(long)]
    database: String,
    /// Records to write.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// `records.batch_size` (the gateway's default).
    #[arg(long, default_value_t = 4000)]
    batch_size: usize,
}

fn record(i: u64, now: i64) -> Record {
    Record {
        id: uuid::Uuid::now_v7().to_string(),
        created_at_ms: now + i64::try_from(i % 60_000).unwrap_or(0),
        request_id: uuid::Uuid::new_v4().to_string(),
        key_id: Some(format!("key_{}", i % 200)),
        user_id: Some(format!("user-{}", i % 5_000)),
        caller: "key".to_owned(),
        method: "POST".to_owned(),
        route: "/v1/chat/completions".to_owned(),
        model_requested: Some("gpt-4o-mini".to_owned()),
        model_used: Some("gpt-4o-mini-2024-07-18".to_owned()),
        upstream: Some("default".to_owned()),
        status: 200,
        outcome: "ok".to_owned(),
        usage: Usage {
            prompt_tokens: 120 + i % 50,
            completion_tokens: 40 + i % 30,
            ..Usage::default()
        },
        cost_nanos: Some(42),
        latency_ms: 480,
        upstream_ms: Some(470),
        client_ip: Some("10.1.2.3".to_owned()),
        ..Record::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env: Env = [
        ("OPENAI_API_KEY", "sk-bench"),
        ("DATABASE_URL", args.database.as_str()),
    ]
    .into_iter()
    .collect();
    let toml = format!(
        "[records]\nbatch_size = {}\nqueue_capacity = {}\n",
        args.batch_size,
        args.batch_size.max(65_536)
    );
    let config = Config::from_toml_str("bench", &toml, &env)?;
    let stores = tollgate::store::connect(&config.database).await?;
    let before = stores.records.count().await?;
    let (recorder, writer) = RecordWriter::start(&config.records, stores.records.clone());
    let writer = writer.ok_or_else(|| anyhow::anyhow!("records are disabled"))?;
    let now = tollgate::records::now_ms();
    let started = Instant::now();
    for i in 0..args.records {
        recorder.record(record(i, now)).await;
    }
    writer.finish().await;
    let seconds = started.elapsed().as_secs_f64();
    let stored = stores.records.count().await? - before;
    anyhow::ensure!(
        stored == args.records,
        "stored {stored} of {}",
        args.records
    );
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::json!({
            "engine": format!("{:?}", config.database.engine).to_lowercase(),
            "records": args.records,
            "seconds": seconds,
            "records_per_s": args.records as f64 / seconds,
        })
    )?;
    Ok(())
}
