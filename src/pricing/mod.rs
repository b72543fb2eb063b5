//! Prices and costs: what a request cost, in integer nano-dollars.
//!
//! The built-in table ([`builtin`], generated from models.dev's OpenAI files and OpenAI's image
//! prices) is overlaid by `[pricing."MODEL"]` in the TOML file, which can change a built-in
//! price or add a model. A model found in neither is *unpriced*: its cost is `None`, never zero.
//!
//! Arithmetic: prices are micro-dollars per million tokens — pico-dollars per token — or
//! micro-dollars per image. A request's cost is the sum over token classes of `tokens × price`,
//! in pico-dollars (exact integers), rounded once, half up, to nano-dollars (10⁻⁹ USD). Every
//! published price is a whole number of nano-dollars per token above $0.001 per million, so a
//! recorded cost is exact for them (a 3-token embedding at $0.02 per million is 60 n$, and a
//! million of them add up to exactly $0.06), off by at most half a nano-dollar otherwise, and
//! sums of records never drift by float rounding.

pub mod audio;
mod builtin;
pub mod config;
pub mod images;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::openai::usage::Usage;
pub use audio::AudioRequest;

/// Nano-dollars (10⁻⁹ USD): the unit of every cost, budget and spend.
pub type Nanos = i64;

/// Prices of a model billed by token class, micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenPrice {
    /// Uncached text input.
    pub input: u64,
    /// Input served from the provider's prompt cache; `input` when absent.
    pub cached_input: Option<u64>,
    /// Output, reasoning included (OpenAI bills hidden reasoning as output).
    pub output: u64,
    /// Image input tokens (GPT image models, Realtime models); `input` when absent.
    pub image_input: Option<u64>,
    /// Cached image input tokens (Realtime models); `image_input` when absent.
    pub cached_image_input: Option<u64>,
    /// Higher prices once a prompt exceeds a size (the long-context tier of some models).
    pub long_context: Option<LongContext>,
    /// The model's most output tokens (per image, for GPT image models): a request that sets
    /// no maximum can use this many, so its worst case does. Every priced model has one.
    pub max_output_tokens: u64,
    /// Prices of the priority tier (`service_tier: "priority"`), where OpenAI publishes them;
    /// a priority answer of a model without them is unpriced.
    pub priority: Option<TierPrice>,
    /// Prices of audio tokens, for models that hear or speak; an answer reporting audio
    /// tokens from a model without them is unpriced.
    pub audio: Option<AudioTokenPrice>,
}

/// Audio token prices, micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AudioTokenPrice {
    pub input: u64,
    /// Cached audio input (Realtime models); `input` when absent.
    pub cached_input: Option<u64>,
    pub output: u64,
    /// The most input tokens a request can hold (the context window): a transcription's
    /// audio tokens can be no more.
    pub context_window: u64,
}

/// A tier's prices, micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierPrice {
    pub input: u64,
    pub cached_input: Option<u64>,
    pub output: u64,
}

/// The processing tier an answer reports (`service_tier`). Flex and batch are billed at half
/// the standard prices; priority at its own; `default`, `auto`, `scale` and anything else at
/// the standard prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceTier {
    #[default]
    Standard,
    Flex,
    Batch,
    Priority,
}

impl ServiceTier {
    /// The tier an answer's (or a request's) `service_tier` names.
    pub fn parse(name: Option<&str>) -> Self {
        match name {
            Some("flex") => Self::Flex,
            Some("batch") => Self::Batch,
            Some("priority") => Self::Priority,
            _ => Self::Standard,
        }
    }
}

/// A long-context price tier: applies to the whole request once the prompt is above the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LongContext {
    pub above_prompt_tokens: u64,
    pub input: u64,
    pub cached_input: Option<u64>,
    pub output: u64,
}

/// One per-image price (DALL·E): micro-dollars for one image of this quality and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImagePrice {
    pub quality: &'static str,
    pub size: &'static str,
    pub price: u64,
}

/// How one model is priced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelPrice {
    /// Per token class, when the model reports token usage.
    pub tokens: Option<TokenPrice>,
    /// Per image by `quality:size` (e.g. `hd:1024x1024`).
    pub per_image: HashMap<String, u64>,
    /// Per image whatever its quality and size (a `[pricing]` override).
    pub flat_image: Option<u64>,
    /// Per minute of input audio (`whisper-1`), micro-dollars.
    pub per_minute: Option<u64>,
    /// Per million characters of input text (`tts-1`), micro-dollars.
    pub per_million_characters: Option<u64>,
}

/// What a request asked for besides tokens, where its price depends on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    pub images: Option<&'a ImageRequest>,
    pub audio: Option<&'a AudioRequest>,
}

/// What a request may use, as far as the most it can cost depends on it.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The prompt, counted before sending.
    pub prompt_tokens: u64,
    /// The output the request allows (all choices together); `None` when it sets no maximum.
    pub max_output: Option<u64>,
    /// Choices asked for (`n`), at least 1.
    pub choices: u64,
    /// Audio in a chat prompt (`input_audio` parts), decoded bytes.
    pub prompt_audio_bytes: u64,
    /// Whether the answer may speak (`modalities` names audio).
    pub audio_output: bool,
    pub asked: Asked<'a>,
    pub tier: ServiceTier,
}

impl Default for Demand<'_> {
    fn default() -> Self {
        Self {
            prompt_tokens: 0,
            max_output: None,
            choices: 1,
            prompt_audio_bytes: 0,
            audio_output: false,
            asked: Asked::default(),
            tier: ServiceTier::Standard,
        }
    }
}

/// What an images request asked for: enough to price images billed per image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageRequest {
    pub count: u64,
    pub size: Option<String>,
    pub quality: Option<String>,
}

/// Every price Tollgate knows, built once at start.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    /// Named in every record this table priced: the built-in table's digest, plus a digest of
    /// the `[pricing]` overrides when there are any.
    version: Arc<str>,
    /// Models whose price `[pricing]` set or changed.
    overridden: BTreeSet<String>,
}

/// Pico-dollars in a nano-dollar (a cost's unit) and in a micro-dollar (a per-image price's).
const PICOS_PER_NANO: u128 = 1_000;
const PICOS_PER_MICRO: u128 = 1_000_000;

impl PriceTable {
    /// The built-in table alone.
    pub fn builtin() -> Self {
        let mut models: HashMap<String, ModelPrice> = builtin::TOKEN_PRICES
            .iter()
            .map(|(id, price)| {
                (
                    (*id).to_owned(),
                    ModelPrice {
                        tokens: Some(*price),
                        ..ModelPrice::default()
                    },
                )
            })
            .collect();
        for (id, per_minute) in builtin::DURATION_PRICES {
            models.entry((*id).to_owned()).or_default().per_minute = Some(*per_minute);
        }
        for (id, per_million) in builtin::CHARACTER_PRICES {
            models
                .entry((*id).to_owned())
                .or_default()
                .per_million_characters = Some(*per_million);
        }
        for (id, prices) in builtin::IMAGE_PRICES {
            let entry = models.entry((*id).to_owned()).or_default();
            for price in *prices {
                entry
                    .per_image
                    .insert(format!("{}:{}", price.quality, price.size), price.price);
            }
        }
        Self {
            models,
            version: Arc::from(builtin::VERSION),
            overridden: BTreeSet::new(),
        }
    }

    /// The built-in table with `[pricing]` applied: an override replaces the model's entry.
    pub fn with_overrides(overrides: &HashMap<String, ModelPrice>) -> Self {
        let mut table = Self::builtin();
        if overrides.is_empty() {
            return table;
        }
        let mut digest = Sha256::new();
        let sorted: BTreeMap<&String, &ModelPrice> = overrides.iter().collect();
        for (model, price) in sorted {
            let images: BTreeMap<&String, &u64> = price.per_image.iter().collect();
            digest.update(format!(
                "{model}|{:?}|{images:?}|{:?}|{:?}|{:?}\n",
                price.tokens, price.flat_image, price.per_minute, price.per_million_characters
            ));
            table.models.insert(model.clone(), price.clone());
            table.overridden.insert(model.clone());
        }
        let hex: String = digest.finalize()[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        table.version = Arc::from(format!("{}+config-{hex}", builtin::VERSION));
        table
    }

    /// The table's version, as records name it.
    pub fn version(&self) -> Arc<str> {
        self.version.clone()
    }

    /// Whether `[pricing]` set or changed `model`'s price.
    pub fn is_overridden(&self, model: &str) -> bool {
        self.overridden.contains(model)
    }

    /// The price of `model`: its own entry, else that of the model without a date suffix
    /// (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`), as OpenAI names snapshots.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .get(model)
            .or_else(|| self.models.get(without_date_suffix(model)?))
    }

    /// The table's own name for `model` (a dated snapshot maps to its base model), or `None`
    /// when unpriced: a bounded label for metrics.
    pub fn canonical_name(&self, model: &str) -> Option<&str> {
        self.models
            .get_key_value(model)
            .or_else(|| self.models.get_key_value(without_date_suffix(model)?))
            .map(|(name, _)| name.as_str())
    }

    /// Every priced model id, sorted (for `/v1/models` and the docs).
    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        let mut all: Vec<_> = self.models.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all.into_iter()
    }

    /// The cost of a finished request, or `None` when the model is unpriced. Token usage is
    /// priced by class when the model has token prices; otherwise images are priced each.
    pub fn cost(&self, model: &str, usage: &Usage, images: Option<&ImageRequest>) -> Option<Nanos> {
        let asked = Asked {
            images,
            audio: None,
        };
        self.cost_at(model, usage, asked, ServiceTier::Standard)
    }

    /// [`Self::cost`] on a service tier, for what the request `asked`: audio billed by its
    /// length or its characters is priced so, anything else by token class or by image. `None`
    /// also for a priority answer of a model without priority prices, and for audio tokens of
    /// a model without audio prices.
    pub fn cost_at(
        &self,
        model: &str,
        usage: &Usage,
        asked: Asked<'_>,
        tier: ServiceTier,
    ) -> Option<Nanos> {
        let price = self.get(model)?;
        if let Some(per_minute) = price.per_minute {
            // Billed by the minute: the answer must say how long the audio was.
            return (usage.audio_millis > 0).then(|| duration_cost(per_minute, usage.audio_millis));
        }
        if let (Some(per_million), Some(AudioRequest::Speech { characters, .. })) =
            (price.per_million_characters, asked.audio)
        {
            return Some(to_nanos(u128::from(*characters) * u128::from(per_million)));
        }
        // Audio billed by tokens whose answer reported none (speech returned as raw audio): an
        // unknown cost, never a free one.
        if asked.audio.is_some() && usage.total_tokens() == 0 {
            return None;
        }
        if let Some(tokens) = &price.tokens
            && (usage.total_tokens() > 0 || asked.images.is_none())
        {
            return token_cost(tokens, usage, tier);
        }
        let images = asked.images?;
        let each = price.image_price(images)?;
        Some(to_nanos(
            u128::from(each) * u128::from(images.count) * PICOS_PER_MICRO,
        ))
    }

    /// The most a request can cost, `None` when the model is unpriced: `prompt_tokens` of
    /// input at the full input price (the long-context tier when the prompt reaches it), plus
    /// the output it allows — `max_output` (all `choices` together) capped at the model's own
    /// limit per choice, or that limit for each choice when the request sets none. Images:
    /// `count` × the dearest price the request's quality and size can resolve to, or for GPT
    /// image models `count` × the most output tokens such an image can take. Audio: the
    /// longest audio the upload can hold (by the minute), the text's characters, or the most
    /// audio tokens its size or the model's context allows (see [`audio`]). A request for the
    /// priority tier is held at priority prices (none published: twice the standard ones); flex
    /// is held at the standard prices, as it may be served at them.
    pub fn worst_case(&self, model: &str, demand: &Demand<'_>) -> Option<Nanos> {
        let price = self.get(model)?;
        match (
            demand.asked.audio,
            price.per_minute,
            price.per_million_characters,
        ) {
            (Some(AudioRequest::Transcription { upload_bytes }), Some(per_minute), _) => {
                return Some(duration_cost(per_minute, audio::most_millis(*upload_bytes)));
            }
            (_, Some(_), _) => return None,
            (Some(AudioRequest::Speech { characters, .. }), _, Some(per_million)) => {
                return Some(to_nanos(u128::from(*characters) * u128::from(per_million)));
            }
            _ => {}
        }
        let usage = match (demand.asked.images, &price.tokens) {
            (Some(images), None) => {
                let each = price.image_price(images)?;
                return Some(to_nanos(
                    u128::from(each) * u128::from(images.count) * PICOS_PER_MICRO,
                ));
            }
            (Some(images), Some(_)) => Usage {
                prompt_tokens: demand.prompt_tokens,
                completion_tokens: images
                    .count
                    .saturating_mul(images::most_output_tokens(images)),
                ..Usage::default()
            },
            (None, Some(tokens)) => worst_token_usage(tokens, demand),
            (None, None) => return None,
        };
        let tokens = price.tokens.as_ref()?;
        match demand.tier {
            ServiceTier::Priority if tokens.priority.is_some() => {
                token_cost(tokens, &usage, ServiceTier::Priority)
            }
            // A field the caller sets must not make a priced model unpriced (and so unbudgeted):
            // priority without published prices is held at twice the standard price, above
            // every priority price OpenAI publishes (1.7–2×).
            ServiceTier::Priority => token_cost(tokens, &usage, ServiceTier::Standard)
                .map(|standard| standard.saturating_mul(2)),
            // A batch is never served at more than the batch price.
            ServiceTier::Batch => token_cost(tokens, &usage, ServiceTier::Batch),
            ServiceTier::Standard | ServiceTier::Flex => {
                token_cost(tokens, &usage, ServiceTier::Standard)
            }
        }
    }
}

impl PriceTable {
    /// The most one Realtime response of `model` can cost: its whole context window as input
    /// and its most output, each at the dearest class the model has (audio, for the Realtime
    /// models). `None` for a model without a context window in the table (unpriced for a
    /// session: the worst case of a response cannot be known).
    pub fn realtime_worst_case(&self, model: &str) -> Option<Nanos> {
        let tokens = self.get(model)?.tokens.as_ref()?;
        let audio = tokens.audio?;
        let context = audio.context_window;
        let output = tokens.max_output_tokens;
        let as_text = Usage {
            prompt_tokens: context,
            completion_tokens: output,
            ..Usage::default()
        };
        let as_audio = Usage {
            audio_input_tokens: context,
            audio_output_tokens: output,
            ..as_text
        };
        let as_images = Usage {
            image_input_tokens: context,
            ..as_text
        };
        [as_text, as_audio, as_images]
            .iter()
            .filter_map(|usage| token_cost(tokens, usage, ServiceTier::Standard))
            .max()
    }
}

/// The most tokens of each class a request to a token-priced model can use.
fn worst_token_usage(tokens: &TokenPrice, demand: &Demand<'_>) -> Usage {
    let limit = tokens
        .max_output_tokens
        .saturating_mul(demand.choices.max(1));
    let output = demand.max_output.map_or(limit, |max| max.min(limit));
    let context = tokens.audio.map(|audio| audio.context_window);
    let (text_input, audio_input) = match demand.asked.audio {
        // A transcription's prompt is its audio: as many tokens as the upload can hold, never
        // more than the model's context.
        Some(AudioRequest::Transcription { upload_bytes }) => (
            0,
            audio::most_input_tokens(*upload_bytes).min(context.unwrap_or(u64::MAX)),
        ),
        // Speech: its text, no more tokens than bytes.
        Some(AudioRequest::Speech { text_bytes, .. }) => (*text_bytes, 0),
        None => (
            demand.prompt_tokens,
            audio::most_input_tokens(demand.prompt_audio_bytes),
        ),
    };
    let audio_output = if demand.audio_output && tokens.audio.is_some() {
        output
    } else {
        0
    };
    Usage {
        prompt_tokens: text_input.saturating_add(audio_input),
        audio_input_tokens: audio_input,
        completion_tokens: output,
        audio_output_tokens: audio_output,
        ..Usage::default()
    }
}

impl ModelPrice {
    /// The price of one image of the requested quality and size, `auto` and absent values
    /// resolved as [`images::per_image_price`] says.
    fn image_price(&self, images: &ImageRequest) -> Option<u64> {
        if let Some(flat) = self.flat_image {
            return Some(flat);
        }
        images::per_image_price(
            self.per_image
                .iter()
                .map(|(key, price)| (key.as_str(), *price)),
            images,
        )
    }
}

/// Tokens by class times their prices on `tier`, in nano-dollars; `None` for the priority tier
/// of a model without priority prices.
fn token_cost(price: &TokenPrice, usage: &Usage, tier: ServiceTier) -> Option<Nanos> {
    let (input, cached_input, output) = match (tier, price.long_context) {
        (ServiceTier::Priority, _) => {
            let priority = price.priority?;
            (priority.input, priority.cached_input, priority.output)
        }
        (_, Some(long)) if usage.prompt_tokens > long.above_prompt_tokens => {
            (long.input, long.cached_input, long.output)
        }
        _ => (price.input, price.cached_input, price.output),
    };
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    // Cached tokens by class, where the answer says (Realtime); the rest of them are text.
    let cached_audio = usage.cached_audio_tokens.min(cached);
    let cached_image = usage.cached_image_tokens.min(cached - cached_audio);
    let cached_text = cached - cached_audio - cached_image;
    let image_input = usage.image_input_tokens.min(usage.prompt_tokens - cached);
    let audio_input = usage
        .audio_input_tokens
        .min(usage.prompt_tokens - cached - image_input);
    let text_input = usage.prompt_tokens - cached - image_input - audio_input;
    let audio_output = usage.audio_output_tokens.min(usage.completion_tokens);
    let text_output = usage.completion_tokens - audio_output;
    let audio = match price.audio {
        Some(audio) => audio,
        None if audio_input == 0 && audio_output == 0 && cached_audio == 0 => AudioTokenPrice {
            input: 0,
            cached_input: None,
            output: 0,
            context_window: 0,
        },
        None => return None,
    };
    let image_price = price.image_input.unwrap_or(input);
    let picos = u128::from(text_input) * u128::from(input)
        + u128::from(cached_text) * u128::from(cached_input.unwrap_or(input))
        + u128::from(cached_audio) * u128::from(audio.cached_input.unwrap_or(audio.input))
        + u128::from(cached_image) * u128::from(price.cached_image_input.unwrap_or(image_price))
        + u128::from(image_input) * u128::from(image_price)
        + u128::from(audio_input) * u128::from(audio.input)
        + u128::from(text_output) * u128::from(output)
        + u128::from(audio_output) * u128::from(audio.output);
    // Flex and batch: half price, halved before the one rounding.
    let picos = match tier {
        ServiceTier::Flex | ServiceTier::Batch => picos / 2,
        ServiceTier::Standard | ServiceTier::Priority => picos,
    };
    Some(to_nanos(picos))
}

/// Audio of `millis` at `per_minute` micro-dollars a minute, in nano-dollars.
fn duration_cost(per_minute: u64, millis: u64) -> Nanos {
    to_nanos(u128::from(per_minute) * PICOS_PER_MICRO * u128::from(millis) / 60_000)
}

/// Pico-dollars to nano-dollars, rounded half up; saturates rather than wraps.
fn to_nanos(picos: u128) -> Nanos {
    Nanos::try_from((picos + PICOS_PER_NANO / 2) / PICOS_PER_NANO).unwrap_or(Nanos::MAX)
}

/// The model a snapshot is of (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`); any other name as
/// it is.
pub fn base_model(model: &str) -> &str {
    without_date_suffix(model).unwrap_or(model)
}

/// A snapshot's base model, as OpenAI names snapshots: `gpt-4o-mini-2024-07-18` →
/// `gpt-4o-mini`, `gpt-3.5-turbo-0125` → `gpt-3.5-turbo`; `None` when there is no
/// `-YYYY-MM-DD` or `-MMDD` suffix (a month 01–12 and a day 01–31).
fn without_date_suffix(model: &str) -> Option<&str> {
    let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    let month_day = |month: &str, day: &str| {
        digits(month)
            && digits(day)
            && matches!(month.parse::<u8>(), Ok(1..=12))
            && matches!(day.parse::<u8>(), Ok(1..=31))
    };
    if let Some((base, date)) = model
        .len()
        .checked_sub(11)
        .and_then(|at| model.split_at_checked(at))
        && let [b'-', ..] = date.as_bytes()
        && let Some((year, rest)) = date[1..].split_once('-')
        && let Some((month, day)) = rest.split_once('-')
        && year.len() == 4
        && digits(year)
        && month.len() == 2
        && day.len() == 2
        && month_day(month, day)
    {
        return Some(base);
    }
    let (base, date) = model.split_at_checked(model.len().checked_sub(5)?)?;
    let date = date.strip_prefix('-')?;
    (month_day(&date[..2], &date[2..]) && !base.is_empty()).then_some(base)
}

/// Nano-dollars as a decimal USD string (`x-tollgate-cost-usd: 0.000123`): six places at least,
/// and the seventh to ninth when they are not zero (`0.00000006` for 60 n$), so the figure is
/// exact and the common case reads as it always has.
pub fn format_usd(nanos: Nanos) -> String {
    decimal_usd(nanos, 6)
}

/// Nano-dollars for people (alert texts; the dashboard's `formatUsd` is the same format):
/// `$8.00`, `$0.000374`, `$1,234.56789`; cents at least, every further digit that is not zero,
/// never rounded.
pub fn display_usd(nanos: Nanos) -> String {
    let text = decimal_usd(nanos.unsigned_abs().try_into().unwrap_or(Nanos::MAX), 2);
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::with_capacity(text.len() + whole.len() / 3 + 2);
    if nanos < 0 {
        grouped.push('-');
    }
    grouped.push('$');
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped.push('.');
    grouped.push_str(fraction);
    grouped
}

/// `nanos` in dollars with `min_places` decimals at least and up to nine, trailing zeros beyond
/// `min_places` dropped.
fn decimal_usd(nanos: Nanos, min_places: usize) -> String {
    use std::fmt::Write as _;
    let abs = nanos.unsigned_abs();
    let (whole, mut fraction) = (abs / 1_000_000_000, abs % 1_000_000_000);
    let mut places = 9;
    while places > min_places && fraction % 10 == 0 {
        fraction /= 10;
        places -= 1;
    }
    let mut text = String::with_capacity(24);
    if nanos < 0 {
        text.push('-');
    }
    let _ = write!(text, "{whole}.{fraction:0places$}");
    text
}

/// USD (from configuration) to nano-dollars, rounded to the nearest.
pub fn usd_to_nanos(usd: f64) -> Nanos {
    // Configuration values are small and positive (validated by the callers); the cast is the
    // documented rounding step.
    #[expect(clippy::cast_possible_truncation, reason = "validated range")]
    let nanos = (usd * 1_000_000_000.0).round() as Nanos;
    nanos
}

/// USD per million tokens (or per image), as configuration gives prices, to the table's unit:
/// micro-dollars, rounded to the nearest.
pub fn usd_to_micros(usd: f64) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "validated range: 0 to 1,000,000 USD"
    )]
    let micros = (usd * 1_000_000.0).round() as u64;
    micros
}

#[cfg(test)]
mod tests;
