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

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::openai::ModelRoute;
use crate::openai::path::ApiPath;
use crate::pricing::{Asked, Demand, Nanos, ServiceTier};
use crate::state::AppState;
use crate::store::Batch;
use crate::upstream::{DEFAULT_ENDPOINT, OutgoingBody, UpstreamRequest};

/// The largest input file read (OpenAI's own limit is 200 MB).
const MAX_FILE_BYTES: usize = 200 << 20;

mod recording;

pub use recording::{poll, record_ended};

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

/// One request of an input file, its body as sent (read twice: for its model, strictly, and
/// for its token estimate).
#[derive(Debug, Deserialize)]
struct InputLine {
    #[serde(default)]
    url: String,
    body: Box<serde_json::value::RawValue>,
}

/// Reads and checks the input file of a batch about to be created (see the module docs).
/// `allowed` is the caller's model check. The file is checked on a blocking thread: counting
/// its tokens is CPU work.
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
    let prices = state.prices.clone();
    let route = *route;
    let endpoint = create.endpoint.clone();
    let (model, worst) =
        tokio::task::spawn_blocking(move || check_lines(&prices, &endpoint, route, &input))
            .await
            .map_err(|error| GatewayError::Internal(error.to_string()))??;
    allowed(&model)?;
    Ok(BatchPlan {
        endpoint: create.endpoint,
        model,
        worst,
    })
}

/// The fields of a request body a batch check reads; a duplicate `model` is an error (which
/// one would the upstream run?).
#[derive(Debug, Deserialize)]
struct LineBody {
    model: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<crate::openai::requests::ToolModel>>,
}

/// Every request of an input file: to `endpoint`, naming one model (tools included), each
/// priced at its worst case at the batch tier. Returns the model and the sum of the worst cases
/// (`None` when the model is unpriced).
fn check_lines(
    prices: &crate::pricing::PriceTable,
    endpoint: &str,
    route: ModelRoute,
    input: &[u8],
) -> Result<(String, Option<Nanos>), GatewayError> {
    let mut model: Option<String> = None;
    let mut worst: Option<Nanos> = Some(0);
    for (number, line) in lines(input).enumerate() {
        let bad = |what: &str| {
            GatewayError::invalid(
                format!("Line {} of the batch's input file {what}.", number + 1),
                Some("input_file_id".to_owned()),
            )
        };
        let line: InputLine =
            serde_json::from_slice(line).map_err(|_| bad("is not a JSON request"))?;
        if line.url != endpoint {
            return Err(bad("goes to another endpoint than the batch's"));
        }
        let fields: LineBody = serde_json::from_str(line.body.get())
            .map_err(|_| bad("has a body the gateway cannot read unambiguously"))?;
        let body: Value =
            serde_json::from_str(line.body.get()).map_err(|_| bad("is not a JSON request"))?;
        let Some(Value::String(named)) = fields.model else {
            return Err(bad("names no model"));
        };
        let tool_model = fields
            .tools
            .iter()
            .flatten()
            .filter_map(|tool| tool.model.as_ref())
            .any(|tool| tool.as_str() != Some(named.as_str()));
        if tool_model {
            return Err(bad(
                "runs a tool with a model of its own: a batch runs one model",
            ));
        }
        match &model {
            Some(first) if *first != named => {
                return Err(bad("names another model: a batch runs one model"));
            }
            Some(_) => {}
            None => model = Some(named.clone()),
        }
        let estimate = crate::tokens::estimate_value(route, &body);
        let demand = Demand {
            prompt_tokens: estimate.prompt_tokens,
            max_output: estimate.max_completion_tokens,
            choices: estimate.choices,
            prompt_audio_bytes: estimate.prompt_audio_bytes,
            audio_output: estimate.audio_output,
            asked: Asked::default(),
            tier: ServiceTier::Batch,
        };
        let line_worst = prices.worst_case(&named, &demand);
        worst = worst.zip(line_worst).map(|(a, b)| a.saturating_add(b));
    }
    let model = model.ok_or_else(|| {
        GatewayError::invalid(
            "The batch's input file holds no requests.",
            Some("input_file_id".to_owned()),
        )
    })?;
    Ok((model, worst))
}

/// The non-empty lines of a JSONL file.
fn lines(file: &[u8]) -> impl Iterator<Item = &[u8]> {
    file.split(|b| *b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
}

/// Sends `GET path` to the default upstream with Tollgate's key; a 2xx answer.
async fn send_get(
    state: &AppState,
    path: &str,
) -> Result<crate::upstream::UpstreamResponse, String> {
    let path = ApiPath::parse(path).map_err(|_| "not a valid id".to_owned())?;
    let request = UpstreamRequest {
        endpoint: DEFAULT_ENDPOINT,
        method: Method::GET,
        path,
        query: None,
        headers: HeaderMap::new(),
        body: OutgoingBody::Empty,
        stream: false,
        model: None,
    };
    let targets = state.upstream.targets(None);
    let routed = state
        .upstream
        .send_routed(&targets, None, 0, request)
        .await
        .map_err(|error| error.to_string())?;
    Ok(routed.response)
}

/// GETs `path` from the default upstream with Tollgate's key: the body, at most
/// [`MAX_FILE_BYTES`], of a 2xx answer.
async fn get(state: &AppState, path: &str) -> Result<Bytes, String> {
    let response = send_get(state, path).await?;
    let limited = http_body_util::Limited::new(response.into_body(), MAX_FILE_BYTES);
    let read = tokio::time::timeout(state.config.upstream.timeout, limited.collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(format!("reading it failed: {error}")),
        Err(_) => Err("reading it timed out".to_owned()),
    }
}

/// Whether `id` can name one path segment (a file or batch id).
fn one_segment(id: &str) -> Result<&str, String> {
    if id.is_empty() || id.contains('/') {
        Err("not a valid id".to_owned())
    } else {
        Ok(id)
    }
}

/// A file's content; the id must be one path segment.
async fn read_file(state: &AppState, id: &str) -> Result<Bytes, String> {
    get(state, &format!("files/{}/content", one_segment(id)?)).await
}

/// The batch id in a creation's answer.
pub fn created_id(answer: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// Remembers a batch just created.
pub async fn remember(state: &AppState, batch: Batch) {
    if let Err(error) = state.batches.remember(&batch).await {
        tracing::error!(batch = %batch.id, %error, "a created batch could not be remembered");
    }
}
