//! Batches: checked when created, held to budgets, and recorded line by line once they end.
//!
//! Creating (`POST /v1/batches`, [`plan`]): for a caller with a model list or a budget, the
//! batch's input file is read from the upstream before the batch is forwarded. Every request
//! in it must go to the batch's endpoint and name the same model, one the caller may use, and
//! priced; the batch's worst case (each request's, at the batch tier's half price) is held on
//! the caller's budgets as any call's is, and the creation's record carries it. A batch that
//! cannot be read or checked is refused, never let through. Created, the batch is remembered
//! (id, key, user, endpoint, model, what it held).
//!
//! Recording ([`poll`], every `records.batch_poll_ms`): each remembered batch is looked up
//! upstream; once it has ended, one replica claims it, reads its output file, and records
//! every answered request priced from its own usage at the batch tier, against the batch's key
//! and user and dated when the batch was created (the budget window that held it counts it).
//! One more record, of minus what the creation held, releases the hold; the budgets are moved
//! by the difference. Records carry ids derived from the batch and the request, so a replay
//! cannot count one twice.

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::openai::ModelRoute;
use crate::openai::path::ApiPath;
use crate::openai::usage;
use crate::pricing::{Asked, Demand, Nanos, ServiceTier};
use crate::records::{Record, SpendScope};
use crate::state::AppState;
use crate::store::Batch;
use crate::upstream::{DEFAULT_ENDPOINT, OutgoingBody, UpstreamRequest};

/// The largest input or output file read (OpenAI's own limit is 200 MB).
const MAX_FILE_BYTES: usize = 200 << 20;

/// Batches looked up per poll.
const POLL_BATCHES: u32 = 100;

/// The routes a batch may run, as OpenAI's Batch API names them.
const ENDPOINTS: [(&str, ModelRoute); 4] = [
    ("/v1/chat/completions", ModelRoute::Chat),
    ("/v1/embeddings", ModelRoute::Embeddings),
    ("/v1/responses", ModelRoute::Responses),
    ("/v1/completions", ModelRoute::Passthrough),
];

/// What a batch's creation body says.
#[derive(Debug, Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
}

/// A checked batch: its one model and its worst case at the batch tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    pub endpoint: String,
    pub model: String,
    /// `None` when the model is unpriced.
    pub worst: Option<Nanos>,
}

/// One request of an input file.
#[derive(Debug, Deserialize)]
struct InputLine {
    #[serde(default)]
    url: String,
    #[serde(default)]
    body: Value,
}

/// Reads and checks the input file of a batch about to be created (see the module docs).
/// `allowed` is the caller's model check.
pub async fn plan(
    state: &AppState,
    body: &[u8],
    allowed: impl Fn(&str) -> Result<(), GatewayError>,
) -> Result<BatchPlan, GatewayError> {
    let create: CreateBatch = crate::extract::decode(body)?;
    let Some((_, route)) = ENDPOINTS.iter().find(|(e, _)| *e == create.endpoint) else {
        return Err(GatewayError::invalid(
            format!(
                "A batch's 'endpoint' must be one of {}.",
                ENDPOINTS.map(|(e, _)| e).join(", ")
            ),
            Some("endpoint".to_owned()),
        ));
    };
    let input = read_file(state, &create.input_file_id)
        .await
        .map_err(|why| {
            GatewayError::invalid(
                format!(
                    "The batch's input file could not be read to check it ({why}), so it is \
                     not forwarded."
                ),
                Some("input_file_id".to_owned()),
            )
        })?;
    let mut model: Option<String> = None;
    let mut worst: Option<Nanos> = Some(0);
    for (number, line) in lines(&input).enumerate() {
        let bad = |what: &str| {
            GatewayError::invalid(
                format!("Line {} of the batch's input file {what}.", number + 1),
                Some("input_file_id".to_owned()),
            )
        };
        let line: InputLine =
            serde_json::from_slice(line).map_err(|_| bad("is not a JSON request"))?;
        if line.url != create.endpoint {
            return Err(bad("goes to another endpoint than the batch's"));
        }
        let Some(named) = line.body.get("model").and_then(Value::as_str) else {
            return Err(bad("names no model"));
        };
        match &model {
            Some(first) if first != named => {
                return Err(bad("names another model: a batch runs one model"));
            }
            Some(_) => {}
            None => {
                allowed(named)?;
                model = Some(named.to_owned());
            }
        }
        let estimate = crate::tokens::estimate_value(*route, &line.body);
        let demand = Demand {
            prompt_tokens: estimate.prompt_tokens,
            max_output: estimate.max_completion_tokens,
            choices: estimate.choices,
            prompt_audio_bytes: estimate.prompt_audio_bytes,
            audio_output: estimate.audio_output,
            asked: Asked::default(),
            tier: ServiceTier::Batch,
        };
        let line_worst = state.prices.worst_case(named, &demand);
        worst = worst.zip(line_worst).map(|(a, b)| a.saturating_add(b));
    }
    let Some(model) = model else {
        return Err(GatewayError::invalid(
            "The batch's input file holds no requests.",
            Some("input_file_id".to_owned()),
        ));
    };
    Ok(BatchPlan {
        endpoint: create.endpoint,
        model,
        worst,
    })
}

/// The non-empty lines of a JSONL file.
fn lines(file: &[u8]) -> impl Iterator<Item = &[u8]> {
    file.split(|b| *b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
}

/// GETs `path` from the default upstream with Tollgate's key: the body, at most
/// [`MAX_FILE_BYTES`], of a 2xx answer.
async fn get(state: &AppState, path: &str) -> Result<Bytes, String> {
    let path = ApiPath::parse(path).map_err(|_| "not a valid id".to_owned())?;
    let request = UpstreamRequest {
        endpoint: DEFAULT_ENDPOINT,
        method: Method::GET,
        path,
        query: None,
        headers: HeaderMap::new(),
        body: OutgoingBody::Empty,
        stream: false,
    };
    let targets = state.upstream.targets(None);
    let (response, _) = state
        .upstream
        .send_routed(&targets, request)
        .await
        .map_err(|error| error.to_string())?;
    let limited = http_body_util::Limited::new(response.into_body(), MAX_FILE_BYTES);
    let read = tokio::time::timeout(state.config.upstream.timeout, limited.collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(format!("reading it failed: {error}")),
        Err(_) => Err("reading it timed out".to_owned()),
    }
}

/// A file's content; the id must be one path segment.
async fn read_file(state: &AppState, id: &str) -> Result<Bytes, String> {
    if id.is_empty() || id.contains('/') {
        return Err("not a valid file id".to_owned());
    }
    get(state, &format!("files/{id}/content")).await
}

/// The batch id in a creation's answer.
pub fn created_id(answer: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// Looks for ended batches every `interval` until `stop`.
pub async fn poll(state: AppState, interval: std::time::Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = record_ended(&state).await {
            tracing::warn!(%error, "looking up batches failed");
        }
    }
}

/// Records the output of every remembered batch that has ended; returns how many.
pub async fn record_ended(state: &AppState) -> Result<u64, String> {
    let pending = state
        .batches
        .pending(POLL_BATCHES)
        .await
        .map_err(|e| e.to_string())?;
    let mut recorded = 0;
    for batch in pending {
        match record_batch(state, &batch).await {
            Ok(true) => recorded += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(batch = %batch.id, %error, "recording a batch failed"),
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

/// Records one batch if it has ended and no replica has yet; true when this call did.
async fn record_batch(state: &AppState, batch: &Batch) -> Result<bool, String> {
    if batch.id.is_empty() || batch.id.contains('/') {
        return Err("not a valid batch id".to_owned());
    }
    let object = get(state, &format!("batches/{}", batch.id)).await?;
    let object: BatchObject =
        serde_json::from_slice(&object).map_err(|e| format!("the batch object: {e}"))?;
    if !matches!(
        object.status.as_str(),
        "completed" | "expired" | "cancelled" | "failed"
    ) {
        return Ok(false);
    }
    let output = match &object.output_file_id {
        Some(id) => read_file(state, id).await?,
        None => Bytes::new(),
    };
    if !state
        .batches
        .claim(&batch.id, crate::records::now_ms())
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(false);
    }
    let mut records: Vec<Record> = lines(&output)
        .filter_map(|line| line_record(state, batch, line))
        .collect();
    if batch.held_nanos != 0 {
        records.push(Record {
            id: derived_id(&batch.id, "release"),
            outcome: "batch_release".to_owned(),
            model_requested: batch.model.clone(),
            cost_nanos: Some(-batch.held_nanos),
            estimated: true,
            ..record_of(batch)
        });
    }
    let actual: Nanos = records.iter().filter_map(|r| r.cost_nanos).sum();
    for record in records {
        state.recorder.record(record).await;
    }
    adjust_budgets(state, batch, actual).await;
    Ok(true)
}

/// One output line's record: the answer's usage priced at the batch tier; `None` for a line
/// that failed (OpenAI bills only answered requests).
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
    let cost = state
        .prices
        .cost_at(&model, &usage, Asked::default(), ServiceTier::Batch);
    let custom_id = line.custom_id.unwrap_or_default();
    Some(Record {
        id: derived_id(&batch.id, &custom_id),
        request_id: format!("{}/{custom_id}", batch.id),
        route: batch.endpoint.clone(),
        model_requested: batch.model.clone(),
        model_used: summary.model,
        status: response.status_code,
        usage,
        price_version: cost.map(|_| state.prices.version().to_string()),
        cost_nanos: cost,
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

/// A record id (UUID-shaped) derived from the batch and a name within it, so recording a batch
/// twice stores each record once.
fn derived_id(batch: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{batch}\n{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Moves the budgets the batch's caller had when it was created by what it cost beyond what
/// its creation held (negative: less). Lines whose counters are gone are seeded from the
/// records, which already say so.
async fn adjust_budgets(state: &AppState, batch: &Batch, actual: Nanos) {
    if actual == 0 {
        return;
    }
    let lines = budget_lines(state, batch).await;
    if lines.is_empty() {
        return;
    }
    if let Err(error) = state.budgets.settle(&lines, 0, actual).await {
        tracing::warn!(batch = %batch.id, %error, "moving budgets by a batch's cost failed");
    }
}

/// The budget lines of the batch's caller, in the window its creation fell in.
async fn budget_lines(state: &AppState, batch: &Batch) -> Vec<crate::budget::BudgetLine> {
    let at = batch.created_at_ms;
    let mut lines = Vec::new();
    match (batch.caller.as_str(), &batch.key_id) {
        ("key", Some(key_id)) => {
            let Ok(Some(key)) = state.keys.get(key_id).await else {
                return lines;
            };
            if let Some(spec) = &key.budgets.key {
                lines.push(crate::budget::BudgetLine::new(
                    SpendScope::Key(key_id.clone()),
                    spec,
                    at,
                ));
            }
            if let (Some(spec), Some(user)) = (&key.budgets.user, &batch.user_id) {
                lines.push(crate::budget::BudgetLine::new(
                    SpendScope::KeyUser(key_id.clone(), user.clone()),
                    spec,
                    at,
                ));
            }
        }
        ("jwt", _) => {
            if let (Some(spec), Some(user)) = (&state.config.jwt.budget, &batch.user_id) {
                lines.push(crate::budget::BudgetLine::new(
                    SpendScope::Jwt(user.clone()),
                    spec,
                    at,
                ));
            }
        }
        ("anonymous", _) => {
            if let (Some(spec), Some(user)) = (&state.config.anonymous.budget, &batch.user_id) {
                lines.push(crate::budget::BudgetLine::new(
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

/// Remembers a batch just created.
pub async fn remember(state: &AppState, batch: Batch) {
    if let Err(error) = state.batches.remember(&batch).await {
        tracing::error!(batch = %batch.id, %error, "a created batch could not be remembered");
    }
}

/// Shared so the pipeline can hand a plan to the respond stage.
pub type SharedPlan = Arc<BatchPlan>;
