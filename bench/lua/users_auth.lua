-- Requests GET /api/v1/users/{id} as users.lua does, each with Authorization: Bearer and the
-- token read from the file named by the second script argument (wrk ... -- COUNT FILE).

local script_dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(script_dir .. "users.lua")

local users_init = init

function init(args)
   users_init(args)
   local file = assert(io.open(args[2], "r"), "cannot open the token file " .. tostring(args[2]))
   local token = file:read("*l")
   file:close()
   -- wrk.format, which request() calls, adds wrk.headers to every request.
   wrk.headers["Authorization"] = "Bearer " .. token
end
