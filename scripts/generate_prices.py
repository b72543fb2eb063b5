#!/usr/bin/env python3
"""Generates src/pricing/builtin.rs, Tollgate's built-in price table.

Token prices come from models.dev's OpenAI provider files (one TOML per model, USD per million
tokens: `[cost] input`, `output`, `cache_read`, optional long-context `tiers`; `[limit] output`).
Image and audio prices are not in those files; they are written below from OpenAI's published
prices: DALL·E per image by quality and size, GPT image models per token class, audio models per
token class (audio apart), whisper-1 per minute and tts-1 per character.

Usage: python3 scripts/generate_prices.py PATH/TO/models-dev-openai "SOURCE NOTE" > src/pricing/builtin.rs
(for this repository: ../shared/reference/models-dev-openai, "anomalyco/models.dev commit f3fc692, 2026-07-02")
"""

import hashlib
import os
import sys
import tomllib

# GPT image models: USD per million tokens by class (OpenAI's pricing page, checked 2026-11-23):
# text input, cached text input, image input, image output.
IMAGE_TOKEN_MODELS = {
    "gpt-image-1": dict(input=5.00, cached_input=1.25, image_input=10.00, output=40.00),
    "gpt-image-1-mini": dict(input=2.00, cached_input=0.20, image_input=2.50, output=8.00),
    "gpt-image-1.5": dict(input=5.00, cached_input=1.25, image_input=8.00, output=32.00),
}

# Audio models: USD per million tokens (OpenAI's model pages, checked 2026-12-03): text input,
# text output, audio input, audio output, and the context window (a transcription's audio tokens
# can be no more). gpt-4o-mini-tts reports its output as plain output tokens, all of them audio,
# so its output price is the audio one and it has no audio class. The Realtime models (their
# model pages, checked 2026-12-04) add cached text, cached audio, image and cached image input:
# their answers split cached tokens by class (`cached_tokens_details`).
AUDIO_TOKEN_MODELS = {
    "gpt-audio": dict(input=2.50, output=10.00, audio_input=32.00, audio_output=64.00, context=128_000),
    "gpt-audio-mini": dict(input=0.60, output=2.40, audio_input=10.00, audio_output=20.00, context=128_000),
    "gpt-4o-audio-preview": dict(input=2.50, output=10.00, audio_input=40.00, audio_output=80.00, context=128_000),
    "gpt-4o-audio-preview-2024-10-01": dict(input=2.50, output=10.00, audio_input=100.00, audio_output=200.00,
                                            context=128_000),
    "gpt-4o-mini-audio-preview": dict(input=0.15, output=0.60, audio_input=10.00, audio_output=20.00, context=128_000),
    "gpt-4o-transcribe": dict(input=2.50, output=10.00, audio_input=6.00, audio_output=10.00, context=16_000),
    "gpt-4o-mini-transcribe": dict(input=1.25, output=5.00, audio_input=3.00, audio_output=5.00, context=16_000),
    "gpt-4o-mini-tts": dict(input=0.60, output=12.00),
    "gpt-realtime": dict(input=4.00, cached_input=0.40, output=16.00, audio_input=32.00, cached_audio_input=0.40,
                         audio_output=64.00, image_input=5.00, cached_image_input=0.50, context=32_000),
    "gpt-realtime-1.5": dict(input=4.00, cached_input=0.40, output=16.00, audio_input=32.00,
                             cached_audio_input=0.40, audio_output=64.00, image_input=5.00, cached_image_input=0.50,
                             context=32_000),
    "gpt-realtime-mini": dict(input=0.60, cached_input=0.06, output=2.40, audio_input=10.00, cached_audio_input=0.30,
                              audio_output=20.00, image_input=0.80, cached_image_input=0.08, context=128_000),
    "gpt-4o-realtime-preview": dict(input=5.00, cached_input=2.50, output=20.00, audio_input=40.00,
                                    cached_audio_input=2.50, audio_output=80.00, context=32_000),
    "gpt-4o-mini-realtime-preview": dict(input=0.60, cached_input=0.30, output=2.40, audio_input=10.00,
                                         cached_audio_input=0.30, audio_output=20.00, context=16_000),
}

# Audio billed by the minute of input (USD per minute) or by the character of input text (USD per
# million characters), as OpenAI publishes them.
DURATION_MODELS = {"whisper-1": 0.006}
CHARACTER_MODELS = {"tts-1": 15.00, "tts-1-hd": 30.00}

# DALL·E: USD per image by (quality, size), as OpenAI publishes them.
PER_IMAGE_MODELS = {
    "dall-e-3": [("standard", "1024x1024", 0.040), ("standard", "1024x1792", 0.080), ("standard", "1792x1024", 0.080),
                 ("hd", "1024x1024", 0.080), ("hd", "1024x1792", 0.120), ("hd", "1792x1024", 0.120)],
    "dall-e-2": [("standard", "256x256", 0.016), ("standard", "512x512", 0.018), ("standard", "1024x1024", 0.020)],
}


# Output limits (tokens) for priced models whose models.dev file gives none, from OpenAI's model
# pages. A budget reserves a request's worst case; a request that sets no maximum can produce up
# to this many, so every priced model must have one: the script fails when one is missing.
# GPT image models: the most output tokens one image can take (high quality, 1024x1536; see
# src/pricing/images.rs), since their "output" is images.
# Audio models from their model pages; gpt-4o-mini-tts publishes none: held at 16,384 audio tokens
# (about 13 minutes of speech, more than its 4,096-character input can make).
OUTPUT_LIMITS = {
    "gpt-5": 128_000,
    "gpt-audio": 16_384,
    "gpt-audio-mini": 16_384,
    "gpt-4o-audio-preview": 16_384,
    "gpt-4o-audio-preview-2024-10-01": 16_384,
    "gpt-4o-mini-audio-preview": 16_384,
    "gpt-4o-transcribe": 2_000,
    "gpt-4o-mini-transcribe": 2_000,
    "gpt-4o-mini-tts": 16_384,
    "gpt-image-1": 6_240,
    "gpt-image-1-mini": 6_240,
    "gpt-image-1.5": 6_240,
    "gpt-image-2": 6_240,
    "gpt-realtime": 4_096,
    "gpt-realtime-1.5": 4_096,
    "gpt-realtime-mini": 4_096,
    "gpt-4o-realtime-preview": 4_096,
    "gpt-4o-mini-realtime-preview": 4_096,
}


def micros(usd):
    """USD (per million tokens, or per image) to integer micro-dollars, exactly."""
    return round(usd * 1_000_000)


def option(value):
    return "None" if value is None else f"Some({value:_})"


def output_limit(model_id, model):
    limit = model.get("limit", {}).get("output") or OUTPUT_LIMITS.get(model_id)
    if not limit:
        sys.exit(f"{model_id}: no output limit in models.dev or OUTPUT_LIMITS; add it to OUTPUT_LIMITS")
    return limit


def priority_price(model):
    """The priority tier's prices: models.dev's `fast` mode, where it sends service_tier=priority."""
    fast = model.get("experimental", {}).get("modes", {}).get("fast", {})
    if fast.get("provider", {}).get("body", {}).get("service_tier") != "priority":
        return "None"
    cost = fast["cost"]
    cached = cost.get("cache_read")
    return (f"Some(TierPrice {{ input: {micros(cost['input']):_}, "
            f"cached_input: {option(micros(cached) if cached else None)}, output: {micros(cost['output']):_} }})")


def token_price(cost, output_limit, image_input=None, priority="None", audio="None", cached_image_input=None):
    cached = cost.get("cache_read") or cost.get("cached_input")
    tier = None
    for t in cost.get("tiers", []):
        tier = (t["tier"]["size"], micros(t["input"]), micros(t["cache_read"]) if t.get("cache_read") else None,
                micros(t["output"]))
    long_context = "None" if tier is None else (
        f"Some(LongContext {{ above_prompt_tokens: {tier[0]:_}, input: {tier[1]:_}, "
        f"cached_input: {option(tier[2])}, output: {tier[3]:_} }})")
    return (f"TokenPrice {{ input: {micros(cost['input']):_}, cached_input: {option(micros(cached) if cached else None)}, "
            f"output: {micros(cost.get('output', 0)):_}, image_input: {option(micros(image_input) if image_input else None)}, "
            f"cached_image_input: {option(micros(cached_image_input) if cached_image_input else None)}, "
            f"long_context: {long_context}, max_output_tokens: {output_limit:_}, priority: {priority}, "
            f"audio: {audio} }}")


def audio_price(p):
    if "audio_input" not in p:
        return "None"
    cached = p.get("cached_audio_input")
    return (f"Some(AudioTokenPrice {{ input: {micros(p['audio_input']):_}, "
            f"cached_input: {option(micros(cached) if cached else None)}, output: {micros(p['audio_output']):_}, "
            f"context_window: {p['context']:_} }})")


def main():
    folder, source = sys.argv[1], sys.argv[2]
    tokens = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".toml"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            model = tomllib.load(f)
        cost = model.get("cost")
        model_id = name[: -len(".toml")]
        if not cost or model_id in IMAGE_TOKEN_MODELS:
            continue
        tokens[model_id] = token_price(cost, output_limit(model_id, model), priority=priority_price(model))
    for model_id, p in IMAGE_TOKEN_MODELS.items():
        tokens[model_id] = token_price(dict(input=p["input"], cache_read=p["cached_input"], output=p["output"]),
                                       output_limit(model_id, {}), image_input=p["image_input"])
    for model_id, p in AUDIO_TOKEN_MODELS.items():
        tokens[model_id] = token_price(dict(input=p["input"], cache_read=p.get("cached_input"), output=p["output"]),
                                       output_limit(model_id, {}), image_input=p.get("image_input"),
                                       audio=audio_price(p), cached_image_input=p.get("cached_image_input"))
    table = ["/// Models priced by token class, sorted by id.",
             "pub(super) const TOKEN_PRICES: &[(&str, TokenPrice)] = &["]
    table += [f'    ("{model_id}", {tokens[model_id]}),' for model_id in sorted(tokens)]
    table += ["];", "", "/// Models priced per image by quality and size.",
              "pub(super) const IMAGE_PRICES: &[(&str, &[ImagePrice])] = &["]
    for model_id in sorted(PER_IMAGE_MODELS):
        table.append(f'    ("{model_id}", &[')
        for quality, size, usd in PER_IMAGE_MODELS[model_id]:
            table.append(f'        ImagePrice {{ quality: "{quality}", size: "{size}", price: {micros(usd):_} }},')
        table.append("    ]),")
    table.append("];")
    table += ["", "/// Models priced per minute of input audio (micro-dollars).",
              "pub(super) const DURATION_PRICES: &[(&str, u64)] = &["]
    table += [f'    ("{m}", {micros(usd):_}),' for m, usd in sorted(DURATION_MODELS.items())]
    table += ["];", "", "/// Models priced per million characters of input text (micro-dollars).",
              "pub(super) const CHARACTER_PRICES: &[(&str, u64)] = &["]
    table += [f'    ("{m}", {micros(usd):_}),' for m, usd in sorted(CHARACTER_MODELS.items())]
    table.append("];")
    body = "\n".join(table)
    version = "builtin-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    print(f"//! The built-in price table. Generated by `scripts/generate_prices.py` from {source}")
    print("//! (token prices) and OpenAI's published image and audio prices; do not edit by hand, regenerate.")
    print("//! Prices are micro-dollars per million tokens, per image, per minute or per million characters.")
    print()
    print("use super::{AudioTokenPrice, ImagePrice, LongContext, TierPrice, TokenPrice};")
    print()
    print("/// This table's version: a digest of its prices, named in every record it priced.")
    print(f'pub(super) const VERSION: &str = "{version}";')
    print()
    print(body)


if __name__ == "__main__":
    main()
