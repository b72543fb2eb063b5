-- 10,000,000 audit records over the last 30 days, and their hourly and daily rollups, for the usage-API
-- benchmark (bench/run.py --only usage). Run with search_path set to a fresh schema that
-- Tollgate has migrated. Shape: 200 keys; 5,000 end users, each tied to one key and mostly to
-- one of 12 models; requests spread evenly over the 30 days.
\set now_ms `date +%s%3N`
INSERT INTO requests (id, created_at_ms, request_id, key_id, user_id, caller, method, route,
    model_requested, model_used, upstream, status, outcome, stream, prompt_tokens, cached_tokens,
    completion_tokens, reasoning_tokens, image_input_tokens, images, cost_nanos, estimated,
    latency_ms, upstream_ms, rules_fired, client_ip)
SELECT 'rec-' || g,
       :now_ms - (g::bigint * 259) % 2592000000,
       'req-' || g,
       'key_' || ((g % 5000) % 200),
       'user-' || (g % 5000),
       'key', 'POST', '/v1/chat/completions',
       m.model, m.model, 'default',
       CASE WHEN g % 50 = 0 THEN 429 ELSE 200 END,
       CASE WHEN g % 50 = 0 THEN 'refused' ELSE 'ok' END,
       g % 3 = 0,
       100 + g % 400, (g % 7) * 10, 20 + g % 300, 0, 0, 0,
       CASE WHEN g % 50 = 0 THEN NULL ELSE 30 + g % 900 END,
       false, 400 + g % 300, 390 + g % 300, '[]', '10.0.0.1'
FROM generate_series(1, 10000000) AS g,
     LATERAL (SELECT (ARRAY['gpt-4o-mini','gpt-4o','gpt-4.1','gpt-4.1-mini','gpt-4.1-nano','o3',
        'o4-mini','gpt-5','gpt-5-mini','gpt-5-nano','text-embedding-3-small','gpt-image-1'])
        [1 + (CASE WHEN g % 10 = 0 THEN g / 5000 ELSE g % 5000 END) % 12] AS model) AS m;

INSERT INTO usage_hourly (hour_ms, caller, key_id, user_id, model, requests, errors,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, images, cost_nanos,
    unpriced, estimated)
SELECT created_at_ms - created_at_ms % 3600000, caller, COALESCE(key_id, ''),
       COALESCE(user_id, ''), COALESCE(model_used, model_requested, ''), COUNT(*),
       COUNT(*) FILTER (WHERE status >= 400), SUM(prompt_tokens), SUM(cached_tokens),
       SUM(completion_tokens), SUM(reasoning_tokens), SUM(images), COALESCE(SUM(cost_nanos), 0),
       COUNT(*) FILTER (WHERE cost_nanos IS NULL AND status < 400),
       COUNT(*) FILTER (WHERE estimated)
FROM requests GROUP BY 1, 2, 3, 4, 5;
INSERT INTO usage_daily (day_ms, caller, key_id, user_id, model, requests, errors, prompt_tokens,
    cached_tokens, completion_tokens, reasoning_tokens, images, cost_nanos, unpriced, estimated)
SELECT hour_ms - hour_ms % 86400000, caller, key_id, user_id, model, SUM(requests), SUM(errors),
       SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), SUM(reasoning_tokens),
       SUM(images), SUM(cost_nanos), SUM(unpriced), SUM(estimated)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5;
ANALYZE usage_daily;
ANALYZE requests;
ANALYZE usage_hourly;
