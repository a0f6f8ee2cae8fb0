#!/usr/bin/env python3
"""The egress section of bench/run.sh (BENCH_ONLY=egress): Turnout's egress proxy beside
tinyproxy and a direct connection, in front of the same backend (standard library only).

Subcommands:
  proxy-url PROXY HOST              print what GET /proxy answers for Host: HOST through
                                    Turnout's proxy (the probe app: its HTTP_PROXY)
  check NAME PROXY_URL ORIGIN TEXT  one GET of ORIGIN through PROXY_URL (absolute form, with
                                    Proxy-Authorization from the URL's user and password; "-" for
                                    direct): it must answer 200 with TEXT, and a CONNECT to ORIGIN's
                                    host:port through it must answer 200 (exit 1 otherwise)
  wrk NAME MODE PROXY_URL ORIGIN CONNS DURATION LUA OUT_JSONL PROXY_PIDS BACKEND_PIDS
                                    run wrk once (MODE keep-alive, or close: Connection: close on
                                    every request); append its figures and the CPU seconds of the
                                    proxy's and the backend's processes to OUT_JSONL ("-": a
                                    warm-up, nothing recorded)
  tunnels N OUT_JSON ORIGIN NAME=PROXY_URL...
                                    N times per target, in turn: a new connection, CONNECT to
                                    ORIGIN's host:port, its 200, then one GET through the tunnel to
                                    its whole answer (the direct target: the connection and the
                                    GET); write every sample (ms)
  meta OUT TURNOUT ROOT ROUNDS DURATION ITERATIONS CONNS LOAD LOGGED DROPPED
                                    write the run's settings, versions, machine and notes
  report WORK OUT_JSON OUT_MD       the summary and its tables, from WORK/egress-wrk.jsonl and
                                    WORK/egress-tunnels.json
"""

import base64
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ORDER = ["turnout", "tinyproxy", "tinyproxy-quiet", "direct"]
NAMES = {"turnout": "Turnout egress proxy (every request logged)",
         "tinyproxy": "tinyproxy, LogLevel Info (each request logged, fsync per line)",
         "tinyproxy-quiet": "tinyproxy, LogLevel Warning (no request logged)",
         "direct": "direct (no proxy)"}


def proxy_parts(url):
    """(host, port, "Basic ..." or None) of a proxy URL; None for "-" (direct)."""
    if url == "-":
        return None
    u = urllib.parse.urlsplit(url)
    auth = None
    if u.username is not None:
        user = urllib.parse.unquote(u.username)
        password = urllib.parse.unquote(u.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return u.hostname, u.port, auth


def proxy_url(proxy, host):
    h, p = bench.split_url(proxy)
    conn = http.client.HTTPConnection(h, p, timeout=10)
    conn.request("GET", "/proxy", headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read().decode()
    if resp.status != 200 or not body.startswith("http://"):
        sys.exit(f"error: {host}/proxy answered {resp.status}: {body[:200]!r} (no HTTP_PROXY?)")
    print(body)


def read_head(sock, data=b""):
    """Read until the end of a response head; (status, head, what came after it)."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError(f"connection closed before a response head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def read_response(sock, data=b""):
    """One whole response with a Content-Length body; (status, body)."""
    status, head, rest = read_head(sock, data)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed inside a response body")
        rest += chunk
    return status, rest[:length]


def origin_parts(origin):
    u = urllib.parse.urlsplit(origin)
    return u.hostname, u.port


def get_once(parts, origin):
    """GET ORIGIN/ through the proxy (absolute form) or directly; (status, body)."""
    oh, op = origin_parts(origin)
    if parts is None:
        sock = socket.create_connection((oh, op), 10)
        target, auth = "/", None
    else:
        sock = socket.create_connection(parts[:2], 10)
        target, auth = f"http://{oh}:{op}/", parts[2]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = f"GET {target} HTTP/1.1\r\nHost: {oh}:{op}\r\nConnection: close\r\n"
    if auth:
        head += f"Proxy-Authorization: {auth}\r\n"
    sock.sendall((head + "\r\n").encode())
    try:
        return read_response(sock)
    finally:
        sock.close()


def tunnel_once(parts, origin):
    """A new connection to the proxy, CONNECT to the origin, its 200, one GET through the
    tunnel to its whole answer; (ms to the 200, ms in all). Direct: the connection and the GET
    (the first figure is the connection)."""
    oh, op = origin_parts(origin)
    request = f"GET / HTTP/1.1\r\nHost: {oh}:{op}\r\nConnection: close\r\n\r\n".encode()
    t0 = time.perf_counter()
    sock = socket.create_connection(parts[:2] if parts else (oh, op), 10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = b""
        if parts:
            connect = f"CONNECT {oh}:{op} HTTP/1.1\r\nHost: {oh}:{op}\r\n"
            if parts[2]:
                connect += f"Proxy-Authorization: {parts[2]}\r\n"
            sock.sendall((connect + "\r\n").encode())
            status, _, rest = read_head(sock)
            if status != 200:
                raise OSError(f"CONNECT answered {status}")
        t1 = time.perf_counter()
        sock.sendall(request)
        status, body = read_response(sock, rest)
        t2 = time.perf_counter()
        if status != 200:
            raise OSError(f"the GET through the tunnel answered {status}")
        return (t1 - t0) * 1000, (t2 - t0) * 1000
    finally:
        sock.close()


def check(name, url, origin, text):
    parts = proxy_parts(url)
    status, body = get_once(parts, origin)
    if status != 200 or text not in body.decode("utf-8", "replace"):
        sys.exit(f"error: {name}: GET {origin}/ answered {status}: {body[:300]!r}")
    if parts is not None:
        tunnel_once(parts, origin)
        if parts[2]:  # the same without credentials must be refused: the check is on
            status, _ = get_once((parts[0], parts[1], None), origin)
            if status != 407:
                sys.exit(f"error: {name} answered {status} without credentials, not 407")
    how = "directly" if parts is None else "through it (and 407 without credentials)"
    print(f"{name}: {origin} answers {how}", file=sys.stderr)


def run_wrk(name, mode, url, origin, conns, duration, lua, out, proxy_pids, backend_pids):
    pp = [int(p) for p in proxy_pids.split(",") if p]
    bp = [int(p) for p in backend_pids.split(",") if p and int(p) not in pp]
    parts = proxy_parts(url)
    env = dict(os.environ, WRK_ORIGIN=origin, WRK_CLOSE="1" if mode == "close" else "0")
    if parts is None:
        env["WRK_DIRECT"] = "1"
        connect_to = origin
    else:
        env["WRK_PROXY_AUTH"] = parts[2] or ""
        connect_to = f"http://{parts[0]}:{parts[1]}"
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency", "-s", lua, connect_to + "/"]
    t0, b0 = bench.cpu_seconds(pp), bench.cpu_seconds(bp)
    m0, _ = bench.machine_busy_seconds()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m1, _ = bench.machine_busy_seconds()
    t1, b1 = bench.cpu_seconds(pp), bench.cpu_seconds(bp)
    if done.returncode != 0:
        sys.exit(f"error: wrk failed against {name}: {done.stderr.strip()}")
    if out == "-":
        return
    line = next(l for l in done.stdout.splitlines() if l.startswith("WRK_JSON "))
    run = json.loads(line[len("WRK_JSON "):])
    seconds = run["duration_us"] / 1e6
    wrk_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    run.update({
        "target": name,
        "mode": mode,
        "proxy_cpu_s": round(t1 - t0, 3) if pp else None,
        "backend_cpu_s": round(b1 - b0, 3),
        "wrk_cpu_s": round(wrk_cpu, 3),
        "others_cores": round(max(0.0, (m1 - m0) - (t1 - t0) - (b1 - b0) - wrk_cpu) / seconds, 3),
    })
    with open(out, "a") as f:
        f.write(json.dumps(run) + "\n")
    with open(out.rsplit(".", 1)[0] + f"-{name}-{mode}.txt", "a") as f:
        f.write(done.stdout)
    e = run["errors"]
    print(f"  {name:9} {mode:10} {run['rps']:>9,.0f} req/s  p50 {run['p50_us'] / 1000:6.2f} ms"
          f"  p99 {run['p99_us'] / 1000:7.2f} ms  socket errors {sum(e.values()) - e['status']}"
          f"  non-2xx {e['status']}  others {run['others_cores']:.2f} cores", file=sys.stderr)


def tunnels(n, out, origin, targets):
    named = [(t.split("=", 1)[0], proxy_parts(t.split("=", 1)[1])) for t in targets]
    samples = {name: {"open_ms": [], "total_ms": []} for name, _ in named}
    for _ in range(min(50, n)):  # warm-up: not recorded
        for _, parts in named:
            tunnel_once(parts, origin)
    for i in range(n):
        # In turn, the first target changing each time: drift spreads over all of them.
        for k in range(len(named)):
            name, parts = named[(i + k) % len(named)]
            opened, total = tunnel_once(parts, origin)
            samples[name]["open_ms"].append(round(opened, 4))
            samples[name]["total_ms"].append(round(total, 4))
    with open(out, "w") as f:
        json.dump({"iterations": n, "samples": samples}, f)
    for name, s in samples.items():
        print(f"  {name:9} CONNECT + GET p50 {bench.pct(s['total_ms'], 50):.3f} ms"
              f"  p99 {bench.pct(s['total_ms'], 99):.3f} ms", file=sys.stderr)


def meta(out, turnout, root, rounds, duration, iterations, conns, load, logged, dropped):
    def first_line(*cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]
    commit = first_line("git", "-C", root, "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", ".", ":!bench",
                            ":!docs"]).returncode
    versions = {"turnout": f"{first_line(turnout, '--version')} at {commit}"
                           + (" (with uncommitted changes)" if dirty else ""),
                "tinyproxy": first_line("tinyproxy", "-v"),
                "wrk": first_line("wrk", "-v").split(" [")[0]}
    m = bench.machine()
    logged, dropped = int(logged), int(dropped)
    doc = {"machine": m, "load_at_start": load, "rounds": int(rounds), "duration": duration,
           "tunnel_iterations": int(iterations), "connections": int(conns), "versions": versions,
           "egress_log_entries_after": logged, "egress_log_dropped": dropped, "notes": [
               f"Turnout logged every request (batched into its store, as shipped): the "
               f"environment's log held {logged:,} entries after the run (it keeps the newest "
               f"10,000); records dropped because the writer fell behind: {dropped:,}.",
               "tinyproxy closes the client connection after every response without saying so "
               "(no `Connection: close`), so wrk's next request on it fails and wrk reconnects: "
               "its socket errors are one read error per request, not failed requests.",
               "Proxy CPU: the whole `turnout serve` process (the egress proxy runs in it, with "
               "its log writer and the store); tinyproxy's process (a thread per client "
               "connection).",
               f"{m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, {m['memory_gib']} GiB; "
               f"{m['date']}; {versions['turnout']}, {versions['tinyproxy']}, {versions['wrk']}; "
               f"load average {load} at the start."]}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


def report(work, out_json, out_md):
    runs = bench.load_jsonl(os.path.join(work, "egress-wrk.jsonl"))
    tun = bench.load_json(os.path.join(work, "egress-tunnels.json"), {})
    meta = bench.load_json(os.path.join(work, "egress-meta.json"), {})
    http_rows = {}
    for mode in ["keep-alive", "close"]:
        for target in ORDER:
            rs = [r for r in runs if r["target"] == target and r["mode"] == mode]
            if not rs:
                continue
            cpu = [r["proxy_cpu_s"] for r in rs if r.get("proxy_cpu_s")]
            secs = [r["duration_us"] / 1e6 for r in rs if r.get("proxy_cpu_s")]
            reqs = [r["requests"] for r in rs if r.get("proxy_cpu_s")]
            http_rows.setdefault(mode, {})[target] = {
                "runs": len(rs),
                "rps": statistics.median(r["rps"] for r in rs),
                "rps_all": [round(r["rps"]) for r in rs],
                "p50_us": statistics.median(r["p50_us"] for r in rs),
                "p99_us": statistics.median(r["p99_us"] for r in rs),
                "proxy_cores": round(sum(cpu) / sum(secs), 3) if cpu else None,
                "requests_per_proxy_cpu_s": round(sum(reqs) / sum(cpu)) if cpu else None,
                "socket_errors": sum(sum(r["errors"].values()) - r["errors"]["status"] for r in rs),
                "non_2xx": sum(r["errors"]["status"] for r in rs),
                "others_cores": statistics.median(r["others_cores"] for r in rs),
            }
    tunnel_rows = {}
    for target, s in (tun.get("samples") or {}).items():
        tunnel_rows[target] = {
            "open_p50_ms": bench.pct(s["open_ms"], 50), "open_p99_ms": bench.pct(s["open_ms"], 99),
            "p50_ms": bench.pct(s["total_ms"], 50), "p99_ms": bench.pct(s["total_ms"], 99),
        }
    summary = {"meta": meta, "http": http_rows, "tunnels": {
        "iterations": tun.get("iterations"), "targets": tunnel_rows}}
    ratio = lambda a, b: None if not a or not b else round(a / b, 2)
    ratios = {}
    for mode, rows in http_rows.items():
        t = rows.get("turnout")
        for other in ["tinyproxy", "tinyproxy-quiet", "direct"]:
            o = rows.get(other)
            if not t or not o:
                continue
            r = {"rps": ratio(t["rps"], o["rps"]), "p50": ratio(t["p50_us"], o["p50_us"]),
                 "p99": ratio(t["p99_us"], o["p99_us"])}
            if other != "direct":
                r["requests_per_cpu_s"] = ratio(t["requests_per_proxy_cpu_s"],
                                                o["requests_per_proxy_cpu_s"])
            ratios[f"http_{mode}_vs_{other}"] = r
    t = tunnel_rows.get("turnout")
    for other in ["tinyproxy", "tinyproxy-quiet", "direct"]:
        o = tunnel_rows.get(other)
        if t and o:
            ratios[f"connect_vs_{other}"] = {"p50": ratio(t["p50_ms"], o["p50_ms"]),
                                            "p99": ratio(t["p99_ms"], o["p99_ms"]),
                                            "added_p50_ms": round(t["p50_ms"] - o["p50_ms"], 3)}
    summary["ratios"] = ratios
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)

    names = NAMES
    modes = {"keep-alive": "the client keeps its connections (wrk's default)",
             "close": "`Connection: close`: a new client connection per request"}
    per_cpu = lambda x: "–" if x is None else f"{x:,}"
    lines = []
    for mode, rows in http_rows.items():
        lines += [f"Plain HTTP through the proxy, {modes[mode]}: wrk -t1 "
                  f"-c{meta.get('connections', '?')}, {meta.get('rounds', '?')} rounds of "
                  f"{meta.get('duration', '?')}, medians.", "",
                  "| Target | Requests/s | p50 | p99 | Requests per proxy CPU-second | "
                  "Proxy CPU (cores) | wrk socket errors | Requests/s per round |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for target in ORDER:
            r = rows.get(target)
            if not r:
                continue
            lines.append(
                f"| {names[target]} | {r['rps']:,.0f} | {bench.fmt_ms(r['p50_us'])} | "
                f"{bench.fmt_ms(r['p99_us'])} | "
                f"{per_cpu(r['requests_per_proxy_cpu_s'])} | "
                f"{bench.fmt_cores(r['proxy_cores'])} | {r['socket_errors']:,} | "
                f"{', '.join(f'{x:,}' for x in r['rps_all'])} |")
        lines.append("")
    if tunnel_rows:
        lines += [f"HTTPS-style tunnels: {tun['iterations']} times per target, in turn: a new "
                  "connection, `CONNECT` to the backend, its 200, then one GET through the tunnel "
                  "to its whole answer (direct: the connection and the GET).", "",
                  "| Target | CONNECT to 200, p50 | p99 | With the GET, p50 | p99 |",
                  "|---|---:|---:|---:|---:|"]
        for target in ORDER:
            r = tunnel_rows.get(target)
            if not r:
                continue
            opened = ("–", "–") if target == "direct" else (
                f"{r['open_p50_ms']:.3f} ms", f"{r['open_p99_ms']:.3f} ms")
            lines.append(f"| {names[target]} | {opened[0]} | {opened[1]} | {r['p50_ms']:.3f} ms | "
                         f"{r['p99_ms']:.3f} ms |")
        lines.append("")
    fr = lambda x: "–" if x is None else f"{x:.2f}×"
    said = []
    for key, r in ratios.items():
        kind, _, other = key.partition("_vs_")
        what = {"http_keep-alive": "HTTP, kept connections", "http_close": "HTTP, Connection: close",
                "connect": "CONNECT + GET"}[kind]
        if kind == "connect":
            said.append(f"{what}, against {other}: p50 {fr(r['p50'])}, p99 {fr(r['p99'])} "
                        f"({r['added_p50_ms']:+.3f} ms at p50)")
        else:
            cpu = (f", requests per CPU-second {fr(r['requests_per_cpu_s'])}"
                   if "requests_per_cpu_s" in r else "")
            said.append(f"{what}, against {other}: requests/s {fr(r['rps'])}, p50 "
                        f"{fr(r['p50'])}, p99 {fr(r['p99'])}{cpu}")
    if said:
        lines += ["Ratios (Turnout over the other):", ""] + [f"- {s}." for s in said] + [""]
    for note in meta.get("notes", []):
        lines.append(note)
    if meta.get("notes"):
        lines.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "proxy-url":
        proxy_url(*args)
    elif cmd == "check":
        check(*args)
    elif cmd == "wrk":
        run_wrk(*args)
    elif cmd == "tunnels":
        tunnels(int(args[0]), args[1], args[2], args[3:])
    elif cmd == "meta":
        meta(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"error: unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
