//! A session's accounting: each response priced, recorded and charged as it ends, and what
//! the session still holds settled when it is over.

use tokio::time::Instant;

use super::{End, Session};
use crate::budget::Placed;
use crate::error::GatewayError;
use crate::limiter::rules::RouteClass;
use crate::openai::ModelRoute;
use crate::pipeline::{Spend, rate_limit};
use crate::pricing::Nanos;
use crate::records::{CallFacts, Record};

impl Session {
    /// One response's end: priced from its usage, recorded, then charged to the token limits
    /// and to the budgets beside the hold. A response without usage cost what the hold held.
    pub(super) async fn account(&mut self, text: &str) -> Result<(), GatewayError> {
        self.open_responses = self.open_responses.saturating_sub(1);
        let began = self.response_began.take();
        if self.open_responses > 0 {
            self.response_began = Some((crate::records::now_ms(), Instant::now()));
        }
        let usage = crate::openai::usage::from_json(text.as_bytes());
        let prices = self.state.prices.clone();
        let priced_as = self
            .serving
            .as_deref()
            .filter(|model| prices.get(model).is_some())
            .unwrap_or(&self.sent)
            .to_owned();
        let (usage, cost, estimated) = match usage {
            Some(usage) => {
                let cost = prices.cost(&priced_as, &usage, None);
                (usage, cost, false)
            }
            None => (Default::default(), self.reservations.budget_held(), true),
        };
        let mut facts = self.facts.clone();
        facts.model_used.clone_from(&self.serving);
        facts.usage = usage;
        facts.cost_nanos = cost;
        facts.price_version = cost.map(|_| prices.version());
        facts.estimated = estimated;
        facts.count_usage(ModelRoute::Realtime.label());
        let tokens = facts.usage.total_tokens();
        self.record(facts, 200, None, began).await;
        // Both are charged whatever the other says: the response ran.
        let room = match cost {
            Some(cost) => self.charge_budgets(cost).await,
            None => true,
        };
        let tokens_left =
            rate_limit::charge_used(&self.state, &self.principal, RouteClass::Realtime, tokens)
                .await;
        if !room {
            self.owed = cost;
            return Err(GatewayError::InsufficientQuota {
                message: "This session's budget has no room for another response: the session \
                          is closed."
                    .to_owned(),
            });
        }
        tokens_left
    }

    /// Charges one response's `cost` to the budgets: beside the hold, or (nothing held) to
    /// the budgets directly. Whether another response still fits.
    async fn charge_budgets(&mut self, cost: Nanos) -> bool {
        if self.unheld_lines.is_empty() {
            return self.reservations.spend_part(cost).await;
        }
        let charged = self
            .state
            .budgets
            .settle_placed(&self.unheld_lines, 0, cost, Placed::Shared)
            .await;
        if let Err(error) = charged {
            tracing::warn!(%error, "charging a session's response to its budget failed");
        }
        true
    }

    /// The most tokens one response of the session's model can use (its context and its most
    /// output), or the default completion allowance for a model the table does not size.
    fn worst_tokens(&self) -> u64 {
        self.state
            .prices
            .get(&self.sent)
            .and_then(|price| price.tokens.as_ref())
            .and_then(|tokens| {
                Some(
                    tokens
                        .audio?
                        .context_window
                        .saturating_add(tokens.max_output_tokens),
                )
            })
            .unwrap_or(self.state.config.limits.default_completion_tokens)
    }

    /// Queues one response's record.
    async fn record(
        &self,
        facts: CallFacts,
        status: u16,
        outcome: Option<&str>,
        began: Option<(i64, Instant)>,
    ) {
        let (created_at_ms, began_at) =
            began.unwrap_or_else(|| (crate::records::now_ms(), Instant::now()));
        let mut record = Record {
            id: uuid::Uuid::now_v7().to_string(),
            created_at_ms,
            request_id: self.request_id.clone(),
            method: "GET".to_owned(),
            route: self.route.clone(),
            status,
            outcome: outcome.unwrap_or("ok").to_owned(),
            latency_ms: i64::try_from(began_at.elapsed().as_millis()).unwrap_or(i64::MAX),
            ..Record::default()
        };
        facts.fill(&mut record, false);
        self.state.recorder.record(record).await;
    }

    /// Settles what the session holds: what it owes for a response the budgets had no room
    /// for beside the hold. A response still under way ran upstream at an unknown cost: it
    /// is recorded at what the hold holds beyond what is owed, and the hold is kept whole; its
    /// tokens are charged at the most it could use.
    pub(super) async fn finish(mut self, end: End) {
        let owed = self.owed.unwrap_or(0);
        if self.open_responses == 0 {
            self.reservations.settle(Some(0), Spend::Cost(owed));
            return;
        }
        let worst = match self.reservations.budget_held() {
            Some(held) => Some(held.saturating_sub(owed)),
            None => self.state.prices.realtime_worst_case(&self.sent),
        };
        if let (false, Some(worst)) = (self.unheld_lines.is_empty(), worst) {
            self.charge_budgets(worst).await;
        }
        let mut facts = self.facts.clone();
        facts.model_used.clone_from(&self.serving);
        facts.cost_nanos = worst;
        facts.price_version = worst.map(|_| self.state.prices.version());
        facts.estimated = true;
        let outcome = match end {
            End::ClientLeft => "client_left",
            End::UpstreamEnded | End::Stopped => "stream_broken",
        };
        let began = self.response_began.take();
        self.record(facts, 200, Some(outcome), began).await;
        let tokens = self.worst_tokens();
        // Charged in full; a spent bucket has nothing more to end.
        let _ = rate_limit::charge_used(&self.state, &self.principal, RouteClass::Realtime, tokens)
            .await;
        self.reservations.settle(None, Spend::Unknown);
    }
}
