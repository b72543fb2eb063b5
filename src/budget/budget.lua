-- Budget counters: one hash per budget line and window, fields s (spent, settled), r
-- (reserved, in flight) and a (the alert went out). Micro-dollars, integers.
--
-- ARGV[1] = "reserve" | "settle" | "seed" | "spent"
-- reserve: ARGV[2] = amount, then per key: limit.
--   -> {0} reserved on every key; {1, i, spent, reserved} key i would go over (nothing
--      reserved); {2, i, ...} keys with no counter yet (seed them, then retry).
-- settle: ARGV[2] = reserved, ARGV[3] = actual, then per key: alert threshold, ttl ms (0 = none).
--   -> the 1-based indices of keys whose alert threshold this settlement crossed. A key that is
--      gone (Redis restarted) is skipped: its next reservation seeds it from the records.
-- seed: one key; ARGV[2] = spent, ARGV[3] = alert threshold, ARGV[4] = ttl ms (0 = none),
--   ARGV[5] = now (ms): kept as t, when the counter was seeded from the records.
-- repay: one key; ARGV[2] = reserved, ARGV[3] = actual, ARGV[4] = when an outage began (ms).
--   Applies a settlement a replica made on its own counters during the outage, unless the
--   counter was seeded after the outage began (the records it came from hold that spend) or
--   is gone. -> 1 applied, 0 not.
-- spent: one key -> spent, or -1 when there is no counter.
local op = ARGV[1]

if op == 'reserve' then
  local amount = tonumber(ARGV[2])
  local missing = {2}
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 0 then
      table.insert(missing, i)
    end
  end
  if #missing > 1 then
    return missing
  end
  for i, key in ipairs(KEYS) do
    local spent = tonumber(redis.call('HGET', key, 's') or '0')
    local reserved = tonumber(redis.call('HGET', key, 'r') or '0')
    if spent + reserved + amount > tonumber(ARGV[2 + i]) then
      return {1, i, spent, reserved}
    end
  end
  for _, key in ipairs(KEYS) do
    redis.call('HINCRBY', key, 'r', amount)
  end
  return {0}
elseif op == 'settle' then
  local reserved = tonumber(ARGV[2])
  local actual = tonumber(ARGV[3])
  local crossed = {}
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
      -- (0 - x, not -x: Lua's -0 would reach Redis as "-0", which is not an integer.)
      local left = redis.call('HINCRBY', key, 'r', 0 - reserved)
      if left < 0 then
        redis.call('HSET', key, 'r', 0)
      end
      local spent = redis.call('HINCRBY', key, 's', actual)
      if spent >= tonumber(ARGV[2 + 2 * i]) and redis.call('HSETNX', key, 'a', 1) == 1 then
        table.insert(crossed, i)
      end
      local ttl = tonumber(ARGV[3 + 2 * i])
      if ttl > 0 then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
  return crossed
elseif op == 'seed' then
  local key = KEYS[1]
  if redis.call('HSETNX', key, 's', ARGV[2]) == 1 then
    redis.call('HSET', key, 'r', 0, 't', ARGV[5])
    if tonumber(ARGV[2]) >= tonumber(ARGV[3]) then
      redis.call('HSET', key, 'a', 1)
    end
    local ttl = tonumber(ARGV[4])
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    end
  end
  return 0
elseif op == 'repay' then
  local key = KEYS[1]
  if redis.call('EXISTS', key) == 0 then
    return 0
  end
  if tonumber(redis.call('HGET', key, 't') or '0') >= tonumber(ARGV[4]) then
    return 0
  end
  local left = redis.call('HINCRBY', key, 'r', 0 - tonumber(ARGV[2]))
  if left < 0 then
    redis.call('HSET', key, 'r', 0)
  end
  redis.call('HINCRBY', key, 's', tonumber(ARGV[3]))
  return 1
elseif op == 'spent' then
  local spent = redis.call('HGET', KEYS[1], 's')
  if spent then
    return tonumber(spent)
  end
  return -1
end
return redis.error_reply('unknown op')
