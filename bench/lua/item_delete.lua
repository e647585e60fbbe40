-- DELETE /api/v1/items/{id} as the writer: each request a different item of theirs (BENCH_FILE: one id a line,
-- seeded for this run). Past the end of the list the ids repeat, and those answers are 404s: counted as non-2xx.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = {}
local counter = 0

function init(args)
  ids = thread_lines()
end

function request()
  counter = counter + 1
  return wrk.format("DELETE", "/api/v1/items/" .. ids[(counter - 1) % #ids + 1][1])
end
