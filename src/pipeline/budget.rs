//! The budgets stage: the worst case reserved before the upstream call (settled after it by
//! the call's `Reservations`).
//!
//! The budgets that apply: the key's own and its per-user budget (when the request names a
//! user), the `[jwt]` budget for a JWT user, the `[anonymous]` budget for an anonymous caller's
//! user. The amount reserved is the request's worst case (prompt counted with the tokenizer at
//! the input price, plus its maximum output at the output price; images at their price each).
//! A budgeted caller asking for a model without a price (or a model operation that names
//! none) is refused with 403, naming the model, unless `budgets.unpriced = "allow"`: a budget
//! that cannot be enforced is not bypassed. With `allow` it reserves nothing and is counted as
//! unpriced (docs/MONEY.md); a `[pricing]` entry brings the model under the budget.
//!
//! A backend failure follows `budgets.on_backend_error`: `local` (the default) reserves on this
//! replica's own counters, seeded from the records and allowed `budgets.outage_share` of what
//! each budget has left, and adds what it spent to the shared counters once they answer
//! (`budget::local`); `fail_open` serves the request unreserved (logged, counted);
//! `fail_closed` refuses it with 503, as `local` does when the records cannot be read either.

use super::Call;
use crate::budget::{BudgetLine, Exceeded, Placed};
use crate::config::{BudgetBackendPolicy, BudgetPeriod, UnpricedPolicy};
use crate::error::GatewayError;
use crate::identity::{Caller, Principal};
use crate::log_throttle::LogThrottle;
use crate::pricing::{Nanos, format_usd};
use crate::records::SpendScope;
use crate::state::AppState;
use crate::upstream::Target;

/// The 403 for a budgeted call whose cost cannot be known in advance.
fn unpriced_refusal(model: Option<&str>) -> GatewayError {
    let what = match model {
        Some(model) => format!("The model `{model}` has no price"),
        None => "This request names no model".to_owned(),
    };
    GatewayError::PermissionDenied {
        message: format!(
            "{what}, so its cost cannot be held to this caller's budget. The operator can add a \
             [pricing] entry for it (or set budgets.unpriced = \"allow\")."
        ),
    }
}

/// A reservation to settle once the cost is known.
#[derive(Debug, Clone)]
pub struct Hold {
    lines: Vec<BudgetLine>,
    reserved: Nanos,
    /// When the lines were taken (Unix ms): inside every line's window.
    at_ms: i64,
    /// Where it was reserved (shared counters, or local ones during an outage).
    placed: Placed,
}

impl Hold {
    /// The budget lines held on.
    pub fn lines(&self) -> &[BudgetLine] {
        &self.lines
    }

    /// The worst case held on each.
    pub fn reserved(&self) -> Nanos {
        self.reserved
    }

    /// When the lines were taken: a time inside each line's window (a batch's later
    /// settlement is made in these windows).
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// Where it was reserved.
    pub fn placed(&self) -> Placed {
        self.placed
    }

    /// A second reservation of `reserved` on the same lines, placed beside this one.
    pub fn beside(&self, reserved: Nanos, placed: Placed) -> Self {
        Self {
            lines: self.lines.clone(),
            reserved,
            at_ms: self.at_ms,
            placed,
        }
    }
}

/// The budget lines that apply to `principal` now.
pub fn lines_for(state: &AppState, principal: &Principal) -> Vec<BudgetLine> {
    lines_at(state, principal, crate::records::now_ms())
}

/// The budget lines that apply to `principal` at `now` (Unix ms).
fn lines_at(state: &AppState, principal: &Principal, now: i64) -> Vec<BudgetLine> {
    let mut lines = Vec::new();
    match &principal.caller {
        Caller::Key(key) => {
            if let Some(spec) = &key.budgets.key {
                lines.push(BudgetLine::new(SpendScope::Key(key.id.clone()), spec, now));
            }
            if let (Some(spec), Some(user)) = (&key.budgets.user, &principal.user) {
                lines.push(BudgetLine::new(
                    SpendScope::KeyUser(key.id.clone(), user.clone()),
                    spec,
                    now,
                ));
            }
        }
        Caller::Jwt { subject } => {
            if let Some(spec) = &state.config.jwt.budget {
                lines.push(BudgetLine::new(SpendScope::Jwt(subject.clone()), spec, now));
            }
        }
        Caller::Anonymous => {
            if let (Some(spec), Some(user)) = (&state.config.anonymous.budget, &principal.user) {
                lines.push(BudgetLine::new(
                    SpendScope::Anonymous(user.clone()),
                    spec,
                    now,
                ));
            }
        }
    }
    lines
}

/// The stage: reserves the call's worst-case cost on every budget that applies, held by the
/// call's [`Reservations`](super::Reservations); nothing when no budget applies (or the model
/// is unpriced and allowed, or the backend failed open).
pub async fn reserve(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    let now = crate::records::now_ms();
    let lines = lines_at(state, &call.principal, now);
    if lines.is_empty() {
        return require_anonymous_user(state, &call.principal);
    }
    let billed = call.operation.as_deref().is_none_or(|op| op.billed);
    // Counted only now that a budget applies (the tokenizer is the dearest part of a call).
    let estimate = call.estimate();
    let tier = call.asked_tier();
    let demand = super::call::demand(&call.request, estimate, tier);
    let model = call.request.model.as_deref();
    let cost_on = |served_by: &str| state.prices.worst_case(served_by, &demand);
    let worst = match &call.batch {
        // A batch is held at the worst case of every request in its input file.
        Some(plan) => match plan.worst {
            Some(worst) => Some(worst),
            None if refuses_unpriced(state, billed) => {
                return Err(unpriced_refusal(Some(&plan.model)));
            }
            None => None,
        },
        None => worst_case(state, model, &call.targets, cost_on, billed)?,
    };
    let hold = match worst {
        Some(worst) => hold(state, lines, worst, now).await?,
        None => None,
    };
    call.reservations.hold_budget(hold);
    Ok(())
}

/// The budgets stage for a Realtime session: holds what one response can cost at most
/// (`PriceTable::realtime_worst_case`) on the dearest of the call's targets. The session keeps
/// it in place for the next response as each one is charged beside it
/// (`Reservations::spend_part`), so what runs is always held.
pub async fn reserve_session(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    let now = crate::records::now_ms();
    let lines = lines_at(state, &call.principal, now);
    if lines.is_empty() {
        return require_anonymous_user(state, &call.principal);
    }
    let cost_on = |served_by: &str| state.prices.realtime_worst_case(served_by);
    let model = call.request.model.as_deref();
    let hold = match worst_case(state, model, &call.targets, cost_on, true)? {
        Some(worst) => hold(state, lines, worst, now).await?,
        None => None,
    };
    call.reservations.hold_budget(hold);
    Ok(())
}

/// Anonymous budgets are per end user: an anonymous call naming none could not be held to
/// one, and is refused.
fn require_anonymous_user(state: &AppState, principal: &Principal) -> Result<(), GatewayError> {
    if matches!(principal.caller, Caller::Anonymous) && state.config.anonymous.budget.is_some() {
        return Err(GatewayError::invalid(
            "This gateway holds anonymous callers to a budget per end user: send x-user-id.",
            None,
        ));
    }
    Ok(())
}

/// Whether an unpriced request must be refused rather than served unreserved.
fn refuses_unpriced(state: &AppState, priced_operation: bool) -> bool {
    priced_operation && state.config.limits.unpriced == UnpricedPolicy::Refuse
}

/// The most the call can cost on any of its targets; `None` when unpriced and allowed.
fn worst_case(
    state: &AppState,
    model: Option<&str>,
    targets: &[Target],
    cost_on: impl Fn(&str) -> Option<Nanos>,
    priced_operation: bool,
) -> Result<Option<Nanos>, GatewayError> {
    let refuse_unpriced = refuses_unpriced(state, priced_operation);
    let Some(model) = model else {
        return if refuse_unpriced {
            Err(unpriced_refusal(None))
        } else {
            Ok(None)
        };
    };
    // A fallback may cost more than the primary: reserve the dearest target. Any target
    // without a price (a fallback could be served by it) is refused like the model itself.
    let mut worst = None;
    for target in targets {
        let served_by = target.model.as_deref().unwrap_or(model);
        match cost_on(served_by) {
            Some(cost) => worst = worst.max(Some(cost)),
            None if refuse_unpriced => return Err(unpriced_refusal(Some(served_by))),
            None => {}
        }
    }
    if worst.is_none() {
        if refuse_unpriced {
            return Err(unpriced_refusal(Some(model)));
        }
        tracing::debug!(model, "unpriced model: no budget reservation");
    }
    Ok(worst)
}

/// Reserves `worst` on `lines`.
async fn hold(
    state: &AppState,
    lines: Vec<BudgetLine>,
    worst: Nanos,
    at_ms: i64,
) -> Result<Option<Hold>, GatewayError> {
    match state.budgets.reserve(&lines, worst).await {
        Ok(Ok(placed)) => Ok(Some(Hold {
            lines,
            reserved: worst,
            at_ms,
            placed,
        })),
        Ok(Err(exceeded)) => {
            crate::metrics::record_budget_refusal();
            Err(refusal(&lines, &exceeded, worst))
        }
        Err(error) => {
            crate::metrics::record_backend_error("budgets");
            match state.config.limits.budget_on_backend_error {
                // The local counters failed too (the records could not be read): a budget
                // that cannot be checked is a refusal.
                BudgetBackendPolicy::Local | BudgetBackendPolicy::FailClosed => {
                    Err(GatewayError::Unavailable {
                        what: "budget backend",
                    })
                }
                BudgetBackendPolicy::FailOpen => {
                    static THROTTLE: LogThrottle = LogThrottle::new();
                    if let Some(held_back) = THROTTLE.allow() {
                        tracing::warn!(%error, held_back, "budget backend failed; serving unreserved (fail_open)");
                    }
                    Ok(None)
                }
            }
        }
    }
}

fn refusal(lines: &[BudgetLine], exceeded: &Exceeded, worst: Nanos) -> GatewayError {
    let line = &lines[exceeded.line];
    let whose = match &line.scope {
        SpendScope::Key(_) => "this key's",
        SpendScope::KeyUser(..) => "this user's",
        SpendScope::Jwt(_) | SpendScope::Anonymous(_) => "your",
    };
    let left = (line.limit - exceeded.spent - exceeded.reserved).max(0);
    let period = match line.period {
        BudgetPeriod::Day => "per day",
        BudgetPeriod::Month => "per month",
        BudgetPeriod::Total => "in total",
    };
    GatewayError::InsufficientQuota {
        message: format!(
            "This request could cost up to ${} and {whose} budget of ${} {period} has ${} left.",
            format_usd(worst),
            format_usd(line.limit),
            format_usd(left),
        ),
    }
}
