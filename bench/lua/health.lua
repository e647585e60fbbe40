-- GET /api/v1/utils/health-check/ (no auth).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/api/v1/utils/health-check/"
