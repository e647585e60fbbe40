-- POST /api/v1/items/ as the writer.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/api/v1/items/"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "Benchmark item", "description": "written by wrk"}'
