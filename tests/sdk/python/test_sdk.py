"""The official OpenAI Python SDK against a running Tollgate.

Run by `cargo test` (tests/it/sdk.rs), which starts the gateway and the mock upstream and
passes their addresses in the environment:

  TOLLGATE_BASE_URL     the gateway, e.g. http://127.0.0.1:PORT/v1
  TOLLGATE_KEY          a key allowed every model
  TOLLGATE_LIMITED_KEY  a key allowed only gpt-4o-mini
  TOLLGATE_ONE_PER_HOUR_KEY  a key whose own rule allows one chat request per hour
  TOLLGATE_MOCK_URL     the mock upstream's root, for scripting faults
  TOLLGATE_AZURE_MOCK_URL  a mock Azure OpenAI resource behind the aliases `pooled` (a pool
                        of the default upstream and Azure), `azure-only` and `azure-missing`

Needs the packages in requirements.txt (`openai`, and `websockets` for Realtime sessions).
"""

import json
import os
import unittest
import urllib.request

import openai
from openai import OpenAI

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
LIMITED_KEY = os.environ["TOLLGATE_LIMITED_KEY"]
ONE_PER_HOUR_KEY = os.environ["TOLLGATE_ONE_PER_HOUR_KEY"]
MOCK_URL = os.environ["TOLLGATE_MOCK_URL"]
AZURE_MOCK_URL = os.environ["TOLLGATE_AZURE_MOCK_URL"]
MESSAGES = [{"role": "user", "content": "echo: hello from the python sdk"}]


def fault(spec, mock=None):
    """Queue a fault on the mock upstream (or on `mock`)."""
    request = urllib.request.Request(
        (mock or MOCK_URL) + "/_mock/faults",
        data=json.dumps(spec).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).read()


def client(key=KEY):
    # No SDK retries: the gateway's own retries are under test, and errors must surface.
    return OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=20)


class PoolsAndAzure(unittest.TestCase):
    def test_a_pool_and_an_azure_deployment_answer_as_openai_does(self):
        for _ in range(4):
            completion = client().chat.completions.create(model="pooled", messages=MESSAGES)
            self.assertEqual(completion.object, "chat.completion")
            self.assertTrue(completion.choices[0].message.content)
        chunks = list(
            client().chat.completions.create(
                model="azure-only",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        self.assertEqual(chunks[-1].choices, [])
        self.assertGreater(chunks[-1].usage.total_tokens, 0)

    def test_a_missing_azure_deployment_is_not_found(self):
        with self.assertRaises(openai.NotFoundError) as raised:
            client().chat.completions.create(model="azure-missing", messages=MESSAGES)
        self.assertEqual(raised.exception.code, "model_not_found")

    def test_an_azure_content_filter_is_a_bad_request(self):
        fault({"status": 400, "code": "content_filter", "message": "filtered"}, AZURE_MOCK_URL)
        with self.assertRaises(openai.BadRequestError) as raised:
            client().chat.completions.create(model="azure-only", messages=MESSAGES)
        self.assertEqual(raised.exception.code, "content_filter")


class Realtime(unittest.TestCase):
    """`client.realtime.connect()`: the SDK dials ws://…/v1/realtime?model=… with the key in
    Authorization, as it would dial OpenAI."""

    def events_until(self, connection, kind):
        for event in connection:
            if event.type == kind:
                return event
        self.fail(f"the session ended before {kind}")

    def test_a_session_answers_as_openai_does_and_reports_usage(self):
        with client().realtime.connect(model="gpt-realtime") as connection:
            created = connection.recv()
            self.assertEqual(created.type, "session.created")
            self.assertEqual(created.session.model, "gpt-realtime-2025-08-28")
            connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
            self.events_until(connection, "session.updated")
            connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello from the python sdk"}],
                }
            )
            connection.response.create()
            done = self.events_until(connection, "response.done")
            self.assertEqual(done.response.status, "completed")
            self.assertEqual(done.response.usage.input_tokens, 789)
            self.assertEqual(done.response.usage.output_token_details.audio_tokens, 23)

    def test_switching_the_model_is_an_error_event_and_the_session_goes_on(self):
        with client().realtime.connect(model="gpt-realtime") as connection:
            connection.recv()
            connection.session.update(
                session={"type": "realtime", "model": "gpt-4o-realtime-preview"},
                event_id="evt_switch",
            )
            error = self.events_until(connection, "error")
            self.assertEqual(error.error.param, "session.model")
            self.assertEqual(error.error.event_id, "evt_switch")
            connection.response.create()
            self.events_until(connection, "response.done")

    def test_a_key_without_the_model_cannot_open_a_session(self):
        with self.assertRaises(Exception) as raised:
            with client(LIMITED_KEY).realtime.connect(model="gpt-realtime") as connection:
                connection.recv()
        self.assertIn("403", str(raised.exception))


class Chat(unittest.TestCase):
    def test_plain_completion(self):
        completion = client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(completion.object, "chat.completion")
        self.assertEqual(completion.choices[0].message.content, "hello from the python sdk")
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertEqual(completion.usage.completion_tokens, 5)
        self.assertEqual(completion.usage.total_tokens, completion.usage.prompt_tokens + 5)

    def test_stream_without_usage(self):
        chunks = list(client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, "hello from the python sdk")
        self.assertTrue(all(c.usage is None for c in chunks), "usage the caller did not ask for is hidden")

    def test_stream_with_usage(self):
        chunks = list(
            client().chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 5)

    def test_raw_response_headers(self):
        raw = client().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertTrue(raw.headers.get("x-request-id"))
        self.assertEqual(raw.parse().object, "chat.completion")

    def test_a_cut_stream_raises(self):
        fault({"cut_after_events": 3})
        with self.assertRaises(openai.APIError) as caught:
            for _ in client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                pass
        self.assertIn("ended the stream unexpectedly", str(caught.exception))


class OtherRoutes(unittest.TestCase):
    def test_embeddings_float_and_base64(self):
        # The SDK asks for base64 by default and decodes it.
        default = client().embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
        self.assertEqual(len(default.data), 2)
        self.assertEqual(len(default.data[0].embedding), 1536)
        self.assertEqual(default.usage.prompt_tokens, 3)
        floats = client().embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float", dimensions=8)
        self.assertEqual(len(floats.data[0].embedding), 8)

    def test_images(self):
        images = client().images.generate(model="dall-e-3", prompt="a lighthouse", n=1, size="1024x1024")
        self.assertTrue(images.data[0].url.startswith("https://"))
        b64 = client().images.generate(model="gpt-image-1", prompt="a lighthouse")
        self.assertTrue(b64.data[0].b64_json)
        self.assertEqual(b64.usage.input_tokens, 2)

    def test_models(self):
        ids = [m.id for m in client().models.list()]
        self.assertIn("gpt-4o-mini", ids)
        self.assertEqual(client().models.retrieve("gpt-4o").id, "gpt-4o")
        limited = [m.id for m in client(LIMITED_KEY).models.list()]
        self.assertEqual(limited, ["gpt-4o-mini"])

    def test_responses(self):
        response = client().responses.create(model="gpt-4o-mini", input="echo: one two three")
        self.assertEqual(response.output_text, "one two three")
        self.assertEqual(response.usage.output_tokens, 3)
        events = list(client().responses.create(model="gpt-4o-mini", input="echo: one two", stream=True))
        self.assertEqual(events[-1].type, "response.completed")
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(deltas, "one two")

    def test_audio_speech_and_transcription(self):
        speech = client().audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="hello")
        self.assertTrue(speech.content)
        self.assertEqual(speech.headers["x-tollgate-cost-usd"], "0.000075")
        streamed = client().audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hello", stream_format="sse")
        events = [json.loads(line[len("data: "):]) for line in streamed.iter_lines() if line.startswith("data: ")]
        self.assertEqual(events[-1]["type"], "speech.audio.done")
        text = client().audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"x" * 16_000))
        self.assertEqual(text.text, "The beach was a popular spot on a hot summer day.")
        self.assertEqual(text.usage.seconds, 1.0)
        tokens = client().audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("a.mp3", b"x" * 16_000))
        self.assertEqual(tokens.usage.input_token_details.audio_tokens, 17)
        plain = client().audio.translations.create(model="whisper-1", file=("a.mp3", b"x" * 1_000), response_format="text")
        self.assertTrue(plain.startswith("The beach"))

    def test_image_edits_and_variations(self):
        edited = client().images.edit(model="gpt-image-1", image=("a.png", b"png"), prompt="add a hat", n=2)
        self.assertEqual(len(edited.data), 2)
        varied = client().images.create_variation(image=("a.png", b"png"), n=1)
        self.assertTrue(varied.data[0].url.startswith("https://"))

    def test_moderations_pass_through(self):
        result = client().moderations.create(input="flag-me")
        self.assertTrue(result.results[0].flagged)


class TypedErrors(unittest.TestCase):
    def test_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client("tg-" + "0" * 43).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(caught.exception.code, "invalid_api_key")

    def test_bad_request_error_names_the_param(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().chat.completions.create(model="gpt-4o-mini", messages=[])
        self.assertEqual(caught.exception.param, "messages")

    def test_permission_denied_error(self):
        with self.assertRaises(openai.PermissionDeniedError):
            client(LIMITED_KEY).chat.completions.create(model="gpt-4o", messages=MESSAGES)

    def test_not_found_error_from_the_upstream(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            client().chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
        self.assertEqual(caught.exception.code, "model_not_found")

    def test_rate_limit_error_with_retry_after(self):
        fault({"status": 429, "retry_after": "60"})
        with self.assertRaises(openai.RateLimitError) as caught:
            client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(caught.exception.response.headers.get("retry-after"), "60")

    def test_rate_limit_error_from_tollgates_own_limit(self):
        limited = client(ONE_PER_HOUR_KEY)
        raw = limited.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(raw.headers.get("x-ratelimit-limit-requests"), "1")
        self.assertEqual(raw.headers.get("x-ratelimit-remaining-requests"), "0")
        with self.assertRaises(openai.RateLimitError) as caught:
            limited.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(caught.exception.code, "rate_limit_exceeded")
        retry_after = int(caught.exception.response.headers.get("retry-after"))
        self.assertTrue(3500 <= retry_after <= 3600, retry_after)

    def test_internal_server_error_for_upstream_failures(self):
        fault({"status": 500, "count": 4})
        with self.assertRaises(openai.InternalServerError) as caught:
            client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        self.assertEqual(caught.exception.status_code, 502)


if __name__ == "__main__":
    unittest.main(verbosity=2)
