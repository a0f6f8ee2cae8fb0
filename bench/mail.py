#!/usr/bin/env python3
"""The mail section of bench/run.sh (BENCH_ONLY=mail): Turnout's mail catcher beside MailDev and
Postfix's smtp-sink, loaded by a standard-library SMTP client (raw sockets, one process per
connection, so the client is not one Python thread under its GIL).

A target is NAME=URL: smtp://[USER:PASSWORD@]HOST:PORT. Only a URL with a user logs in (AUTH
PLAIN after EHLO): Turnout's, whose catcher refuses mail without it; MailDev and smtp-sink are
sent no AUTH at all.

Subcommands:
  smtp-url PROXY HOST               print what GET /smtp answers for Host: HOST through Turnout's
                                    proxy (the probe app: its SMTP_URL)
  wait PORT SECONDS                 wait for an SMTP greeting (220) on 127.0.0.1:PORT
  check WORK NAME URL               one 2 KiB message must be answered 250 (and, for a URL with
                                    a user, MAIL without a login must be refused with 530)
  load WORK NAME URL CONNS SECONDS SIZE OUT_JSONL SERVER_PIDS
                                    CONNS processes, each on one connection (logged in once),
                                    RSET/MAIL/RCPT/DATA in a loop for SECONDS; append messages/s,
                                    the server's and the client's CPU seconds to OUT_JSONL ("-":
                                    a warm-up, nothing recorded)
  latency WORK OUT_JSON SIZE COUNT NAME=URL...
                                    one connection per target, COUNT messages each, in turn:
                                    the time from MAIL to the 250 after the final dot (ms)
  verify WORK NAME TURNOUT_LIST_JSON|MAILDEV_WEB_PORT|-
                                    what the target kept against what was sent to it
  meta OUT TURNOUT ROOT ROUNDS DURATION LOAD MAILDEV_VERSION POSTFIX_NOTE
                                    the run's settings, versions, machine and notes
  report WORK OUT_JSON OUT_MD       the summary and its tables

Every message a target answered 250 is counted in WORK/mail-sent-NAME.jsonl (phase, size,
count), in the order sent, so that `verify` knows what a target should hold.
"""

import base64
import json
import multiprocessing
import os
import resource
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ORDER = ["turnout", "maildev", "maildev-disk", "smtp-sink"]
NAMES = {"turnout": "Turnout mail catcher (each message stored in SQLite)",
         "maildev": "MailDev (in memory, its default)",
         "maildev-disk": "MailDev, --mail-directory (each message written to a file)",
         "smtp-sink": "Postfix smtp-sink (keeps nothing)"}
# Turnout keeps per environment the newest KEEP_MESSAGES within KEEP_BYTES
# (crates/control/src/store/mail.rs).
KEEP_MESSAGES, KEEP_BYTES = 500, 50 * 1024 * 1024
SMALL = 2 * 1024


def message(size):
    """A text message of exactly `size` bytes (CRLF line ends, no line starting with a dot)."""
    head = ("From: Bench <bench@sender.test>\r\nTo: Team <team@example.test>\r\n"
            "Subject: a benchmark message\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog; a line of an ordinary text mail.\r\n"
    body = bytearray()
    room = size - len(head)
    while len(body) + len(line) + 3 <= room:
        body += line
    body += b"x" * (room - len(body) - 2) + b"\r\n"  # the tail line: at least one byte
    data = head + bytes(body)
    assert len(data) == size, (len(data), size)
    return data


class Smtp:
    """One SMTP client connection: commands one at a time (no pipelining), as smtplib sends."""

    def __init__(self, url, timeout=60):
        u = urllib.parse.urlsplit(url)
        self.user = urllib.parse.unquote(u.username) if u.username else None
        self.password = urllib.parse.unquote(u.password or "")
        self.sock = socket.create_connection((u.hostname, u.port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.expect(self.reply(), 220, "greeting")

    def reply(self):
        """(code, text) of one reply, all its lines."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError(f"connection closed; so far {b''.join(lines)[:200]!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines).decode("utf-8", "replace")

    @staticmethod
    def expect(reply, code, what):
        if reply[0] != code:
            raise OSError(f"{what}: {reply[0]} {reply[1][:300]}")
        return reply

    def cmd(self, line):
        self.sock.sendall(line)
        return self.reply()

    def hello(self, login=True):
        self.expect(self.cmd(b"EHLO bench.test\r\n"), 250, "EHLO")
        if login and self.user is not None:
            token = base64.b64encode(f"\0{self.user}\0{self.password}".encode())
            self.expect(self.cmd(b"AUTH PLAIN " + token + b"\r\n"), 235, "AUTH PLAIN")

    def send(self, data):
        """One message (RSET first, not timed); the seconds from MAIL to the 250 after the
        final dot, or the refusal as an OSError."""
        self.expect(self.cmd(b"RSET\r\n"), 250, "RSET")
        t0 = time.perf_counter()
        self.expect(self.cmd(b"MAIL FROM:<bench@sender.test>\r\n"), 250, "MAIL")
        self.expect(self.cmd(b"RCPT TO:<team@example.test>\r\n"), 250, "RCPT")
        self.expect(self.cmd(b"DATA\r\n"), 354, "DATA")
        self.sock.sendall(data + b".\r\n")
        self.expect(self.reply(), 250, "end of DATA")
        return time.perf_counter() - t0

    def quit(self):
        try:
            self.cmd(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


def count_sent(work, name, phase, size, count):
    if count:
        with open(os.path.join(work, f"mail-sent-{name}.jsonl"), "a") as f:
            f.write(json.dumps({"phase": phase, "size": size, "count": count}) + "\n")


def smtp_url(proxy, host):
    h, p = bench.split_url(proxy)
    import http.client
    conn = http.client.HTTPConnection(h, p, timeout=10)
    conn.request("GET", "/smtp", headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read().decode()
    if resp.status != 200 or not body.startswith("smtp://"):
        sys.exit(f"error: {host}/smtp answered {resp.status}: {body[:200]!r} (no SMTP_URL?)")
    print(body)


def wait(port, seconds):
    deadline = time.monotonic() + float(seconds)
    last = ""
    while time.monotonic() < deadline:
        try:
            Smtp(f"smtp://127.0.0.1:{port}", 2).quit()
            return
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    sys.exit(f"error: no SMTP greeting on 127.0.0.1:{port} after {seconds}s: {last}")


def check(work, name, url):
    c = Smtp(url)
    if c.user is not None:
        # Without a login the catcher must refuse the mail: the check is on.
        c.hello(login=False)
        code, text = c.cmd(b"MAIL FROM:<bench@sender.test>\r\n")
        if code != 530:
            sys.exit(f"error: {name} answered {code} to MAIL without a login, not 530: {text}")
    c.hello()
    c.send(message(SMALL))
    c.quit()
    count_sent(work, name, "check", SMALL, 1)
    how = " (and 530 to MAIL without a login)" if c.user is not None else ""
    print(f"{name}: a 2 KiB message answered 250{how}", file=sys.stderr)


def worker(url, size, conn, pipe):
    """One client connection: log in, say ready, wait for the deadline, send until it."""
    try:
        c = Smtp(url)
        c.hello()
        data = message(size)
        pipe.send("ready")
        deadline = pipe.recv()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        sent = errors = 0
        first_error = None
        while time.monotonic() < deadline:
            try:
                c.send(data)
                sent += 1
            except OSError as e:
                errors += 1
                first_error = first_error or str(e)
                if "connection closed" in str(e):
                    break
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        c.quit()
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        pipe.send({"sent": sent, "errors": errors, "first_error": first_error, "cpu": cpu})
    except Exception as e:  # noqa: BLE001 - reported to the parent
        pipe.send({"fatal": f"connection {conn}: {e}"})


def load(work, name, url, conns, seconds, size, out, server_pids):
    conns, seconds, size = int(conns), float(seconds.rstrip("s")), int(size)
    pids = [int(p) for p in server_pids.split(",") if p]
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    for i in range(conns):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(url, size, i, child), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent)
    for p in pipes:
        first = p.recv()
        if first != "ready":
            sys.exit(f"error: {name}: {first.get('fatal', first)}")
    s0 = bench.cpu_seconds(pids)
    m0, _ = bench.machine_busy_seconds()
    t0 = time.monotonic()
    for p in pipes:
        p.send(t0 + seconds)
    results = [p.recv() for p in pipes]
    t1 = time.monotonic()
    m1, _ = bench.machine_busy_seconds()
    s1 = bench.cpu_seconds(pids)
    for p in procs:
        p.join(10)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        sys.exit(f"error: {name}: {fatal[0]}")
    sent = sum(r["sent"] for r in results)
    errors = sum(r["errors"] for r in results)
    client = sum(r["cpu"] for r in results)
    count_sent(work, name, "warm-up" if out == "-" else f"load-{conns}", size, sent)
    elapsed = t1 - t0
    if out == "-":
        return
    run = {"target": name, "connections": conns, "size": size, "seconds": round(elapsed, 3),
           "messages": sent, "errors": errors,
           "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
           "messages_per_s": round(sent / elapsed, 1),
           "server_cpu_s": round(s1 - s0, 3), "client_cpu_s": round(client, 3),
           "others_cores": round(max(0.0, (m1 - m0) - (s1 - s0) - client) / elapsed, 3)}
    with open(out, "a") as f:
        f.write(json.dumps(run) + "\n")
    per_cpu = sent / (s1 - s0) if s1 > s0 else float("nan")
    print(f"  {name:12} c={conns} {run['messages_per_s']:>8,.0f} msg/s  server "
          f"{(s1 - s0) / elapsed:4.2f} cores ({per_cpu:,.0f} msg/CPU-s)  client "
          f"{client / elapsed:4.2f} cores  errors {errors}", file=sys.stderr)


def latency(work, out, size, count, targets):
    size, count = int(size), int(count)
    data = message(size)
    named = []
    for t in targets:
        name, url = t.split("=", 1)
        c = Smtp(url)
        c.hello()
        named.append((name, c))
    samples = {name: [] for name, _ in named}
    warm = min(5, count)
    for _ in range(warm):  # warm-up: not recorded
        for name, c in named:
            c.send(data)
    for i in range(count):
        # In turn, the first target changing each time: drift spreads over all of them.
        for k in range(len(named)):
            name, c = named[(i + k) % len(named)]
            samples[name].append(round(c.send(data) * 1000, 4))
    for name, c in named:
        c.quit()
        count_sent(work, name, f"latency-{size}", size, warm + count)
    doc = bench.load_json(out, {})
    doc[str(size)] = {"count": count, "samples": samples}
    with open(out, "w") as f:
        json.dump(doc, f)
    for name, s in samples.items():
        print(f"  {name:12} {size:>8} B  p50 {bench.pct(s, 50):7.3f} ms  p99 "
              f"{bench.pct(s, 99):7.3f} ms", file=sys.stderr)


def sent_log(work, name):
    return bench.load_jsonl(os.path.join(work, f"mail-sent-{name}.jsonl"))


def verify(work, name, source):
    log = sent_log(work, name)
    total = sum(e["count"] for e in log)
    total_bytes = sum(e["count"] * e["size"] for e in log)
    doc = {"target": name, "sent": total, "sent_bytes": total_bytes}
    if name == "turnout":
        # What the catcher should hold: the newest messages, newest first, while there are at
        # most KEEP_MESSAGES of them within KEEP_BYTES (each phase's messages are one size, so
        # the order within a phase does not matter).
        keep = kept_bytes = 0
        for e in reversed(log):
            for _ in range(e["count"]):
                if keep + 1 > KEEP_MESSAGES or kept_bytes + e["size"] > KEEP_BYTES:
                    break
                keep += 1
                kept_bytes += e["size"]
            else:
                continue
            break
        listed = bench.load_json(source, {})
        msgs = listed.get("messages", [])
        doc.update({"expected_kept": keep, "expected_kept_bytes": kept_bytes,
                    "listed": len(msgs), "listed_bytes": sum(m.get("size", 0) for m in msgs),
                    "keeps_messages": listed.get("keeps_messages"),
                    "keeps_bytes": listed.get("keeps_bytes"),
                    "ok": len(msgs) == keep})
    elif name.startswith("maildev"):
        base = f"http://127.0.0.1:{source}"
        try:  # MailDev 3: /api/email/summary has the total; 2.x: GET /email, every message
            with urllib.request.urlopen(base + "/api/email/summary?limit=1", timeout=60) as r:
                listed = json.load(r)["total"]
        except Exception:  # noqa: BLE001
            with urllib.request.urlopen(base + "/email", timeout=60) as r:
                listed = len(json.load(r))
        doc.update({"listed": listed, "ok": listed == total})
    else:
        doc.update({"listed": None, "ok": None})
    with open(os.path.join(work, "mail-verify.jsonl"), "a") as f:
        f.write(json.dumps(doc) + "\n")
    ok = {True: "ok", False: "MISMATCH", None: "keeps nothing"}[doc["ok"]]
    extra = (f", expected {doc['expected_kept']} within its bounds"
             if "expected_kept" in doc else "")
    print(f"  {name:12} sent {total:,}; holds {doc['listed']}{extra}: {ok}", file=sys.stderr)


def meta(out, turnout, root, rounds, duration, load_avg, maildev_version, postfix_note):
    import subprocess

    def first_line(*cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]
    commit = first_line("git", "-C", root, "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", ".", ":!bench",
                            ":!docs"]).returncode
    postfix = first_line("dpkg-query", "-W", "-f", "${Version}", "postfix")
    versions = {"turnout": f"{first_line(turnout, '--version')} at {commit}"
                           + (" (with uncommitted changes)" if dirty else ""),
                "maildev": f"MailDev {maildev_version} on node {first_line('node', '--version')}",
                "smtp-sink": f"smtp-sink of Postfix {postfix}",
                "python": sys.version.split()[0]}
    m = bench.machine()
    doc = {"machine": m, "load_at_start": load_avg, "rounds": int(rounds), "duration": duration,
           "versions": versions, "postfix": postfix_note, "notes": [
               "Only Turnout is sent AUTH (PLAIN, once per connection, as its SMTP_URL says; "
               "its host listener refuses mail without it); MailDev and smtp-sink take mail "
               "without a login and are sent none.",
               "Server CPU: the whole `turnout serve` process (the catcher and its SQLite "
               "store); MailDev's node process; "
               "smtp-sink's process. Client CPU: the load generator's processes (one per "
               "connection).",
               f"{m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, {m['memory_gib']} "
               f"GiB; {m['date']}; {versions['turnout']}, {versions['maildev']}, "
               f"{versions['smtp-sink']}, Python {versions['python']}; load average "
               f"{load_avg} at the start."]}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


def report(work, out_json, out_md):
    runs = bench.load_jsonl(os.path.join(work, "mail-load.jsonl"))
    lat = bench.load_json(os.path.join(work, "mail-latency.json"), {})
    meta_doc = bench.load_json(os.path.join(work, "mail-meta.json"), {})
    verified = {v["target"]: v for v in bench.load_jsonl(os.path.join(work, "mail-verify.jsonl"))}
    throughput = {}
    for conns in sorted({r["connections"] for r in runs}):
        for target in ORDER:
            rs = [r for r in runs if r["target"] == target and r["connections"] == conns]
            if not rs:
                continue
            secs = sum(r["seconds"] for r in rs)
            server = sum(r["server_cpu_s"] for r in rs)
            throughput.setdefault(str(conns), {})[target] = {
                "runs": len(rs),
                "messages_per_s": statistics.median(r["messages_per_s"] for r in rs),
                "messages_per_s_all": [round(r["messages_per_s"]) for r in rs],
                "server_cores": round(server / secs, 3),
                "messages_per_server_cpu_s": round(sum(r["messages"] for r in rs) / server)
                if server else None,
                "client_cores": round(sum(r["client_cpu_s"] for r in rs) / secs, 3),
                "others_cores": statistics.median(r["others_cores"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "first_error": next((r["first_error"] for r in rs if r.get("first_error")), None),
            }
    latency_rows = {}
    for size, d in lat.items():
        for target, s in d["samples"].items():
            latency_rows.setdefault(size, {})[target] = {
                "count": len(s), "p50_ms": bench.pct(s, 50), "p99_ms": bench.pct(s, 99)}
    ratio = lambda a, b: None if not a or not b else round(a / b, 2)
    ratios = {}
    for conns, rows in throughput.items():
        t = rows.get("turnout")
        for other in ORDER[1:]:
            o = rows.get(other)
            if t and o:
                ratios[f"throughput_c{conns}_vs_{other}"] = {
                    "messages_per_s": ratio(t["messages_per_s"], o["messages_per_s"]),
                    "messages_per_cpu_s": ratio(t["messages_per_server_cpu_s"],
                                                o["messages_per_server_cpu_s"])}
    for size, rows in latency_rows.items():
        t = rows.get("turnout")
        for other in ORDER[1:]:
            o = rows.get(other)
            if t and o:
                ratios[f"latency_{size}_vs_{other}"] = {"p50": ratio(t["p50_ms"], o["p50_ms"]),
                                                      "p99": ratio(t["p99_ms"], o["p99_ms"])}
    summary = {"meta": meta_doc, "throughput": throughput, "latency": latency_rows,
               "kept": verified, "ratios": ratios}
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)

    def size_name(size):
        size = int(size)
        return f"{size // 1048576} MiB" if size >= 1048576 else f"{size // 1024} KiB"
    lines = []
    for conns, rows in throughput.items():
        lines += [f"Throughput, {conns} connection{'s' if conns != '1' else ''} (one process "
                  f"each), 2 KiB text messages, RSET/MAIL/RCPT/DATA in a loop on one login: "
                  f"{meta_doc.get('rounds', '?')} interleaved rounds of "
                  f"{meta_doc.get('duration', '?')}, medians.", "",
                  "| Target | Messages/s | Messages per server CPU-second | Server CPU (cores) "
                  "| Client CPU (cores) | Errors | Messages/s per round |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for target in ORDER:
            r = rows.get(target)
            if not r:
                continue
            pc = "–" if r["messages_per_server_cpu_s"] is None else \
                f"{r['messages_per_server_cpu_s']:,}"
            lines.append(f"| {NAMES[target]} | {r['messages_per_s']:,.0f} | {pc} | "
                         f"{bench.fmt_cores(r['server_cores'])} | "
                         f"{bench.fmt_cores(r['client_cores'])} | {r['errors']:,} | "
                         f"{', '.join(f'{x:,}' for x in r['messages_per_s_all'])} |")
        lines.append("")
    if latency_rows:
        lines += ["Latency, one connection per target, the targets in turn: from `MAIL` to the "
                  "250 after the final dot (`RSET` before each message, not timed).", "",
                  "| Target | Message | Messages | p50 | p99 |", "|---|---|---:|---:|---:|"]
        for size, rows in sorted(latency_rows.items(), key=lambda kv: int(kv[0])):
            for target in ORDER:
                r = rows.get(target)
                if r:
                    lines.append(f"| {NAMES[target]} | {size_name(size)} | {r['count']} | "
                                 f"{r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms |")
        lines.append("")
    if verified:
        lines += ["Kept after the run (every message each target answered 250, warm-ups and "
                  "checks included):", "", "| Target | Sent | Holds | Check |", "|---|---:|---:|---|"]
        for target in ORDER:
            v = verified.get(target)
            if not v:
                continue
            if target == "turnout":
                check_text = (f"{'ok' if v['ok'] else '**MISMATCH**'}: it keeps the newest "
                              f"{v['keeps_messages']} within {v['keeps_bytes'] / 1048576:.0f} "
                              f"MiB per environment, so {v['expected_kept']} "
                              f"({v['expected_kept_bytes'] / 1048576:.1f} MiB) are expected; "
                              f"older ones were trimmed, not lost")
                holds = f"{v['listed']:,}"
            elif v["ok"] is None:
                check_text, holds = "keeps nothing (accepts and discards)", "–"
            else:
                check_text = "ok: every message" if v["ok"] else "**MISMATCH**"
                holds = f"{v['listed']:,}"
            lines.append(f"| {NAMES[target]} | {v['sent']:,} | {holds} | {check_text} |")
        lines.append("")
    fr = lambda x: "–" if x is None else f"{x:.2f}×"
    said = []
    for key, r in ratios.items():
        kind, _, other = key.partition("_vs_")
        if kind.startswith("throughput_c"):
            c = kind[len("throughput_c"):]
            said.append(f"{c} connection{'s' if c != '1' else ''}, against {other}: messages/s "
                        f"{fr(r['messages_per_s'])}, messages per server CPU-second "
                        f"{fr(r['messages_per_cpu_s'])}")
        else:
            size = kind[len("latency_"):]
            said.append(f"latency of a {size_name(size)} message, against {other}: p50 "
                        f"{fr(r['p50'])}, p99 {fr(r['p99'])}")
    if said:
        lines += ["Ratios (Turnout over the other; above 1 is better for Turnout in messages/s, "
                  "worse in latency):", ""] + [f"- {s}." for s in said] + [""]
    for note in meta_doc.get("notes", []):
        lines.append(note)
    if meta_doc.get("postfix"):
        lines.append(meta_doc["postfix"])
    if meta_doc.get("notes"):
        lines.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "smtp-url":
        smtp_url(*args)
    elif cmd == "wait":
        wait(*args)
    elif cmd == "check":
        check(*args)
    elif cmd == "load":
        load(*args)
    elif cmd == "latency":
        latency(args[0], args[1], args[2], args[3], args[4:])
    elif cmd == "verify":
        verify(*args)
    elif cmd == "meta":
        meta(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"error: unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
