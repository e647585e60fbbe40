-- PATCH /api/v1/users/me/password {"current_password", "new_password"}: every request as a different user
-- (BENCH_FILE: "user_id token" a line, fresh for this run, all with the password BENCH_PASSWORD), so no request
-- depends on another's outcome. The change revokes the user's other tokens but keeps the one used. Should a thread
-- run out of users, it starts over with the passwords swapped (round 2 changes BENCH_NEW_PASSWORD back).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local first = os.getenv("BENCH_PASSWORD")
local second = os.getenv("BENCH_NEW_PASSWORD")
local users, next_user = {}, nil

function init(args)
  users = thread_lines()
  next_user = in_turn(users)
end

function request()
  local user, count = next_user()
  local current, new = first, second
  if math.floor((count - 1) / #users) % 2 == 1 then -- every user has had a turn: round 2, the passwords swapped
    current, new = second, first
  end
  local headers = headers_with({ ["Authorization"] = "Bearer " .. user[2], ["X-User-Id"] = user[1] })
  local body = '{"current_password": "' .. current .. '", "new_password": "' .. new .. '"}'
  return wrk.format("PATCH", "/api/v1/users/me/password", headers, body)
end
