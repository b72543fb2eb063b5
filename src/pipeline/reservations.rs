//! What a call holds while it runs: the token reservation taken by the rate limits and the
//! budget hold taken by the budgets, in one guard that cannot be forgotten.
//!
//! Every exit settles it once ([`Reservations::settle`], called by `Call::finish`, or by the
//! stream relay when a stream ends). Whatever no exit settled is settled by `Drop`: a stage
//! that returns early with `?`, a panic, or a caller who leaves while the handler awaits all
//! end there. Before anything was sent upstream, `Drop` gives everything back; once the call
//! may have run upstream, it keeps the worst case (the tokens stay charged and the budget is
//! spent at what was reserved), so an unknown outcome is never free.
//!
//! Settlement runs on the task tracker, off the request path.

use axum::http::HeaderMap;

use super::budget::Hold;
use super::rate_limit::Admission;
use crate::budget::alert::BudgetAlert;
use crate::pricing::Nanos;
use crate::state::AppState;

/// What a finished call spent, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Exactly this much (0: nothing was served).
    Cost(Nanos),
    /// Served, at an unknown cost: settled at the reservation, the most it could cost.
    Unknown,
}

/// The call's token reservation and budget hold, released or settled exactly once.
pub struct Reservations {
    state: AppState,
    admission: Option<Admission>,
    hold: Option<Hold>,
    /// The request may have reached the upstream: an unsettled end keeps the worst case.
    sent: bool,
    /// The pool deployment serving the call, counted in flight until the call ends.
    deployment: Option<crate::upstream::Busy>,
}

impl Reservations {
    /// Nothing held yet; `state` is where settlements run.
    pub fn new(state: &AppState) -> Self {
        Self {
            state: state.clone(),
            admission: None,
            hold: None,
            sent: false,
            deployment: None,
        }
    }

    /// Keeps the serving deployment counted in flight until the call (a stream: its end) is over.
    pub fn hold_deployment(&mut self, busy: Option<crate::upstream::Busy>) {
        self.deployment = busy;
    }

    /// Takes over the rate limits' token reservation.
    pub fn hold_tokens(&mut self, admission: Option<Admission>) {
        self.admission = admission;
    }

    /// Takes over the budgets' hold.
    pub fn hold_budget(&mut self, hold: Option<Hold>) {
        self.hold = hold;
    }

    /// Notes that the request is about to go upstream.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// The worst case held on the budgets, if any.
    pub fn budget_held(&self) -> Option<Nanos> {
        self.hold.as_ref().map(Hold::reserved)
    }

    /// The hold on the budgets, if any.
    pub fn budget_hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// OpenAI's `x-ratelimit-*` headers from the rate limits' decision.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(admission) = &self.admission {
            admission.write_headers(headers);
        }
    }

    /// Moves what is held into a new guard (for a stream, whose end settles it), leaving this
    /// one empty.
    pub fn take(&mut self) -> Self {
        Self {
            state: self.state.clone(),
            admission: self.admission.take(),
            hold: self.hold.take(),
            sent: self.sent,
            deployment: self.deployment.take(),
        }
    }

    /// Settles the token reservation to `used_tokens` (`None`: none were used) and the budget
    /// hold to `spend`. Later calls, and `Drop`, find nothing left to do.
    pub fn settle(&mut self, used_tokens: Option<u64>, spend: Spend) {
        let state = &self.state;
        if let Some(admission) = self.admission.take().filter(Admission::has_tokens) {
            let task_state = state.clone();
            state
                .tasks
                .spawn(async move { admission.settle(&task_state, used_tokens).await });
        }
        if let Some(hold) = self.hold.take() {
            let actual = match spend {
                Spend::Cost(cost) => cost,
                Spend::Unknown => hold.reserved(),
            };
            settle_budget(state, hold, actual);
        }
    }

    /// Charges `cost`, one part of a long call (a Realtime response), to the budgets beside
    /// the hold, which stays in place for the next part. Returns whether the budgets had room
    /// for it beside the hold. When they had not, nothing is charged and the hold stays: the
    /// caller must stop the call and settle the hold with what it owes (this part, and the
    /// worst case if another part may have begun), never more than was held. A budget
    /// backend that cannot answer counts as no room, unless `fail_open`.
    pub async fn spend_part(&mut self, cost: Nanos) -> bool {
        let Some(held) = &self.hold else {
            return true;
        };
        let placed = match self.state.budgets.reserve(held.lines(), cost).await {
            Ok(Ok(placed)) => Some(placed),
            Ok(Err(_exceeded)) => None,
            Err(error) => {
                crate::metrics::record_backend_error("budgets");
                tracing::warn!(%error, "charging a session's response to its budget failed");
                if self.state.config.limits.budget_on_backend_error
                    == crate::config::BudgetBackendPolicy::FailOpen
                {
                    return true;
                }
                None
            }
        };
        let Some(placed) = placed else {
            return false;
        };
        settle_budget(&self.state, held.beside(cost, placed), cost);
        true
    }

    /// Whether something is still held (for tests and the `Drop` path).
    pub fn is_holding(&self) -> bool {
        self.admission.as_ref().is_some_and(Admission::has_tokens) || self.hold.is_some()
    }
}

impl Drop for Reservations {
    fn drop(&mut self) {
        if !self.is_holding() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.sent {
            // The upstream may have served it: tokens stay charged, the budget pays the worst.
            self.admission = None;
            self.settle(None, Spend::Unknown);
        } else {
            self.settle(None, Spend::Cost(0));
        }
    }
}

/// Settles `hold` to `actual` off the request path, and sends the alerts it crossed.
fn settle_budget(state: &AppState, hold: Hold, actual: Nanos) {
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        match state
            .budgets
            .settle_placed(hold.lines(), hold.reserved(), actual, hold.placed())
            .await
        {
            Ok(crossed) => {
                for index in crossed {
                    let line = &hold.lines()[index];
                    let spent = state.budgets.spent(line).await.unwrap_or(actual);
                    state
                        .alerts
                        .send(&state.tasks, BudgetAlert::new(line, spent));
                }
            }
            Err(error) => {
                static THROTTLE: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                if let Some(held_back) = THROTTLE.allow() {
                    tracing::warn!(%error, held_back, "settling a budget reservation failed");
                }
            }
        }
    });
}
