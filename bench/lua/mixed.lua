-- Traffic weighted like real clients', mostly reads: of every 20 requests 6 item_get + 6 users_me (60%),
-- 5 items_list (25%), 1 item_create + 1 item_update (10%), 1 PATCH /users/me (5%), interleaved. The reads and
-- item writes as the reader (BENCH_ITEM_IDS its items); PATCH /users/me as the users of BENCH_FILE ("user_id
-- token" a line) in turn, so that renames do not queue on one row's lock.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = env_list("BENCH_ITEM_IDS")
local counter = 0
local json = headers_with({ ["Content-Type"] = "application/json" })
local PATTERN = {
  "get", "me", "list", "get", "me", "list", "get", "me", "create", "get",
  "me", "list", "get", "me", "update", "get", "me", "list", "patch_me", "list",
}

local users = {}

function init(args)
  counter = thread_start()
  users = thread_lines()
end

function request()
  counter = counter + 1
  local kind = PATTERN[counter % #PATTERN + 1]
  local id = ids[counter % #ids + 1]
  if kind == "get" then
    return wrk.format("GET", "/api/v1/items/" .. id)
  elseif kind == "me" then
    return wrk.format("GET", "/api/v1/users/me")
  elseif kind == "list" then
    return wrk.format("GET", "/api/v1/items/?limit=100")
  elseif kind == "create" then
    return wrk.format("POST", "/api/v1/items/", json, '{"title": "Mixed item", "description": "written by wrk"}')
  elseif kind == "update" then
    return wrk.format("PUT", "/api/v1/items/" .. id, json, '{"title": "Mixed update ' .. counter .. '"}')
  end
  local user = users[counter % #users + 1]
  local headers = headers_with({
    ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. user[2], ["X-User-Id"] = user[1],
  })
  return wrk.format("PATCH", "/api/v1/users/me", headers, '{"full_name": "Mixed user ' .. counter .. '"}')
end
