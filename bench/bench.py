#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

Subcommands:
  ports N                           print N free TCP ports on 127.0.0.1
  field FILE PATH                   print a field of a JSON file ("instance.port"); FILE - is stdin
  wait URL HOST [TEXT] [SECONDS]    wait until GET URL with Host answers 200 (and contains TEXT)
  pids ROOT_PID...                  print the pids of these processes and all their descendants
  cpu PID...                        print the CPU seconds (user + system) these processes used
  rss PID...                        print the summed VmRSS (KiB) of these processes
  wrk TARGET URL HOST CONNS DURATION LUA OUT_JSONL TARGET_PIDS BACKEND_PIDS
                                    run wrk once; append its figures and CPU readings to OUT_JSONL
                                    (OUT_JSONL "-" = a warm-up, nothing recorded; PIDS comma-separated)
  domains API FIRST LAST APP/ENV    bind dNNNN.bench.test (FIRST..LAST) to APP/ENV through the API
  probe PROXY FIRST LAST TEXT       GET a few of dNNNN.bench.test through the proxy; all must contain TEXT
  switch API PROXY DOMAIN APP ENV_A ENV_B COUNT OUT
                                    switch DOMAIN back and forth COUNT times; write the raw samples
  nginx-names DIR LISTEN BACKEND N  write DIR/nginx.conf: nginx with N server blocks (the memory peer)
  cpu-mark WORK PID                 print the CPU seconds the machine has been busy and those of
                                    PID's process tree and of processes naming WORK (with what they
                                    reaped), as BUSY,OURS
  restarts-record ROW WRK_OUT STEADY_OUT TIMES MARKS OUT_JSONL
                                    read one restarts row (wrk's output under the restarts, without
                                    them or "-", the restarts' start and length in ms, cpu-mark
                                    before and after each run: STEADY0 STEADY1 RUN0 RUN1 or - for
                                    the steady ones); append it
  push REPO GIT_URL PROXY HOST RUNS OUT_JSON OUT_MD
                                    commit a new message.txt and `git push` it RUNS times, timing
                                    each from the push's start to the new text answering at the
                                    proxy for HOST; write the runs and their median
  wake API PROXY APP/ENV RUNS OUT_JSON OUT_MD
                                    RUNS times: wait until APP/ENV sleeps, then time one GET of
                                    its URL (the request wakes it) to its whole 200 answer; write
                                    the samples, p50 and max
  report WORK OUT_JSON OUT_MD       read the raw results in WORK, write the summary JSON and markdown
  pgrep WORK WORD                   print the pids of the run's processes (see reap) with the
                                    argument WORD (`__dataplane`)
  reap WORK                         SIGKILL what is left of the run's processes: those whose
                                    command line names WORK, the `turnout __dataplane` and
                                    `turnout __instance` processes serving a Unix socket under it,
                                    with their descendants and process groups
"""

import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timezone

HZ = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def field(doc, path):
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def split_url(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def get(conn, host, path="/"):
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    return resp.status, resp.read().decode("utf-8", "replace")


def wait(url, host, text="", seconds=30.0):
    h, p = split_url(url)
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(h, p, timeout=2)
            status, body = get(conn, host)
            conn.close()
            if status == 200 and text in body:
                return
            last = f"status {status}, body {body[:80]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    sys.exit(f"error: {url} (Host: {host}) not ready after {seconds}s: {last}")


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(roots):
    kids = children_map()
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def cpu_ticks(pids, reaped=False):
    """utime + stime of `pids` (with `reaped`: + cutime + cstime, the children they reaped), in
    clock ticks; a process gone already counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15 if reaped else 13])  # fields 14 to 17
    return total


def cpu_seconds(pids):
    return cpu_ticks(pids) / HZ


def cpu_mark(work, root):
    """Machine busy CPU seconds, and those of our processes: the tree under `root` and whatever
    names `work`, each with the time of the children it reaped (so a process that exits between
    two marks still counts, through its parent)."""
    ours = set(tree([root, *bench_processes(work)]))
    busy, _ = machine_busy_seconds()
    return busy, cpu_ticks(ours, reaped=True) / HZ


def others_cores(mark0, mark1, seconds):
    """CPU cores the rest of the machine used between two cpu-marks."""
    b0, o0 = (float(x) for x in mark0.split(","))
    b1, o1 = (float(x) for x in mark1.split(","))
    return round(max(0.0, (b1 - b0) - (o1 - o0)) / seconds, 3)


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def machine_busy_seconds():
    """CPU seconds the whole machine spent busy (all but idle and iowait), and stolen."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / HZ, steal / HZ


def run_wrk(target, url, host, conns, duration, lua, out, target_pids, backend_pids):
    import resource
    import subprocess
    tp = [int(p) for p in target_pids.split(",") if p]
    bp = [int(p) for p in backend_pids.split(",") if p and int(p) not in tp]
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency", "-s", lua,
           "-H", f"Host: {host}", url + "/"]
    t0, b0 = cpu_seconds(tp), cpu_seconds(bp)
    m0, s0 = machine_busy_seconds()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m1, s1 = machine_busy_seconds()
    t1, b1 = cpu_seconds(tp), cpu_seconds(bp)
    if done.returncode != 0:
        sys.exit(f"error: wrk failed against {target}: {done.stderr.strip()}")
    if out == "-":
        return
    line = next(l for l in done.stdout.splitlines() if l.startswith("WRK_JSON "))
    run = json.loads(line[len("WRK_JSON "):])
    seconds = run["duration_us"] / 1e6
    wrk_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    run.update({
        "target": target,
        "cpu_s": round(t1 - t0, 3),
        "backend_cpu_s": round(b1 - b0, 3) if bp else None,
        "wrk_cpu_s": round(wrk_cpu, 3),
        "machine_busy_cores": round((m1 - m0) / seconds, 3),
        "steal_cores": round((s1 - s0) / seconds, 3),
        # What the rest of the machine (other jobs on this host) used meanwhile.
        "others_cores": round(max(0.0, (m1 - m0) - (t1 - t0) - (b1 - b0) - wrk_cpu) / seconds, 3),
    })
    with open(out, "a") as f:
        f.write(json.dumps(run) + "\n")
    with open(out.rsplit(".", 1)[0] + f"-{target}.txt", "a") as f:
        f.write(done.stdout)
    p99 = next((l.split()[1] for l in done.stdout.splitlines() if l.strip().startswith("99%")), "?")
    print(f"  {target:8} {run['rps']:>9,.0f} req/s  p99 {p99:>8}  proxy CPU {run['cpu_s'] / seconds:.2f}"
          f"  others {run['others_cores']:.2f} cores", file=sys.stderr)


def command_lines():
    """(pid, argv) of every process that can be read."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        yield int(name), args


HELPERS = ("__dataplane", "__instance")


def unix_socket_inodes(marker):
    """Inodes of the Unix sockets bound to a path under `marker` (this network namespace's)."""
    inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7].startswith(marker):
                    inodes.add(fields[6])
    except OSError:
        pass
    return inodes


def uses_socket(pid, inodes):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def bench_processes(work):
    """{pid: (rank, argv)} of the processes that belong to the run in `work`: those whose command
    line names it, and Turnout's helpers (`turnout __dataplane`, `turnout __instance`), whose
    command line does not: they are known by the Unix socket they serve under the daemon's home.
    Rank 0 for a data plane, 1 for an instance supervisor, 2 for the rest."""
    marker = work.rstrip("/") + "/"
    inodes = None
    found = {}
    for pid, args in command_lines():
        helper = next((a for a in args[1:3] if a in HELPERS), None)
        if marker not in " ".join(args):
            if not helper:
                continue
            if inodes is None:
                inodes = unix_socket_inodes(marker)
            if not uses_socket(pid, inodes):
                continue
        found[pid] = (0 if helper == "__dataplane" else 1 if helper else 2, args)
    return found


def pgrep(work, word):
    return [pid for pid, (_, args) in bench_processes(work).items()
            if word in args and pid != os.getpid()]


def reap(work):
    """Last resort at exit: kill the processes of this run (`bench_processes`), with their
    descendants and process groups (an instance the daemon could not stop runs in a group of its
    own under its supervisor), never the caller's group. Turnout's helpers go first: a
    `turnout __dataplane` (the proxy in a process of its own, which outlives a killed
    `turnout serve`) and the `turnout __instance` supervisors (which outlive any daemon)."""
    import signal
    me, own_group = os.getpid(), os.getpgid(0)
    spared = {me, os.getppid()}
    found = bench_processes(work)
    order = []
    for root in sorted(found, key=lambda p: found[p][0]):
        if root in spared:
            continue
        for pid in tree([root]):  # the root, then what runs under it
            if pid not in spared and pid not in order:
                order.append(pid)
    for pid in order:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            group = os.getpgid(pid)
            print(f"killing leftover {pid}: {cmdline[:100]}", file=sys.stderr)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    remove_namespaces(work)


def remove_namespaces(work):
    """The network namespaces (`turnout-<uid>`, one per environment, made as root) of every
    Turnout home under WORK: a daemon keeps them across its restarts, so none removes them once
    the home is deleted, and thousands left behind slow down every later mount of the machine."""
    import glob
    import sqlite3
    for db in glob.glob(os.path.join(work, "**", "turnout.db"), recursive=True):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                uids = [row[0] for row in conn.execute("SELECT uid FROM environments")]
        except sqlite3.Error:
            continue
        for uid in uids:
            if os.path.exists(f"/run/netns/turnout-{uid}"):
                subprocess.run(["ip", "netns", "delete", f"turnout-{uid}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk_figures(path):
    """The figures wrk_json.lua printed into wrk's output file at PATH."""
    with open(path) as f:
        text = f.read()
    line = next((l for l in text.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        sys.exit(f"error: wrk printed no figures into {path}:\n{text[-2000:]}")
    return json.loads(line[len("WRK_JSON "):])


def failed(run):
    """Socket errors (connect, read, write, timeout) and non-2xx/3xx answers."""
    return sum(run["errors"].values())


def restarts_record(row, wrk_out, steady_out, times, marks, out):
    run = wrk_figures(wrk_out)
    steady = None if steady_out == "-" else wrk_figures(steady_out)
    m = marks.split()
    if steady and m[0] != "-":
        steady["others_cores"] = others_cores(m[0], m[1], steady["duration_us"] / 1e6)
    run["others_cores"] = others_cores(m[2], m[3], run["duration_us"] / 1e6)
    restarts = []
    with open(times) as f:
        for line in f:
            if line.strip():
                at, took = line.split()
                restarts.append({"at_ms": int(at), "took_ms": int(took)})
    pick = ["requests", "duration_us", "rps", "p50_us", "p99_us", "max_us", "errors", "others_cores"]
    record = {"row": row, "restarts": len(restarts), "failed": failed(run),
              **{k: run.get(k) for k in pick}, "restart_times": restarts,
              "steady": {"failed": failed(steady), **{k: steady.get(k) for k in pick}}
              if steady else None}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    took = sorted(r["took_ms"] for r in restarts)
    print(f"  {row:16} {len(restarts)} restarts (median {took[len(took) // 2] if took else '?'} ms)"
          f"  {run['requests']:,} requests  {record['failed']:,} failed {run['errors']}"
          f"  p99 {run['p99_us'] / 1000:.2f} ms  others {run['others_cores']:.2f} cores"
          + (f" (steady state {steady['p99_us'] / 1000:.2f} ms, {failed(steady)} failed)"
             if steady else ""), file=sys.stderr)


def api_call(conn, method, path, body=None):
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if os.environ.get("TURNOUT_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["TURNOUT_TOKEN"].strip()
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = raw.decode("utf-8", "replace")
    return resp.status, doc


def domain_name(i):
    return f"d{i:04d}.bench.test"


def add_domains(api, first, last, target):
    app, env = target.split("/")
    h, p = split_url(api)
    conn = http.client.HTTPConnection(h, p, timeout=30)
    started = time.perf_counter()
    for i in range(first, last + 1):
        status, doc = api_call(conn, "POST", "/api/v1/domains",
                               {"domain": domain_name(i), "app": app, "env": env})
        if status >= 300:
            sys.exit(f"error: adding {domain_name(i)} answered {status}: {doc}")
    elapsed = time.perf_counter() - started
    print(f"{last - first + 1} domains added in {elapsed:.1f}s", file=sys.stderr)


def probe(proxy, first, last, text):
    h, p = split_url(proxy)
    conn = http.client.HTTPConnection(h, p, timeout=5)
    picks = sorted({first, last, (first + last) // 2, first + (last - first) // 3})
    for i in picks:
        status, body = get(conn, domain_name(i))
        if status != 200 or text not in body:
            sys.exit(f"error: {domain_name(i)} answered {status} {body[:80]!r}, wanted {text!r}")


def switch(api, proxy, domain, app, env_a, env_b, count, out):
    ah, ap = split_url(api)
    ph, pp = split_url(proxy)
    api_conn = http.client.HTTPConnection(ah, ap, timeout=30)
    proxy_conn = http.client.HTTPConnection(ph, pp, timeout=5)
    path = f"/api/v1/domains/{urllib.parse.quote(domain)}/switch"
    samples = []
    for i in range(count + 1):  # the first switch is a warm-up, not counted
        env = env_b if i % 2 == 0 else env_a
        started = time.perf_counter()
        status, doc = api_call(api_conn, "POST", path, {"app": app, "env": env})
        wall_us = (time.perf_counter() - started) * 1e6
        if status >= 300:
            sys.exit(f"error: switch to {env} answered {status}: {doc}")
        # The very next request must already reach the new environment.
        got_status, body = get(proxy_conn, domain)
        ok = got_status == 200 and f"hello from {env}" in body
        if i == 0:
            continue
        health_ms = float(doc.get("health_check_ms", 0) or 0)
        health_us = doc.get("health_check_us")
        health_us = float(health_us) if health_us is not None else health_ms * 1000.0
        samples.append({
            "env": env,
            "wall_us": round(wall_us, 1),
            "health_check_us": health_us,
            "client_us": round(max(wall_us - health_us, 0.0), 1),
            "apply_us": doc.get("apply_us"),
            "next_request_ok": ok,
            "next_request": f"{got_status} {body.strip()[:40]}",
        })
    with open(out, "w") as f:
        json.dump(samples, f, indent=1)


def nginx_names(directory, listen, backend, n):
    servers = []
    for i in range(1, n + 1):
        servers.append(
            f"    server {{ listen 127.0.0.1:{listen}; server_name {domain_name(i)};\n"
            f"        location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n"
            f"            proxy_set_header Connection \"\"; proxy_set_header Host $http_host; }} }}\n")
    conf = f"""daemon off;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 128;
    client_body_temp_path tmp-body;
    proxy_temp_path tmp-proxy;
    fastcgi_temp_path tmp-fastcgi;
    uwsgi_temp_path tmp-uwsgi;
    scgi_temp_path tmp-scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
{''.join(servers)}}}
"""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "nginx.conf"), "w") as f:
        f.write(conf)


# ---------------------------------------------------------------------------------------------
# The report


def wake(api, proxy, target, runs, out_json, out_md):
    app, env = target.split("/")
    host = f"{env}.{app}.localhost"
    ah, ap = split_url(api)
    ph, pp = split_url(proxy)
    samples = []
    for i in range(runs):
        deadline = time.monotonic() + 60
        while True:
            conn = http.client.HTTPConnection(ah, ap, timeout=10)
            status, doc = api_call(conn, "GET", f"/api/v1/apps/{app}/envs/{env}")
            conn.close()
            if status == 200 and doc["status"] == "sleeping":
                break
            if time.monotonic() > deadline:
                sys.exit(f"error: {target} did not fall asleep within 60 s: {status} {doc}")
            time.sleep(0.05)
        conn = http.client.HTTPConnection(ph, pp, timeout=120)
        started = time.perf_counter()
        status, body = get(conn, host)
        elapsed_ms = (time.perf_counter() - started) * 1000
        conn.close()
        if status != 200:
            sys.exit(f"error: waking {target} answered {status}: {body[:200]!r}")
        samples.append(round(elapsed_ms, 1))
        print(f"wake {i + 1}/{runs}: {elapsed_ms:.0f} ms", file=sys.stderr)
    summary = {"machine": machine(), "target": target, "runs": runs, "samples_ms": samples,
               "p50_ms": pct(samples, 50), "max_ms": max(samples)}
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)
    m = summary["machine"]
    with open(out_md, "w") as f:
        f.write("| runs | p50 | max | samples (ms) |\n|---:|---:|---:|---|\n")
        f.write(f"| {runs} | {summary['p50_ms']:.0f} ms | {summary['max_ms']:.0f} ms | "
                f"{', '.join(f'{x:.0f}' for x in samples)} |\n\n")
        f.write(f"{m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
                f"{m['memory_gib']} GiB, {m['date']}.\n")


def pct(values, q):
    """Nearest-rank percentile."""
    s = sorted(values)
    if not s:
        return None
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def fmt_ms(us):
    return "–" if us is None else f"{us / 1000:.2f} ms"


def fmt_int(x):
    return "–" if x is None else f"{x:.0f}"


def fmt_cores(x):
    return "–" if x is None else f"{x:.2f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}"


def report(work, out_json, out_md):
    meta = load_json(os.path.join(work, "meta.json"), {})
    order = ["turnout", "turnout-ns", "nginx", "haproxy", "caddy", "direct"]
    runs = {t: [] for t in order}
    for run in load_jsonl(os.path.join(work, "runs.jsonl")):  # none with BENCH_ONLY=restarts
        runs.setdefault(run["target"], []).append(run)

    throughput = {}
    for target, rs in runs.items():
        if not rs:
            continue
        cpu = [r["cpu_s"] for r in rs if r.get("cpu_s")]
        throughput[target] = {
            "runs": len(rs),
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_us": statistics.median(r["p50_us"] for r in rs),
            "p99_us": statistics.median(r["p99_us"] for r in rs),
            "rps_all": [round(r["rps"]) for r in rs],
            "p99_all_us": [r["p99_us"] for r in rs],
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "cpu_util": statistics.median(r["cpu_s"] / (r["duration_us"] / 1e6) for r in rs)
            if cpu else None,
            "requests_per_cpu_s": statistics.median(r["requests"] / r["cpu_s"] for r in rs
                                                    if r.get("cpu_s")) if cpu else None,
            "best": {k: max(rs, key=lambda r: r["rps"])[k] for k in ["rps", "p50_us", "p99_us"]},
            "others_cores": statistics.median(r.get("others_cores", 0) for r in rs),
            "others_cores_all": [r.get("others_cores") for r in rs],
        }
    t = throughput.get("turnout")
    ratios = {}
    if t:
        for peer in ["turnout-ns", "nginx", "haproxy", "caddy", "direct"]:
            p = throughput.get(peer)
            if p:
                ratios[peer] = {
                    "rps": t["rps"] / p["rps"],
                    "p50": t["p50_us"] / p["p50_us"],
                    "p99": t["p99_us"] / p["p99_us"],
                    "requests_per_cpu_s": t["requests_per_cpu_s"] / p["requests_per_cpu_s"]
                    if t["requests_per_cpu_s"] and p["requests_per_cpu_s"] else None,
                    "best_rps": t["best"]["rps"] / p["best"]["rps"],
                    "best_p99": t["best"]["p99_us"] / p["best"]["p99_us"],
                }
    target_met = None
    if t and "nginx" in throughput:
        n = throughput["nginx"]
        target_met = {
            "rps_at_least_nginx": t["rps"] >= n["rps"],
            "p99_no_worse_than_nginx": t["p99_us"] <= n["p99_us"],
        }

    switches = {}
    for name in ["switch_few", "switch_many"]:
        samples = load_json(os.path.join(work, f"{name}.json"))
        if not samples:
            continue
        apply = [s["apply_us"] for s in samples if s.get("apply_us") is not None]
        client = [s["client_us"] for s in samples]
        wall = [s["wall_us"] for s in samples]
        switches[name] = {
            "count": len(samples),
            "routes": meta.get(f"{name}_routes"),
            "apply_us": {"p50": pct(apply, 50), "p99": pct(apply, 99), "max": max(apply)}
            if apply else None,
            "client_us": {"p50": pct(client, 50), "p99": pct(client, 99), "max": max(client)},
            "wall_us": {"p50": pct(wall, 50), "p99": pct(wall, 99), "max": max(wall)},
            "health_check_us": {"p50": pct([s["health_check_us"] for s in samples], 50)},
            "next_request_misses": sum(1 for s in samples if not s["next_request_ok"]),
        }

    redeploys = {}
    for name in ["redeploy_few", "redeploy_many"]:
        took = load_json(os.path.join(work, f"{name}.json"))
        if took:
            redeploys[name] = {"count": len(took), "p50_us": pct(took, 50), "max_us": max(took)}

    memory = load_json(os.path.join(work, "memory.json"), {})

    restarts = None
    rows = load_jsonl(os.path.join(work, "restarts.jsonl"))
    if rows:
        restarts = {"settings": meta.get("restarts", {}), "rows": {}}
        for r in rows:
            took = [t["took_ms"] for t in r["restart_times"]]
            steady = r.get("steady")
            restarts["rows"][r["row"]] = {
                "restarts": r["restarts"],
                "requests": r["requests"],
                "failed": r["failed"],
                "errors": r["errors"],
                "rps": r["rps"],
                "p99_us": r["p99_us"],
                "max_us": r["max_us"],
                "restart_ms": {"p50": statistics.median(took), "max": max(took)} if took else None,
                "others_cores": r.get("others_cores"),
                "steady": {k: steady.get(k) for k in
                           ["requests", "failed", "rps", "p99_us", "others_cores"]}
                if steady else None,
                "p99_vs_steady": r["p99_us"] / steady["p99_us"]
                if steady and steady["p99_us"] else None,
            }

    summary = {
        "machine": meta.get("machine") or machine(),
        "versions": meta.get("versions", {}),
        "settings": meta.get("settings", {}),
        "notes": meta.get("notes", []),
        "throughput": throughput,
        "ratios_turnout_to": ratios,
        "target_rps_and_p99_vs_nginx": target_met,
        "switch": switches or None,
        "redeploy": redeploys or None,
        "memory": memory or None,
        "restarts": restarts,
    }
    os.makedirs(os.path.dirname(out_json), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")

    md = markdown(summary)
    with open(out_md, "w") as f:
        f.write(md)
    print(md)


def load_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def markdown(s):
    """The whole report: the main tables when they were measured, then the restarts table."""
    if not s["throughput"]:
        return markdown_restarts(s, header=True) if s.get("restarts") else run_line(s) + "\n"
    md = markdown_main(s)
    if s.get("restarts"):
        md += "\n" + markdown_restarts(s)
    return md


def run_line(s):
    m = s["machine"]
    return (f"Run of {m['date']} on {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, "
            f"Linux {m['kernel']}.")


RESTART_ROWS = {
    "nginx-reload": "nginx reload",
    "haproxy-reload": "HAProxy reload (-x)",
    "turnout-upgrade": "Turnout --upgrade",
    "turnout-kill": "Turnout kill -9 + restart",
}


def markdown_restarts(s, header=False):
    """The "Restarts under load" table (with the machine and versions when `header`)."""
    r = s["restarts"]
    st = r.get("settings") or {}
    lines = []
    if header:
        lines += [run_line(s),
                  "Versions: " + "; ".join(f"{v}" for v in s["versions"].values()
                                           if not v.startswith("Caddy")) + ".", ""]
    lines += [
        f"Restarts under load: `wrk -t1 -c{st.get('connections', '?')} -d{st.get('wrk_seconds', '?')}s "
        f"--latency` (keep-alive GETs) through each target while its owner restarts "
        f"{st.get('restarts', '?')} times, one every {st.get('spacing_ms', '?')} ms; "
        "\"without restarts\": the same target, the same wrk run, just before.",
        "",
        "| restarts under load | restarts | requests | failed | p99 | p99 without restarts "
        "| p99 ÷ without | one restart took: median | max | other jobs (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [k for k in RESTART_ROWS if k in r["rows"]] + [k for k in r["rows"] if k not in RESTART_ROWS]
    for key in order:
        row = r["rows"][key]
        steady = row["steady"] or {}
        took = row["restart_ms"] or {}
        lines.append(
            f"| {RESTART_ROWS.get(key, key)} | {row['restarts']} | {row['requests']:,} "
            f"| {row['failed']:,} | {fmt_ms(row['p99_us'])} | {fmt_ms(steady.get('p99_us'))} "
            f"| {fmt_ratio(row['p99_vs_steady'])} | {fmt_int(took.get('p50'))} ms "
            f"| {fmt_int(took.get('max'))} ms | {fmt_cores(row.get('others_cores'))}"
            f"{'' if not steady else ' (' + fmt_cores(steady.get('others_cores')) + ' without)'} |")
    kinds = []
    for key in order:
        row = r["rows"][key]
        if row["failed"]:
            kinds.append(f"{RESTART_ROWS.get(key, key)} " + ", ".join(
                f"{n:,} {kind}" for kind, n in row["errors"].items() if n))
    lines.append("")
    lines.append("Failed requests by kind (wrk's socket errors, and `status`: answers other than "
                 "2xx/3xx): " + ("; ".join(kinds) if kinds else "none") + ".")
    steady_failed = [RESTART_ROWS.get(k, k) for k in order
                     if (r["rows"][k]["steady"] or {}).get("failed")]
    if steady_failed:
        lines.append("")
        lines.append("Note: failures without restarts too: " + ", ".join(steady_failed) + ".")
    for note in st.get("notes", []):
        lines.append("")
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def markdown_main(s):
    st = s["settings"]
    lines = [
        run_line(s),
        f"Load: `wrk -t{st.get('threads')} -c{st.get('connections')} -d{st.get('duration')} "
        f"--latency`, {st.get('rounds')} interleaved rounds per target, median shown. "
        f"Turnout: {st.get('turnout_workers', '?')}.",
        "Versions: " + "; ".join(f"{v}" for v in s["versions"].values()) + ".",
        "",
        "| target | requests/s | p50 | p99 | Turnout ÷ target: requests/s | p50 | p99 | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {"turnout": "Turnout", "turnout-ns": "Turnout, instance in a network namespace",
             "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy",
             "direct": "direct (no proxy)"}
    order = [t for t in ["turnout", "turnout-ns", "nginx", "haproxy", "caddy", "direct"]
             if t in s["throughput"]]
    for target in order:
        r = s["throughput"][target]
        ratio = s["ratios_turnout_to"].get(target, {})
        lines.append(
            f"| {names[target]} | {r['rps']:,.0f} | {fmt_ms(r['p50_us'])} | {fmt_ms(r['p99_us'])} "
            f"| {fmt_ratio(ratio.get('rps'))} | {fmt_ratio(ratio.get('p50'))} "
            f"| {fmt_ratio(ratio.get('p99'))} | {r['errors']} |")
    lines += [
        "",
        "The same runs by the CPU each target spent, and each target's best round: the figures "
        "that other load on the machine moves least.",
        "",
        "| target | CPU (cores) | requests per CPU-second | Turnout ÷ target | best round: requests/s "
        "| p99 | Turnout ÷ target: requests/s | p99 | other jobs (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in order:
        r = s["throughput"][target]
        ratio = s["ratios_turnout_to"].get(target, {})
        cpu = "–" if r["cpu_util"] is None else f"{r['cpu_util']:.2f}"
        per_cpu = "–" if r["requests_per_cpu_s"] is None else f"{r['requests_per_cpu_s']:,.0f}"
        lines.append(
            f"| {names[target]} | {cpu} | {per_cpu} | {fmt_ratio(ratio.get('requests_per_cpu_s'))} "
            f"| {r['best']['rps']:,.0f} | {fmt_ms(r['best']['p99_us'])} "
            f"| {fmt_ratio(ratio.get('best_rps'))} | {fmt_ratio(ratio.get('best_p99'))} "
            f"| {r['others_cores']:.2f} |")
    lines.append("")
    lines.append("Requests/s of every round, in run order: " + "; ".join(
        f"{names[t]} {', '.join(f'{x:,}' for x in r['rps_all'])}"
        for t, r in s["throughput"].items()) + ".")
    busy = [x for r in s["throughput"].values() for x in r["others_cores_all"] if x is not None]
    if busy:
        lines.append("")
        lines.append(
            f"Other jobs on the machine used {statistics.median(busy):.2f} cores in the median run "
            f"(between {min(busy):.2f} and {max(busy):.2f}) of {s['machine']['nproc']}.")
    ns = s["ratios_turnout_to"].get("turnout-ns")
    if ns:
        lines.append("")
        lines.append(
            "Network namespaces (a second daemon, its instance in a namespace of its own, the proxy "
            f"connecting into it): the Turnout row ÷ that row is {fmt_ratio(ns['rps'])} in "
            f"requests/s, {fmt_ratio(ns['p99'])} in p99 and "
            f"{fmt_ratio(ns['requests_per_cpu_s'])} in requests per CPU-second.")
    tm = s["target_rps_and_p99_vs_nginx"]
    if tm:
        lines.append("")
        ok = tm["rps_at_least_nginx"] and tm["p99_no_worse_than_nginx"]
        lines.append(
            f"Target (Turnout ≥ nginx in requests/s, p99 ≤ nginx's): **{'met' if ok else 'missed'}** "
            f"(requests/s {'≥' if tm['rps_at_least_nginx'] else '<'} nginx, "
            f"p99 {'≤' if tm['p99_no_worse_than_nginx'] else '>'} nginx).")
    lines.append("")
    if s["switch"]:
        lines += [
            "| switch | routes in table | switches | apply (server) p50 | p99 | "
            "API call − health check (client) p50 | p99 | whole API call p50 | next request on old env |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        n = int(s["settings"].get("domains", 1000))
        for name, label in [("switch_few", "1 domain"), ("switch_many", f"{n + 1:,} domains")]:
            w = s["switch"].get(name)
            if not w:
                continue
            a = w["apply_us"] or {}
            lines.append(
                f"| {label} | {w['routes'] or '?'} | {w['count']} | {fmt_ms(a.get('p50'))} "
                f"| {fmt_ms(a.get('p99'))} | {fmt_ms(w['client_us']['p50'])} "
                f"| {fmt_ms(w['client_us']['p99'])} | {fmt_ms(w['wall_us']['p50'])} "
                f"| {w['next_request_misses']} |")
        verdicts = [
            f"**{'met' if w['client_us']['p99'] < 5000 else 'missed'}** with {w['routes'] or '?'} "
            f"routes (p99 {fmt_ms(w['client_us']['p99'])}, slowest {fmt_ms(w['client_us']['max'])})"
            for w in s["switch"].values()]
        lines.append("")
        lines.append("Target (switch p99 < 5 ms, client side, health check excluded): "
                     + "; ".join(verdicts) + ".")
        r = s.get("redeploy") or {}
        if r:
            lines += ["", "| `turnout restart bench/blue` (a new instance, to it serving) "
                      "| domains bound to bench/blue | restarts | p50 | slowest |",
                      "| --- | ---: | ---: | ---: | ---: |"]
            for name, bound in [("redeploy_few", "≤ 1"), ("redeploy_many", f"{n:,}")]:
                if name in r:
                    w = r[name]
                    lines.append(f"| | {bound} | {w['count']} | {fmt_ms(w['p50_us'])} "
                                 f"| {fmt_ms(w['max_us'])} |")
    else:
        lines.append("Switch latency: not measured in this run (no domain API in this build).")
    lines.append("")
    mem = s["memory"]
    if mem and mem.get("turnout"):
        lines += [
            "| resident memory (VmRSS) | Turnout (whole daemon) | nginx (master + 1 worker) |",
            "| --- | ---: | ---: |",
        ]
        n = mem.get("domains", 1000)
        with_domains = mem["turnout"].get("1000") is not None
        for key, label in [("idle", "3 environments, no domains, before any load"),
                           ("10", "10 domains"), ("1000", f"{n:,} domains"),
                           ("after_load", f"{n:,} domains, after the throughput runs"
                            if with_domains else "no domains, after the throughput runs")]:
            tv = mem["turnout"].get(key)
            nv = (mem.get("nginx") or {}).get(key)
            if tv is None and nv is None:
                continue
            lines.append(f"| {label} | {'–' if tv is None else f'{tv / 1024:.1f} MiB'} "
                         f"| {'–' if nv is None else f'{nv / 1024:.1f} MiB'} |")
    else:
        lines.append("Memory with 10 and 1,000 domains: not measured in this run "
                     "(no domain API in this build).")
        if mem and mem.get("turnout_idle"):
            lines.append(f"Turnout daemon VmRSS idle (3 environments, no domains): "
                         f"{mem['turnout_idle'] / 1024:.1f} MiB.")
    for note in s["notes"]:
        lines.append("")
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def push_to_live(repo, git_url, proxy, host, runs, out_json, out_md):
    """Time from the start of `git push` to the pushed commit answering at the environment's
    URL, `runs` times (each run commits a new marker into message.txt); writes the runs and
    their median."""
    h, p = split_url(proxy)
    times = []
    git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for i in range(runs):
        marker = f"push run {i} {time.time_ns()}"
        with open(os.path.join(repo, "message.txt"), "w", encoding="utf-8") as f:
            f.write(marker + "\n")
        subprocess.run(git + ["commit", "-q", "-a", "-m", marker], check=True)
        start = time.monotonic()
        pushed = subprocess.run(git + ["push", "-q", git_url, "HEAD:main"],
                                capture_output=True, text=True,
                                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if pushed.returncode != 0:
            sys.exit(f"error: git push failed: {pushed.stderr}")
        deadline = start + 300
        while True:
            try:
                conn = http.client.HTTPConnection(h, p, timeout=2)
                status, body = get(conn, host)
                conn.close()
                if status == 200 and marker in body:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"error: run {i}: the pushed commit did not answer within 300 s")
            time.sleep(0.01)
        times.append(time.monotonic() - start)
        print(f"push run {i + 1}/{runs}: {times[-1]:.2f} s", file=sys.stderr)
    result = {"runs": [round(t, 3) for t in times], "median": round(statistics.median(times), 3)}
    json.dump(result, open(out_json, "w"), indent=1)
    with open(out_md, "w", encoding="utf-8") as f:
        f.write("| runs | median | fastest | slowest |\n| ---: | ---: | ---: | ---: |\n")
        f.write(f"| {runs} | {result['median']:.2f} s | {min(times):.2f} s "
                f"| {max(times):.2f} s |\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print(" ".join(map(str, free_ports(int(args[0])))))
    elif cmd == "field":
        doc = json.load(sys.stdin) if args[0] == "-" else load_json(args[0])
        print(field(doc, args[1]))
    elif cmd == "push":
        push_to_live(args[0], args[1], args[2], args[3], int(args[4]), args[5], args[6])
    elif cmd == "wait":
        wait(args[0], args[1], args[2] if len(args) > 2 else "",
             float(args[3]) if len(args) > 3 else 30.0)
    elif cmd == "pids":
        print(" ".join(map(str, tree([int(a) for a in args]))))
    elif cmd == "cpu":
        print(f"{cpu_seconds([int(a) for a in args]):.2f}")
    elif cmd == "wrk":
        run_wrk(*args)
    elif cmd == "rss":
        print(rss_kib([int(a) for a in args]))
    elif cmd == "domains":
        add_domains(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "probe":
        probe(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "switch":
        switch(args[0], args[1], args[2], args[3], args[4], args[5], int(args[6]), args[7])
    elif cmd == "nginx-names":
        nginx_names(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "cpu-mark":
        print("%.2f,%.2f" % cpu_mark(args[0], int(args[1])))
    elif cmd == "restarts-record":
        restarts_record(*args)
    elif cmd == "pgrep":
        print(" ".join(map(str, pgrep(args[0], args[1]))))
    elif cmd == "reap":
        reap(args[0])
    elif cmd == "report":
        report(args[0], args[1], args[2])
    elif cmd == "wake":
        wake(args[0], args[1], args[2], int(args[3]), args[4], args[5])
    else:
        sys.exit(f"unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
