//! Tests of `pricing`: costs by class, worst cases, tiers, audio, versions, formatting.
use super::*;

/// [`PriceTable::worst_case`] with the demand spelled out.
fn worst(
    table: &PriceTable,
    model: &str,
    prompt_tokens: u64,
    max_output: Option<u64>,
    choices: u64,
    images: Option<&ImageRequest>,
    tier: ServiceTier,
) -> Option<Nanos> {
    let demand = Demand {
        prompt_tokens,
        max_output,
        choices,
        asked: Asked {
            images,
            audio: None,
        },
        tier,
        ..Demand::default()
    };
    table.worst_case(model, &demand)
}

fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        ..Usage::default()
    }
}

#[test]
fn token_classes_are_priced_separately_and_rounded_once() {
    let table = PriceTable::builtin();
    // gpt-4o-mini: input $0.15, cached $0.075, output $0.60 per million.
    // 1,000 input (400 cached) + 500 output = 600×0.15 + 400×0.075 + 500×0.6 = 90 + 30 + 300
    // micro-dollars.
    assert_eq!(
        table.cost("gpt-4o-mini", &usage(1000, 400, 500), None),
        Some(420_000)
    );
    // 3 input tokens = 0.45 µ$, exactly 450 n$; one cached token 75 n$.
    assert_eq!(table.cost("gpt-4o-mini", &usage(3, 0, 0), None), Some(450));
    assert_eq!(table.cost("gpt-4o-mini", &usage(1, 1, 0), None), Some(75));
}

#[test]
fn a_million_tiny_calls_add_up_to_their_true_price() {
    // text-embedding-3-small at $0.02 per million: 3 tokens = 60 n$, and 1,000,000 of
    // them are exactly $0.06 (in micro-dollars each rounded to 0, they summed to $0.00).
    let table = PriceTable::builtin();
    let one = table
        .cost("text-embedding-3-small", &usage(3, 0, 0), None)
        .unwrap();
    assert_eq!(one, 60);
    let total: Nanos = (0..1_000_000).map(|_| one).sum();
    assert_eq!(format_usd(total), "0.060000");
    assert_eq!(total, usd_to_nanos(0.06));
}

#[test]
fn snapshots_take_their_base_models_price_and_unknown_models_are_unpriced() {
    let table = PriceTable::builtin();
    assert_eq!(
        table.cost("gpt-4o-mini-2024-07-18", &usage(1_000_000, 0, 0), None),
        Some(150_000_000)
    );
    assert_eq!(table.cost("my-finetune", &usage(10, 0, 10), None), None);
    assert_eq!(without_date_suffix("o3-2025-04-16"), Some("o3"));
    assert_eq!(without_date_suffix("gpt-4o"), None);
    assert_eq!(without_date_suffix("é-2024-07-18"), Some("é"));
    assert_eq!(
        without_date_suffix("gpt-3.5-turbo-0125"),
        Some("gpt-3.5-turbo")
    );
    assert_eq!(without_date_suffix("gpt-4-0613"), Some("gpt-4"));
    assert_eq!(without_date_suffix("o1-2099"), None, "not a month and day");
    assert_eq!(without_date_suffix("gpt-4-1399"), None);
    assert_eq!(without_date_suffix("-0613"), None);
    assert_eq!(
        table.cost("gpt-3.5-turbo-0125", &usage(1_000_000, 0, 0), None),
        Some(500_000_000),
        "a -MMDD snapshot takes its base model's price"
    );
}

#[test]
fn reasoning_is_output_and_long_prompts_take_the_long_context_tier() {
    let table = PriceTable::builtin();
    let reasoning = Usage {
        prompt_tokens: 0,
        completion_tokens: 1_000,
        reasoning_tokens: 800,
        ..Usage::default()
    };
    // o3: output $8 per million → 1,000 tokens = 8,000 µ$.
    assert_eq!(table.cost("o3", &reasoning, None), Some(8_000_000));
    // gpt-5.4: $2.50 input, above 272,000 prompt tokens $5.00.
    assert_eq!(
        table.cost("gpt-5.4", &usage(272_000, 0, 0), None),
        Some(680_000_000)
    );
    assert_eq!(
        table.cost("gpt-5.4", &usage(272_001, 0, 0), None),
        Some(1_360_005_000)
    );
}

#[test]
fn images_are_priced_each_or_by_tokens() {
    let table = PriceTable::builtin();
    let hd_wide = ImageRequest {
        count: 2,
        size: Some("1792x1024".into()),
        quality: Some("hd".into()),
    };
    assert_eq!(
        table.cost("dall-e-3", &Usage::default(), Some(&hd_wide)),
        Some(240_000_000)
    );
    let default = ImageRequest {
        count: 1,
        ..ImageRequest::default()
    };
    assert_eq!(
        table.cost("dall-e-2", &Usage::default(), Some(&default)),
        Some(20_000_000)
    );
    // gpt-image-1: text in $5, image in $10, image out $40 per million tokens.
    let tokens = Usage {
        prompt_tokens: 50,
        image_input_tokens: 10,
        completion_tokens: 4160,
        ..Usage::default()
    };
    assert_eq!(
        table.cost("gpt-image-1", &tokens, Some(&default)),
        Some((40 * 5 + 10 * 10 + 4160 * 40) * 1_000)
    );
    // An unknown size of a per-image model is unpriced, not free.
    let odd = ImageRequest {
        count: 1,
        size: Some("7x7".into()),
        quality: None,
    };
    assert_eq!(table.cost("dall-e-3", &Usage::default(), Some(&odd)), None);
}

#[test]
fn worst_case_uses_the_maximum_output() {
    let table = PriceTable::builtin();
    assert_eq!(
        worst(
            &table,
            "gpt-4o-mini",
            1000,
            Some(100),
            1,
            None,
            ServiceTier::Standard
        ),
        Some((150 + 60) * 1_000)
    );
    // No maximum in the request: the model's own (16,384 for gpt-4o-mini), per choice.
    assert_eq!(
        worst(
            &table,
            "gpt-4o-mini",
            0,
            None,
            1,
            None,
            ServiceTier::Standard
        ),
        Some(9_830_400)
    );
    assert_eq!(
        worst(
            &table,
            "gpt-4o-mini",
            0,
            None,
            3,
            None,
            ServiceTier::Standard
        ),
        Some(29_491_200)
    );
    // A maximum above the model's limit cannot be reached.
    assert_eq!(
        worst(
            &table,
            "gpt-4o-mini",
            0,
            Some(10_000_000),
            1,
            None,
            ServiceTier::Standard
        ),
        Some(9_830_400)
    );
    // gpt-5 had no limit in models.dev: 128,000 × $10 per million.
    assert_eq!(
        worst(&table, "gpt-5", 0, None, 1, None, ServiceTier::Standard),
        Some(1_280_000_000)
    );
    assert_eq!(
        worst(&table, "unknown", 10, None, 1, None, ServiceTier::Standard),
        None
    );
}

#[test]
fn image_worst_cases_take_the_count_and_the_dearest_resolvable_choice() {
    let table = PriceTable::builtin();
    let ask = |count, quality: Option<&str>, size: Option<&str>| ImageRequest {
        count,
        quality: quality.map(str::to_owned),
        size: size.map(str::to_owned),
    };
    // gpt-image-1, 10 high-quality images of the default size: 10 × 6,240 × $40 per
    // million, plus 10 prompt tokens at $5 per million.
    assert_eq!(
        worst(
            &table,
            "gpt-image-1",
            10,
            None,
            1,
            Some(&ask(10, Some("high"), None)),
            ServiceTier::Standard
        ),
        Some((10 * 6_240 * 40 + 10 * 5) * 1_000)
    );
    assert_eq!(
        worst(
            &table,
            "gpt-image-1",
            0,
            None,
            1,
            Some(&ask(2, Some("low"), Some("1024x1024"))),
            ServiceTier::Standard
        ),
        Some(2 * 272 * 40 * 1_000)
    );
    // dall-e-3 with quality auto (the API's default): the dearest quality, hd.
    assert_eq!(
        worst(
            &table,
            "dall-e-3",
            0,
            None,
            1,
            Some(&ask(1, Some("auto"), None)),
            ServiceTier::Standard
        ),
        Some(80_000_000)
    );
    assert_eq!(
        table.cost(
            "dall-e-3",
            &Usage::default(),
            Some(&ask(1, Some("auto"), None))
        ),
        Some(80_000_000)
    );
}

#[test]
fn flex_and_batch_are_half_price_and_priority_has_its_own_or_none() {
    let table = PriceTable::builtin();
    let tokens = usage(1_000, 0, 1_000);
    let at = |model, tier| table.cost_at(model, &tokens, Asked::default(), tier);
    // o3: $2 in, $8 out per million: 2,000 + 8,000 µ$ standard, half on flex and batch.
    assert_eq!(at("o3", ServiceTier::Standard), Some(10_000_000));
    assert_eq!(at("o3", ServiceTier::Flex), Some(5_000_000));
    assert_eq!(at("o3", ServiceTier::Batch), Some(5_000_000));
    // gpt-5.4's priority prices (models.dev's fast mode): $5 in, $30 out.
    assert_eq!(at("gpt-5.4", ServiceTier::Priority), Some(35_000_000));
    assert_eq!(at("gpt-5.4", ServiceTier::Standard), Some(17_500_000));
    // No priority prices known for o3: unpriced, never the standard price; held at twice
    // the standard price, so asking for priority cannot slip a call past a budget.
    assert_eq!(at("o3", ServiceTier::Priority), None);
    assert_eq!(
        worst(
            &table,
            "o3",
            1_000,
            Some(1_000),
            1,
            None,
            ServiceTier::Priority
        ),
        Some(20_000_000)
    );
    assert_eq!(
        worst(
            &table,
            "gpt-5.4",
            1_000,
            Some(1_000),
            1,
            None,
            ServiceTier::Priority
        ),
        Some(35_000_000)
    );
    assert_eq!(
        worst(&table, "o3", 1_000, Some(1_000), 1, None, ServiceTier::Flex),
        Some(10_000_000),
        "flex is held at the standard price"
    );
    assert_eq!(ServiceTier::parse(Some("scale")), ServiceTier::Standard);
}

#[test]
fn audio_is_priced_by_the_minute_the_character_or_the_token_class() {
    let table = PriceTable::builtin();
    let speech = AudioRequest::Speech {
        characters: 1_000,
        text_bytes: 1_200,
    };
    let upload = AudioRequest::Transcription {
        upload_bytes: 75_000,
    };
    let at = |model, usage: &Usage, audio: &AudioRequest| {
        let asked = Asked {
            images: None,
            audio: Some(audio),
        };
        table.cost_at(model, usage, asked, ServiceTier::Standard)
    };
    // whisper-1: $0.006 a minute, by the millisecond: 8.471 s = 847.1 µ$.
    let heard = Usage {
        audio_millis: 8_471,
        ..Usage::default()
    };
    assert_eq!(at("whisper-1", &heard, &upload), Some(847_100));
    assert_eq!(
        at("whisper-1", &Usage::default(), &upload),
        None,
        "no length reported: unknown, never free"
    );
    // tts-1: $15 per million characters; tts-1-hd $30.
    assert_eq!(at("tts-1", &Usage::default(), &speech), Some(15_000_000));
    assert_eq!(at("tts-1-hd", &Usage::default(), &speech), Some(30_000_000));
    // gpt-4o-transcribe: text in $2.50, audio in $6, out $10 per million.
    let transcribed = Usage {
        prompt_tokens: 1_010,
        audio_input_tokens: 1_000,
        completion_tokens: 200,
        ..Usage::default()
    };
    assert_eq!(
        at("gpt-4o-transcribe", &transcribed, &upload),
        Some(10 * 2_500 + 1_000 * 6_000 + 200 * 10_000)
    );
    // gpt-audio: text $2.50/$10, audio $32/$64 per million.
    let spoken = Usage {
        prompt_tokens: 300,
        audio_input_tokens: 200,
        completion_tokens: 500,
        audio_output_tokens: 400,
        ..Usage::default()
    };
    assert_eq!(
        table.cost("gpt-audio", &spoken, None),
        Some(100 * 2_500 + 200 * 32_000 + 100 * 10_000 + 400 * 64_000)
    );
    // Audio tokens from a model without audio prices: unpriced, not priced as text.
    assert_eq!(table.cost("gpt-4o", &spoken, None), None);
    // Speech from a token model answered as raw audio reports no usage: unknown, not free.
    assert_eq!(at("gpt-4o-mini-tts", &Usage::default(), &speech), None);
    assert_eq!(at("gpt-4o-transcribe", &Usage::default(), &upload), None);
}

#[test]
fn audio_worst_cases_follow_the_upload_the_text_or_the_context() {
    let table = PriceTable::builtin();
    fn demand(audio: &AudioRequest) -> Demand<'_> {
        Demand {
            asked: Asked {
                images: None,
                audio: Some(audio),
            },
            ..Demand::default()
        }
    }
    // A 75,000-byte upload holds at most 100 s (at 6 kbit/s): $0.01 on whisper-1.
    let upload = AudioRequest::Transcription {
        upload_bytes: 75_000,
    };
    assert_eq!(
        table.worst_case("whisper-1", &demand(&upload)),
        Some(10_000_000)
    );
    // gpt-4o-transcribe: 2,000 audio tokens (20 a second) at $6, plus 2,000 output at $10.
    assert_eq!(
        table.worst_case("gpt-4o-transcribe", &demand(&upload)),
        Some(2_000 * 6_000 + 2_000 * 10_000)
    );
    // A large upload is capped at the model's 16,000-token context.
    let large = AudioRequest::Transcription {
        upload_bytes: 25 << 20,
    };
    assert_eq!(
        table.worst_case("gpt-4o-transcribe", &demand(&large)),
        Some(16_000 * 6_000 + 2_000 * 10_000)
    );
    let speech = AudioRequest::Speech {
        characters: 1_000,
        text_bytes: 1_200,
    };
    assert_eq!(
        table.worst_case("tts-1", &demand(&speech)),
        Some(15_000_000)
    );
    // gpt-4o-mini-tts: the text's bytes at $0.60, 16,384 audio tokens at $12.
    assert_eq!(
        table.worst_case("gpt-4o-mini-tts", &demand(&speech)),
        Some(1_200 * 600 + 16_384 * 12_000)
    );
    // A chat that may speak is held at the audio output price; its input audio as tokens.
    let chat = Demand {
        prompt_tokens: 100,
        max_output: Some(1_000),
        prompt_audio_bytes: 7_500,
        audio_output: true,
        ..Demand::default()
    };
    assert_eq!(
        table.worst_case("gpt-audio", &chat),
        Some(100 * 2_500 + 200 * 32_000 + 1_000 * 64_000)
    );
    // Whisper asked for anything but a transcription has no price to hold.
    assert_eq!(table.worst_case("whisper-1", &Demand::default()), None);
}

#[test]
fn the_version_names_the_builtin_table_and_any_overrides() {
    let builtin = PriceTable::builtin();
    assert!(builtin.version().starts_with("builtin-"));
    assert_eq!(
        PriceTable::with_overrides(&HashMap::new()).version(),
        builtin.version()
    );
    let price = |output| ModelPrice {
        tokens: Some(TokenPrice {
            input: 1,
            cached_input: None,
            output,
            image_input: None,
            cached_image_input: None,
            long_context: None,
            max_output_tokens: 10,
            priority: None,
            audio: None,
        }),
        ..ModelPrice::default()
    };
    let one = PriceTable::with_overrides(&HashMap::from([("m".to_owned(), price(2))]));
    let other = PriceTable::with_overrides(&HashMap::from([("m".to_owned(), price(3))]));
    assert!(
        one.version()
            .starts_with(&format!("{}+config-", builtin.version()))
    );
    assert_ne!(
        one.version(),
        other.version(),
        "a changed price is a new version"
    );
    assert!(one.is_overridden("m") && !one.is_overridden("gpt-4o"));
}

#[test]
fn usd_formats_with_six_places_or_as_many_as_it_takes() {
    assert_eq!(format_usd(420_000), "0.000420");
    assert_eq!(format_usd(12_345_678_000), "12.345678");
    assert_eq!(format_usd(-5_000), "-0.000005");
    assert_eq!(format_usd(60), "0.00000006");
    assert_eq!(format_usd(1_000_000_001), "1.000000001");
    assert_eq!(format_usd(0), "0.000000");
    assert_eq!(usd_to_nanos(0.15), 150_000_000);
    assert_eq!(usd_to_micros(0.15), 150_000);
}

#[test]
fn usd_for_people_shows_cents_and_every_digit_that_matters() {
    assert_eq!(display_usd(8_000_000_000), "$8.00");
    assert_eq!(display_usd(8_500_000_000), "$8.50");
    assert_eq!(display_usd(374_000), "$0.000374");
    assert_eq!(display_usd(1_234_567_890), "$1.23456789");
    assert_eq!(display_usd(60), "$0.00000006");
    assert_eq!(display_usd(0), "$0.00");
    assert_eq!(display_usd(-5_000), "-$0.000005");
    assert_eq!(display_usd(1_234_000_000_000), "$1,234.00");
    assert_eq!(display_usd(-1_234_567_000_000_000), "-$1,234,567.00");
}

#[test]
fn a_realtime_response_is_priced_by_every_class_cached_and_not() {
    // A `response.done` event: 313 text tokens in (256 cached), 476 audio (384 cached), 9 text
    // and 23 audio out. Realtime counts cached tokens inside each class.
    let done = br#"{"type":"response.done","response":{"object":"realtime.response","usage":{"total_tokens":821,"input_tokens":789,"output_tokens":32,"input_token_details":{"text_tokens":313,"audio_tokens":476,"cached_tokens":640,"cached_tokens_details":{"text_tokens":256,"audio_tokens":384}},"output_token_details":{"text_tokens":9,"audio_tokens":23}}}}"#;
    let usage = crate::openai::usage::from_json(done).unwrap();
    assert_eq!(
        (
            usage.audio_input_tokens,
            usage.cached_audio_tokens,
            usage.cached_tokens
        ),
        (92, 384, 640)
    );
    let table = PriceTable::builtin();
    // gpt-realtime: text $4 (cached $0.40), audio $32 (cached $0.40), out $16 text, $64 audio.
    // 57×4 + 256×0.40 + 92×32 + 384×0.40 + 9×16 + 23×64 = 5,044 millionths of a dollar.
    assert_eq!(table.cost("gpt-realtime", &usage, None), Some(5_044_000));
    // gpt-realtime-mini: cached audio ($0.30) is not cached text ($0.06).
    // 57×0.60 + 256×0.06 + 92×10 + 384×0.30 + 9×2.40 + 23×20 = 1,566.36 millionths.
    assert_eq!(
        table.cost("gpt-realtime-mini", &usage, None),
        Some(1_566_360)
    );
    // Cached images have their own price too: 100 image tokens in, 60 of them cached.
    let images = br#"{"type":"response.done","response":{"usage":{"input_tokens":100,"output_tokens":0,"input_token_details":{"image_tokens":100,"cached_tokens":60,"cached_tokens_details":{"image_tokens":60}}}}}"#;
    let usage = crate::openai::usage::from_json(images).unwrap();
    // 40×5 + 60×0.50 = 230 millionths.
    assert_eq!(table.cost("gpt-realtime", &usage, None), Some(230_000));
}

#[test]
fn an_answer_that_does_not_split_its_cached_tokens_is_priced_as_before() {
    // Chat's spelling: cached tokens are text unless the answer says otherwise.
    let chat = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":400,"audio_tokens":100}}}"#;
    let usage = crate::openai::usage::from_json(chat).unwrap();
    assert_eq!(
        (usage.cached_audio_tokens, usage.audio_input_tokens),
        (0, 100)
    );
    // gpt-realtime: 500 text × 4 + 400 cached × 0.40 + 100 audio × 32 + 10 × 16.
    assert_eq!(
        PriceTable::builtin().cost("gpt-realtime", &usage, None),
        Some(2_000_000 + 160_000 + 3_200_000 + 160_000)
    );
}

#[test]
fn a_realtime_responses_worst_case_is_its_context_and_most_output_at_the_dearest_class() {
    let table = PriceTable::builtin();
    // gpt-realtime: 32,000 audio tokens in at $32 and 4,096 audio out at $64 per million.
    assert_eq!(
        table.realtime_worst_case("gpt-realtime"),
        Some(1_286_144_000)
    );
    // gpt-realtime-mini: 128,000 at $10 and 4,096 at $20.
    assert_eq!(
        table.realtime_worst_case("gpt-realtime-mini"),
        Some(1_361_920_000)
    );
    // A model without audio prices has no context window here: no worst case for a session.
    assert_eq!(table.realtime_worst_case("gpt-4o-mini"), None);
    assert_eq!(table.realtime_worst_case("my-voice-model"), None);
}
