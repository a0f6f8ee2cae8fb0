#!/usr/bin/env python3
"""The scale section of bench/run.sh (BENCH_ONLY=scale): one machine with many environments,
most of them asleep, and many domains, beside a small app, in one run.

  scale.py TURNOUT OUT_JSON OUT_MD [ENVS] [DOMAINS] [ROUNDS] [DEPLOYS]

Two set-ups, one after the other, each with a `turnout serve` of its own on a fresh home: a small
one (3 environments, 4 domains) and a large one (ENVS (500) environments, DOMAINS (10,000)
domains). Each creates app `bench` from a one-commit git repository (bench/dashboard.py's: a
Procfile running `python3 -m http.server`), its environments spread over the tiers as a team's
are (bench/dashboard.py's `tiers`), with development and test environments sleeping after 1 s
idle; deploys every environment through the API, DEPLOYS (8) at a time (the build queue bounds
the builds); binds its domains round-robin over the environments; waits until every development
and test environment sleeps. Then, for each set-up:

- the server time of the API calls behind `env list`, `env list APP`, `pipeline show` and
  `jobs`, and of each dashboard page (bench/dashboard.py's list and sign-in): ROUNDS (200)
  requests each after 5 warm-up ones, over one keep-alive connection on 127.0.0.1, from sending
  the request to the last byte of the answer; p50, p99 and the slowest;
- the daemon's resident memory (VmRSS of `turnout serve` and of its `turnout __dataplane`);
- a restart: SIGTERM (the control plane alone leaves; the data plane and the instances keep
  running), then `turnout serve` again on the same home and ports, timed from its exec to the
  API's first answer, to a live environment's domain answering 200 through the proxy, and to
  every environment that was live being `live` in `env list` again; memory once it is;
- a cold start: SIGINT (a full stop: data plane and instances too), then the same timings (the
  data plane is started again, the live environments launched again; the sleeping ones stay
  asleep).
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import dashboard  # noqa: E402

SLEEPY_TIERS = ("development", "test")
TARGET_MS = 50
TARGET_START_S = 5
TARGET_MIB = 100
WARM_UP = 5


def team(n):
    """N environments as a team has them (bench/dashboard.py's `tiers`); below ten, production,
    staging and test environments."""
    if n >= 10:
        return dashboard.tiers(n)
    return ([("prod", "production"), ("staging", "staging")]
            + [(f"test-{i:03}", "test") for i in range(1, n - 1)])[:n]


def domain(i):
    return f"d{i:02}.bench.test"


class Daemon:
    """One `turnout serve` on `home`, its API and proxy on fixed ports so a restart keeps them."""

    def __init__(self, turnout, work, name):
        self.turnout, self.work = turnout, work
        self.home = os.path.join(work, "home")
        self.log = os.path.join(work, f"{name}.log")
        self.api_port, self.http_port = bench.free_ports(2)
        self.proc = None
        self.starts = 0

    def start(self):
        """exec `turnout serve`; the time it was started (perf_counter)."""
        self.starts += 1
        log = open(f"{self.log}.{self.starts}", "w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.turnout, "--json", "serve", "--api-listen", f"127.0.0.1:{self.api_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}", "--home", self.home],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "TURNOUT_LOG": "warn"})
        return started

    def stop(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)

    def token(self):
        return open(os.path.join(self.home, "admin.token")).read().strip()

    def pids(self):
        return [self.proc.pid, *bench.pgrep(self.work, "__dataplane")]

    def rss_mib(self):
        return round(bench.rss_kib(self.pids()) / 1024, 1)


class Api:
    """A keep-alive connection to the API with the administrator's token."""

    def __init__(self, daemon, timeout=60):
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.api_port, timeout=timeout)
        self.token = daemon.token()

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=None if body is None else json.dumps(body),
                          headers={"Authorization": f"Bearer {self.token}",
                                   "Content-Type": "application/json"})
        res = self.conn.getresponse()
        data = res.read()
        if res.status >= 300:
            sys.exit(f"error: {method} {path}: {res.status} {data[:300]!r}")
        return json.loads(data) if data else None


def in_parallel(daemon, items, width, work):
    """work(api, item) for every item, `width` at a time, each worker on a connection of its
    own."""
    local = threading.local()

    def run(item):
        if not hasattr(local, "api"):
            local.api = Api(daemon)
        return work(local.api, item)

    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        return list(pool.map(run, items))


def deploy(api, env):
    job = api.call("POST", f"/api/v1/apps/bench/envs/{env}/deploy", {})
    while job["state"] in ("queued", "running"):
        time.sleep(0.1)
        job = api.call("GET", f"/api/v1/jobs/{job['id']}")
    if job["state"] != "succeeded":
        sys.exit(f"error: deploying bench/{env}: {job['state']}: {job.get('error')} "
                 f"{job.get('log_tail')}")


def statuses(api):
    return {e["name"]: e["status"] for e in api.call("GET", "/api/v1/apps/bench/envs")}


def set_up(daemon, repo, envs, domains, width):
    """The app, its environments deployed, its domains bound; until the sleepy ones sleep."""
    api = Api(daemon)
    made = team(envs)
    started = time.perf_counter()
    api.call("POST", "/api/v1/apps", {"name": "bench", "repo": repo})
    api.call("POST", "/api/v1/apps/bench/settings",
             {"sleep_after": {tier: "1s" for tier in SLEEPY_TIERS}})
    for name, tier in made:
        api.call("POST", "/api/v1/apps/bench/envs", {"name": name, "branch": "main", "tier": tier})
    t_deploy = time.perf_counter()
    in_parallel(daemon, [name for name, _ in made], width, deploy)
    deploy_s = time.perf_counter() - t_deploy
    print(f"  {len(made)} environments deployed in {deploy_s:.0f} s", file=sys.stderr)
    t_domains = time.perf_counter()
    in_parallel(daemon, range(1, domains + 1), width,
                lambda a, i: a.call("POST", "/api/v1/domains",
                                    {"domain": domain(i), "app": "bench",
                                     "env": made[(i - 1) % len(made)][0]}))
    domains_s = time.perf_counter() - t_domains
    print(f"  {domains} domains bound in {domains_s:.0f} s", file=sys.stderr)
    sleepy = {name for name, tier in made if tier in SLEEPY_TIERS}
    deadline = time.monotonic() + 300
    while True:
        now = statuses(api)
        awake = [n for n in sleepy if now[n] != "sleeping"]
        if not awake:
            break
        if time.monotonic() > deadline:
            sys.exit(f"error: {len(awake)} environments did not fall asleep in 5 minutes: "
                     f"{ {n: now[n] for n in awake[:10]} }")
        time.sleep(1)
    live = sorted(n for n, s in now.items() if s == "live")
    if len(live) + len(sleepy) != len(made):
        sys.exit(f"error: environments neither live nor sleeping: "
                 f"{ {n: s for n, s in now.items() if s not in ('live', 'sleeping')} }")
    return {"environments": len(made), "domains": domains, "live": len(live),
            "sleeping": len(sleepy), "live_envs": live, "deploy_seconds": round(deploy_s, 1),
            "domains_seconds": round(domains_s, 1),
            "setup_seconds": round(time.perf_counter() - started, 1),
            "live_domain": domain(1 + [n for n, _ in made].index(live[0]))}


def spread(times):
    return {"p50_ms": round(bench.pct(times, 50), 2), "p99_ms": round(bench.pct(times, 99), 2),
            "max_ms": round(times[-1], 2)}


def calls():
    """(name, path) of the API calls and dashboard pages timed."""
    return [("`env list` (every app)", "/api/v1/envs"),
            ("`env list bench`", "/api/v1/apps/bench/envs"),
            ("`pipeline show bench`", "/api/v1/apps/bench/pipeline"),
            ("`jobs`", "/api/v1/jobs")] + [
        (f"dashboard: {name.replace(' (ENVS environments)', '')}", path)
        for name, path in dashboard.PAGES]


def server_times(daemon, rounds):
    """p50, p99 and the slowest of each API call and dashboard page."""
    api = Api(daemon)
    cookie = dashboard.sign_in(api.conn, api.token)
    out = {}
    for name, path in calls():
        headers = ({"Cookie": cookie} if path.startswith("/ui/")
                   else {"Authorization": f"Bearer {api.token}"})
        times, size = dashboard.time_gets(api.conn, path, headers, rounds, WARM_UP)
        out[path] = {"name": name, "bytes": size, **spread(times)}
        print(f"  {path}: p50 {out[path]['p50_ms']} ms, p99 {out[path]['p99_ms']} ms, "
              f"{size // 1024} KiB", file=sys.stderr)
    return out


def answers(port, host, path):
    """The status of one GET on 127.0.0.1:port, or None when nothing answers yet."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", path, headers={"Host": host})
        res = conn.getresponse()
        res.read()
        conn.close()
        return res.status
    except OSError:
        return None


def restart(daemon, sig, setup):
    """Stop the daemon with `sig`, start it again; seconds from its exec to the API answering,
    to a live environment's domain routing through the proxy, to every live environment live
    again; its memory then."""
    daemon.stop(sig)
    started = daemon.start()
    api_s = proxy_s = None
    deadline = time.monotonic() + 120
    while api_s is None or proxy_s is None:
        if daemon.proc.poll() is not None:
            sys.exit(f"error: turnout serve exited with {daemon.proc.returncode}; "
                     f"see {daemon.log}.{daemon.starts}")
        if time.monotonic() > deadline:
            sys.exit(f"error: not serving 2 minutes after a restart (API {api_s}, proxy {proxy_s})")
        if api_s is None and answers(daemon.api_port, "127.0.0.1", "/api/v1/health") == 200:
            api_s = time.perf_counter() - started
        if proxy_s is None and answers(daemon.http_port, setup["live_domain"], "/") == 200:
            proxy_s = time.perf_counter() - started
        time.sleep(0.005)
    api = Api(daemon)
    while True:
        now = statuses(api)
        if all(now[n] == "live" for n in setup["live_envs"]):
            break
        if time.monotonic() > deadline:
            sys.exit(f"error: environments not live 2 minutes after a restart: "
                     f"{ {n: now[n] for n in setup['live_envs'] if now[n] != 'live'} }")
        time.sleep(0.02)
    all_live_s = time.perf_counter() - started
    asleep = sum(1 for s in now.values() if s == "sleeping")
    return {"api_s": round(api_s, 3), "proxy_s": round(proxy_s, 3),
            "serving_s": round(max(api_s, proxy_s), 3), "all_live_s": round(all_live_s, 3),
            "sleeping_after": asleep, "rss_mib": daemon.rss_mib()}


def measure(turnout, base, name, envs, domains, rounds, width):
    work = os.path.join(base, name)
    os.makedirs(work)
    repo = dashboard.make_repo(work)
    daemon = Daemon(turnout, work, "serve")
    print(f"== {name}: {envs} environments, {domains} domains", file=sys.stderr)
    daemon.start()
    try:
        for _ in range(600):
            if answers(daemon.api_port, "127.0.0.1", "/api/v1/health") == 200:
                break
            time.sleep(0.05)
        setup = set_up(daemon, repo, envs, domains, width)
        result = {"setup": setup, "rss_mib": daemon.rss_mib()}
        result["times"] = server_times(daemon, rounds)
        print(f"  server times measured; {result['rss_mib']} MiB", file=sys.stderr)
        result["restart"] = restart(daemon, signal.SIGTERM, setup)
        print(f"  restart: {result['restart']}", file=sys.stderr)
        result["times_after_restart"] = server_times(daemon, rounds)
        result["cold_start"] = restart(daemon, signal.SIGINT, setup)
        print(f"  cold start: {result['cold_start']}", file=sys.stderr)
        return result
    finally:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGINT)
        bench.reap(work)


def main():
    turnout, out_json, out_md = sys.argv[1:4]
    envs, domains, rounds, width = (int(a) for a in (sys.argv[4:8] + ["500", "10000", "200",
                                                                     "8"][len(sys.argv) - 4:]))
    base = tempfile.mkdtemp(prefix="turnout-bench-scale-")
    try:
        small = measure(turnout, base, "small", 3, 4, rounds, width)
        large = measure(turnout, base, "large", envs, domains, rounds, width)
    finally:
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"work directory kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    m = bench.machine()
    load = open("/proc/loadavg").read().split()[:3]
    meta = {"turnout": turnout, "rounds": rounds, "warm_up": WARM_UP, "deploys_at_once": width,
            "machine": m, "load_average_after": " ".join(load)}
    json.dump({"meta": meta, "small": small, "large": large}, open(out_json, "w"), indent=2)
    lines = markdown(meta, small, large)
    open(out_md, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


def verdict(ok):
    return "met" if ok else "**not met**"


def markdown(meta, small, large):
    s, l, m = small["setup"], large["setup"], meta["machine"]
    head = (f"{s['environments']} environments / {s['domains']} domains",
            f"{l['environments']:,} environments / {l['domains']:,} domains")
    lines = [
        f"Run of {m['date']} on {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, Linux "
        f"{m['kernel']} (a shared machine: other work ran beside it; load average "
        f"{meta['load_average_after']} at the end); `{os.path.basename(meta['turnout'])}` from "
        f"`{meta['turnout']}`.",
        "",
        f"Set-up: the small app {s['live']} live and {s['sleeping']} asleep, deployed in "
        f"{s['deploy_seconds']} s; the large {l['live']} live and {l['sleeping']} asleep "
        f"(development and test environments, asleep after 1 s idle), {l['environments']} "
        f"deploys {meta['deploys_at_once']} at a time in {l['deploy_seconds']} s, "
        f"{l['domains']:,} domains bound through the API in {l['domains_seconds']} s "
        f"({l['setup_seconds']} s in all). Server times: {meta['rounds']} requests each after "
        f"{meta['warm_up']} warm-up ones, one keep-alive connection on 127.0.0.1.",
        "",
        f"| server time: p50 / p99 / slowest | {head[0]} | {head[1]} | target: p99 < "
        f"{TARGET_MS} ms |",
        "| --- | ---: | ---: | --- |",
    ]
    for path, big in large["times"].items():
        few = small["times"][path]
        lines.append(
            f"| {big['name']} (`{path}`; {few['bytes'] // 1024} KiB, {big['bytes'] // 1024} KiB) | "
            f"{few['p50_ms']} / {few['p99_ms']} / {few['max_ms']} ms | "
            f"{big['p50_ms']} / {big['p99_ms']} / {big['max_ms']} ms | "
            f"{verdict(big['p99_ms'] < TARGET_MS)} |")
    slow_after = max(v["p99_ms"] for v in large["times_after_restart"].values())
    lines += [
        "",
        f"After the restart below, the same calls and pages again: the slowest p99 "
        f"{max(v['p99_ms'] for v in small['times_after_restart'].values())} ms (small), "
        f"{slow_after} ms (large, {verdict(slow_after < TARGET_MS)}).",
        "",
        f"| start-up and memory | {head[0]} | {head[1]} | target |",
        "| --- | ---: | ---: | --- |",
        f"| memory: `turnout serve` + `turnout __dataplane` (VmRSS), all set up | "
        f"{small['rss_mib']} MiB | {large['rss_mib']} MiB | < {TARGET_MIB} MiB: "
        f"{verdict(large['rss_mib'] < TARGET_MIB)} |",
    ]
    for key, what in (("restart", "restart after SIGTERM (data plane and instances kept)"),
                      ("cold_start", "cold start after SIGINT (everything stopped)")):
        a, b = small[key], large[key]
        target = f"< {TARGET_START_S} s: {verdict(b['serving_s'] < TARGET_START_S)}"
        lines += [
            f"| {what}: exec to the API's first answer | {a['api_s']} s | {b['api_s']} s | – |",
            f"| {what}: exec to a live domain answering 200 through the proxy | {a['proxy_s']} s "
            f"| {b['proxy_s']} s | – |",
            f"| {what}: exec to serving (both) | {a['serving_s']} s | {b['serving_s']} s | "
            f"{target} |",
            f"| {what}: exec to every live environment `live` ({s['live']}; {l['live']}) | "
            f"{a['all_live_s']} s | {b['all_live_s']} s | – |",
            f"| {what}: memory once they are | {a['rss_mib']} MiB | {b['rss_mib']} MiB | "
            f"< {TARGET_MIB} MiB: {verdict(b['rss_mib'] < TARGET_MIB)} |",
        ]
    return lines


if __name__ == "__main__":
    main()
