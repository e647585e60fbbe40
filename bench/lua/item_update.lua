-- PUT /api/v1/items/{id} as the writer: new title and description of their own items (BENCH_ITEM_IDS), in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local next_id

function init(args)
  next_id = in_turn(env_list("BENCH_ITEM_IDS"), thread_start())
end

function request()
  local id, count = next_id()
  local body = '{"title": "Updated item ' .. count .. '", "description": "updated by wrk"}'
  return wrk.format("PUT", "/api/v1/items/" .. id, nil, body)
end
