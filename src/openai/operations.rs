//! Which OpenAI operations the passthrough route forwards, and how each is governed.
//!
//! The list is OpenAI's own (`operations.tsv`, generated from the OpenAPI description by
//! `scripts/generate_operations.py`), less the routes that need an organization admin key
//! (`organization/*`, `projects/*`), plus what the operator opens with `[upstream]
//! extra_paths`. A path no template matches is a 404, a known path with another method a 405;
//! neither leaves the gateway.
//!
//! Each operation is governed one of three ways ([`Governance`]). The rule behind them: a
//! restriction that cannot be enforced on a request is a refusal, never a bypass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::Method;

use super::path::ApiPath;

/// OpenAI's operations, as generated from its OpenAPI description.
const SPEC_OPERATIONS: &str = include_str!("operations.tsv");

/// Path prefixes never forwarded: they need an organization admin key, which no caller of a
/// gateway should hold by proxy.
const ADMIN_PREFIXES: [&str; 2] = ["organization", "projects"];

/// How a request to an operation is held to a caller's restrictions (allowed models, budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Governance {
    /// Reads, deletes, cancels, uploads and edits of stored objects: no model runs and nothing
    /// is billed per call, so there is nothing to check.
    Free,
    /// The body names the model (JSON or a multipart field), and the cost follows from the
    /// body: the model check, limits and budget apply as on the model routes.
    Model,
    /// Runs models or costs money in ways the request does not show (batches, fine-tuning,
    /// assistants runs, vector store ingestion, realtime client secrets, ...): refused to a
    /// caller with a model list or a budget unless its `routes` allowance names the family.
    Opaque,
}

/// What body an operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyKinds {
    pub json: bool,
    pub multipart: bool,
    /// Another media type (`application/sdp` for realtime calls).
    pub other: bool,
}

/// One forwardable operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// `/files/{file_id}/content`, as the specification writes it.
    pub template: String,
    /// The route family (`files`, `batches`, `assistants`, ...): what a key's `routes`
    /// allowance and the limit rules' route classes name.
    pub family: String,
    pub body: BodyKinds,
    pub governance: Governance,
    /// Whether OpenAI bills the call (moderations and token counts are free), so that a
    /// budget must be able to price it.
    pub billed: bool,
}

/// Why a path is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotForwarded {
    /// No template matches the path (404).
    UnknownPath,
    /// A template matches, but not with this method (405); the methods that would.
    Method(Vec<Method>),
}

/// The allowlist, indexed by the first path segment.
#[derive(Debug)]
pub struct Operations {
    by_first_segment: HashMap<String, Vec<Entry>>,
    /// Every literal segment of every template, in lower case: a parameter may not be one
    /// (`/threads/RUNS` is not a thread id: an upstream that ignores case would run it).
    literals: HashSet<String>,
}

/// A template split into pieces, with its operation.
type Entry = (Vec<Piece>, Arc<Operation>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Parameter,
}

impl Operations {
    /// OpenAI's operations without the admin ones, plus `extra` (`[upstream] extra_paths`,
    /// already validated: `METHOD /template`).
    pub fn new(extra: &[(Method, String)]) -> Self {
        let mut operations = Self {
            by_first_segment: HashMap::new(),
            literals: HashSet::new(),
        };
        for (method, template, media) in spec_operations() {
            let first = template.trim_start_matches('/').split('/').next();
            if first.is_some_and(|first| ADMIN_PREFIXES.contains(&first)) {
                continue;
            }
            let body = BodyKinds {
                // An operation without a body still takes a JSON one (read and checked).
                json: media.contains("application/json") || media == "-",
                multipart: media.contains("multipart/form-data"),
                other: media
                    .split(',')
                    .any(|m| m != "-" && m != "application/json" && m != "multipart/form-data"),
            };
            let governance = governance(&method, template);
            operations.insert(Operation {
                billed: governance == Governance::Model && !UNBILLED.contains(&template),
                family: family(template).to_owned(),
                method,
                template: template.to_owned(),
                body,
                governance,
            });
        }
        for (method, template) in extra {
            // The operator opened it: forwarded as sent, governed as an opaque route.
            operations.insert(Operation {
                method: method.clone(),
                template: template.clone(),
                family: family(template).to_owned(),
                body: BodyKinds {
                    json: true,
                    multipart: true,
                    other: true,
                },
                governance: Governance::Opaque,
                billed: true,
            });
        }
        operations
    }

    fn insert(&mut self, operation: Operation) {
        let pieces: Vec<Piece> = operation
            .template
            .trim_start_matches('/')
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') {
                    Piece::Parameter
                } else {
                    Piece::Literal(segment.to_owned())
                }
            })
            .collect();
        for piece in &pieces {
            if let Piece::Literal(literal) = piece {
                self.literals.insert(literal.to_ascii_lowercase());
            }
        }
        let first = match pieces.first() {
            Some(Piece::Literal(first)) => first.clone(),
            _ => String::new(),
        };
        self.by_first_segment
            .entry(first)
            .or_default()
            .push((pieces, Arc::new(operation)));
    }

    /// The operation `method path` is, or why it is not forwarded.
    pub fn find(&self, method: &Method, path: &ApiPath) -> Result<&Arc<Operation>, NotForwarded> {
        let segments: Vec<&str> = path.segments().collect();
        let first = segments.first().copied().unwrap_or_default();
        let candidates = self
            .by_first_segment
            .get(first)
            .into_iter()
            .flatten()
            .filter(|(pieces, _)| matches(pieces, &segments, &self.literals));
        // A literal beats a parameter (`/responses/input_tokens` over `/responses/{id}`):
        // among matching templates, the one with the most literal segments wins.
        let mut best: Option<&Entry> = None;
        let mut allowed = Vec::new();
        for candidate in candidates {
            if candidate.1.method != *method {
                allowed.push(candidate.1.method.clone());
                continue;
            }
            if best.is_none_or(|b| literals(&candidate.0) > literals(&b.0)) {
                best = Some(candidate);
            }
        }
        match best {
            Some((_, operation)) => Ok(operation),
            None if allowed.is_empty() => Err(NotForwarded::UnknownPath),
            None => {
                allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allowed.dedup();
                Err(NotForwarded::Method(allowed))
            }
        }
    }

    /// Every operation, for the tests and the documentation.
    pub fn all(&self) -> impl Iterator<Item = &Operation> {
        self.by_first_segment
            .values()
            .flatten()
            .map(|(_, op)| &**op)
    }
}

fn matches(pieces: &[Piece], segments: &[&str], literals: &HashSet<String>) -> bool {
    pieces.len() == segments.len()
        && pieces
            .iter()
            .zip(segments)
            .all(|(piece, segment)| match piece {
                Piece::Literal(literal) => literal == segment,
                Piece::Parameter => !literals.contains(&segment.to_ascii_lowercase()),
            })
}

fn literals(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .filter(|p| matches!(p, Piece::Literal(_)))
        .count()
}

/// The lines of `operations.tsv`: method, template, media types.
fn spec_operations() -> impl Iterator<Item = (Method, &'static str, &'static str)> {
    SPEC_OPERATIONS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let method = Method::from_bytes(fields.next()?.as_bytes()).ok()?;
            Some((method, fields.next()?, fields.next()?))
        })
}

/// Reads one `[upstream] extra_paths` entry: `METHOD /template`, where the template's segments
/// are names or `{parameters}`, checked by the same rules as a caller's path.
pub fn parse_extra(entry: &str) -> Result<(Method, String), String> {
    let (method, template) = entry
        .trim()
        .split_once(' ')
        .ok_or("expected \"METHOD /path/{param}\"")?;
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        _ => return Err("the method must be GET, POST, PUT, PATCH or DELETE".to_owned()),
    };
    let template = template.trim();
    let relative = template
        .strip_prefix('/')
        .ok_or("the path must start with /")?;
    let concrete = relative
        .split('/')
        .map(|segment| {
            let parameter = segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}');
            if parameter { "p" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/");
    ApiPath::parse(&concrete).map_err(|why| format!("not a plain path ({why:?})"))?;
    Ok((method, template.to_owned()))
}

/// Every route family of OpenAI's operations (`assistants`, `audio`, `batches`, ...).
pub fn families() -> Vec<&'static str> {
    let mut families: Vec<&str> = spec_operations().map(|(_, t, _)| family(t)).collect();
    families.retain(|f| !ADMIN_PREFIXES.contains(f));
    families.sort_unstable();
    families.dedup();
    families
}

/// Checks a `routes` allowance: each entry must be a route family.
pub fn check_families(routes: &[String]) -> Result<(), String> {
    let known = families();
    match routes.iter().find(|r| !known.contains(&r.as_str())) {
        Some(unknown) => Err(format!(
            "{unknown:?} is not a route family; expected one of {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// The route family of a template: its first segment, except that the Assistants API's
/// threads and runs belong with `assistants`.
pub fn family(template: &str) -> &str {
    let first = template
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    match first {
        "threads" => "assistants",
        other => other,
    }
}

/// Operations whose body names the model, with a cost that follows from the body.
const MODEL_OPERATIONS: [&str; 18] = [
    "/audio/speech",
    "/audio/transcriptions",
    "/audio/translations",
    // Its model and cost are read from its input file (`pipeline::batch`).
    "/batches",
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/images/edits",
    "/images/generations",
    "/images/variations",
    "/moderations",
    "/responses",
    "/responses/compact",
    "/responses/input_tokens",
    "/videos",
    "/videos/edits",
    "/videos/extensions",
    "/videos/{video_id}/remix",
];

/// Model operations OpenAI does not bill: the model is checked, no budget needs a price.
const UNBILLED: [&str; 2] = ["/moderations", "/responses/input_tokens"];

/// Writes that run no model and bill nothing per call: stored objects created, edited or
/// cancelled. Every other write is [`Governance::Opaque`] until it is listed here or above,
/// so an operation OpenAI adds is refused to restricted callers, not let through.
const FREE_WRITES: [&str; 34] = [
    "/assistants",
    "/assistants/{assistant_id}",
    "/audio/voice_consents/{consent_id}",
    "/batches/{batch_id}/cancel",
    "/chat/completions/{completion_id}",
    "/chatkit/sessions/{session_id}/cancel",
    "/containers/{container_id}/files",
    "/conversations",
    "/conversations/{conversation_id}",
    "/conversations/{conversation_id}/items",
    "/evals",
    "/evals/{eval_id}",
    "/evals/{eval_id}/runs/{run_id}",
    "/files",
    "/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    "/fine_tuning/jobs/{fine_tuning_job_id}/pause",
    "/realtime/calls/{call_id}/hangup",
    "/responses/{response_id}/cancel",
    "/skills",
    "/skills/{skill_id}",
    "/skills/{skill_id}/versions",
    "/threads",
    "/threads/{thread_id}",
    "/threads/{thread_id}/messages",
    "/threads/{thread_id}/messages/{message_id}",
    "/threads/{thread_id}/runs/{run_id}",
    "/threads/{thread_id}/runs/{run_id}/cancel",
    "/uploads",
    "/uploads/{upload_id}/cancel",
    "/uploads/{upload_id}/complete",
    "/uploads/{upload_id}/parts",
    "/vector_stores/{vector_store_id}",
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
    "/vector_stores/{vector_store_id}/files/{file_id}",
];

fn governance(method: &Method, template: &str) -> Governance {
    if *method == Method::GET {
        return Governance::Free;
    }
    if *method == Method::DELETE {
        // Deleting a fine-tuned model removes it for the whole organization.
        return if template == "/models/{model}" {
            Governance::Opaque
        } else {
            Governance::Free
        };
    }
    if MODEL_OPERATIONS.contains(&template) {
        Governance::Model
    } else if FREE_WRITES.contains(&template) {
        Governance::Free
    } else {
        Governance::Opaque
    }
}

#[cfg(test)]
mod tests;
