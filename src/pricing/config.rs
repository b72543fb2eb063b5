//! `[pricing."MODEL"]`: price overrides and additions, in USD as OpenAI publishes them.
//!
//! ```toml
//! [pricing."my-model"]      # USD per million tokens
//! input = 0.15
//! cached_input = 0.075
//! output = 0.60
//! max_output_tokens = 16384
//!
//! [pricing."my-image-model"]
//! per_image = 0.04          # any quality and size
//! images = { "hd:1024x1024" = 0.08 }   # or by quality:size
//!
//! [pricing."my-whisper"]
//! per_minute = 0.006        # of input audio
//!
//! [pricing."my-tts"]
//! per_million_characters = 15.0
//! ```
//!
//! A field given replaces that field of a built-in model's price and keeps the rest; a new
//! model needs `input`, `output` and `max_output_tokens` (its worst case), or an image price.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{ModelPrice, PriceTable, TokenPrice, usd_to_micros};
use crate::config::source::Sources;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceOverride {
    input: Option<f64>,
    cached_input: Option<f64>,
    output: Option<f64>,
    image_input: Option<f64>,
    max_output_tokens: Option<u64>,
    per_image: Option<f64>,
    per_minute: Option<f64>,
    per_million_characters: Option<f64>,
    #[serde(default)]
    images: BTreeMap<String, f64>,
}

/// Reads `[pricing]`, reporting each bad entry by its path; returns the overrides applied to
/// the built-in table's entries.
pub fn read(s: &mut Sources<'_>) -> HashMap<String, ModelPrice> {
    let Some(value) = s.raw("pricing") else {
        return HashMap::new();
    };
    let Some(table) = value.as_table() else {
        s.invalid_in_file("pricing", "must be a table of models");
        return HashMap::new();
    };
    let builtin = PriceTable::builtin();
    let mut prices = HashMap::new();
    for (model, entry) in table {
        let path = format!("pricing.\"{model}\"");
        let parsed: PriceOverride = match entry.clone().try_into() {
            Ok(parsed) => parsed,
            Err(error) => {
                s.invalid_in_file(&path, error.message().trim());
                continue;
            }
        };
        match apply(builtin.get(model).cloned().unwrap_or_default(), &parsed) {
            Ok(price) => {
                prices.insert(model.clone(), price);
            }
            Err(message) => s.invalid_in_file(&path, message),
        }
    }
    prices
}

fn apply(mut price: ModelPrice, given: &PriceOverride) -> Result<ModelPrice, String> {
    let all = [
        given.input,
        given.cached_input,
        given.output,
        given.image_input,
        given.per_image,
        given.per_minute,
        given.per_million_characters,
    ];
    if all
        .iter()
        .flatten()
        .chain(given.images.values())
        .any(|usd| !usd.is_finite() || *usd < 0.0 || *usd > 1_000_000.0)
    {
        return Err("prices must be numbers from 0 to 1000000 (USD)".to_owned());
    }
    let touches_tokens = given.input.is_some()
        || given.cached_input.is_some()
        || given.output.is_some()
        || given.image_input.is_some()
        || given.max_output_tokens.is_some();
    if touches_tokens {
        let tokens = match (price.tokens, given.input, given.output) {
            (Some(tokens), _, _) => tokens,
            (None, Some(input), Some(output)) => TokenPrice {
                input: usd_to_micros(input),
                cached_input: None,
                output: usd_to_micros(output),
                image_input: None,
                cached_image_input: None,
                long_context: None,
                max_output_tokens: given.max_output_tokens.ok_or(
                    "a new model needs max_output_tokens (a budget reserves a request's worst case)",
                )?,
                priority: None,
                audio: None,
            },
            (None, _, _) => return Err("a new model needs both input and output".to_owned()),
        };
        price.tokens = Some(TokenPrice {
            input: given.input.map_or(tokens.input, usd_to_micros),
            cached_input: given
                .cached_input
                .map(usd_to_micros)
                .or(tokens.cached_input),
            output: given.output.map_or(tokens.output, usd_to_micros),
            image_input: given.image_input.map(usd_to_micros).or(tokens.image_input),
            cached_image_input: tokens.cached_image_input,
            long_context: tokens.long_context,
            max_output_tokens: given.max_output_tokens.unwrap_or(tokens.max_output_tokens),
            priority: tokens.priority,
            audio: tokens.audio,
        });
    }
    if let Some(flat) = given.per_image {
        price.flat_image = Some(usd_to_micros(flat));
    }
    if let Some(per_minute) = given.per_minute {
        price.per_minute = Some(usd_to_micros(per_minute));
    }
    if let Some(per_million) = given.per_million_characters {
        price.per_million_characters = Some(usd_to_micros(per_million));
    }
    for (quality_size, usd) in &given.images {
        if !quality_size.contains(':') {
            return Err(format!(
                "images keys are \"QUALITY:SIZE\" (like \"hd:1024x1024\"), not {quality_size:?}"
            ));
        }
        price
            .per_image
            .insert(quality_size.clone(), usd_to_micros(*usd));
    }
    if price == ModelPrice::default() {
        return Err("no price given".to_owned());
    }
    Ok(price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    fn load(toml: &str) -> Result<Config, Vec<String>> {
        let env: Env = [("OPENAI_API_KEY", "sk-test")].into_iter().collect();
        Config::from_toml_str("t.toml", toml, &env).map_err(|e| e.0)
    }

    #[test]
    fn overrides_change_one_field_and_additions_need_input_and_output() {
        let config = load(
            "[pricing.\"gpt-4o-mini\"]\noutput = 1.0\n\n[pricing.\"mine\"]\ninput = 1\noutput = 2\nmax_output_tokens = 100\n",
        )
        .unwrap();
        let table = PriceTable::with_overrides(&config.pricing);
        let mini = table.get("gpt-4o-mini").unwrap().tokens.unwrap();
        assert_eq!((mini.input, mini.output), (150_000, 1_000_000));
        let mine = table.get("mine").unwrap().tokens.unwrap();
        assert_eq!((mine.input, mine.output), (1_000_000, 2_000_000));

        let errors = load(
            "[pricing.\"half\"]\ninput = 1\n\n[pricing.\"neg\"]\ninput = -1\noutput = 1\n\n[pricing.\"typo\"]\ninptu = 1\n\n[pricing.\"unbounded\"]\ninput = 1\noutput = 1\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("pricing.\"unbounded\"") && e.contains("max_output_tokens"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("pricing.\"half\"") && e.contains("both input and output"))
        );
        assert!(errors.iter().any(|e| e.contains("pricing.\"neg\"")));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("pricing.\"typo\"") && e.contains("inptu"))
        );
    }

    #[test]
    fn image_prices_by_quality_and_size_or_flat() {
        let config = load(
            "[pricing.\"pics\"]\nimages = { \"hd:1024x1024\" = 0.5 }\n\n[pricing.\"flat\"]\nper_image = 0.01\n",
        )
        .unwrap();
        let table = PriceTable::with_overrides(&config.pricing);
        let hd = super::super::ImageRequest {
            count: 3,
            size: None,
            quality: Some("hd".into()),
        };
        let usage = crate::openai::usage::Usage::default();
        assert_eq!(table.cost("pics", &usage, Some(&hd)), Some(1_500_000_000));
        assert_eq!(table.cost("flat", &usage, Some(&hd)), Some(30_000_000));
    }
}
