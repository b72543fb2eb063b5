//! Budgets: spend per key, per user inside a key, per JWT or anonymous user, that concurrent
//! requests cannot overspend.
//!
//! A request *reserves* its worst-case cost on every budget that applies, all or nothing, and
//! is refused (429 `insufficient_quota`) if any would go over; after the response it *settles*
//! each to the real cost. The check and the reservation are one atomic step (a mutex in memory,
//! one Lua script in Redis), so N concurrent requests can together spend at most the budget.
//!
//! Each budget line is a counter per period window (UTC day, UTC month, or all time):
//! `spent` (settled), `reserved` (in flight) and `alerted` (the alert for this window went
//! out). Spend survives restarts because a line that is not in the backend yet (first use after
//! a start, a new Redis, a new window) is *seeded* from the audit records' hourly rollup before
//! its first reservation. So the records are the source of truth, and the counters a fast,
//! atomic cache of them.

pub mod alert;
pub mod local;
mod memory;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use local::LocalBudgets;
pub use memory::MemoryBudgets;
pub use redis::RedisBudgets;

use crate::config::{BudgetPeriod, BudgetSpec};
use crate::log_throttle::LogThrottle;
use crate::pricing::{Nanos, usd_to_nanos};
use crate::records::{RecordStore, SpendScope};

/// One budget that applies to a request, in its current window.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLine {
    /// Whose spend this is (also how the rollup is queried when seeding).
    pub scope: SpendScope,
    /// The backend key: scope, hash tag, window and unit (`{b:key:ID}:2026-11:nanos`).
    pub id: String,
    pub limit: Nanos,
    /// Spend at which the alert goes out (`alert_at × limit`).
    pub alert_threshold: Nanos,
    pub period: BudgetPeriod,
    /// Start of the window, Unix ms (0 for `total`).
    pub window_start_ms: i64,
    /// When the counter may be forgotten (a day after the window ends); `None` for `total`.
    pub expires_at_ms: Option<i64>,
    pub max_usd: f64,
}

impl BudgetLine {
    /// The line for `scope` under `spec`, in the window containing `now_ms`.
    pub fn new(scope: SpendScope, spec: &BudgetSpec, now_ms: i64) -> Self {
        let (window, start, end) = window(spec.period, now_ms);
        let limit = usd_to_nanos(spec.max_usd);
        #[expect(clippy::cast_possible_truncation, reason = "alert_at is within 0..=1")]
        let alert_threshold = (limit as f64 * spec.alert_at).ceil() as Nanos;
        Self {
            // `:nanos`: counters count nano-dollars; those of micro-dollar releases (no suffix)
            // are left to expire, and these seed from the migrated records.
            id: format!("{}:{window}:nanos", scope.tag()),
            scope,
            limit,
            alert_threshold,
            period: spec.period,
            window_start_ms: start,
            expires_at_ms: end.map(|end| end + 86_400_000),
            max_usd: spec.max_usd,
        }
    }
}

/// The window of `period` containing `now_ms`: its name, start, and end (Unix ms, UTC).
fn window(period: BudgetPeriod, now_ms: i64) -> (String, i64, Option<i64>) {
    let now = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = now.date();
    let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    match period {
        BudgetPeriod::Day => (format!("{date}"), ms(date), date.next_day().map(ms)),
        BudgetPeriod::Month => {
            let first = date.replace_day(1).unwrap_or(date);
            let next = if first.month() == time::Month::December {
                time::Date::from_calendar_date(first.year() + 1, time::Month::January, 1)
            } else {
                time::Date::from_calendar_date(first.year(), first.month().next(), 1)
            };
            (
                format!("{:04}-{:02}", first.year(), u8::from(first.month())),
                ms(first),
                next.ok().map(ms),
            )
        }
        BudgetPeriod::Total => ("total".to_owned(), 0, None),
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Which of the lines would go over.
    pub line: usize,
    pub spent: Nanos,
    pub reserved: Nanos,
}

/// What a backend answers to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    Exceeded(Exceeded),
    /// These lines have no counter yet: seed them, then try again.
    Unseeded(Vec<usize>),
}

/// Why a budget backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("budget backend: {0}")]
pub struct BudgetError(pub String);

/// Where the counters live: in memory (one replica) or Redis (shared).
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Reserves `amount` on every line, or on none.
    async fn reserve(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
    ) -> Result<Reservation, BudgetError>;
    /// Replaces `reserved` with `actual` on every line; returns the lines whose alert
    /// threshold this settlement crossed (each line alerts once per window).
    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Nanos,
        actual: Nanos,
    ) -> Result<Vec<usize>, BudgetError>;
    /// Starts a line's counter at `spent` unless it exists.
    async fn seed(&self, line: &BudgetLine, spent: Nanos) -> Result<(), BudgetError>;
    /// Applies a settlement made elsewhere during an outage that began at `outage_began_ms`,
    /// unless the counter is gone or was seeded since (from records that hold it); true when
    /// applied.
    async fn repay(
        &self,
        line: &BudgetLine,
        reserved: Nanos,
        actual: Nanos,
        outage_began_ms: i64,
    ) -> Result<bool, BudgetError>;
    /// Settled spend of a line, if it has a counter (the admin API).
    async fn spent(&self, line: &BudgetLine) -> Result<Option<Nanos>, BudgetError>;
}

/// The budget stage's handle: counters plus the records they are seeded from, and local
/// counters for when the shared ones cannot be reached ([`local`]).
#[derive(Clone)]
pub struct Budgets {
    store: Arc<dyn BudgetStore>,
    records: Arc<dyn RecordStore>,
    local: Option<Arc<LocalBudgets>>,
}

/// Where a reservation was made, so that it is settled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// On the store's counters (Redis, or memory for one replica).
    Shared,
    /// On this replica's local counters, during an outage of the shared ones.
    Local,
}

impl Budgets {
    pub fn new(store: Arc<dyn BudgetStore>, records: Arc<dyn RecordStore>) -> Self {
        Self {
            store,
            records,
            local: None,
        }
    }

    /// With local counters allowing `share` of what each budget has left while the shared
    /// ones cannot be reached (`budgets.on_backend_error = "local"`).
    #[must_use]
    pub fn with_local_fallback(mut self, share: f64) -> Self {
        self.local = Some(Arc::new(LocalBudgets::new(share)));
        self
    }

    /// Reserves `amount` on `lines`, seeding lines met for the first time from the records;
    /// on the local counters when the shared ones fail and a local fallback is set. What was
    /// spent locally during an outage goes to the shared counters first, before anything is
    /// reserved there.
    pub async fn reserve(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
    ) -> Result<Result<Placed, Exceeded>, BudgetError> {
        if let Some(local) = &self.local
            && local.owes()
        {
            let paid = local.repay(&*self.store).await;
            if paid > 0 {
                tracing::info!(
                    lines = paid,
                    "budget backend is back: local spend added to it"
                );
            }
        }
        match self.reserve_shared(lines, amount).await {
            Ok(result) => Ok(result.map(|()| Placed::Shared)),
            Err(error) => match &self.local {
                Some(local) => {
                    static THROTTLE: LogThrottle = LogThrottle::new();
                    if let Some(held_back) = THROTTLE.allow() {
                        tracing::warn!(%error, held_back, "budget backend failed; enforcing on local counters");
                    }
                    let reserved = local.reserve(lines, amount, &*self.records).await?;
                    Ok(reserved.map(|()| Placed::Local))
                }
                None => Err(error),
            },
        }
    }

    /// Reserves on the shared counters, seeding lines met for the first time.
    async fn reserve_shared(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
    ) -> Result<Result<(), Exceeded>, BudgetError> {
        for _ in 0..3 {
            match self.store.reserve(lines, amount).await? {
                Reservation::Reserved => return Ok(Ok(())),
                Reservation::Exceeded(exceeded) => return Ok(Err(exceeded)),
                Reservation::Unseeded(missing) => {
                    for index in missing {
                        let line = &lines[index];
                        let spent = self
                            .records
                            .spend(&line.scope, line.window_start_ms)
                            .await
                            .map_err(|e| BudgetError(format!("reading spend: {e}")))?;
                        self.store.seed(line, spent).await?;
                    }
                }
            }
        }
        Err(BudgetError(
            "budget counters could not be seeded".to_owned(),
        ))
    }

    /// Settles a shared reservation (or moves the shared counters by `actual`); returns the
    /// lines that crossed their alert threshold.
    pub async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Nanos,
        actual: Nanos,
    ) -> Result<Vec<usize>, BudgetError> {
        self.settle_placed(lines, reserved, actual, Placed::Shared)
            .await
    }

    /// Settles a reservation where it was made. A shared settlement that fails is owed to the
    /// shared counters when a local fallback is set (and paid when they answer again).
    pub async fn settle_placed(
        &self,
        lines: &[BudgetLine],
        reserved: Nanos,
        actual: Nanos,
        placed: Placed,
    ) -> Result<Vec<usize>, BudgetError> {
        match (placed, &self.local) {
            (Placed::Local, Some(local)) => {
                local.settle(lines, reserved, actual).await;
                Ok(Vec::new())
            }
            (_, local) => {
                let settled = self.store.settle(lines, reserved, actual).await;
                if let (Err(_), Some(local)) = (&settled, local) {
                    local.owe(lines, reserved, actual);
                }
                settled
            }
        }
    }

    /// A line's settled spend, seeded from the records if the backend has none.
    pub async fn spent(&self, line: &BudgetLine) -> Result<Nanos, BudgetError> {
        if let Some(spent) = self.store.spent(line).await? {
            return Ok(spent);
        }
        self.records
            .spend(&line.scope, line.window_start_ms)
            .await
            .map_err(|e| BudgetError(format!("reading spend: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
            * 1000
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        let (name, start, end) = window(BudgetPeriod::Day, at("2026-11-23T23:59:59Z"));
        assert_eq!(name, "2026-11-23");
        assert_eq!(start, at("2026-11-23T00:00:00Z"));
        assert_eq!(end, Some(at("2026-11-24T00:00:00Z")));
        let (name, start, end) = window(BudgetPeriod::Month, at("2026-12-31T12:00:00Z"));
        assert_eq!(name, "2026-12");
        assert_eq!(start, at("2026-12-01T00:00:00Z"));
        assert_eq!(end, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(
            window(BudgetPeriod::Total, 5),
            ("total".to_owned(), 0, None)
        );
    }

    #[test]
    fn lines_carry_limit_threshold_and_tagged_id() {
        let spec = BudgetSpec {
            max_usd: 2.5,
            period: BudgetPeriod::Month,
            alert_at: 0.8,
        };
        let line = BudgetLine::new(
            SpendScope::KeyUser("key_1".into(), "ann".into()),
            &spec,
            at("2026-11-23T10:00:00Z"),
        );
        assert_eq!(line.limit, 2_500_000_000);
        assert_eq!(line.alert_threshold, 2_000_000_000);
        assert_eq!(line.id, "{b:key:key_1}:u:ann:2026-11:nanos");
    }
}
