//! The usage rollups' arithmetic, shared by both engines: sums of records by hour (or day),
//! caller, key, user and model, and a usage query split into the pieces each rollup answers.

use std::collections::BTreeMap;

use super::audit::{Record, UsageQuery, UsageRow, UsageTotals};
/// `(bucket start, caller, key_id, user_id, model)`; absent values are empty strings.
pub(crate) type RollupKey = (i64, String, String, String, String);

/// An hour and a day in milliseconds: the rollups' buckets.
pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Sums `records` by `bucket_ms`, caller, key, user (or not) and model, in key order.
pub(crate) fn rollup<'a>(
    records: impl Iterator<Item = &'a Record>,
    bucket_ms: i64,
) -> BTreeMap<RollupKey, UsageTotals> {
    let mut rows: BTreeMap<RollupKey, UsageTotals> = BTreeMap::new();
    for record in records {
        let key = (
            record.created_at_ms - record.created_at_ms.rem_euclid(bucket_ms),
            record.caller.clone(),
            record.key_id.clone().unwrap_or_default(),
            record.user_id.clone().unwrap_or_default(),
            record
                .model_used
                .clone()
                .or_else(|| record.model_requested.clone())
                .unwrap_or_default(),
        );
        rows.entry(key).or_default().count(record);
    }
    rows
}

/// One part of a usage query's range and the rollup that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsagePiece {
    pub table: &'static str,
    pub time: &'static str,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Splits a usage query's range (rounded down to hours) into the pieces each rollup answers:
/// whole days from `usage_daily`, the partial days at either end from `usage_hourly`.
pub(crate) fn usage_pieces(query: &UsageQuery) -> Vec<UsagePiece> {
    let from = query.from_ms - query.from_ms.rem_euclid(HOUR_MS);
    let to = query.to_ms - query.to_ms.rem_euclid(HOUR_MS);
    let hourly = |from_ms, to_ms| UsagePiece {
        table: "usage_hourly",
        time: "hour_ms",
        from_ms,
        to_ms,
    };
    // Hours are only in the hourly rollup.
    if query.group_by.contains(&crate::store::audit::GroupBy::Hour) {
        return vec![hourly(from, to)];
    }
    let first_day = from + (DAY_MS - from.rem_euclid(DAY_MS)) % DAY_MS;
    let last_day = to - to.rem_euclid(DAY_MS);
    if first_day >= last_day {
        return vec![hourly(from, to)];
    }
    let mut pieces = Vec::with_capacity(3);
    if from < first_day {
        pieces.push(hourly(from, first_day));
    }
    pieces.push(UsagePiece {
        table: "usage_daily",
        time: "day_ms",
        from_ms: first_day,
        to_ms: last_day,
    });
    if last_day < to {
        pieces.push(hourly(last_day, to));
    }
    pieces
}

/// A usage row's group: key, user, model, day and hour, as far as grouped by.
type UsageGroup = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Adds up the pieces' rows that belong to the same group, in group order.
pub(crate) fn merge_usage(pieces: Vec<Vec<UsageRow>>) -> Vec<UsageRow> {
    if pieces.len() == 1 {
        return pieces.into_iter().next().unwrap_or_default();
    }
    let mut merged: BTreeMap<UsageGroup, UsageRow> = BTreeMap::new();
    for row in pieces.into_iter().flatten() {
        let key = (
            row.key_id.clone(),
            row.user_id.clone(),
            row.model.clone(),
            row.day.clone(),
            row.hour.clone(),
        );
        let into = merged.entry(key).or_insert_with(|| UsageRow {
            key_id: row.key_id.clone(),
            user_id: row.user_id.clone(),
            model: row.model.clone(),
            day: row.day.clone(),
            hour: row.hour.clone(),
            ..UsageRow::default()
        });
        into.totals.add(&row.totals);
    }
    merged.into_values().collect()
}

/// Hours since the Unix epoch as `YYYY-MM-DDTHH:00Z`.
pub(crate) fn hour_name(hours: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(hours * 3600)
        .map(|t| format!("{}T{:02}:00Z", t.date(), t.hour()))
        .unwrap_or_default()
}

/// Days since the Unix epoch as `YYYY-MM-DD`.
pub(crate) fn day_name(days: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(days * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::GroupBy;

    fn query(from_ms: i64, to_ms: i64, group_by: Vec<GroupBy>) -> UsageQuery {
        UsageQuery {
            group_by,
            from_ms,
            to_ms,
        }
    }

    #[test]
    fn whole_days_come_from_the_daily_rollup_and_the_ends_from_the_hourly_one() {
        let day = DAY_MS;
        // 10:30 on day 1 to 05:10 on day 4: hours 10..24 of day 1, days 2 and 3, hours 0..5 of day 4.
        let pieces = usage_pieces(&query(
            day + 10 * HOUR_MS + 1_800_000,
            4 * day + 5 * HOUR_MS + 600_000,
            vec![GroupBy::Key],
        ));
        assert_eq!(
            pieces
                .iter()
                .map(|p| (p.table, p.from_ms, p.to_ms))
                .collect::<Vec<_>>(),
            [
                ("usage_hourly", day + 10 * HOUR_MS, 2 * day),
                ("usage_daily", 2 * day, 4 * day),
                ("usage_hourly", 4 * day, 4 * day + 5 * HOUR_MS),
            ]
        );
        // Day-aligned ends: the daily rollup alone, grouped by user or not (it keeps users).
        for group_by in [vec![], vec![GroupBy::User]] {
            let pieces = usage_pieces(&query(day, 3 * day, group_by));
            assert_eq!(pieces.len(), 1);
            assert_eq!(pieces[0].table, "usage_daily");
        }
        // Grouped by hour: the hourly rollup alone, however long the range.
        let pieces = usage_pieces(&query(day, 3 * day, vec![GroupBy::Hour]));
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].table, "usage_hourly");
        assert_eq!(hour_name(25), "1970-01-02T01:00Z");
        // A range within one day: the hourly rollup.
        let pieces = usage_pieces(&query(day + HOUR_MS, day + 5 * HOUR_MS, vec![]));
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].table, "usage_hourly");
    }

    #[test]
    fn pieces_of_one_group_are_added_up() {
        let row = |model: &str, requests| UsageRow {
            model: Some(model.to_owned()),
            totals: UsageTotals {
                requests,
                cost_nanos: requests * 10,
                ..UsageTotals::default()
            },
            ..UsageRow::default()
        };
        let merged = merge_usage(vec![vec![row("b", 1), row("a", 2)], vec![row("a", 3)]]);
        assert_eq!(merged, [row("a", 5), row("b", 1)]);
    }
}
