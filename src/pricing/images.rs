//! Images: how a request's quality and size resolve to a price, and how many output tokens a
//! GPT image model spends on one image.
//!
//! `quality` defaults to `auto`, which OpenAI documents as "the best quality for the given
//! model": for a model priced per image (DALL·E) that is its dearest quality at the size asked
//! for. The answer does not say which quality was used, so `auto` is priced as the dearest —
//! never less than OpenAI can bill. `size` defaults to `1024x1024`; `auto` (GPT image models)
//! may be any size, so it is the dearest too.

use super::ImageRequest;

/// Output tokens of one image by GPT image models, by quality and size (OpenAI's image
/// generation guide: the same grid for `gpt-image-1`, `-mini` and `1.5`).
const OUTPUT_TOKENS: [(&str, &str, u64); 9] = [
    ("low", "1024x1024", 272),
    ("low", "1024x1536", 408),
    ("low", "1536x1024", 400),
    ("medium", "1024x1024", 1_056),
    ("medium", "1024x1536", 1_584),
    ("medium", "1536x1024", 1_568),
    ("high", "1024x1024", 4_160),
    ("high", "1024x1536", 6_240),
    ("high", "1536x1024", 6_208),
];

/// Whether `value` leaves the choice to OpenAI (absent or `auto`).
fn is_auto(value: Option<&str>) -> bool {
    value.is_none_or(|v| v == "auto")
}

/// The most output tokens one image of `request` can take: the grid's entry for its quality
/// and size, the dearest entry that matches when either is `auto` or absent, and the grid's
/// largest for a size the grid does not know (never an underestimate).
pub fn most_output_tokens(request: &ImageRequest) -> u64 {
    let quality = request.quality.as_deref();
    let size = request.size.as_deref();
    let matching = OUTPUT_TOKENS
        .iter()
        .filter(|(q, s, _)| {
            (is_auto(quality) || quality == Some(*q)) && (is_auto(size) || size == Some(*s))
        })
        .map(|(_, _, tokens)| *tokens)
        .max();
    matching.unwrap_or_else(|| OUTPUT_TOKENS.iter().map(|(_, _, t)| *t).max().unwrap_or(0))
}

/// The output tokens of one image of this quality and size, as the mock upstream reports them.
pub fn output_tokens(quality: Option<&str>, size: Option<&str>) -> u64 {
    most_output_tokens(&ImageRequest {
        count: 1,
        quality: quality.map(str::to_owned),
        size: size.map(str::to_owned),
    })
}

/// The price of one image from a per-image table keyed `quality:size`: the entry for the
/// request's quality and size, `auto` (or no quality) resolving to the dearest quality, no size
/// to `1024x1024` and `auto` size to the dearest. `None` when nothing matches (an unknown size):
/// unpriced, never free.
pub fn per_image_price<'a>(
    prices: impl Iterator<Item = (&'a str, u64)>,
    request: &ImageRequest,
) -> Option<u64> {
    let quality = request.quality.as_deref();
    let size = match request.size.as_deref() {
        None => Some("1024x1024"),
        Some(size) => Some(size),
    };
    prices
        .filter_map(|(key, price)| {
            let (q, s) = key.split_once(':')?;
            let quality_fits = is_auto(quality) || quality == Some(q);
            let size_fits = size == Some("auto") || size == Some(s);
            (quality_fits && size_fits).then_some(price)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(quality: Option<&str>, size: Option<&str>) -> ImageRequest {
        ImageRequest {
            count: 1,
            quality: quality.map(str::to_owned),
            size: size.map(str::to_owned),
        }
    }

    #[test]
    fn auto_resolves_to_the_dearest_and_a_known_choice_to_itself() {
        assert_eq!(
            most_output_tokens(&request(Some("low"), Some("1024x1024"))),
            272
        );
        assert_eq!(most_output_tokens(&request(Some("high"), None)), 6_240);
        assert_eq!(most_output_tokens(&request(None, None)), 6_240);
        assert_eq!(
            most_output_tokens(&request(Some("auto"), Some("1536x1024"))),
            6_208
        );
        assert_eq!(
            most_output_tokens(&request(Some("medium"), Some("auto"))),
            1_584
        );
        // Something the grid does not know: its largest, never less.
        assert_eq!(
            most_output_tokens(&request(Some("ultra"), Some("9x9"))),
            6_240
        );

        let dalle3 = [
            ("standard:1024x1024", 40_000),
            ("hd:1024x1024", 80_000),
            ("standard:1792x1024", 80_000),
            ("hd:1792x1024", 120_000),
        ];
        let price = |q, s| per_image_price(dalle3.into_iter(), &request(q, s));
        assert_eq!(price(Some("standard"), None), Some(40_000));
        assert_eq!(price(Some("auto"), None), Some(80_000));
        assert_eq!(price(None, Some("1792x1024")), Some(120_000));
        assert_eq!(price(Some("standard"), Some("auto")), Some(80_000));
        assert_eq!(price(Some("hd"), Some("7x7")), None);
    }
}
