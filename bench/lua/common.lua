-- Shared by every scenario (loaded with dofile): the caller's headers, non-2xx counting per thread, and one
-- machine-readable summary line ("BENCH_JSON {...}") that bench/run.py parses.
-- Environment: BENCH_TOKEN (bearer token for the service), BENCH_USER_ID (the same caller, for the ceiling).
local token = os.getenv("BENCH_TOKEN") or ""
local user_id = os.getenv("BENCH_USER_ID") or ""
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if user_id ~= "" then
  wrk.headers["X-User-Id"] = user_id
end

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads + 1)
  table.insert(threads, thread)
end

non2xx = 0
per_second = {} -- completed responses by wall-clock second: a stall shows as an empty second

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
end

-- The fewest and the mean responses in one second, over the whole seconds of the run (not the first or last).
local function per_second_stats()
  local seconds, first, last = {}, nil, nil
  for _, thread in ipairs(threads) do
    for second, count in pairs(thread:get("per_second") or {}) do
      seconds[second] = (seconds[second] or 0) + count
      first = math.min(first or second, second)
      last = math.max(last or second, second)
    end
  end
  local fewest, total, whole = -1, 0, 0
  if first then
    for second = first + 1, last - 1 do
      local count = seconds[second] or 0
      if fewest < 0 or count < fewest then
        fewest = count
      end
      total = total + count
      whole = whole + 1
    end
  end
  return fewest, whole > 0 and total / whole or -1
end

function done(summary, latency, requests)
  local non = 0
  for _, thread in ipairs(threads) do
    non = non + (thread:get("non2xx") or 0)
  end
  local fewest, mean = per_second_stats()
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"fewest_per_second": %d, "mean_per_second": %.1f}\n',
    summary.requests, summary.duration, non, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, fewest, mean
  ))
end

-- Per-request headers: the script's own (caller, content type) plus `extra`.
function headers_with(extra)
  local merged = {}
  for name, value in pairs(wrk.headers) do
    merged[name] = value
  end
  for name, value in pairs(extra or {}) do
    merged[name] = value
  end
  return merged
end

-- Where this thread starts in a list all threads share (a large prime apart), so that they do not send the same ids
-- in step. Call from init(), where thread_index is set.
function thread_start()
  return (thread_index or 1) * 7919
end

-- A function that returns, call after call, the next of `values` in turn (after position `start`, 0 if omitted), and
-- a count that grows by one a call (for unique bodies). Make it in init().
function in_turn(values, start)
  local count = start or 0
  return function()
    count = count + 1
    return values[count % #values + 1], count
  end
end

-- Comma-separated values of an environment variable.
function env_list(name)
  local values = {}
  for value in string.gmatch(os.getenv(name) or "", "[^,]+") do
    table.insert(values, value)
  end
  return values
end

-- This thread's lines of BENCH_FILE, each split on blanks: line i belongs to thread (i - 1) % BENCH_THREADS + 1, so
-- no two threads (and, one request in flight per connection, no two requests) share a row. Call from init().
function thread_lines()
  local count = tonumber(os.getenv("BENCH_THREADS") or "1")
  local mine, i = {}, 0
  for line in io.lines(os.getenv("BENCH_FILE")) do
    i = i + 1
    if (i - 1) % count + 1 == (thread_index or 1) then
      local fields = {}
      for f in string.gmatch(line, "%S+") do
        table.insert(fields, f)
      end
      table.insert(mine, fields)
    end
  end
  return mine
end
