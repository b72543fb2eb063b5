//! What the pipeline learned about a call, handed to the audit layer with the response.
//!
//! The pipeline (and the authentication layer, for routes outside the pipeline) puts a
//! [`CallFacts`] in the response's extensions; the audit layer takes it out and builds the
//! record. A streamed response cannot know its usage when its head leaves, so it carries a
//! [`PendingFacts`] instead, fulfilled by the stream relay when the stream ends.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::openai::usage::Usage;
use crate::pricing::{ImageRequest, Nanos};
use crate::store::audit::Record;

/// Usage and cost of one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accounting {
    /// The model that answered (the response's `model`), when it says.
    pub model_used: Option<String>,
    pub usage: Usage,
    /// Images generated, for the images route.
    pub images: Option<ImageRequest>,
    /// `None`: the model is unpriced (or nothing is known to price).
    pub cost: Option<Nanos>,
    /// The price table that priced `cost`.
    pub price_version: Option<Arc<str>>,
    /// The processing tier the answer reports (`default`, `flex`, `priority`, ...).
    pub service_tier: Option<String>,
    /// Usage counted by Tollgate, not reported by the upstream.
    pub estimated: bool,
}

/// The call's identity, model, usage and cost, as far as they are known.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    /// `key`, `jwt` or `anonymous`.
    pub caller: &'static str,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
    pub model_requested: Option<String>,
    pub model_used: Option<String>,
    /// The upstream that answered (`default` or an `[[upstreams]]` name).
    pub upstream: Option<std::sync::Arc<str>>,
    /// `HIT`, `MISS` or `BYPASS` on the routes the cache serves.
    pub cache_status: Option<&'static str>,
    /// Content rules that fired (`redact:email`, `deny:0`, ...): their names, never the text.
    pub rules_fired: Vec<String>,
    pub stream: bool,
    pub usage: Usage,
    pub images: Option<ImageRequest>,
    pub cost_nanos: Option<Nanos>,
    /// The price table that priced `cost_nanos`.
    pub price_version: Option<Arc<str>>,
    /// The processing tier the answer reports.
    pub service_tier: Option<String>,
    /// Usage counted by Tollgate because the upstream's never arrived.
    pub estimated: bool,
    pub upstream_ms: Option<i64>,
    /// How long the gateway waited for the upstream's answer (a stream: for its head); the
    /// rest of the response time is the gateway's own overhead.
    pub upstream_wait: Option<std::time::Duration>,
    /// The model as a metrics label: a priced model's table name, an alias, or `other`.
    pub model_label: Option<std::sync::Arc<str>>,
    pub prompt_chars: Option<i64>,
    pub completion_chars: Option<i64>,
    /// How a stream ended (`stream_broken`, `client_left`), overriding the status's outcome.
    pub outcome: Option<&'static str>,
    pub prompt_text: Option<String>,
    pub completion_text: Option<String>,
}

impl CallFacts {
    /// What is known once the caller is: who, for whom, from where.
    pub fn of(principal: &crate::identity::Principal) -> Self {
        use crate::identity::Caller;
        Self {
            caller: match principal.caller {
                Caller::Key(_) => "key",
                Caller::Jwt { .. } => "jwt",
                Caller::Anonymous => "anonymous",
            },
            key_id: principal.key_id().map(str::to_owned),
            user_id: principal.user.clone(),
            client_ip: Some(principal.client_ip),
            ..Self::default()
        }
    }

    /// Counts the call's tokens and cost in the metrics.
    pub fn count_usage(&self, route: &'static str) {
        crate::metrics::record_usage(
            route,
            self.model_label.clone(),
            &self.usage,
            self.cost_nanos,
        );
    }

    /// Notes the wait for the upstream (also the record's `upstream_ms`).
    pub fn set_upstream_wait(&mut self, wait: std::time::Duration) {
        self.upstream_wait = Some(wait);
        self.upstream_ms = Some(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    }

    /// Fills `record` with these facts (the prompt and completion text only when `store_text`).
    pub fn fill(self, record: &mut Record, store_text: bool) {
        record.caller = self.caller.to_owned();
        record.key_id = self.key_id;
        record.user_id = self.user_id;
        if let Some(ip) = self.client_ip {
            record.client_ip = Some(ip.to_string());
        }
        record.model_requested = self.model_requested;
        record.model_used = self.model_used;
        record.upstream = self.upstream.as_deref().map(str::to_owned);
        record.cache_status = self.cache_status.map(str::to_owned);
        record.rules_fired = self.rules_fired;
        record.stream = self.stream;
        record.usage = self.usage;
        if let Some(images) = self.images {
            record.images = images.count;
            record.image_size = images.size;
            record.image_quality = images.quality;
        }
        record.cost_nanos = self.cost_nanos;
        record.price_version = self.price_version.as_deref().map(str::to_owned);
        record.service_tier = self.service_tier;
        record.estimated = self.estimated;
        record.upstream_ms = self.upstream_ms;
        record.prompt_chars = self.prompt_chars;
        record.completion_chars = self.completion_chars;
        if let Some(outcome) = self.outcome {
            record.outcome = outcome.to_owned();
        }
        if store_text {
            record.prompt_text = self.prompt_text;
            record.completion_text = self.completion_text;
        }
    }

    /// Takes in the call's usage and cost.
    pub fn apply(&mut self, accounting: Accounting) {
        if accounting.model_used.is_some() {
            self.model_used = accounting.model_used;
        }
        self.usage = accounting.usage;
        self.images = accounting.images;
        self.cost_nanos = accounting.cost;
        self.price_version = accounting.price_version;
        self.service_tier = accounting.service_tier;
        self.estimated = accounting.estimated;
    }
}

/// The facts of a streamed response, delivered when the stream is over. Extensions must be
/// `Clone`, hence the shared slot; the audit layer takes the receiver once.
#[derive(Debug, Clone)]
pub struct PendingFacts(Arc<Mutex<Option<oneshot::Receiver<CallFacts>>>>);

impl PendingFacts {
    /// A pending slot and the sender that fulfils it.
    pub fn new() -> (Self, oneshot::Sender<CallFacts>) {
        let (sender, receiver) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(receiver)))), sender)
    }

    /// The receiver, once.
    pub fn take(&self) -> Option<oneshot::Receiver<CallFacts>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What became of a call whose caller left before its answer: the status and error kind it
/// would have had, and its facts (usage and cost as the upstream reported them).
#[derive(Debug)]
pub struct Unanswered {
    pub status: u16,
    pub error_kind: Option<&'static str>,
    pub facts: CallFacts,
}

/// Where a call whose caller left hands over what it learned: the audit layer puts one in the
/// request's extensions, and if the caller leaves, its record waits on the other end. The
/// upstream part of a call runs on, so the record has the real usage and cost.
#[derive(Debug, Clone)]
pub struct LeftBehind(Arc<Mutex<Option<oneshot::Sender<Unanswered>>>>);

impl LeftBehind {
    /// A slot and the receiver its record waits on.
    pub fn new() -> (Self, oneshot::Receiver<Unanswered>) {
        let (sender, receiver) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(sender)))), receiver)
    }

    /// Hands `unanswered` to the waiting record (once; later calls do nothing).
    pub fn deliver(&self, unanswered: Unanswered) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(unanswered);
        }
    }
}
