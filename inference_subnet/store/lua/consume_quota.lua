-- Decide and count one consumption of a validator's quota on one miner, atomically.
-- Checking from Python and then incrementing races under concurrency; here nothing runs in between.
-- Every key carries the miner's hash tag {m:IDENTITY}: one hash slot, so this also runs on Redis Cluster.
--
-- KEYS[1]  share hash  (field TASK = this validator's share, field TASK:syn = its synthetic limit)
-- KEYS[2]  usage hash  (fields total, synthetic) of this miner, task and epoch
-- ARGV[1]  task name
-- ARGV[2]  kind: "synthetic" or "organic"
-- ARGV[3]  n, requests to consume (> 0)
-- ARGV[4]  expiry of the usage hash in milliseconds (end of the epoch plus a grace period)
-- Returns 1 when consumed, 0 when the quota would be exceeded (nothing is changed then).
local n = tonumber(ARGV[3])
local share = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local used = redis.call('HMGET', KEYS[2], 'total', 'synthetic')
local total = tonumber(used[1] or '0')
local synthetic = tonumber(used[2] or '0')
if total + n > share then
  return 0
end
if ARGV[2] == 'synthetic' then
  local limit = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':syn') or '0')
  if synthetic + n > limit then
    return 0
  end
  redis.call('HINCRBY', KEYS[2], 'synthetic', n)
end
redis.call('HINCRBY', KEYS[2], 'total', n)
if total == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
