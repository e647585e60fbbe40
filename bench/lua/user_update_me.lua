-- PATCH /api/v1/users/me {"full_name"} as many users in turn (BENCH_FILE: "user_id token" a line), so that
-- concurrent requests do not queue on one row's lock.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local users = {}
local counter = 0

function init(args)
  users = thread_lines()
end

function request()
  counter = counter + 1
  local user = users[counter % #users + 1]
  local headers = headers_with({ ["Authorization"] = "Bearer " .. user[2], ["X-User-Id"] = user[1] })
  return wrk.format("PATCH", "/api/v1/users/me", headers, '{"full_name": "Renamed ' .. counter .. '"}')
end
