-- Decide and count one request of a validator on one miner, atomically: guaranteed while this validator's
-- own pace (GCRA) on the miner allows, else a borrow attempt up to its ceiling (the miner decides whether it
-- lends). The arithmetic is protocol/rate_math.py's book_decide, float operation for float operation.
-- Every key carries the miner's hash tag {m:IDENTITY}: one hash slot, so this also runs on Redis Cluster.
--
-- KEYS[1]  share hash  (field TASK = share, TASK:syn = synthetic limit, TASK:borrow = borrow ceiling)
-- KEYS[2]  usage hash  (fields total, synthetic, g, b, tat) of this miner, task and epoch
-- ARGV[1]  task name
-- ARGV[2]  kind: "synthetic" or "organic" (synthetic traffic is never borrowed)
-- ARGV[3]  n, requests to consume (> 0)
-- ARGV[4]  expiry of the usage hash in milliseconds (end of the epoch plus a grace period)
-- ARGV[5]  now in seconds, or "" for the Redis server's clock
-- ARGV[6]  epoch length in seconds
-- ARGV[7]  burst in seconds of the guaranteed rate (this validator's own)
-- ARGV[8]  slack in seconds (rate_math.SLACK)
-- ARGV[9]  share-hash field holding the burst the miner published, if any: the smaller of the two is used
--          (quotas.paced_burst)
-- Returns 1 guaranteed, 2 borrow attempt, 0 refused (nothing is changed then).
local n = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local limits = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[1] .. ':syn', ARGV[1] .. ':borrow', ARGV[9])
local share = tonumber(limits[1] or '0')
local used = redis.call('HMGET', KEYS[2], 'total', 'synthetic', 'g', 'b', 'tat')
local total = tonumber(used[1] or '0')
local synthetic = tonumber(used[2] or '0')
local g = tonumber(used[3] or '0')
local b = tonumber(used[4] or '0')
local synthetic_kind = ARGV[2] == 'synthetic'
local mode = 0
if g + n <= share and (not synthetic_kind or synthetic + n <= tonumber(limits[2] or '0')) then
  local epoch = tonumber(ARGV[6])
  local interval = epoch / share
  local burst_seconds = tonumber(ARGV[7])
  local theirs = tonumber(limits[4] or '')
  if theirs and theirs < burst_seconds then burst_seconds = theirs end
  local burst = math.max(1, math.floor(burst_seconds * share / epoch))
  local tat = tonumber(used[5] or '')
  local base = now
  if tat and tat > now then base = tat end
  local new = base + n * interval
  if new - now <= burst * interval + tonumber(ARGV[8]) then
    mode = 1
    redis.call('HSET', KEYS[2], 'tat', string.format('%.17g', new))
    redis.call('HINCRBY', KEYS[2], 'g', n)
    if synthetic_kind then
      redis.call('HINCRBY', KEYS[2], 'synthetic', n)
    end
  end
end
if mode == 0 and not synthetic_kind and b + n <= tonumber(limits[3] or '0') then
  mode = 2
  redis.call('HINCRBY', KEYS[2], 'b', n)
end
if mode == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[2], 'total', n)
if total == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return mode
