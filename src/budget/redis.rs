//! Budget counters in Redis, shared by every replica: one Lua script per decision, so the
//! check and the reservation of a request's lines are one atomic step. A request's lines share
//! one hash tag (the key's, or the JWT or anonymous user's), so they sit on one Cluster slot.

use std::sync::Arc;

use async_trait::async_trait;

use super::{BudgetError, BudgetLine, BudgetStore, Exceeded, Reservation};
use crate::pricing::Nanos;
use crate::redis_link::{RedisCalls, RedisLink};

/// Counters in Redis under `prefix`.
pub struct RedisBudgets {
    link: RedisCalls,
    script: redis::Script,
    prefix: String,
}

impl RedisBudgets {
    /// Budgets on the shared `link`, their keys under `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str) -> Self {
        Self {
            link: RedisCalls::new(link, "budgets"),
            script: redis::Script::new(include_str!("budget.lua")),
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, line: &BudgetLine) -> String {
        format!("{}:{}", self.prefix, line.id)
    }

    fn ttl_ms(line: &BudgetLine) -> i64 {
        line.expires_at_ms
            .map_or(0, |at| (at - crate::records::now_ms()).max(1))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BudgetError> {
        self.link
            .invoke(invocation)
            .await
            .map_err(|e| BudgetError(e.to_string()))
    }
}

#[async_trait]
impl BudgetStore for RedisBudgets {
    async fn reserve(
        &self,
        lines: &[BudgetLine],
        amount: Nanos,
    ) -> Result<Reservation, BudgetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg("reserve").arg(amount);
        for line in lines {
            invocation.key(self.key(line)).arg(line.limit);
        }
        let answer: Vec<i64> = self.run(&invocation).await?;
        let index = |one_based: i64| usize::try_from(one_based - 1).unwrap_or(0);
        match answer.as_slice() {
            [0] => Ok(Reservation::Reserved),
            [1, line, spent, reserved] => Ok(Reservation::Exceeded(Exceeded {
                line: index(*line),
                spent: *spent,
                reserved: *reserved,
            })),
            [2, missing @ ..] => Ok(Reservation::Unseeded(
                missing.iter().map(|&i| index(i)).collect(),
            )),
            other => Err(BudgetError(format!("unexpected answer {other:?}"))),
        }
    }

    async fn settle(
        &self,
        lines: &[BudgetLine],
        reserved: Nanos,
        actual: Nanos,
    ) -> Result<Vec<usize>, BudgetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg("settle").arg(reserved).arg(actual);
        for line in lines {
            invocation
                .key(self.key(line))
                .arg(line.alert_threshold)
                .arg(Self::ttl_ms(line));
        }
        let crossed: Vec<i64> = self.run(&invocation).await?;
        Ok(crossed
            .into_iter()
            .filter_map(|i| usize::try_from(i - 1).ok())
            .collect())
    }

    async fn seed(&self, line: &BudgetLine, spent: Nanos) -> Result<(), BudgetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.key(line))
            .arg("seed")
            .arg(spent)
            .arg(line.alert_threshold)
            .arg(Self::ttl_ms(line))
            .arg(crate::records::now_ms());
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    async fn repay(
        &self,
        line: &BudgetLine,
        reserved: Nanos,
        actual: Nanos,
        outage_began_ms: i64,
    ) -> Result<bool, BudgetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.key(line))
            .arg("repay")
            .arg(reserved)
            .arg(actual)
            .arg(outage_began_ms);
        self.run::<i64>(&invocation)
            .await
            .map(|applied| applied == 1)
    }

    async fn spent(&self, line: &BudgetLine) -> Result<Option<Nanos>, BudgetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.key(line)).arg("spent");
        let spent: i64 = self.run(&invocation).await?;
        Ok((spent >= 0).then_some(spent))
    }
}
