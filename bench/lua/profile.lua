-- Requests GET /api/v1/users/{id}/profile with ids drawn uniformly from 1 to the user count,
-- the first script argument (wrk ... -- COUNT), which defaults to 10000.

local script_dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(script_dir .. "report.lua")

local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_number", thread_count)
end

local user_count = 10000

function init(args)
   user_count = tonumber(args[1]) or user_count
   -- Each thread has its own Lua state, so each needs its own seed.
   math.randomseed(os.time() * 1000 + thread_number)
end

function request()
   return wrk.format("GET", "/api/v1/users/" .. math.random(1, user_count) .. "/profile")
end
