-- Admit one request of an API key, or say why not, in one atomic step (no check-then-increment race
-- between gateway replicas). The rate is GCRA (validator/gateway/gcra.py is the reference arithmetic) on
-- the Redis server's clock, so replicas whose clocks disagree still share one pace per key.
-- KEYS[1] the key's theoretical arrival time (ms), KEYS[2] in-flight sorted set (member = request ticket,
-- score = lease end in ms); both carry the key's hash tag, so this runs on Redis Cluster too.
-- ARGV: interval_ms, burst, max_concurrent, ticket, lease_ms
-- Returns {allowed, "ok"|"rate"|"concurrency", retry_after_ms, remaining, reset_ms}: remaining is how many
-- requests would be admitted at once after this decision, reset_ms how long until the whole burst is back
-- (gcra.headroom); a refusal spends nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local lease = tonumber(ARGV[5])
-- Leases of requests whose gateway died are dropped here, so a crash never locks a key out for good.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local base = tonumber(redis.call('GET', KEYS[1]) or now)
if base < now then base = now end
local tat = base + interval
local earliest = tat - burst * interval
local function headroom(after)
  local ahead = after - now
  if ahead < 0 then ahead = 0 end
  local room = math.floor((burst * interval - ahead + 0.000001) / interval)
  if room < 0 then room = 0 end
  if room > burst then room = burst end
  return room, math.ceil(ahead)
end
if earliest - now > 0.000001 then  -- gcra.SLACK, in ms
  local room, reset = headroom(base)
  return {0, 'rate', math.ceil(earliest - now), room, reset}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local room, reset = headroom(base)
  return {0, 'concurrency', 1000, room, reset}
end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
redis.call('PEXPIRE', KEYS[2], lease + 60000)
local room, reset = headroom(tat)
return {1, 'ok', 0, room, reset}
