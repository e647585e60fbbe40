-- GET /api/v1/users/me as the reader.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/api/v1/users/me"
