-- DELETE /api/v1/items/{id} as the writer: each request a different item of theirs (BENCH_FILE: one id a line,
-- seeded for this run). Past the end of the list the ids repeat, and those answers are 404s: counted as non-2xx.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local next_line

function init(args)
  next_line = in_turn(thread_lines())
end

function request()
  return wrk.format("DELETE", "/api/v1/items/" .. next_line()[1])
end
