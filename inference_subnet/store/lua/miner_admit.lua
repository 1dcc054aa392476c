-- A miner's decision on one request of one validator, atomically: guaranteed while the caller is on its
-- guaranteed pace (GCRA of its stake share), else borrowed from idle pace when the miner-wide GCRA has room,
-- the caller is under its borrow ceiling and the epoch still holds every validator's guaranteed pace until
-- its end (so the epoch's total never passes the declared capacity). protocol/rate_math.py's miner_decide,
-- float operation for float operation. Both keys carry the miner's tag {mq:ROLE}: one slot, cluster-safe.
--
-- admit(KO, AO) reads KEYS[KO+1] (caller hash: g, b, tat) and KEYS[KO+2] (miner hash: total, tat), and
-- ARGV[AO+1..AO+4]: now ("" for the server's clock); the caller's fixed limits, space-separated: share,
-- caller interval, caller burst, borrow ceiling, capacity, miner interval, miner burst, sum of guaranteed
-- bursts, epoch seconds, slack; the epoch's end; the counters' expiry in seconds. Returns mode (1 guaranteed, 2 borrowed, 0 refused), reason ("" or "beyond_share" or
-- "capacity"), the epoch's total after it, and for a refusal the milliseconds until a request could be
-- admitted if nothing else happened (the Retry-After).
local function admit(KO, AO)
  local now = tonumber(ARGV[AO + 1])
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  -- ARGV[AO + 2] packs what is fixed for a caller and task (one argument to send instead of ten).
  local P = {}
  for field in string.gmatch(ARGV[AO + 2], '[^ ]+') do
    P[#P + 1] = field
  end
  local A = {[1] = now, [2] = P[1], [3] = P[2], [4] = P[3], [5] = P[4], [6] = P[5], [7] = P[6],
             [8] = P[7], [9] = P[8], [10] = P[9], [11] = ARGV[AO + 3], [12] = ARGV[AO + 4], [13] = P[10]}
  local ARGV, AO = A, 0
  local share = tonumber(ARGV[AO + 2])
  local ceiling = tonumber(ARGV[AO + 5])
  local capacity = tonumber(ARGV[AO + 6])
  local slack = tonumber(ARGV[AO + 13])
  local mine = redis.call('HMGET', KEYS[KO + 1], 'g', 'b', 'tat')
  local all = redis.call('HMGET', KEYS[KO + 2], 'total', 'tat')
  local g = tonumber(mine[1] or '0')
  local b = tonumber(mine[2] or '0')
  local total = tonumber(all[1] or '0')
  local full = total >= capacity
  local m_interval = tonumber(ARGV[AO + 7])
  local m_burst = tonumber(ARGV[AO + 8])
  local m_tat = tonumber(all[2] or '')
  local m_base = now
  if m_tat and m_tat > now then m_base = m_tat end
  local expire = ARGV[AO + 12]
  -- One admission: the caller's counter (g or b), the miner-wide pace's new TAT and the epoch's total.
  local function count(field, miner_tat)
    redis.call('HINCRBY', KEYS[KO + 1], field, 1)
    redis.call('HSET', KEYS[KO + 2], 'tat', string.format('%.17g', miner_tat))
    local after = redis.call('HINCRBY', KEYS[KO + 2], 'total', 1)
    redis.call('EXPIRE', KEYS[KO + 1], expire)
    redis.call('EXPIRE', KEYS[KO + 2], expire)
    return after
  end
  if g < share then
    local interval = tonumber(ARGV[AO + 3])
    local burst = tonumber(ARGV[AO + 4])
    local tat = tonumber(mine[3] or '')
    local base = now
    if tat and tat > now then base = tat end
    local new = base + interval
    if new - now <= burst * interval + slack then
      if full then
        return 0, 'capacity', total, math.ceil(math.max(0, tonumber(ARGV[AO + 11]) - now) * 1000)
      end
      redis.call('HSET', KEYS[KO + 1], 'tat', string.format('%.17g', new))
      return 1, '', count('g', m_base + m_interval), 0
    end
  end
  if b < ceiling then
    local room = tonumber(ARGV[AO + 9]) + math.max(0, tonumber(ARGV[AO + 11]) - now) * (capacity / tonumber(ARGV[AO + 10]))
    if total + 1 + room <= capacity then
      local m_new = m_base + m_interval
      if m_burst > 0 and m_new - now <= m_burst * m_interval + slack then
        return 2, '', count('b', m_new), 0
      end
    end
  end
  local epoch_end = tonumber(ARGV[AO + 11])
  if full then
    return 0, 'capacity', total, math.ceil(math.max(0, epoch_end - now) * 1000)
  end
  -- The earliest a request could be admitted, if nothing else happened: its guaranteed pace's next slot,
  -- or the moment the miner-wide pace and the epoch's reserve both leave room to lend.
  local wait = math.max(0, epoch_end - now)
  if g < share then
    local tat = tonumber(mine[3] or '')
    if tat then
      wait = math.min(wait, math.max(0, tat - (tonumber(ARGV[AO + 4]) - 1) * tonumber(ARGV[AO + 3]) - now))
    end
  end
  if b < ceiling and m_burst > 0 then
    local spare = capacity - total - 1 - tonumber(ARGV[AO + 9])
    if spare >= 0 then
      local reserve_at = epoch_end - spare / (capacity / tonumber(ARGV[AO + 10]))
      local pace_at = m_base + m_interval - m_burst * m_interval
      wait = math.min(wait, math.max(0, reserve_at - now, pace_at - now))
    end
  end
  return 0, 'beyond_share', total, math.ceil(wait * 1000)
end
