"""What the service keeps in Redis, and for how long: the bounds of every per-user key.

The atomic events script (service.store) applies them; docs/service.md gives the formula of
bytes per user and per event that they imply, so an operator can size Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

# Each script call trims what exceeds a count bound at once; what only aged out is trimmed
# once every AGE_TRIM_EVERY counted events of the user (a scan per call would cost Redis more
# than the events themselves).
AGE_TRIM_EVERY = 64


@dataclass(frozen=True)
class RetentionPolicy:
    max_history: int  # newest events in the time-ordered sequence (what the model reads)
    max_seen: int  # newest distinct items remembered as seen (exclude_seen)
    max_event_ids: int  # newest event ids remembered for deduplication
    event_id_ttl_s: float  # ... and for at most this long (the retry window)
    log_max_len: int  # newest events in the user's durable log
    log_max_age_s: float  # ... and none older than this (0: no age limit)
    user_ttl_s: float  # every key of a user expires after this long without an event (0: never)

    def script_args(self, now_ms: int) -> list[bytes]:
        """The events script's leading arguments (its ARGV[1..8])."""
        values = (
            self.max_history,
            self.max_seen,
            self.max_event_ids,
            int(self.event_id_ttl_s * 1000),
            self.log_max_len,
            int(self.log_max_age_s * 1000),
            int(self.user_ttl_s * 1000),
            now_ms,
        )
        return [b"%d" % value for value in values]


# One call applies one user's part of a request atomically. KEYS: contract.redis_layout's
# USER_KEY_KINDS in order (seq, items, ids, idc, log, ctr). ARGV: RetentionPolicy.script_args,
# then six per event: event_id, item id, timestamp, fingerprint of (item, timestamp[, type,
# rid]), type and recommendation id (empty: none; the log entry then has no such field).
# INCRBY reserves a counter value per event. Per event: an event_id already remembered is a
# duplicate (0) when its fingerprint matches, a conflict (2) when not; otherwise (1) the event
# goes into the time-ordered sequence (ties keep arrival order through the zero-padded
# counter), the seen items and the user's log stream. Then the bounds of RetentionPolicy.
# Few redis.call per event: each costs far more inside Lua than the command itself.
EVENTS_SCRIPT = f"""
local max_history, max_seen, max_ids = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local id_ttl_ms, log_max_len, log_max_age_ms = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local user_ttl_ms, now_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local events = (#ARGV - 8) / 6
local last = redis.call('INCRBY', KEYS[6], events)
local counter = last - events
local status = {{}}
for i = 9, #ARGV, 6 do
  local eid, item, ts, fp = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  counter = counter + 1
  if redis.call('ZADD', KEYS[3], 'NX', now_ms, eid) == 1 then
    redis.call('HSET', KEYS[4], eid, fp)
    -- appended, not formatted into the member: string.format stops at a NUL byte
    redis.call('ZADD', KEYS[1], ts, string.format('%012d:', counter) .. item)
    redis.call('ZADD', KEYS[2], counter, item)
    local kind, rid = ARGV[i + 4], ARGV[i + 5]
    if kind == '' and rid == '' then
      redis.call('XADD', KEYS[5], 'MAXLEN', log_max_len, '*', 'item', item, 'ts', ts, 'eid', eid)
    else
      local entry = {{'item', item, 'ts', ts, 'eid', eid}}
      if kind ~= '' then entry[#entry + 1] = 'type'; entry[#entry + 1] = kind end
      if rid ~= '' then entry[#entry + 1] = 'rid'; entry[#entry + 1] = rid end
      redis.call('XADD', KEYS[5], 'MAXLEN', log_max_len, '*', unpack(entry))
    end
    status[#status + 1] = 1
  else
    local stored = redis.call('HGET', KEYS[4], eid)
    status[#status + 1] = (stored == false or stored == fp) and 0 or 2
  end
end

local function forget_ids(ids)
  for first = 1, #ids, 1000 do
    local last_id = math.min(first + 999, #ids)
    redis.call('ZREM', KEYS[3], unpack(ids, first, last_id))
    redis.call('HDEL', KEYS[4], unpack(ids, first, last_id))
  end
end

-- A counter that starts afresh (a new user, or one lost while the other keys stayed): trim all.
local fresh = last == events
if last > max_history or fresh then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -max_history - 1)
end
if last > max_seen or fresh then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -max_seen - 1)
end
if last > max_ids or fresh then
  local excess = redis.call('ZCARD', KEYS[3]) - max_ids
  if excess > 0 then
    forget_ids(redis.call('ZRANGE', KEYS[3], 0, excess - 1))
  end
end
local every = {AGE_TRIM_EVERY}
if fresh or math.floor(last / every) ~= math.floor((last - events) / every) then
  forget_ids(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now_ms - id_ttl_ms)))
  if log_max_age_ms > 0 then
    redis.call('XTRIM', KEYS[5], 'MINID', now_ms - log_max_age_ms)
  end
end
-- Idle users expire; the expiry is renewed once less than half of it is left.
if user_ttl_ms > 0 and redis.call('PTTL', KEYS[6]) < user_ttl_ms / 2 then
  for k = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[k], user_ttl_ms)
  end
end
return status
"""
