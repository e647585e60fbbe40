-- PUT /api/v1/items/{id} as the writer: new title and description of their own items (BENCH_ITEM_IDS), in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local ids = env_list("BENCH_ITEM_IDS")
local counter = 0

function init(args)
  counter = (thread_index or 1) * 7919
end

function request()
  counter = counter + 1
  local body = '{"title": "Updated item ' .. counter .. '", "description": "updated by wrk"}'
  return wrk.format("PUT", "/api/v1/items/" .. ids[counter % #ids + 1], nil, body)
end
