-- Makes wrk an HTTPS client of a name that does not resolve: wrk takes the TLS server name
-- (SNI) and the Host header from the URL on its command line (https://bench.test:PORT/), and
-- this connects to WRK_CONNECT (an address, 127.0.0.1) instead of looking the name up, so
-- nothing on the machine (/etc/hosts) changes. wrk.resolve is what wrk calls to fill
-- wrk.addrs before any thread starts. From the environment too: WRK_CLOSE=1 sends
-- "Connection: close": a new connection, and so a new handshake, per request.
-- The request is still built once (no request() function), and the figures come out as in
-- wrk_json.lua, whose done() this loads.
local connect = assert(os.getenv("WRK_CONNECT"), "WRK_CONNECT is not set")
wrk.resolve = function(_, service)
  wrk.addrs = wrk.lookup(connect, service)
end
if os.getenv("WRK_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_json.lua")
