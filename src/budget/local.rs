//! Budgets while the shared counters (Redis) cannot be reached (`budgets.on_backend_error =
//! "local"`): each replica keeps enforcing on counters of its own, seeded from the records
//! (the spend every replica wrote before the outage), and allowed `budgets.outage_share` of
//! what was left — so with N replicas and a share of at most 1/N, the outage cannot take a
//! budget past its limit. What is spent locally is owed to the shared counters, and paid, every
//! line at once, as soon as they answer again and before anything is reserved there: a counter
//! that still holds its pre-outage state gets the local spend added; one that is gone, or was
//! seeded since the outage began (from records that already hold this spend), is left as it is
//! (`BudgetStore::repay`). The local counters are dropped once nothing is owed and no local
//! reservation is open, so the next outage seeds afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    /// Per line id: what the shared counters have not seen.
    owed: Mutex<HashMap<String, Owed>>,
    /// Per line id: the local limit it was given when first met in this outage.
    limits: Mutex<HashMap<String, Nanos>>,
    /// Local reservations not settled yet: the counters stay while any is open.
    open: AtomicU64,
    /// When this outage began (Unix ms; 0 when none is under way).
    began_ms: AtomicI64,
}

impl LocalBudgets {
    /// Local counters allowing `share` (0 to 1) of what each budget has left.
    pub fn new(share: f64) -> Self {
        Self {
            counters: MemoryBudgets::new(),
            share,
            owed: Mutex::default(),
            limits: Mutex::default(),
            open: AtomicU64::new(0),
            began_ms: AtomicI64::new(0),
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
        let _ = self.began_ms.compare_exchange(
            0,
            crate::records::now_ms(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let mut local = self.local_lines(lines);
        for _ in 0..2 {
            match self.counters.reserve(&local, amount).await? {
                Reservation::Reserved => {
                    self.open.fetch_add(1, Ordering::AcqRel);
                    return Ok(Ok(()));
                }
                Reservation::Exceeded(exceeded) => return Ok(Err(exceeded)),
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
                        self.limits
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(line.id.clone(), spent.saturating_add(allowed));
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
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Owes the shared counters of `lines` a settlement they could not take: `reserved` to
    /// release there, `actual` to add.
    pub fn owe(&self, lines: &[BudgetLine], reserved: Nanos, actual: Nanos) {
        if actual == 0 && reserved == 0 {
            return;
        }
        let _ = self.began_ms.compare_exchange(
            0,
            crate::records::now_ms(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
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

    /// Pays everything owed into `shared`, which answers again (see the module docs); what it
    /// cannot take stays owed. Ends the outage once nothing is owed and no local reservation
    /// is open. Returns how many lines were added to.
    pub async fn repay(&self, shared: &dyn BudgetStore) -> usize {
        let began = self.began_ms.load(Ordering::Acquire);
        let due: Vec<Owed> = {
            let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
            owed.drain().map(|(_, entry)| entry).collect()
        };
        let mut paid = 0;
        for entry in due {
            let line = std::slice::from_ref(&entry.line);
            match shared
                .repay(&entry.line, entry.reserved, entry.spent, began)
                .await
            {
                Ok(applied) => paid += usize::from(applied),
                Err(_) => self.owe(line, entry.reserved, entry.spent),
            }
        }
        let owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        if owed.is_empty() && self.open.load(Ordering::Acquire) == 0 {
            self.limits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            self.counters.clear();
            self.began_ms.store(0, Ordering::Release);
        }
        paid
    }

    /// Whether an outage is under way (anything owed is owed since one began, and it ends only
    /// once nothing is): the shared counters are to be paid, and the outage ended, once they
    /// answer. One atomic load, no lock: every budgeted request asks.
    pub fn owes(&self) -> bool {
        self.began_ms.load(Ordering::Acquire) != 0
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
