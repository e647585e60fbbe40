-- GET /api/v1/users/?limit=100 by the superuser: the newest 100 users and their count.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/api/v1/users/?limit=100"
