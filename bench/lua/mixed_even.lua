-- The 1-worker stall check's even mix as one caller: users_me, items_list, item_get, item_create in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = env_list("BENCH_ITEM_IDS")
local counter = 0
local post_headers = headers_with({ ["Content-Type"] = "application/json" })
local body = '{"title": "Benchmark item", "description": "written by wrk"}'

function init(args)
  counter = thread_start()
end

function request()
  counter = counter + 1
  local kind = counter % 4
  if kind == 0 then
    return wrk.format("GET", "/api/v1/users/me")
  elseif kind == 1 then
    return wrk.format("GET", "/api/v1/items/?limit=100")
  elseif kind == 2 then
    return wrk.format("GET", "/api/v1/items/" .. ids[counter % #ids + 1])
  end
  return wrk.format("POST", "/api/v1/items/", post_headers, body)
end
