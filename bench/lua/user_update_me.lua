-- PATCH /api/v1/users/me {"full_name"} as many users in turn (BENCH_FILE: "user_id token" a line), so that
-- concurrent requests do not queue on one row's lock.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local next_user

function init(args)
  next_user = in_turn(thread_lines())
end

function request()
  local user, count = next_user()
  local headers = headers_with({ ["Authorization"] = "Bearer " .. user[2], ["X-User-Id"] = user[1] })
  return wrk.format("PATCH", "/api/v1/users/me", headers, '{"full_name": "Renamed ' .. count .. '"}')
end
