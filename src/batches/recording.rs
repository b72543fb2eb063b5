//! Recording ended batches (see the parent module): looked up on a schedule, claimed by one
//! replica, their output read line by line as it streams, each answer priced at the batch tier.

use std::time::Duration;

use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{get, one_segment, send_get};
use crate::openai::usage;
use crate::pricing::{Asked, Nanos, ServiceTier};
use crate::records::{Record, SpendScope};
use crate::state::AppState;
use crate::store::Batch;

/// Batches looked up per round.
const POLL_BATCHES: u32 = 100;

/// The longest output line read (an answer of 2,048 embeddings is ~60 MB); a longer one is
/// counted as an answer whose cost is unknown.
const LONGEST_LINE: usize = 128 << 20;

/// The longest a failing batch's next lookup is put off.
const LONGEST_BACKOFF: Duration = Duration::from_secs(3_600);

/// Looks for ended batches every `interval` until `stop`, each time on the state `current`
/// gives (a reload's prices price what ends after it).
pub async fn poll(current: impl Fn() -> AppState, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = record_ended(&current()).await {
            tracing::warn!(%error, "looking up batches failed");
        }
    }
}

/// What looking up one batch came to.
enum Lookup {
    /// It had ended, and this call recorded it.
    Recorded,
    /// It is still running.
    Running,
    /// Another replica recorded it first.
    RecordedElsewhere,
}

/// Records the output of every remembered batch due a lookup that has ended; returns how many.
/// A batch still running is looked up again after the poll interval; one whose lookup failed
/// (the upstream down, its output unreadable) after a backoff that doubles up to an hour, so a
/// batch that cannot be recorded never holds up the others.
pub async fn record_ended(state: &AppState) -> Result<u64, String> {
    let now = crate::records::now_ms();
    let pending = state
        .batches
        .pending(now, POLL_BATCHES)
        .await
        .map_err(|e| e.to_string())?;
    let interval = state.config.records.batch_poll_interval;
    let mut recorded = 0;
    for batch in pending {
        let (next, failed) = match record_batch(state, &batch).await {
            Ok(Lookup::Recorded) => {
                recorded += 1;
                continue;
            }
            Ok(Lookup::RecordedElsewhere) => continue,
            Ok(Lookup::Running) => (interval, false),
            Err(error) => {
                tracing::warn!(batch = %batch.id, %error, "recording a batch failed");
                let doublings = u32::try_from(batch.failures.clamp(0, 16)).unwrap_or(16);
                let backoff = interval.saturating_mul(2u32.saturating_pow(doublings));
                (backoff.min(LONGEST_BACKOFF), true)
            }
        };
        let next_ms = now.saturating_add(i64::try_from(next.as_millis()).unwrap_or(i64::MAX));
        if let Err(error) = state.batches.defer(&batch.id, next_ms, failed).await {
            tracing::warn!(batch = %batch.id, %error, "putting a batch's lookup off failed");
        }
    }
    Ok(recorded)
}

/// The upstream's view of a batch.
#[derive(Debug, Deserialize)]
struct BatchObject {
    status: String,
    #[serde(default)]
    output_file_id: Option<String>,
}

/// What a batch's output came to.
#[derive(Debug, Default)]
struct Output {
    records: Vec<Record>,
    /// Answered requests whose cost is unknown (unreadable, too long, unpriced).
    unknown: u64,
}

/// Records one batch if it has ended and no replica has yet.
async fn record_batch(state: &AppState, batch: &Batch) -> Result<Lookup, String> {
    let object = get(state, &format!("batches/{}", one_segment(&batch.id)?)).await?;
    let object: BatchObject =
        serde_json::from_slice(&object).map_err(|e| format!("the batch object: {e}"))?;
    if !matches!(
        object.status.as_str(),
        "completed" | "expired" | "cancelled" | "failed"
    ) {
        return Ok(Lookup::Running);
    }
    // Read before claiming: an output that cannot be read leaves the batch for a later lookup.
    let output = match &object.output_file_id {
        Some(id) => read_output(state, batch, one_segment(id)?).await?,
        None => Output::default(),
    };
    if !state
        .batches
        .claim(&batch.id, crate::records::now_ms())
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(Lookup::RecordedElsewhere);
    }
    let Output {
        mut records,
        unknown,
    } = output;
    let priced = records
        .iter()
        .filter_map(|r| r.cost_nanos)
        .fold(0, Nanos::saturating_add);
    // The hold is released; where some answers' costs are unknown, the batch keeps at least
    // what it held (an unknown cost is held at the most it could be).
    let release = if unknown == 0 {
        batch.held_nanos
    } else {
        batch.held_nanos.min(priced)
    };
    if release != 0 {
        records.push(Record {
            id: derived_id(&batch.id, "release", ""),
            outcome: "batch_release".to_owned(),
            model_requested: batch.model.clone(),
            cost_nanos: Some(-release),
            estimated: true,
            ..record_of(batch)
        });
    }
    for record in records {
        state.recorder.record(record).await;
    }
    adjust_budgets(state, batch, priced.saturating_sub(release)).await;
    Ok(Lookup::Recorded)
}

/// Reads an output file line by line as it streams (it may be larger than memory should hold).
async fn read_output(state: &AppState, batch: &Batch, file_id: &str) -> Result<Output, String> {
    let response = send_get(state, &format!("files/{file_id}/content")).await?;
    let mut body = response.into_body();
    let mut output = Output::default();
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let frame = tokio::time::timeout(state.config.upstream.timeout, body.frame())
            .await
            .map_err(|_| "reading the output timed out".to_owned())?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| format!("reading the output failed: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let mut rest = &data[..];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if !too_long {
                line.extend_from_slice(&rest[..end]);
                take_line(state, batch, &line, &mut output);
            }
            line.clear();
            too_long = false;
            rest = &rest[end + 1..];
        }
        if !too_long {
            line.extend_from_slice(rest);
            if line.len() > LONGEST_LINE {
                output.unknown += 1;
                line = Vec::new();
                too_long = true;
            }
        }
    }
    if !too_long {
        take_line(state, batch, &line, &mut output);
    }
    Ok(output)
}

/// Adds one output line's record to `output`.
fn take_line(state: &AppState, batch: &Batch, line: &[u8], output: &mut Output) {
    if line.trim_ascii().is_empty() {
        return;
    }
    match line_record(state, batch, line) {
        Some(record) => {
            output.unknown += u64::from(record.cost_nanos.is_none());
            output.records.push(record);
        }
        None if is_answered(line) => output.unknown += 1,
        None => {}
    }
}

/// Whether a line the gateway could not read says its request was answered (and so billed).
fn is_answered(line: &[u8]) -> bool {
    !std::str::from_utf8(line)
        .is_ok_and(|text| text.contains("\"status_code\":4") || text.contains("\"status_code\":5"))
}

/// One output line's record: the answer's usage priced at the batch tier (`cost_nanos: None`
/// when unpriced); `None` for a request that failed (OpenAI bills only answered requests) or
/// a line that cannot be read.
fn line_record(state: &AppState, batch: &Batch, line: &[u8]) -> Option<Record> {
    #[derive(Deserialize)]
    struct OutputLine {
        custom_id: Option<String>,
        response: Option<OutputResponse>,
    }
    #[derive(Deserialize)]
    struct OutputResponse {
        status_code: u16,
        body: Box<serde_json::value::RawValue>,
    }
    let line: OutputLine = serde_json::from_slice(line).ok()?;
    let response = line.response?;
    if !(200..300).contains(&response.status_code) {
        return None;
    }
    let summary = usage::summarize(response.body.get().as_bytes());
    let usage = summary.usage.unwrap_or_default();
    let model = summary.model.clone().or_else(|| batch.model.clone())?;
    let cost = summary.usage.and_then(|_| {
        state
            .prices
            .cost_at(&model, &usage, Asked::default(), ServiceTier::Batch)
    });
    let custom_id = line.custom_id.unwrap_or_default();
    Some(Record {
        id: derived_id(&batch.id, "line", &custom_id),
        request_id: format!("{}/{custom_id}", batch.id),
        model_requested: batch.model.clone(),
        model_used: summary.model,
        status: response.status_code,
        usage,
        price_version: cost.map(|_| state.prices.version().to_string()),
        cost_nanos: cost,
        estimated: cost.is_none(),
        service_tier: Some("batch".to_owned()),
        ..record_of(batch)
    })
}

/// The fields every record of a batch shares.
fn record_of(batch: &Batch) -> Record {
    Record {
        created_at_ms: batch.created_at_ms,
        request_id: batch.id.clone(),
        key_id: batch.key_id.clone(),
        user_id: batch.user_id.clone(),
        caller: batch.caller.clone(),
        method: "POST".to_owned(),
        route: batch.endpoint.clone(),
        upstream: Some("default".to_owned()),
        status: 200,
        outcome: "batch".to_owned(),
        ..Record::default()
    }
}

/// A record id (UUID-shaped) derived from the batch, the kind of record and a name within it,
/// so recording a batch twice stores each record once and no request's `custom_id` can take
/// the release's id.
fn derived_id(batch: &str, kind: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{batch}\n{kind}\n{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Moves the budgets of the batch's caller, in the windows that held it, by what the batch's
/// records add to its creation's (negative: the hold released beyond the cost). Counters that
/// are gone are seeded from the records, which already say so.
async fn adjust_budgets(state: &AppState, batch: &Batch, change: Nanos) {
    if change == 0 {
        return;
    }
    let lines = budget_lines(state, batch).await;
    if lines.is_empty() {
        return;
    }
    if let Err(error) = state.budgets.settle(&lines, 0, change).await {
        tracing::warn!(batch = %batch.id, %error, "moving budgets by a batch's cost failed");
    }
}

/// The budget lines of the batch's caller, in the windows its creation was held in.
async fn budget_lines(state: &AppState, batch: &Batch) -> Vec<crate::budget::BudgetLine> {
    use crate::budget::BudgetLine;
    let at = batch.created_at_ms;
    let mut lines = Vec::new();
    match (batch.caller.as_str(), &batch.key_id, &batch.user_id) {
        ("key", Some(key_id), user) => {
            let Ok(Some(key)) = state.keys.get(key_id).await else {
                return lines;
            };
            if let Some(spec) = &key.budgets.key {
                lines.push(BudgetLine::new(SpendScope::Key(key_id.clone()), spec, at));
            }
            if let (Some(spec), Some(user)) = (&key.budgets.user, user) {
                let scope = SpendScope::KeyUser(key_id.clone(), user.clone());
                lines.push(BudgetLine::new(scope, spec, at));
            }
        }
        ("jwt", _, Some(user)) => {
            if let Some(spec) = &state.config.jwt.budget {
                lines.push(BudgetLine::new(SpendScope::Jwt(user.clone()), spec, at));
            }
        }
        ("anonymous", _, Some(user)) => {
            if let Some(spec) = &state.config.anonymous.budget {
                lines.push(BudgetLine::new(
                    SpendScope::Anonymous(user.clone()),
                    spec,
                    at,
                ));
            }
        }
        _ => {}
    }
    lines
}
