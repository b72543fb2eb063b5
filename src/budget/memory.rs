//! Budget counters in this process (one replica, no Redis).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{BudgetError, BudgetLine, BudgetStore, Exceeded, Reservation};
use crate::pricing::Nanos;

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    spent: Nanos,
    reserved: Nanos,
    alerted: bool,
    expires_at_ms: Option<i64>,
}

/// Counters behind one mutex: a reservation checks and reserves every line of a request in
/// one critical section, which is what makes it atomic. Expired windows are swept as new
/// lines are seeded.
#[derive(Debug, Default)]
pub struct MemoryBudgets {
    counters: Mutex<HashMap<String, Counter>>,
}

impl MemoryBudgets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every counter.
    pub fn clear(&self) {
        self.counters().clear();
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgets {
    async fn reserve(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
    ) -> Result<Reservation, BudgetError> {
        let mut counters = self.counters();
        let missing: Vec<usize> = (0..lines.len())
            .filter(|&i| !counters.contains_key(&lines[i].id))
            .collect();
        if !missing.is_empty() {
            return Ok(Reservation::Unseeded(missing));
        }
        for (index, line) in lines.iter().enumerate() {
            let counter = counters[&line.id];
            if counter.spent + counter.reserved + amount > line.limit {
                return Ok(Reservation::Exceeded(Exceeded {
                    line: index,
                    spent: counter.spent,
                    reserved: counter.reserved,
                }));
            }
        }
        for line in lines {
            if let Some(counter) = counters.get_mut(&line.id) {
                counter.reserved += amount;
            }
        }
        Ok(Reservation::Reserved)
    }

    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Nanos,
        actual: Nanos,
    ) -> Result<Vec<usize>, BudgetError> {
        let mut counters = self.counters();
        let mut crossed = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let Some(counter) = counters.get_mut(&line.id) else {
                continue;
            };
            counter.reserved = (counter.reserved - reserved).max(0);
            counter.spent = counter.spent.saturating_add(actual);
            if !counter.alerted && counter.spent >= line.alert_threshold {
                counter.alerted = true;
                crossed.push(index);
            }
        }
        Ok(crossed)
    }

    /// Memory counters are never lost to an outage: a repayment is a settlement.
    async fn repay(
        &self,
        line: &BudgetLine,
        reserved: Nanos,
        actual: Nanos,
        _outage_began_ms: i64,
    ) -> Result<bool, BudgetError> {
        self.settle(std::slice::from_ref(line), reserved, actual)
            .await
            .map(|_| true)
    }

    async fn seed(&self, line: &BudgetLine, spent: Nanos) -> Result<(), BudgetError> {
        let now = crate::records::now_ms();
        let mut counters = self.counters();
        counters.retain(|_, c| c.expires_at_ms.is_none_or(|at| at > now));
        counters.entry(line.id.clone()).or_insert(Counter {
            spent,
            reserved: 0,
            // A window already past its threshold at start alerted before the restart.
            alerted: spent >= line.alert_threshold,
            expires_at_ms: line.expires_at_ms,
        });
        Ok(())
    }

    async fn spent(&self, line: &BudgetLine) -> Result<Option<Nanos>, BudgetError> {
        Ok(self.counters().get(&line.id).map(|c| c.spent))
    }
}
