//! Budgets while the shared counters (Redis) cannot be reached (`budgets.on_backend_error =
//! "local"`): each replica keeps enforcing on counters of its own, seeded from the records
//! (the spend every replica wrote before the outage), and allowed `budgets.outage_share` of
//! what was left — so with N replicas and a share of at most 1/N, the outage cannot take a
//! budget past its limit. What is spent locally is owed to the shared counters and added to
//! each line's counter the next time it is reserved there — unless that counter was lost and
//! has just been seeded from the records, which already hold the spend.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::memory::MemoryBudgets;
use super::{BudgetError, BudgetLine, BudgetStore, Exceeded, Reservation};
use crate::pricing::Nanos;
use crate::records::RecordStore;

/// What one line's shared counter is owed.
#[derive(Debug, Clone)]
struct Owed {
    line: BudgetLine,
    spent: Nanos,
    /// Reserved there, settled here: to be released there.
    reserved: Nanos,
}

/// The local counters and what they owe the shared ones.
#[derive(Debug)]
pub struct LocalBudgets {
    counters: MemoryBudgets,
    share: f64,
    /// Per line id: what the shared counters have not seen — spend settled here or that they
    /// could not take, and reservations they hold that were settled here.
    owed: Mutex<HashMap<String, Owed>>,
    /// Per line id: the local limit it was given when first met in this outage.
    limits: Mutex<HashMap<String, Nanos>>,
}

impl LocalBudgets {
    /// Local counters allowing `share` (0 to 1) of what each budget has left.
    pub fn new(share: f64) -> Self {
        Self {
            counters: MemoryBudgets::new(),
            share,
            owed: Mutex::default(),
            limits: Mutex::default(),
        }
    }

    /// Reserves `amount` on the local counters, seeding lines met for the first time in this
    /// outage from `records`.
    pub async fn reserve(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
        records: &dyn RecordStore,
    ) -> Result<Result<(), Exceeded>, BudgetError> {
        let mut local = self.local_lines(lines);
        for _ in 0..2 {
            match self.counters.reserve(&local, amount).await? {
                Reservation::Reserved => return Ok(Ok(())),
                Reservation::Exceeded(mut exceeded) => {
                    // The caller is told its budget's own limit, not the local share.
                    exceeded.spent = exceeded.spent.max(0);
                    return Ok(Err(exceeded));
                }
                Reservation::Unseeded(missing) => {
                    for index in missing {
                        let line = &lines[index];
                        let spent = records
                            .spend(&line.scope, line.window_start_ms)
                            .await
                            .map_err(|e| BudgetError(format!("reading spend: {e}")))?;
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_precision_loss,
                            reason = "a share of a budget in nano-dollars, well within f64"
                        )]
                        let allowed = ((line.limit - spent).max(0) as f64 * self.share) as Nanos;
                        let limit = spent.saturating_add(allowed);
                        self.limits
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(line.id.clone(), limit);
                        self.counters.seed(line, spent).await?;
                    }
                    local = self.local_lines(lines);
                }
            }
        }
        Err(BudgetError(
            "local budget counters could not be seeded".to_owned(),
        ))
    }

    /// Settles a local reservation, and owes `actual` to the shared counters.
    pub async fn settle(&self, lines: &[BudgetLine], reserved: Nanos, actual: Nanos) {
        let local = self.local_lines(lines);
        let _ = self.counters.settle(&local, reserved, actual).await;
        self.owe(lines, 0, actual);
    }

    /// Owes the shared counters of `lines` a settlement they could not take: `reserved` to
    /// release there, `actual` to add.
    pub fn owe(&self, lines: &[BudgetLine], reserved: Nanos, actual: Nanos) {
        if actual == 0 && reserved == 0 {
            return;
        }
        let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        for line in lines {
            let entry = owed.entry(line.id.clone()).or_insert_with(|| Owed {
                line: line.clone(),
                spent: 0,
                reserved: 0,
            });
            entry.spent = entry.spent.saturating_add(actual);
            entry.reserved = entry.reserved.saturating_add(reserved);
        }
    }

    /// Pays what `lines` owe into `shared`, which answers again, except for lines it has just
    /// seeded from the records (`seeded`: it had lost its counters, and the records already
    /// hold this spend). Once nothing is owed, the outage is over: the next one seeds afresh.
    /// Returns how many lines were paid.
    pub async fn settle_debts(
        &self,
        shared: &dyn BudgetStore,
        lines: &[BudgetLine],
        seeded: &[String],
    ) -> usize {
        let due: Vec<Owed> = {
            let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
            lines
                .iter()
                .filter_map(|line| owed.remove(&line.id))
                .filter(|entry| !seeded.contains(&entry.line.id))
                .collect()
        };
        let mut paid = 0;
        for entry in due {
            let line = std::slice::from_ref(&entry.line);
            match shared.settle(line, entry.reserved, entry.spent).await {
                Ok(_) => paid += 1,
                Err(_) => self.owe(line, entry.reserved, entry.spent),
            }
        }
        if !self.owes() {
            self.limits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            self.counters.clear();
        }
        paid
    }

    /// Whether anything is owed.
    pub fn owes(&self) -> bool {
        !self
            .owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// `lines` with their local limits (the budget's own until seeded).
    fn local_lines(&self, lines: &[BudgetLine]) -> Vec<BudgetLine> {
        let limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(|line| {
                let mut local = line.clone();
                if let Some(limit) = limits.get(&line.id) {
                    local.limit = (*limit).min(line.limit);
                }
                local
            })
            .collect()
    }
}
