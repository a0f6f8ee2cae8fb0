#!/usr/bin/env python3
"""The HTTPS section of bench/run.sh (BENCH_ONLY=tls): Turnout's HTTPS listener beside nginx's,
the same certificate and key, one worker each, in front of the same backend (standard library
and the openssl command only).

Subcommands:
  certs DIR                         make a throwaway CA and an ECDSA P-256 leaf for bench.test
                                    signed by it: DIR/ca.pem, DIR/chain.pem (leaf, then CA),
                                    DIR/leaf.pem, DIR/key.pem (PKCS#8)
  check NAME URL CA TEXT            one GET of URL (https://bench.test:PORT/) connecting to
                                    127.0.0.1, the name sent as SNI and checked against the
                                    certificate CA signed: it must answer 200 with TEXT
  negotiated NAME URL CA OUT_JSONL  what `openssl s_client` negotiates with URL: TLS 1.3 and,
                                    forced, TLS 1.2 (protocol, cipher, group, signature, ALPN,
                                    verification); and whether a session offered
                                    (`-sess_in`) is resumed, 3 times; append to OUT_JSONL
  wrk NAME MODE URL CONNS DURATION LUA FRESH_SO OUT_JSONL SERVER_PIDS BACKEND_PIDS
                                    run wrk once through bench.py's run_wrk over HTTPS (MODE
                                    keep-alive, or close: `Connection: close`, a new connection
                                    and handshake per request; FRESH_SO, the built
                                    bench/wrk_fresh_tls.c, preloaded into wrk so that every
                                    handshake is full); the record's target is
                                    NAME-MODE ("-" as OUT_JSONL: a warm-up, nothing recorded)
  resumed LOG OUT_JSON KEY          count what nginx's check log holds (`$ssl_session_reused
                                    $ssl_protocol $ssl_cipher $ssl_curve $ssl_server_name $status`
                                    per request) into OUT_JSON's KEY (as-is, or fresh: then
                                    exit 1 unless every handshake was full)
  meta OUT TURNOUT ROOT ROUNDS DURATION CONNS LOAD WRK_CHECK_JSON
                                    write the run's settings, versions, machine and notes
  report WORK OUT_JSON OUT_MD       the summary and its tables, from WORK/tls-wrk.jsonl,
                                    WORK/tls-negotiated.jsonl and WORK/tls-meta.json
"""

import http.client
import json
import os
import re
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ORDER = ["turnout", "nginx"]
NAMES = {"turnout": "Turnout (`turnout serve --proxy-workers 1`, rustls)",
         "nginx": "nginx (`worker_processes 1`, OpenSSL)"}
MODES = {"close": "New TLS connections: `Connection: close`, a full handshake per request",
         "keep-alive": "Kept TLS connections: requests over established connections"}
CONNECT_TO = "127.0.0.1"


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def certs(directory):
    """A CA and a leaf for bench.test, both ECDSA P-256, valid for 30 days."""
    d = directory
    os.makedirs(d, exist_ok=True)
    p = lambda name: os.path.join(d, name)
    newkey = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-pkeyopt", "ec_param_enc:named_curve"]
    run(newkey + ["-out", p("ca.key")])
    run(["openssl", "req", "-x509", "-new", "-key", p("ca.key"), "-sha256", "-days", "30",
         "-subj", "/CN=Turnout benchmark throwaway CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", p("ca.pem")])
    run(newkey + ["-out", p("key.pem")])
    run(["openssl", "req", "-new", "-key", p("key.pem"), "-subj", "/CN=bench.test",
         "-out", p("leaf.csr")])
    with open(p("leaf.ext"), "w") as f:
        f.write("subjectAltName=DNS:bench.test\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", p("leaf.csr"), "-CA", p("ca.pem"),
         "-CAkey", p("ca.key"), "-set_serial", "0x" + secrets.token_hex(8), "-days", "30",
         "-sha256", "-extfile", p("leaf.ext"), "-out", p("leaf.pem")])
    with open(p("chain.pem"), "w") as f:
        f.write(open(p("leaf.pem")).read() + open(p("ca.pem")).read())
    run(["openssl", "verify", "-CAfile", p("ca.pem"), p("leaf.pem")])
    for name in ["ca.key", "key.pem"]:
        os.chmod(p(name), 0o600)
    print(f"ECDSA P-256 CA and bench.test leaf in {d}", file=sys.stderr)


def host_port(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def check(name, url, ca, text):
    host, port = host_port(url)
    ctx = ssl.create_default_context(cafile=ca)
    sock = socket.create_connection((CONNECT_TO, port), 10)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(sock, server_hostname=host)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    version, cipher = conn.sock.version(), conn.sock.cipher()[0]
    conn.close()
    if resp.status != 200 or text not in body:
        sys.exit(f"error: {name}: GET {url} answered {resp.status}: {body[:200]!r}")
    print(f"{name}: {url} answers over {version} ({cipher}), certificate verified for {host}",
          file=sys.stderr)


def s_client(port, host, ca, extra, stdin=""):
    cmd = ["openssl", "s_client", "-connect", f"{CONNECT_TO}:{port}", "-servername", host,
           "-CAfile", ca, "-verify_return_error", "-alpn", "h2,http/1.1"] + extra
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def parse_s_client(out):
    """What `openssl s_client -brief` printed: protocol, cipher, group, signature, ALPN."""
    find = lambda pattern: (re.search(pattern, out, re.M) or [None, None])[1]
    return {
        "protocol": find(r"^Protocol version: (\S+)"),
        "cipher": find(r"^Ciphersuite: (\S+)"),
        "group": find(r"^(?:Server|Peer) Temp Key: ([^,\n]+)"),
        "signature": find(r"^Signature type: (\S+)"),
        "hash": find(r"^Hash used: (\S+)"),
        "verification": find(r"^Verification: (.+)$"),
    }


def negotiated(name, url, ca, out):
    host, port = host_port(url)
    doc = {"target": name}
    for label, extra in [("tls13", ["-brief"]), ("tls12", ["-brief", "-tls1_2"])]:
        code, text = s_client(port, host, ca, extra)
        doc[label] = parse_s_client(text) if code == 0 else {"error": text.strip()[-300:]}
    # Whether the server resumes a session that is offered: a request on a new connection
    # saving its session (the TLS 1.3 tickets come after the handshake, so the answer is read
    # first), then three more, each offering the session the one before saved. (`s_client
    # -reconnect` offers nothing under TLS 1.3 in OpenSSL 3.0.)
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    sess = os.path.join(os.path.dirname(os.path.abspath(out)), f"tls-{name}-session")
    reused = 0
    for i in range(4):
        extra = ["-ign_eof", "-sess_out", f"{sess}{i}"] + (["-sess_in", f"{sess}{i - 1}"] if i else [])
        code, text = s_client(port, host, ca, extra, request)
        if code != 0:
            sys.exit(f"error: {name}: openssl s_client failed: {text.strip()[-300:]}")
        reused += i > 0 and "\nReused, " in text
        if i == 0:  # -brief leaves ALPN out
            alpn = re.search(r"^ALPN protocol: (\S+)", text, re.M)
            doc["tls13"]["alpn"] = alpn[1] if alpn else None
    for i in range(4):
        os.remove(f"{sess}{i}")
    doc["resumed_when_offered"] = reused
    with open(out, "a") as f:
        f.write(json.dumps(doc) + "\n")
    t = doc["tls13"]
    print(f"  {name:8} {t.get('protocol')} {t.get('cipher')} group {t.get('group')} "
          f"{t.get('signature')} ALPN {t.get('alpn')} ({t.get('verification')}); TLS 1.2: "
          f"{doc['tls12'].get('cipher')}; a session offered was resumed "
          f"{doc['resumed_when_offered']} times of 3", file=sys.stderr)


def run_wrk(name, mode, url, conns, duration, lua, fresh_so, out, server_pids, backend_pids):
    os.environ["LD_PRELOAD"] = fresh_so
    os.environ["WRK_CONNECT"] = CONNECT_TO
    os.environ["WRK_CLOSE"] = "1" if mode == "close" else "0"
    host, port = host_port(url)
    # Host as wrk would send it from the URL (bench.py's run_wrk sends it explicitly).
    bench.run_wrk(f"{name}-{mode}", url.rstrip("/"), f"{host}:{port}", conns, duration, lua,
                  out, server_pids, backend_pids)


def resumed(log, out, key):
    """Count what nginx's check server logged, into OUT[KEY]; with KEY "fresh" (wrk with
    bench/wrk_fresh_tls.c) any resumed handshake, or none logged, is an error."""
    counts, reused, lines = {}, 0, 0
    for line in open(log):
        parts = line.split()
        if len(parts) < 6:
            continue
        lines += 1
        reused += parts[0] == "r"
        key_seen = " ".join(parts[1:5])
        counts[key_seen] = counts.get(key_seen, 0) + 1
    doc = bench.load_json(out, {})
    doc[key] = {"requests": lines, "resumed": reused, "seen": counts}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"  wrk{' with bench/wrk_fresh_tls.c' if key == 'fresh' else ' as it is'}, "
          f"Connection: close: {reused:,} of {lines:,} handshakes resumed ({counts})",
          file=sys.stderr)
    if key == "fresh" and (lines == 0 or reused):
        sys.exit("error: wrk's handshakes with bench/wrk_fresh_tls.c loaded were not all full")


def meta(out, turnout, root, rounds, duration, conns, load, wrk_check_json):
    def first_line(*cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]
    commit = first_line("git", "-C", root, "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", ".", ":!bench",
                            ":!docs"]).returncode
    versions = {"turnout": f"{first_line(turnout, '--version')} at {commit}"
                           + (" (with uncommitted changes)" if dirty else ""),
                "nginx": first_line("nginx", "-v").split(": ")[-1],
                "openssl": first_line("openssl", "version").split(" (")[0],
                "wrk": first_line("wrk", "-v").split(" [")[0]}
    m = bench.machine()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = (re.search(r"^Model name:\s*(.+)$", lscpu, re.M) or [None, m["cpu_model"]])[1]
    check = bench.load_json(wrk_check_json, {})
    fresh, as_is = check["fresh"], check.get("as-is")
    doc = {"machine": m, "lscpu_model": model, "load_at_start": load, "rounds": int(rounds),
           "duration": duration, "connections": int(conns), "versions": versions,
           "wrk_check": check, "notes": [
               "Full handshakes: wrk keeps one TLS session per connection slot and offers it "
               "again when it reconnects (`SSL_clear` keeps it), so servers resume: in this "
               "run's check, "
               + (f"{as_is['resumed']:,} of {as_is['requests']:,} of wrk's handshakes were "
                  "resumed" if as_is else "not measured")
               + ". So wrk runs with bench/wrk_fresh_tls.c preloaded, which drops the session "
               "before each handshake: nginx's check server (the same TLS settings, a log of "
               f"`$ssl_session_reused` per request) then saw {fresh['resumed']:,} resumed of "
               f"{fresh['requests']:,}. Both servers keep their default session resumption "
               "(nginx: tickets; rustls: a stateful cache and two tickets per connection) and "
               "resume a session that is offered (`openssl s_client -sess_in`, above); the "
               "measurement offers none, so every new connection is a full handshake on both.",
               "wrk sends no ALPN, so both serve it HTTP/1.1 (offered h2 and http/1.1 by "
               "`s_client`, Turnout picks h2, this nginx, without `http2` on its listener, "
               "http/1.1); the SNI and Host header are bench.test from the URL, the "
               "connection goes to 127.0.0.1 (bench/wrk_tls.lua), nothing is added to "
               "/etc/hosts.",
               "Server CPU: Turnout's `turnout serve` and its `turnout __dataplane` (the proxy's "
               "process) together; nginx's master and worker. The backend's and wrk's own CPU "
               "are recorded beside it in the raw figures.",
               f"{m['nproc']} CPUs ({model}), Linux {m['kernel']}, {m['memory_gib']} GiB; "
               f"{m['date']}; {versions['turnout']}, {versions['nginx']} on "
               f"{versions['openssl']}, {versions['wrk']}; load average {load} at the start. "
               "The machine is shared with other work: compare ratios within a run."]}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


def report(work, out_json, out_md):
    runs = bench.load_jsonl(os.path.join(work, "tls-wrk.jsonl"))
    neg = {d["target"]: d for d in bench.load_jsonl(os.path.join(work, "tls-negotiated.jsonl"))}
    meta = bench.load_json(os.path.join(work, "tls-meta.json"), {})
    rows = {}
    for mode in MODES:
        for target in ORDER:
            rs = [r for r in runs if r["target"] == f"{target}-{mode}"]
            if not rs:
                continue
            requests = sum(r["requests"] for r in rs)
            cpu = sum(r["cpu_s"] for r in rs)
            seconds = sum(r["duration_us"] for r in rs) / 1e6
            rows.setdefault(mode, {})[target] = {
                "runs": len(rs),
                "rps": statistics.median(r["rps"] for r in rs),
                "rps_all": [round(r["rps"]) for r in rs],
                "p50_us": statistics.median(r["p50_us"] for r in rs),
                "p99_us": statistics.median(r["p99_us"] for r in rs),
                "server_cpu_s_per_1000": round(cpu / requests * 1000, 4) if requests else None,
                "requests_per_server_cpu_s": round(requests / cpu) if cpu else None,
                "server_cores": round(cpu / seconds, 3),
                "wrk_cores": round(sum(r["wrk_cpu_s"] for r in rs) / seconds, 3),
                "backend_cores": round(sum(r["backend_cpu_s"] or 0 for r in rs) / seconds, 3),
                "others_cores": statistics.median(r["others_cores"] for r in rs),
                "errors": sum(sum(r["errors"].values()) for r in rs),
            }
    ratio = lambda a, b: None if not a or not b else round(a / b, 3)
    ratios = {}
    for mode, r in rows.items():
        t, n = r.get("turnout"), r.get("nginx")
        if t and n:
            ratios[mode] = {"rps": ratio(t["rps"], n["rps"]), "p50": ratio(t["p50_us"], n["p50_us"]),
                            "p99": ratio(t["p99_us"], n["p99_us"]),
                            "cpu_per_request": ratio(t["server_cpu_s_per_1000"],
                                                     n["server_cpu_s_per_1000"])}
    summary = {"meta": meta, "negotiated": neg, "rows": rows, "ratios": ratios}
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)

    fx = lambda x: "–" if x is None else f"{x:.2f}×"
    lines = ["Negotiated with each server by `openssl s_client` (SNI bench.test, the throwaway "
             "CA trusted, ALPN h2,http/1.1 offered):", "",
             "| Server | Protocol | Cipher | Group | Signature | ALPN | TLS 1.2 forced | "
             "Session offered, resumed |", "|---|---|---|---|---|---|---|---:|"]
    for target in ORDER:
        d = neg.get(target)
        if not d:
            continue
        t, t12 = d["tls13"], d["tls12"]
        lines.append(f"| {target} | {t.get('protocol', '?')} | {t.get('cipher', '?')} | "
                     f"{t.get('group', '?')} | {t.get('signature', '?')} | "
                     f"{t.get('alpn') or 'none'} | {t12.get('cipher') or 'refused'} | "
                     f"{d['resumed_when_offered']} of 3 |")
    lines.append("")
    for mode, r in rows.items():
        lines += [f"{MODES[mode]}: wrk -t1 -c{meta.get('connections', '?')} over HTTPS, "
                  f"{meta.get('rounds', '?')} interleaved rounds of {meta.get('duration', '?')}, "
                  "medians.", "",
                  "| Server | " + ("Handshakes/s" if mode == "close" else "Requests/s")
                  + " | p50 | p99 | Server CPU-s per 1,000 requests | Requests per server "
                  "CPU-second | Server CPU (cores) | wrk CPU (cores) | Other load (cores) | "
                  "Errors | Per round |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for target in ORDER:
            x = r.get(target)
            if not x:
                continue
            lines.append(f"| {NAMES[target]} | {x['rps']:,.0f} | {bench.fmt_ms(x['p50_us'])} | "
                         f"{bench.fmt_ms(x['p99_us'])} | {x['server_cpu_s_per_1000']:.3f} | "
                         f"{x['requests_per_server_cpu_s']:,} | {x['server_cores']:.2f} | {x['wrk_cores']:.2f} | "
                         f"{x['others_cores']:.2f} | {x['errors']:,} | "
                         f"{', '.join(f'{v:,}' for v in x['rps_all'])} |")
        bound = [t for t in ORDER if t in r and r[t]["wrk_cores"] >= 0.9]
        if bound:
            lines += ["", f"wrk (one thread) used a whole core against {' and '.join(bound)} "
                      "here: the rate is the client's ceiling more than the server's (on 2 CPUs "
                      "a TLS client costs about what the server does), so the server's CPU per "
                      "request is the comparison of the servers."]
        lines.append("")
    lines += ["Other load: what the rest of the machine (other people's work on this shared host) "
              "used meanwhile, the median of the rounds; a round with a core of it is slower for "
              "reasons of its own.", ""]
    if ratios:
        lines += ["Ratios, Turnout over nginx (above 1 is better for Turnout in requests/s, worse "
                  "in latency and CPU per request):", ""]
        for mode, q in ratios.items():
            what = "handshakes/s" if mode == "close" else "requests/s"
            lines.append(f"- {MODES[mode].split(':')[0]}: {what} **{fx(q['rps'])}**, p50 "
                         f"{fx(q['p50'])}, p99 {fx(q['p99'])}, server CPU per request "
                         f"**{fx(q['cpu_per_request'])}**.")
        lines.append("")
    lines += meta.get("notes", [])
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "certs":
        certs(*args)
    elif cmd == "check":
        check(*args)
    elif cmd == "negotiated":
        negotiated(*args)
    elif cmd == "wrk":
        run_wrk(*args)
    elif cmd == "resumed":
        resumed(*args)
    elif cmd == "meta":
        meta(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"error: unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
