#!/usr/bin/env python3
"""The dashboard section of bench/run.sh (BENCH_ONLY=dashboard): the server time of each
dashboard page with many environments.

  dashboard.py TURNOUT OUT_JSON OUT_MD [ENVS] [ROUNDS]

Starts `turnout serve` on a fresh home, creates app `bench` from a one-commit git repository
with ENVS (200) environments spread over the tiers as a team's would be (most of them test
environments) and 20 domains, signs in to the dashboard with the administrator's token, and
requests each page ROUNDS (30) times over one keep-alive connection on 127.0.0.1 after two
warm-up requests. The time from sending a request to the last byte of its answer, on loopback,
is the server's time plus well under a millisecond; the median and the slowest are reported.
"""

import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

PAGES = [
    ("apps", "/ui/apps"),
    ("pipeline (ENVS environments)", "/ui/apps/bench"),
    ("environment", "/ui/apps/bench/envs/test-001"),
    ("domains", "/ui/domains"),
    ("domain", "/ui/domains/d01.bench.test"),
    ("jobs", "/ui/jobs"),
    ("certificates", "/ui/certificates"),
    ("audit log", "/ui/audit?app=bench"),
]


def tiers(n):
    """ENVS environments as a team has them: one production and its copy, staging, release,
    a few QA, some development boxes, and test environments for the rest."""
    fixed = [("prod", "production"), ("prod-copy", "production-copy"), ("staging", "staging"),
             ("release", "release")] + [(f"qa-{i}", "qa") for i in range(1, 4)]
    dev = [(f"dev-{i:03}", "development") for i in range(1, n // 5 + 1)]
    rest = n - len(fixed) - len(dev)
    return fixed + dev + [(f"test-{i:03}", "test") for i in range(1, rest + 1)]


def main():
    turnout, out_json, out_md = sys.argv[1:4]
    envs = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 30
    work = tempfile.mkdtemp(prefix="turnout-bench-dashboard-")
    repo = make_repo(work)
    home = os.path.join(work, "home")
    daemon = subprocess.Popen(
        [turnout, "--json", "serve", "--api-listen", "127.0.0.1:0", "--http-listen",
         "127.0.0.1:0", "--single-user", "--home", home],
        stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"))
    try:
        api = json.loads(daemon.stdout.readline())["api"]
        token = open(os.path.join(home, "admin.token")).read().strip()
        host, port = urllib.parse.urlparse(api).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port))

        def call(method, path, body=None, headers=None):
            h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            h.update(headers or {})
            conn.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body,
                         headers=h)
            res = conn.getresponse()
            data = res.read()
            if res.status >= 400:
                sys.exit(f"{method} {path}: {res.status} {data[:300]!r}")
            return res, data

        started = time.time()
        call("POST", "/api/v1/apps", {"name": "bench", "repo": repo})
        made = tiers(envs)
        for name, tier in made:
            call("POST", "/api/v1/apps/bench/envs", {"name": name, "branch": "main", "tier": tier})
        for i in range(1, 21):
            call("POST", "/api/v1/domains", {"domain": f"d{i:02}.bench.test", "app": "bench",
                                            "env": "prod"})
        setup_s = time.time() - started
        cookie = sign_in(conn, token)
        results = []
        for name, path in PAGES:
            times, size = time_gets(conn, path, {"Cookie": cookie}, rounds)
            results.append({"page": name.replace("ENVS", str(envs)), "path": path,
                            "median_ms": round(statistics.median(times), 2),
                            "max_ms": round(times[-1], 2), "bytes": size})
        meta = {"environments": len(made), "domains": 20, "rounds": rounds,
                "setup_seconds": round(setup_s, 1), "turnout": turnout,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                           f"{platform.system()} {platform.release()}",
                "cpu": cpu_model()}
        json.dump({"meta": meta, "pages": results}, open(out_json, "w"), indent=2)
        lines = [f"{len(made)} environments, 20 domains; {rounds} requests per page after 2 "
                 f"warm-up ones, one keep-alive connection on 127.0.0.1; {meta['cpu']}, "
                 f"{os.cpu_count()} cores; `{os.path.basename(turnout)}` from `{turnout}`.", "",
                 "| page | median | slowest | size |", "| --- | ---: | ---: | ---: |"]
        for r in results:
            lines.append(f"| {r['page']} (`{r['path']}`) | {r['median_ms']} ms | "
                         f"{r['max_ms']} ms | {r['bytes'] // 1024} KiB |")
        open(out_md, "w").write("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        daemon.send_signal(2)
        daemon.wait(timeout=60)


def make_repo(work):
    """A one-commit repository in WORK/repo whose Procfile runs Python's own HTTP server."""
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    with open(os.path.join(repo, "Procfile"), "w") as f:
        f.write("web: python3 -m http.server $PORT\n")
    git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.test"]
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "bench"], check=True)
    return repo


def sign_in(conn, token):
    """The dashboard's session cookie for `token` (`POST /ui/login` on `conn`)."""
    conn.request("POST", "/ui/login", body=urllib.parse.urlencode({"token": token}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    res = conn.getresponse()
    res.read()
    return res.getheader("Set-Cookie").split(";")[0]


def time_gets(conn, path, headers, rounds, warm_up=2):
    """GET `path` on the keep-alive `conn` `warm_up` times, then `rounds` times timed from
    sending the request to the last byte of the answer: the sorted times in ms, and the last
    answer's size. Anything but 200 ends the run."""
    times = []
    size = 0
    for i in range(rounds + warm_up):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        body = res.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if res.status != 200:
            sys.exit(f"GET {path}: {res.status} {body[:300]!r}")
        size = len(body)
        if i >= warm_up:
            times.append(elapsed)
    times.sort()
    return times, size


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
