-- POST /api/v1/users/ by the superuser: a new user per request (one argon2 hash each), with an email unique to
-- this run (BENCH_RUN), thread and request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local run = os.getenv("BENCH_RUN") or "0"
local password = os.getenv("BENCH_PASSWORD") or "bench-user-password"
local counter = 0

function request()
  counter = counter + 1
  local email = "created-" .. run .. "-" .. (thread_index or 1) .. "-" .. counter .. "@bench.example.com"
  local body = '{"email": "' .. email .. '", "password": "' .. password .. '", "full_name": "Created user"}'
  return wrk.format("POST", "/api/v1/users/", nil, body)
end
