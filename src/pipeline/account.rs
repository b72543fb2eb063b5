//! The account step: usage and cost. What the upstream says it used, priced by the price table.
//!
//! A plain answer's usage is in its body; a stream's arrives in its last chunk (Tollgate asks
//! for it with `include_usage`). A stream that broke or whose client left has no such chunk:
//! its prompt is counted with the tokenizer, its completion from the text relayed so far, and
//! the result is marked estimated.

use super::JsonRequest;
use super::stream::StreamOutcome;
use crate::openai::ModelRoute;
use crate::openai::requests::RequestFacts;
use crate::openai::usage::{ResponseSummary, Usage};
use crate::pricing::{Asked, PriceTable, ServiceTier};
pub use crate::records::Accounting;

/// Prices `summary` (what a response body or a stream reported) for `request`: its usage, the
/// images it generated, the audio it asked for. `None` when there is nothing to account: no
/// usage, no images and no audio.
pub fn account(
    prices: &PriceTable,
    request: &RequestFacts,
    summary: ResponseSummary,
) -> Option<Accounting> {
    let images = request.images.clone().map(|mut images| {
        if let Some(generated) = summary.data_items {
            images.count = generated;
        }
        images
    });
    if summary.usage.is_none() && images.is_none() && request.audio.is_none() {
        return None;
    }
    let usage = summary.usage.unwrap_or_default();
    let model = summary.model.as_deref().or(request.model.as_deref())?;
    let tier = ServiceTier::parse(summary.service_tier.as_deref());
    let asked = Asked {
        images: images.as_ref(),
        audio: request.audio.as_ref(),
    };
    let cost = prices.cost_at(model, &usage, asked, tier);
    Some(Accounting {
        price_version: cost.map(|_| prices.version()),
        service_tier: summary.service_tier.clone(),
        cost,
        model_used: summary.model.clone(),
        usage,
        images,
        estimated: false,
    })
}

/// The accounting of an operation OpenAI does not bill (moderations): its usage, at no cost.
pub fn free(summary: ResponseSummary) -> Accounting {
    Accounting {
        model_used: summary.model,
        usage: summary.usage.unwrap_or_default(),
        cost: Some(0),
        ..Accounting::default()
    }
}

/// A finished stream's accounting: the usage it reported, or else an estimate from the
/// request's prompt (counted once, before sending, or now) and the text it relayed. Audio
/// relayed cannot be counted so: an audio stream without usage has no cost (it keeps what
/// was held).
pub fn stream(
    prices: &PriceTable,
    route: ModelRoute,
    request: &RequestFacts,
    prompt: Option<JsonRequest>,
    outcome: &StreamOutcome,
) -> Accounting {
    let summary = ResponseSummary {
        model: outcome.model.clone(),
        service_tier: outcome.service_tier.clone(),
        usage: outcome.usage,
        data_items: None,
    };
    if request.audio.is_some() && outcome.usage.is_none() {
        return Accounting {
            estimated: true,
            ..Accounting::default()
        };
    }
    if let Some(mut accounting) = account(prices, request, summary) {
        accounting.cost = outcome.cost.or(accounting.cost);
        return accounting;
    }
    let model = request.model.as_deref().unwrap_or("gpt-4o");
    let prompt_tokens = prompt.map_or(0, |mut json| json.estimate(route).prompt_tokens);
    estimate_unreported(
        prices,
        model,
        prompt_tokens,
        &super::stream::completion_text(&outcome.relayed),
    )
}

/// The accounting of a stream that ended without reporting usage: `prompt_tokens` counted
/// before sending, `completion_text` (what was relayed) counted now.
pub fn estimate_unreported(
    prices: &PriceTable,
    model: &str,
    prompt_tokens: u64,
    completion_text: &str,
) -> Accounting {
    let usage = Usage {
        prompt_tokens,
        completion_tokens: crate::tokens::count(model, completion_text),
        ..Usage::default()
    };
    let cost = prices.cost(model, &usage, None);
    Accounting {
        price_version: cost.map(|_| prices.version()),
        service_tier: None,
        cost,
        model_used: None,
        usage,
        images: None,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::usage::summarize;
    use crate::pricing::ImageRequest;

    fn chat_request(model: &str) -> RequestFacts {
        RequestFacts {
            model: Some(model.to_owned()),
            ..RequestFacts::default()
        }
    }

    #[test]
    fn the_answering_model_is_priced() {
        let prices = PriceTable::builtin();
        let body = br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":1000,"completion_tokens":100}}"#;
        let accounting = account(&prices, &chat_request("gpt-4o"), summarize(body)).unwrap();
        // $2.50 and $10 per million: 2,500 + 1,000 micro-dollars.
        assert_eq!(accounting.cost, Some(3_500_000));
        assert_eq!(accounting.model_used.as_deref(), Some("gpt-4o-2024-08-06"));
    }

    #[test]
    fn images_count_what_was_generated() {
        let prices = PriceTable::builtin();
        let request = RequestFacts {
            model: Some("dall-e-3".into()),
            images: Some(ImageRequest {
                count: 3,
                size: Some("1024x1024".into()),
                quality: Some("hd".into()),
            }),
            ..RequestFacts::default()
        };
        let body = br#"{"created":1,"data":[{"url":"a"},{"url":"b"}]}"#;
        let accounting = account(&prices, &request, summarize(body)).unwrap();
        assert_eq!(accounting.images.as_ref().map(|i| i.count), Some(2));
        assert_eq!(accounting.cost, Some(160_000_000));
    }

    #[test]
    fn no_usage_means_nothing_to_account_and_unknown_models_are_unpriced() {
        let prices = PriceTable::builtin();
        assert_eq!(
            account(
                &prices,
                &RequestFacts::default(),
                summarize(br#"{"object":"list","data":[]}"#)
            ),
            None
        );
        let body = br#"{"model":"my-model","usage":{"prompt_tokens":5,"completion_tokens":5}}"#;
        let accounting = account(&prices, &chat_request("my-model"), summarize(body)).unwrap();
        assert_eq!(accounting.cost, None);
        assert_eq!(accounting.usage.total_tokens(), 10);
    }
}
