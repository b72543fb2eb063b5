// The official OpenAI Node SDK against a running Tollgate. Run by `cargo test`
// (tests/it/sdk.rs), which starts the gateway and the mock and sets TOLLGATE_BASE_URL,
// TOLLGATE_KEY, TOLLGATE_LIMITED_KEY and TOLLGATE_MOCK_URL, and TOLLGATE_TLS_BASE_URL with
// TOLLGATE_TLS_CA: nginx terminating TLS in front of the gateway (the SDK's Realtime client
// dials only wss://). See README.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const {
  TOLLGATE_BASE_URL: baseURL,
  TOLLGATE_KEY: key,
  TOLLGATE_LIMITED_KEY: limitedKey,
  TOLLGATE_ONE_PER_HOUR_KEY: onePerHourKey,
  TOLLGATE_MOCK_URL: mockURL,
  TOLLGATE_AZURE_MOCK_URL: azureMockURL,
  TOLLGATE_TLS_BASE_URL: tlsBaseURL,
  TOLLGATE_TLS_CA: tlsCA,
} = process.env;
const messages = [{ role: 'user', content: 'echo: hello from the node sdk' }];

// No SDK retries: the gateway's own retries are under test, and errors must surface.
const client = (apiKey = key) => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });

async function fault(spec, mock = mockURL) {
  const response = await fetch(`${mock}/_mock/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(spec),
  });
  assert.equal(response.status, 200);
}

test('chat completion', async () => {
  const completion = await client().chat.completions.create({ model: 'gpt-4o-mini', messages });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.choices[0].message.content, 'hello from the node sdk');
  assert.equal(completion.usage.completion_tokens, 5);
});

test('chat stream without usage hides the usage chunk', async () => {
  const stream = await client().chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
  let text = '';
  for await (const chunk of stream) {
    assert.ok(!chunk.usage, 'no usage the caller did not ask for');
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, 'hello from the node sdk');
});

test('chat stream with usage ends with the usage chunk', async () => {
  const stream = await client().chat.completions.create({
    model: 'gpt-4o-mini',
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 5);
});

test('a cut stream throws APIError', async () => {
  await fault({ cut_after_events: 3 });
  const stream = await client().chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
  await assert.rejects(
    async () => {
      for await (const _ of stream);
    },
    (error) => error instanceof OpenAI.APIError && /ended the stream unexpectedly/.test(error.message),
  );
});

test('embeddings, float and base64', async () => {
  const embeddings = await client().embeddings.create({ model: 'text-embedding-3-small', input: ['a b', 'c'] });
  assert.equal(embeddings.data.length, 2);
  assert.equal(embeddings.data[0].embedding.length, 1536);
  const floats = await client().embeddings.create({
    model: 'text-embedding-3-small',
    input: 'x',
    encoding_format: 'float',
    dimensions: 8,
  });
  assert.equal(floats.data[0].embedding.length, 8);
});

test('images', async () => {
  const images = await client().images.generate({ model: 'dall-e-3', prompt: 'a lighthouse' });
  assert.match(images.data[0].url, /^https:\/\//);
});

test('audio: speech and transcriptions (the file first, as this SDK sends it)', async () => {
  const speech = await client().audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'hello' });
  assert.equal(speech.headers.get('x-tollgate-cost-usd'), '0.000075');
  assert.ok((await speech.arrayBuffer()).byteLength > 0);
  const file = await OpenAI.toFile(Buffer.alloc(16_000, 120), 'a.mp3');
  const heard = await client().audio.transcriptions.create({ file, model: 'whisper-1' });
  assert.equal(heard.text, 'The beach was a popular spot on a hot summer day.');
  assert.equal(heard.usage.seconds, 1);
});

test('images: edits and variations', async () => {
  const image = await OpenAI.toFile(Buffer.from('png'), 'a.png');
  const edited = await client().images.edit({ model: 'gpt-image-1', image, prompt: 'add a hat', n: 2 });
  assert.equal(edited.data.length, 2);
  const varied = await client().images.createVariation({ image: await OpenAI.toFile(Buffer.from('png'), 'b.png') });
  assert.match(varied.data[0].url, /^https:\/\//);
});

test('models, filtered per key', async () => {
  const all = [];
  for await (const model of client().models.list()) all.push(model.id);
  assert.ok(all.includes('gpt-4o-mini'));
  const limited = [];
  for await (const model of client(limitedKey).models.list()) limited.push(model.id);
  assert.deepEqual(limited, ['gpt-4o-mini']);
  assert.equal((await client().models.retrieve('gpt-4o')).id, 'gpt-4o');
});

test('responses, plain and streamed', async () => {
  const response = await client().responses.create({ model: 'gpt-4o-mini', input: 'echo: one two three' });
  assert.equal(response.output_text, 'one two three');
  const stream = await client().responses.create({ model: 'gpt-4o-mini', input: 'echo: one two', stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.equal(types.at(-1), 'response.completed');
});

test('a pool and an Azure deployment answer as OpenAI does', async () => {
  for (let i = 0; i < 4; i++) {
    const completion = await client().chat.completions.create({ model: 'pooled', messages });
    assert.equal(completion.object, 'chat.completion');
  }
  const stream = await client().chat.completions.create({
    model: 'azure-only', messages, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.at(-1).usage.total_tokens > 0);
});

test('a missing Azure deployment is NotFoundError, a content filter BadRequestError', async () => {
  await assert.rejects(client().chat.completions.create({ model: 'azure-missing', messages }), (e) => {
    return e instanceof OpenAI.NotFoundError && e.code === 'model_not_found';
  });
  await fault({ status: 400, code: 'content_filter', message: 'filtered' }, azureMockURL);
  await assert.rejects(client().chat.completions.create({ model: 'azure-only', messages }), (e) => {
    return e instanceof OpenAI.BadRequestError && e.code === 'content_filter';
  });
});

test('AuthenticationError', async () => {
  await assert.rejects(client('tg-' + '0'.repeat(43)).chat.completions.create({ model: 'gpt-4o-mini', messages }), (e) => {
    return e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key';
  });
});

test('BadRequestError names the param', async () => {
  await assert.rejects(client().chat.completions.create({ model: 'gpt-4o-mini', messages: [] }), (e) => {
    return e instanceof OpenAI.BadRequestError && e.param === 'messages';
  });
});

test('PermissionDeniedError', async () => {
  await assert.rejects(
    client(limitedKey).chat.completions.create({ model: 'gpt-4o', messages }),
    (e) => e instanceof OpenAI.PermissionDeniedError,
  );
});

test('RateLimitError with Retry-After', async () => {
  await fault({ status: 429, retry_after: '60' });
  await assert.rejects(client().chat.completions.create({ model: 'gpt-4o-mini', messages }), (e) => {
    return e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '60';
  });
});

test("RateLimitError with Retry-After from Tollgate's own limit", async () => {
  const limited = client(onePerHourKey);
  const { response } = await limited.chat.completions.create({ model: 'gpt-4o-mini', messages }).withResponse();
  assert.equal(response.headers.get('x-ratelimit-remaining-requests'), '0');
  await assert.rejects(limited.chat.completions.create({ model: 'gpt-4o-mini', messages }), (e) => {
    const retryAfter = Number(e.headers.get('retry-after'));
    return e instanceof OpenAI.RateLimitError && e.code === 'rate_limit_exceeded' && retryAfter >= 3500 && retryAfter <= 3600;
  });
});

test('InternalServerError for upstream failures', async () => {
  await fault({ status: 500, count: 4 });
  await assert.rejects(client().chat.completions.create({ model: 'gpt-4o-mini', messages }), (e) => {
    return e instanceof OpenAI.InternalServerError && e.status === 502;
  });
});

// A Realtime session through TLS in front of the gateway; resolves with the events until
// `until` (or rejects on an error event, unless `until` is 'error').
function realtime(until, send) {
  const tls = new OpenAI({ baseURL: tlsBaseURL, apiKey: key, maxRetries: 0 });
  const rt = new OpenAIRealtimeWS({ model: 'gpt-realtime', options: { ca: readFileSync(tlsCA) } }, tls);
  const seen = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${until} within 10 s: ${JSON.stringify(seen)}`)), 10_000);
    const finish = (result) => { clearTimeout(timer); rt.close(); resolve(result); };
    rt.on('event', (event) => {
      seen.push(event.type);
      if (event.type === 'session.created') send(rt);
      if (event.type === until) finish({ event, seen });
    });
    rt.on('error', (error) => {
      if (until === 'error') return;
      clearTimeout(timer);
      reject(error);
    });
  });
}

test('realtime: a session with typed events and usage', async () => {
  const { event, seen } = await realtime('response.done', (rt) => rt.send({ type: 'response.create' }));
  assert.equal(seen[0], 'session.created');
  assert.ok(seen.includes('response.output_text.delta'));
  assert.equal(event.response.usage.input_tokens, 789);
  assert.equal(event.response.usage.output_token_details.audio_tokens, 23);
});

test('realtime: switching the model is an error event', async () => {
  const { event } = await realtime('error', (rt) =>
    rt.send({ type: 'session.update', event_id: 'evt_switch', session: { type: 'realtime', model: 'gpt-4o-realtime-preview' } }),
  );
  assert.equal(event.error.param, 'session.model');
  assert.equal(event.error.event_id, 'evt_switch');
});
