-- GET /api/v1/items/{id}, cycling through the reader's items (BENCH_ITEM_IDS, comma-separated).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"

local next_id

function init(args)
  next_id = in_turn(env_list("BENCH_ITEM_IDS"), thread_start())
end

function request()
  return wrk.format(nil, "/api/v1/items/" .. next_id())
end
