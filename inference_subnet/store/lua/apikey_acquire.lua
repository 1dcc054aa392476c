-- Admit one request of an API key, or say why not, in one atomic step (no check-then-increment race
-- between gateway replicas).
-- KEYS[1] per-minute counter, KEYS[2] in-flight sorted set (member = request ticket, score = lease end);
-- both carry the key's hash tag, so this runs on Redis Cluster too.
-- ARGV: rate_per_minute, max_concurrent, now (unix seconds), ticket, lease_seconds
-- Returns {1, "ok", used} or {0, "rate"|"concurrency", used}.
local now = tonumber(ARGV[3])
local lease = tonumber(ARGV[5])
-- Leases of requests whose gateway died are dropped here, so a crash never locks a key out for good.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return {0, 'rate', used}
end
local inflight = redis.call('ZCARD', KEYS[2])
if inflight >= tonumber(ARGV[2]) then
  return {0, 'concurrency', inflight}
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
redis.call('EXPIRE', KEYS[2], math.ceil(lease) + 60)
return {1, 'ok', used + 1}
