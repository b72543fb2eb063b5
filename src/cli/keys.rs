//! `tollgate keys create|list|revoke`, against the configured database.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::{BudgetPeriod, BudgetSpec, Config, Env};
use crate::keys::{self, ApiKey, KeyBudgets, KeyPatch, NewKey};
use crate::limiter::rules::RuleSpec;
use crate::store;

/// `tollgate keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only this once).
    Create(CreateArgs),
    /// List keys (never their secrets).
    List(ListArgs),
    /// Change a key's name, models, limit rules or expiry (takes effect within a second).
    Update(UpdateArgs),
    /// Revoke a key; every replica refuses it within a second.
    Revoke(RevokeArgs),
}

/// `keys update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The key's id (`key_...`).
    pub id: String,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated models the key may use; `--models ''` allows every model.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Comma-separated route families (`batches,fine_tuning`) a key with models or a budget
    /// may use although they cannot be checked before forwarding; `--routes ''` clears them.
    #[arg(long, value_delimiter = ',')]
    pub routes: Option<Vec<String>>,
    /// The key's own limit rules, replacing the ones it had (repeatable):
    /// `scope=user,route=chat,requests=100,per=1m`.
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Remove the key's own rules (the configured defaults apply again).
    #[arg(long, conflicts_with = "rules")]
    pub clear_rules: bool,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Remove the key's budgets.
    #[arg(long, conflicts_with_all = ["budget_usd", "user_budget_usd"])]
    pub clear_budgets: bool,
    /// A new lifetime from now, e.g. 30d.
    #[arg(long)]
    pub expires: Option<String>,
}

/// `keys create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name people will recognise.
    #[arg(long)]
    pub name: String,
    /// Who the key belongs to.
    #[arg(long)]
    pub owner: Option<String>,
    /// Comma-separated models the key may use (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Comma-separated route families (`batches,fine_tuning`) the key may use although they
    /// cannot be checked before forwarding (matters only with models or a budget).
    #[arg(long, value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Lifetime, e.g. 30d, 12h, 90m.
    #[arg(long)]
    pub expires: Option<String>,
    /// A limit rule of the key's own (repeatable): `scope=user,route=chat,requests=100,per=1m`.
    /// It replaces the configured default of the same scope and route for this key.
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// Budget options shared by `keys create` and `keys update`.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Spending limit of the whole key, in USD per period.
    #[arg(long)]
    pub budget_usd: Option<f64>,
    /// Spending limit of each end user of the key, in USD per period.
    #[arg(long)]
    pub user_budget_usd: Option<f64>,
    /// The budgets' period: day, month or total (default month; on update, the one they have).
    #[arg(long)]
    pub period: Option<String>,
    /// Fraction of a budget at which the alert webhook is called (default 0.8; on update, the
    /// one they have).
    #[arg(long)]
    pub alert_at: Option<f64>,
}

/// A new budget's alert threshold when none is given.
const DEFAULT_ALERT_AT: f64 = 0.8;

impl BudgetArgs {
    fn period(&self) -> anyhow::Result<Option<BudgetPeriod>> {
        self.period
            .as_deref()
            .map(|period| match period {
                "day" => Ok(BudgetPeriod::Day),
                "month" => Ok(BudgetPeriod::Month),
                "total" => Ok(BudgetPeriod::Total),
                other => bail!("--period must be day, month or total, not {other:?}"),
            })
            .transpose()
    }

    fn has_amount(&self) -> bool {
        self.budget_usd.is_some() || self.user_budget_usd.is_some()
    }

    fn has_any(&self) -> bool {
        self.has_amount() || self.period.is_some() || self.alert_at.is_some()
    }

    /// A new key's budgets; `--period` or `--alert-at` without an amount would do nothing, so
    /// they are refused.
    fn for_new_key(&self) -> anyhow::Result<KeyBudgets> {
        if !self.has_amount() && self.has_any() {
            bail!("--period and --alert-at shape a budget: give --budget-usd or --user-budget-usd");
        }
        self.applied_to(&KeyBudgets::default())
    }

    /// `current` changed as asked: an amount sets that budget (keeping its period and alert
    /// unless given), `--period` / `--alert-at` alone change the budgets the key has, and a
    /// budget not named is kept.
    fn applied_to(&self, current: &KeyBudgets) -> anyhow::Result<KeyBudgets> {
        let period = self.period()?;
        if !self.has_amount() && current.key.is_none() && current.user.is_none() && self.has_any() {
            bail!(
                "the key has no budget for --period or --alert-at to change: give --budget-usd \
                 or --user-budget-usd"
            );
        }
        let shaped = |amount: Option<f64>, current: Option<&BudgetSpec>| {
            let max_usd = amount.or(current.map(|spec| spec.max_usd))?;
            Some(BudgetSpec {
                max_usd,
                period: period
                    .or(current.map(|spec| spec.period))
                    .unwrap_or(BudgetPeriod::Month),
                alert_at: self
                    .alert_at
                    .or(current.map(|spec| spec.alert_at))
                    .unwrap_or(DEFAULT_ALERT_AT),
            })
        };
        let budgets = KeyBudgets {
            key: shaped(self.budget_usd, current.key.as_ref()),
            user: shaped(self.user_budget_usd, current.user.as_ref()),
        };
        budgets.validate().map_err(anyhow::Error::msg)?;
        Ok(budgets)
    }
}

/// `keys list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also show revoked and expired keys.
    #[arg(long)]
    pub all: bool,
}

/// `keys revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id (`key_...`).
    pub id: String,
}

/// Runs a keys subcommand.
pub async fn run(
    command: KeysCommand,
    json: bool,
    path: Option<&Path>,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, &super::env_without_upstream(env))?;
    if matches!(command, KeysCommand::List(_)) {
        super::require_existing_database(&config)?;
    }
    let store = store::connect(&config.database)
        .await
        .context("opening the database")?
        .keys;
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Create(args) => {
            let expires_at_ms = match &args.expires {
                Some(text) => Some(keys::now_ms() + parse_lifetime_ms("--expires", text)?),
                None => None,
            };
            let models = tidy_list(args.models);
            let new = NewKey {
                name: args.name,
                owner: args.owner,
                models,
                rules: parse_rules(&args.rules)?,
                metadata: Default::default(),
                budgets: args.budget.for_new_key()?,
                routes: tidy_list(args.routes),
                expires_at_ms,
            };
            if let Err((param, why)) = new.validate() {
                bail!("--{param}: {why}");
            }
            let issued = keys::issue(new, keys::now_ms());
            store
                .insert(&issued.key, &issued.hash)
                .await
                .context("storing the key")?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({ "id": issued.key.id, "key": issued.secret, "name": issued.key.name, "prefix": issued.key.prefix, "models": issued.key.models, "budgets": issued.key.budgets, "expires_at_ms": issued.key.expires_at_ms })
                )?;
            } else {
                writeln!(out, "Created key {} ({}).", issued.key.id, issued.key.name)?;
                writeln!(
                    out,
                    "Secret (shown only now; store it safely):\n\n  {}\n",
                    issued.secret
                )?;
            }
        }
        KeysCommand::List(args) => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .list(after.as_deref(), 500)
                    .await
                    .context("listing keys")?;
                let done = page.len() < 500;
                after = page.last().map(|k| k.id.clone());
                all.extend(page);
                if done {
                    break;
                }
            }
            let now = keys::now_ms();
            all.retain(|k| args.all || k.is_active(now));
            if json {
                writeln!(out, "{}", serde_json::to_string(&all)?)?;
            } else {
                print_table(&mut out, &all, now)?;
            }
        }
        KeysCommand::Update(args) => {
            let Some(mut key) = store.get(&args.id).await.context("reading the key")? else {
                bail!("no key with id {}", args.id);
            };
            let patch = KeyPatch {
                name: args.name,
                models: args.models.map(tidy_list),
                routes: args.routes.map(tidy_list),
                rules: if args.clear_rules {
                    Some(Vec::new())
                } else if args.rules.is_empty() {
                    None
                } else {
                    Some(parse_rules(&args.rules)?)
                },
                metadata: None,
                budgets: if args.clear_budgets {
                    Some(KeyBudgets::default())
                } else if args.budget.has_any() {
                    Some(args.budget.applied_to(&key.budgets)?)
                } else {
                    None
                },
                expires_at_ms: match &args.expires {
                    Some(text) => {
                        Some(Some(keys::now_ms() + parse_lifetime_ms("--expires", text)?))
                    }
                    None => None,
                },
            };
            if patch.is_empty() {
                bail!(
                    "nothing to change: give --name, --models, --routes, --rule, --clear-rules, \
                     a budget option, --clear-budgets or --expires"
                );
            }
            if let Err((param, why)) = patch.validate() {
                bail!("--{param}: {why}");
            }
            patch.apply(&mut key);
            store.update(&key).await.context("updating the key")?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&key)?)?;
            } else {
                writeln!(
                    out,
                    "Updated {}; every replica applies it within a second.",
                    key.id
                )?;
            }
        }
        KeysCommand::Revoke(args) => {
            // Idempotent: revoking a revoked key succeeds and says so.
            let Some(key) = store.get(&args.id).await.context("reading the key")? else {
                bail!("no key with id {}", args.id);
            };
            let already = key.revoked_at_ms.is_some()
                || !store
                    .revoke(&args.id, keys::now_ms())
                    .await
                    .context("revoking the key")?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({ "id": args.id, "revoked": true, "already_revoked": already })
                )?;
            } else if already {
                writeln!(out, "{} was already revoked.", args.id)?;
            } else {
                writeln!(
                    out,
                    "Revoked {}; every replica refuses it within a second.",
                    args.id
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, keys: &[ApiKey], now: i64) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<14}  {:<24}  {:<8}  MODELS",
        "ID", "PREFIX", "NAME", "STATE"
    )?;
    for key in keys {
        let state = if key.revoked_at_ms.is_some() {
            "revoked"
        } else if !key.is_active(now) {
            "expired"
        } else {
            "active"
        };
        let models = if key.models.is_empty() {
            "(all)".to_owned()
        } else {
            key.models.join(",")
        };
        writeln!(
            out,
            "{:<36}  tg-{:<11}  {:<24}  {:<8}  {}",
            key.id,
            format!("{}…", key.prefix),
            key.name,
            state,
            models
        )?;
    }
    Ok(())
}

/// `--rule` values, each validated.
fn parse_rules(texts: &[String]) -> anyhow::Result<Vec<RuleSpec>> {
    texts
        .iter()
        .map(|text| {
            RuleSpec::parse_cli(text).map_err(|why| anyhow::anyhow!("--rule {text:?}: {why}"))
        })
        .collect()
}

/// `30d`, `12h`, `90m`, `45s` in milliseconds.
pub(super) fn parse_lifetime_ms(flag: &str, text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let split = text.char_indices().last().map_or(0, |(at, _)| at);
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .with_context(|| format!("{flag}: expected e.g. 30d, got {text:?}"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{flag}: unit must be s, m, h or d, got {text:?}"),
    };
    if number <= 0 {
        bail!("{flag}: must be positive, got {text:?}");
    }
    number
        .checked_mul(unit_ms)
        .with_context(|| format!("{flag}: too large"))
}

/// A comma-separated list as given: entries trimmed, empty ones dropped.
fn tidy_list(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(
            parse_lifetime_ms("--expires", "30d").unwrap(),
            30 * 86_400_000
        );
        assert_eq!(parse_lifetime_ms("--expires", "90m").unwrap(), 90 * 60_000);
        assert!(parse_lifetime_ms("--expires", "soon").is_err());
        assert!(parse_lifetime_ms("--expires", "0d").is_err());
        assert!(parse_lifetime_ms("--expires", "5y").is_err());
        assert!(parse_lifetime_ms("--expires", "5é").is_err());
    }
}
