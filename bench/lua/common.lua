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

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non = 0
  for _, thread in ipairs(threads) do
    non = non + (thread:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, non, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
