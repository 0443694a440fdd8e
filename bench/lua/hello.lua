-- Requests GET / (wrk's default request) and prints the JSON summary of report.lua.

local script_dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(script_dir .. "report.lua")
