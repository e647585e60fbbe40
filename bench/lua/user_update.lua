-- PATCH /api/v1/users/{id} {"full_name"} by the superuser, over the seeded normal users (BENCH_TARGET_IDS) in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local next_id

function init(args)
  next_id = in_turn(env_list("BENCH_TARGET_IDS"), thread_start())
end

function request()
  local id, count = next_id()
  return wrk.format("PATCH", "/api/v1/users/" .. id, nil, '{"full_name": "Updated user ' .. count .. '"}')
end
