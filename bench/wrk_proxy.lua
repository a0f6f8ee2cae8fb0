-- Makes wrk a forward-proxy client: wrk connects to the proxy given on its command line and
-- sends every request in absolute form (RFC 9112 §3.2.2), "GET http://ORIGIN/ HTTP/1.1".
-- From the environment: WRK_ORIGIN (http://HOST:PORT, the origin behind the proxy; the same
-- URL as on the command line for a direct run, which then sends the usual origin form),
-- WRK_PROXY_AUTH ("Basic ...", optional: sent as Proxy-Authorization), WRK_CLOSE=1 (send
-- "Connection: close": a new connection per request).
-- The request is still built once (wrk.path and wrk.headers, no request() function), and the
-- figures come out as in wrk_json.lua, whose done() this loads.
local origin = assert(os.getenv("WRK_ORIGIN"), "WRK_ORIGIN is not set")
local host = assert(origin:match("^http://([^/]+)"), "WRK_ORIGIN must be http://HOST:PORT")
if os.getenv("WRK_DIRECT") ~= "1" then
  wrk.path = "http://" .. host .. "/"
end
wrk.headers["Host"] = host
local auth = os.getenv("WRK_PROXY_AUTH")
if auth and auth ~= "" then
  wrk.headers["Proxy-Authorization"] = auth
end
if os.getenv("WRK_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_json.lua")
