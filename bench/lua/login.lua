-- POST /api/v1/login/access-token: the OAuth2 password form of BENCH_USERNAME / BENCH_PASSWORD.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Authorization"] = nil
wrk.method = "POST"
wrk.path = "/api/v1/login/access-token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local function escape(value)
  return (string.gsub(value, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

wrk.body = "username=" .. escape(os.getenv("BENCH_USERNAME") or "") .. "&password=" .. escape(os.getenv("BENCH_PASSWORD") or "")
