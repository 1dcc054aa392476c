-- Apply one scoring job's result exactly once: scoring jobs are delivered at least once, so the same job
-- may be scored twice; only the first result reaches the history.
-- Both keys carry the miner's hash tag {m:IDENTITY} (one hash slot).
--
-- KEYS[1]  applied marker of this job
-- KEYS[2]  score history list of this miner and task (newest first)
-- ARGV[1]  the sample as JSON
-- ARGV[2]  history size (samples kept)
-- ARGV[3]  expiry of the applied marker in milliseconds
-- Returns 1 when recorded, 0 when this job was already applied.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
