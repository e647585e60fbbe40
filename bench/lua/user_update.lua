-- PATCH /api/v1/users/{id} {"full_name"} by the superuser, over the seeded normal users (BENCH_TARGET_IDS) in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local ids = env_list("BENCH_TARGET_IDS")
local counter = 0

function init(args)
  counter = (thread_index or 1) * 7919
end

function request()
  counter = counter + 1
  local body = '{"full_name": "Updated user ' .. counter .. '"}'
  return wrk.format("PATCH", "/api/v1/users/" .. ids[counter % #ids + 1], nil, body)
end
