-- GET /api/v1/items/?limit=100: the caller's newest 100 items and their count.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/api/v1/items/?limit=100"
