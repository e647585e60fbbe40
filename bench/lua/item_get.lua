-- GET /api/v1/items/{id}, cycling through the reader's items (BENCH_ITEM_IDS, comma-separated).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"

local ids = {}
for id in string.gmatch(os.getenv("BENCH_ITEM_IDS") or "", "[^,]+") do
  table.insert(ids, id)
end
local next_index = 0

function init(args)
  next_index = (thread_index or 1) * 7919
end

function request()
  next_index = next_index + 1
  return wrk.format(nil, "/api/v1/items/" .. ids[next_index % #ids + 1])
end
