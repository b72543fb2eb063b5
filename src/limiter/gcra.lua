-- GCRA over several buckets at once, on Redis's clock. The arithmetic is limiter/gcra.rs's.
--
-- KEYS: the buckets (one hash tag, so one Redis Cluster slot).
-- ARGV[1]: mode: "acquire" (take all costs or none), "settle" (move each bucket by a delta,
--          negative gives back), "peek" (read only).
-- ARGV[2 + 3(i-1) ..]: for bucket i: limit, period in microseconds, cost (or delta).
--
-- A bucket's value is its theoretical arrival time (TAT) in microseconds since the epoch; it
-- expires when the bucket is full again, so idle buckets cost no memory.
-- Returns, per bucket: {allowed (1/0), remaining, reset_us, retry_after_us}.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local mode = ARGV[1]

local function quota(i)
  local base = 2 + 3 * (i - 1)
  return tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
end

local function remaining(tat, limit, period)
  local free = period - (tat - now)
  if free < 0 then free = 0 end
  return math.floor(free * limit / period)
end

local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  else
    redis.call('DEL', key)
  end
end

local results = {}

if mode == 'settle' then
  for i = 1, #KEYS do
    local limit, period, delta = quota(i)
    local stored = tonumber(redis.call('GET', KEYS[i]) or '0')
    local tat = math.max(stored, now)
    local shift = math.floor(period * math.abs(delta) / limit)
    if delta >= 0 then tat = tat + shift else tat = tat - shift end
    store(KEYS[i], tat)
    results[i] = {1, remaining(math.max(tat, now), limit, period), math.max(tat - now, 0), 0}
  end
  return results
end

local tats, fits, all = {}, {}, true
for i = 1, #KEYS do
  local limit, period, cost = quota(i)
  local stored = tonumber(redis.call('GET', KEYS[i]) or '0')
  local tat = math.max(stored, now)
  if mode == 'peek' then
    results[i] = {1, remaining(tat, limit, period), tat - now, 0}
  else
    local new_tat = tat + math.floor(period * cost / limit)
    if new_tat - now <= period then
      tats[i], fits[i] = new_tat, true
      results[i] = {1, remaining(new_tat, limit, period), new_tat - now, 0}
    else
      all = false
      results[i] = {0, remaining(tat, limit, period), tat - now, new_tat - now - period}
    end
  end
end

if mode == 'acquire' then
  if all then
    for i = 1, #KEYS do store(KEYS[i], tats[i]) end
  else
    -- All or nothing: buckets that had room took nothing and report their current state.
    for i = 1, #KEYS do
      if fits[i] then
        local limit, period = quota(i)
        local stored = tonumber(redis.call('GET', KEYS[i]) or '0')
        local tat = math.max(stored, now)
        results[i] = {0, remaining(tat, limit, period), tat - now, 0}
      end
    end
  end
end
return results
