-- Dropout cap: admit one more response for scoring only while the period's count is under the cap,
-- and count every response that is not admitted. Check and count are one atomic step, so concurrent
-- scorers can never admit more than the cap.
-- Both keys carry the miner's hash tag {m:IDENTITY} (one hash slot).
--
-- KEYS[1]  scored counter of this miner, task and period
-- KEYS[2]  dropped counter of this miner, task and period
-- ARGV[1]  cap: scored samples allowed in the period
-- ARGV[2]  1 if the random draw (made by the caller) lets this response in, 0 if it is dropped anyway
-- ARGV[3]  expiry of both counters in milliseconds
-- Returns 1 when admitted, 0 when dropped.
local scored = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] == '1' and scored < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], scored + 1, 'PX', ARGV[3])
  return 1
end
local dropped = redis.call('INCR', KEYS[2])
if dropped == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 0
