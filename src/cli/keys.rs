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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Print JSON: {"id", "key", ...}.
    #[arg(long)]
    pub json: bool,
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
    /// The budgets' period: day, month or total.
    #[arg(long, default_value = "month")]
    pub period: String,
    /// Fraction of a budget at which the alert webhook is called.
    #[arg(long, default_value_t = 0.8)]
    pub alert_at: f64,
}

impl BudgetArgs {
    /// The budgets asked for, validated; `None` when no budget option was given.
    fn budgets(&self) -> anyhow::Result<Option<KeyBudgets>> {
        if self.budget_usd.is_none() && self.user_budget_usd.is_none() {
            return Ok(None);
        }
        let period = match self.period.as_str() {
            "day" => BudgetPeriod::Day,
            "month" => BudgetPeriod::Month,
            "total" => BudgetPeriod::Total,
            other => bail!("--period must be day, month or total, not {other:?}"),
        };
        let spec = |max_usd: f64| BudgetSpec {
            max_usd,
            period,
            alert_at: self.alert_at,
        };
        let budgets = KeyBudgets {
            key: self.budget_usd.map(spec),
            user: self.user_budget_usd.map(spec),
        };
        budgets.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(budgets))
    }
}

/// `keys list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also show revoked and expired keys.
    #[arg(long)]
    pub all: bool,
}

/// `keys revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id (`key_...`).
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a keys subcommand.
pub async fn run(command: KeysCommand, path: Option<&Path>, env: &Env) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, &super::env_without_upstream(env))?;
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
                budgets: args.budget.budgets()?.unwrap_or_default(),
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
            if args.json {
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
            if args.json {
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
                } else {
                    args.budget.budgets()?
                },
                expires_at_ms: match &args.expires {
                    Some(text) => {
                        Some(Some(keys::now_ms() + parse_lifetime_ms("--expires", text)?))
                    }
                    None => None,
                },
            };
            if let Err((param, why)) = patch.validate() {
                bail!("--{param}: {why}");
            }
            patch.apply(&mut key);
            store.update(&key).await.context("updating the key")?;
            if args.json {
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
            if !store
                .revoke(&args.id, keys::now_ms())
                .await
                .context("revoking the key")?
            {
                bail!("no active key with id {}", args.id);
            }
            if args.json {
                writeln!(out, "{}", json!({ "id": args.id, "revoked": true }))?;
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
    let split = text.len().saturating_sub(1);
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
    }
}
