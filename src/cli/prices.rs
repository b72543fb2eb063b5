//! `tollgate prices`: the price table in force — built in, with `[pricing]` overrides marked —
//! and the version every record it prices names.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use crate::config::{Config, Env};
use crate::pricing::{ModelPrice, PriceTable, format_usd};

/// `tollgate prices`
#[derive(Debug, Args)]
pub struct PricesArgs {
    /// One model (a dated snapshot shows the price it takes).
    #[arg(long)]
    pub model: Option<String>,
}

/// Prints the table; exit 1 when `--model` names a model without a price.
pub fn run(
    args: &PricesArgs,
    json: bool,
    path: Option<&Path>,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, &super::env_without_upstream(env))?;
    let table = PriceTable::with_overrides(&config.pricing);
    let rows: Vec<(String, &ModelPrice)> = match &args.model {
        Some(model) => match table.get(model) {
            Some(price) => vec![(model.clone(), price)],
            None => {
                writeln!(
                    std::io::stderr(),
                    "{model} has no price: requests for it are unpriced (refused to budgeted \
                     callers unless budgets.unpriced = \"allow\"); add a [pricing.\"{model}\"] entry"
                )?;
                return Ok(ExitCode::FAILURE);
            }
        },
        None => table
            .models()
            .map(|(model, price)| (model.to_owned(), price))
            .collect(),
    };
    let source = |model: &str| {
        let priced_as = table.canonical_name(model).unwrap_or(model);
        if table.is_overridden(priced_as) {
            "override"
        } else {
            "builtin"
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        let models: Vec<Value> = rows
            .iter()
            .map(|(model, price)| json_row(model, price, source(model)))
            .collect();
        let document = json!({ "version": &*table.version(), "models": models });
        writeln!(out, "{document}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "price table {} (USD per million tokens; OTHER: per image, per minute of audio, per \
         million characters)",
        table.version()
    )?;
    let header = [
        "MODEL",
        "INPUT",
        "CACHED",
        "OUTPUT",
        "IMAGE_IN",
        "AUDIO_IN",
        "AUDIO_OUT",
        "MAX_OUT",
        "SOURCE",
        "OTHER",
    ];
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(model, price)| text_row(model, price, source(model)))
        .collect();
    super::write_table(&mut out, &header, &lines)?;
    Ok(ExitCode::SUCCESS)
}

/// A price in micro-dollars (per million tokens, or per image) as decimal USD.
fn usd(micros: u64) -> String {
    format_usd(i64::try_from(micros).unwrap_or(i64::MAX / 1000) * 1000)
}

/// Per-image prices, `quality:size=usd` in key order.
fn image_prices(price: &ModelPrice) -> Vec<(String, String)> {
    let mut images: Vec<(String, String)> = price
        .per_image
        .iter()
        .map(|(key, micros)| (key.clone(), usd(*micros)))
        .collect();
    images.sort();
    if let Some(flat) = price.flat_image {
        images.insert(0, ("any".to_owned(), usd(flat)));
    }
    images
}

fn text_row(model: &str, price: &ModelPrice, source: &str) -> Vec<String> {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let tokens = price.tokens.as_ref();
    let audio = tokens.and_then(|t| t.audio);
    let mut other: Vec<String> = image_prices(price)
        .into_iter()
        .map(|(key, usd)| format!("{key}={usd}"))
        .collect();
    if let Some(per_minute) = price.per_minute {
        other.push(format!("per_minute={}", usd(per_minute)));
    }
    if let Some(per_million) = price.per_million_characters {
        other.push(format!("per_million_characters={}", usd(per_million)));
    }
    vec![
        model.to_owned(),
        or_dash(tokens.map(|t| usd(t.input))),
        or_dash(tokens.and_then(|t| t.cached_input).map(usd)),
        or_dash(tokens.map(|t| usd(t.output))),
        or_dash(tokens.and_then(|t| t.image_input).map(usd)),
        or_dash(audio.map(|a| usd(a.input))),
        or_dash(audio.map(|a| usd(a.output))),
        or_dash(tokens.map(|t| t.max_output_tokens.to_string())),
        source.to_owned(),
        if other.is_empty() {
            "-".to_owned()
        } else {
            other.join(" ")
        },
    ]
}

fn json_row(model: &str, price: &ModelPrice, source: &str) -> Value {
    let tokens = price.tokens.as_ref();
    json!({
        "model": model,
        "source": source,
        "input_usd": tokens.map(|t| usd(t.input)),
        "cached_input_usd": tokens.and_then(|t| t.cached_input).map(usd),
        "output_usd": tokens.map(|t| usd(t.output)),
        "image_input_usd": tokens.and_then(|t| t.image_input).map(usd),
        "long_context": tokens.and_then(|t| t.long_context).map(|tier| json!({
            "above_prompt_tokens": tier.above_prompt_tokens,
            "input_usd": usd(tier.input),
            "cached_input_usd": tier.cached_input.map(usd),
            "output_usd": usd(tier.output),
        })),
        "audio_input_usd": tokens.and_then(|t| t.audio).map(|a| usd(a.input)),
        "audio_output_usd": tokens.and_then(|t| t.audio).map(|a| usd(a.output)),
        "max_output_tokens": tokens.map(|t| t.max_output_tokens),
        "per_minute_usd": price.per_minute.map(usd),
        "per_million_characters_usd": price.per_million_characters.map(usd),
        "per_image_usd": image_prices(price)
            .into_iter()
            .map(|(key, usd)| (key, Value::String(usd)))
            .collect::<serde_json::Map<_, _>>(),
    })
}
