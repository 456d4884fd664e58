"""Ballot throughput under gunicorn (2 workers) through real HTTP with CSRF, against a bare endpoint.

    .venv/bin/python -m bench.ballots [--ballots 1500] [--burst 500] [--threads 16] [--db sqlite|postgresql|all]
                                      [--earlier N]

For each database (SQLite, and PostgreSQL where 127.0.0.1:5432 answers) it creates the example
round, issues links, starts gunicorn, and from this separate process measures: the bare Flask
endpoint, ballot pages (GET /ballot), casting (POST /ballot, sessions and CSRF tokens prepared
beforehand), and a burst of phones casting at once. It then checks that every acknowledged ballot
is stored exactly once. Prints requests/s, p50/p99 latency, errors, CPU time per request, and
ratios to the bare endpoint (the mean of the bare runs just before and just after each phase).
With --earlier N the round already holds N ballots, cast and mixed before the bench (written
straight into the database), as a big round well under way does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import queue
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from evaluation.packed_scores import pack

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Client:
    """One keep-alive HTTP connection with a cookie jar of one session cookie."""

    def __init__(self, port: int):
        self.port, self.cookie, self.conn = port, None, None

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str, float]:
        headers = {"Accept-Language": "zh-CN"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        elapsed = time.perf_counter() - start
        if (response.getheader("Connection") or "").lower() == "close":
            self.conn.close()
            self.conn = None
        for cookie in response.msg.get_all("Set-Cookie") or ():
            if cookie.startswith("session="):
                self.cookie = cookie.split(";", 1)[0]
        return response.status, text, elapsed


def ballot_form(csrf: str, cadres: list[str], items: list[str], n: int) -> str:
    """A complete, valid ballot: quota respected, one reason-free grade per cadre."""
    fields = [("csrf_token", csrf)]
    for k, key in enumerate(cadres):
        fields.append((f"grade-{key}", "excellent" if k < 3 else ("competent", "basic")[(n + k) % 2]))
        fields += [(f"item-{key}-{item}", str(1 + (n + k + j) % 10)) for j, item in enumerate(items)]
        fields.append((f"comment-{key}", ""))
    return urllib.parse.urlencode(fields)


def summarise(name: str, latencies: list[float], errors: int, seconds: float,
              cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> dict:
    lat = sorted(latencies)
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: float("nan"))
    rate = len(latencies) / seconds if seconds else 0.0
    per = (lambda t: 1000 * t / len(latencies)) if latencies else (lambda t: float("nan"))
    return {"name": name, "n": len(latencies), "rate": rate, "p50": pick(0.50), "p99": pick(0.99),
            "errors": errors, "server_ms": per(cpu[0]), "database_ms": per(cpu[1]),
            "client_ms": per(cpu[2])}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def worker_pids(server: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def run_parallel(jobs: list, work, threads: int):
    """work(job) -> (status, seconds) for every job on `threads` threads; (latencies, errors, wall, (server CPU, client CPU))."""
    latencies, errors, lock = [], [0], threading.Lock()

    def one(job):
        try:
            status, elapsed = work(job)
        except Exception:  # noqa: BLE001 - a failed request is counted, not raised
            status, elapsed = 0, None
        with lock:
            if status in (200, 302) and elapsed is not None:
                latencies.append(elapsed)
            else:
                errors[0] += 1

    start = time.perf_counter()
    cpu_before = cpu_now()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    return latencies, errors[0], wall, [after - before for after, before in zip(cpu_now(), cpu_before)]


#: The processes whose CPU time each phase reports: gunicorn's workers, PostgreSQL's backends.
WATCHED: dict[str, list[int]] = {"server": [], "database": []}


def cpu_now() -> tuple[float, float, float]:
    """CPU seconds so far of (the server's workers, the database's backends, this client)."""
    return cpu_seconds(WATCHED["server"]), cpu_seconds(WATCHED["database"]), time.process_time()


def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving the bench database (the workers' pooled connections)."""
    if not database_url.startswith("postgresql"):
        return []
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,))]


def prepare_round(env: dict, count: int) -> tuple[int, list[str]]:
    """Migrate, create and open the example round, issue `count` public links; their tokens."""
    def flask(*args, stdin=None):
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], env=env,
                              cwd=ROOT, check=True, capture_output=True, text=True, input=stdin)
    flask("db", "upgrade")
    round_id = int(flask("round", "create", "--from", "examples/round.json").stdout)
    flask("round", "open", str(round_id))
    lines = []
    for start in range(0, count, 2000):  # the links command issues at most 2,000 at a time
        lines += flask("links", str(round_id), "--group", "public", "--count",
                       str(min(2000, count - start))).stdout.splitlines()
    return round_id, [line.split("\t")[0].split("/v/", 1)[1] for line in lines]


def add_earlier_ballots(database_url: str, round_id: int, n: int) -> None:
    """n ballots of the public group as the round would hold them after n casts and a mix: their
    invitations used and mixed, in random order, counted on the round row on SQLite, and every
    cadre rated "don't know" with all items at 5."""
    sqlite = database_url.startswith("sqlite")
    conn = (sqlite3.connect(database_url.removeprefix("sqlite:///")) if sqlite
            else psycopg.connect(database_url))
    q = (lambda sql: sql) if sqlite else (lambda sql: sql.replace("?", "%s"))
    cur = conn.cursor()
    cur.execute(q("SELECT id FROM rater_groups WHERE round_id = ? AND key = 'public'"), (round_id,))
    group = cur.fetchone()[0]
    cur.execute(q("SELECT id FROM participations WHERE round_id = ?"), (round_id,))
    cadres = [row[0] for row in cur.fetchall()]
    cur.execute(q("SELECT count(*) FROM items WHERE round_id = ?"), (round_id,))
    n_items = cur.fetchone()[0]
    scores = pack([5] * n_items)
    day = dt.date.today().isoformat() if sqlite else dt.date.today()
    hashes = [f"earlier{k:057d}" for k in range(n)]
    cur.executemany(q("INSERT INTO invitations (round_id, group_id, token_hash, code_hash,"
                      " issued_on) VALUES (?, ?, ?, ?, ?)"),
                    [(round_id, group, h, h, day) for h in hashes])
    cur.execute(q("INSERT INTO used_invitations (round_id, invitation_id, mixed)"
                  " SELECT round_id, id, true FROM invitations"
                  " WHERE round_id = ? AND token_hash LIKE ? ORDER BY random()"),
                (round_id, "earlier%"))
    if sqlite:  # as the casts would have counted them
        cur.execute("UPDATE rounds SET sqlite_cast_count = sqlite_cast_count + ? WHERE id = ?",
                    (n, round_id))
    ballots = [secrets.token_hex(16) for _ in range(n)]
    cur.executemany(q("INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper,"
                      " is_valid) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    [(b, round_id, group, f"EARLIER-{k:08d}", day, False, True)
                     for k, b in enumerate(ballots)])
    cur.executemany(q("INSERT INTO ratings (ballot_id, participation_id, grade_id, comment, scores)"
                      " VALUES (?, ?, NULL, NULL, ?)"),
                    [(b, p, scores) for b in ballots for p in cadres])
    conn.commit()
    if not sqlite:  # as the vacuum after a mix leaves the tables
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    conn.close()


def start_server(env: dict, port: int, threads: int) -> subprocess.Popen:
    workers = ["--worker-class", "gthread", "--threads", str(threads)] if threads > 1 else []
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", *workers, "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "bench.server:app"], env=env, cwd=ROOT)
    for _ in range(200):
        try:
            if Client(port).request("GET", "/bare/")[0] == 200:
                return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def open_sessions(port: int, tokens: list[str], threads: int) -> list[tuple[Client, str]]:
    """Open each link in its own client (the session swap) and read the CSRF token off the ballot."""
    def prepare(token):
        client = Client(port)
        status, _text, _t = client.request("GET", f"/v/{token}")
        status, text, _t = client.request("GET", "/ballot")
        if status != 200:
            raise RuntimeError(f"ballot page answered {status}")
        return client, CSRF_RE.search(text).group(1)
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(prepare, tokens))


def measure(port: int, sessions: list, burst: list, args, cadres, items) -> list[dict]:
    """The bare endpoint before and after each of the three phases (ballot pages, casting, the
    burst), in one server run: this machine's speed drifts by tens of percent within minutes,
    so each phase is compared with the bare runs right beside it."""
    results = []
    n = args.requests

    def bare(name):
        result = summarise(name, *run_parallel(
            [None] * n, lambda _j, c=threading.local(): _get(c, port, "/bare/"), args.threads))
        result["bare"] = True
        return result

    results.append(bare("bare endpoint"))
    pagers = queue.SimpleQueue()  # each thread borrows a session of its own
    for client, _csrf in sessions[:args.threads]:
        pagers.put(client)

    def page(_job):
        client = pagers.get()
        try:
            return client.request("GET", "/ballot")[::2]
        finally:
            pagers.put(client)

    results.append(summarise("ballot page", *run_parallel([None] * n, page, args.threads)))
    results.append(bare("bare endpoint"))
    casts = sessions[args.threads:]
    acknowledged = []

    def cast(job):
        index, client, body = job
        status, _text, elapsed = client.request("POST", "/ballot", body)
        if status == 302:
            acknowledged.append(index)
        return status, elapsed

    def jobs(phones, start=0):
        """Bodies are built before the clock starts, as a load tool sends prepared requests."""
        return [(index, client, ballot_form(csrf, cadres, items, index))
                for index, (client, csrf) in enumerate(phones, start=start)]

    results.append(summarise("casting", *run_parallel(jobs(casts), cast, args.threads)))
    results.append(bare("bare endpoint"))
    burst_result = summarise("burst of phones", *run_parallel(
        jobs(burst, start=len(casts)), cast, args.burst_threads))
    burst_result["wall"] = burst_result["n"] / burst_result["rate"] if burst_result["rate"] else 0
    results.append(burst_result)
    results.append(bare("bare endpoint"))
    results.append({"acknowledged": len(acknowledged)})
    return results


def _get(local, port, path):
    if not hasattr(local, "client"):
        local.client = Client(port)
    status, _text, elapsed = local.client.request("GET", path)
    return status, elapsed


def stored_ballots(database_url: str, round_id: int) -> tuple[int, int, int]:
    """(ballots, distinct receipts, used invitations) of the round, read straight from the database."""
    queries = ("SELECT count(*) FROM ballots WHERE round_id = {r}",
               "SELECT count(DISTINCT receipt) FROM ballots WHERE round_id = {r}",
               "SELECT count(*) FROM used_invitations WHERE round_id = {r}")
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return tuple(conn.execute(q.format(r=round_id)).fetchone()[0] for q in queries)
    with psycopg.connect(database_url) as conn:
        return tuple(conn.execute(q.format(r=round_id)).fetchone()[0] for q in queries)


def bench_database(label: str, database_url: str, args, cadres, items) -> None:
    instance = Path(tempfile.mkdtemp(prefix="pingyi-bench-"))
    env = {**os.environ, "DATABASE_URL": database_url, "INSTANCE_PATH": str(instance),
           "SECRET_KEY": secrets.token_urlsafe(32), "PINGYI_MIX_EVERY": str(args.mix_every)}
    total = args.threads + args.ballots + args.burst
    round_id, tokens = prepare_round(env, total)
    if args.earlier:
        add_earlier_ballots(database_url, round_id, args.earlier)
    port = 18000 + secrets.randbelow(2000)
    server = start_server(env, port, args.server_threads)
    WATCHED["server"] = worker_pids(server)
    try:
        sessions = open_sessions(port, tokens[:args.threads + args.ballots], args.threads)
        burst = open_sessions(port, tokens[args.threads + args.ballots:], args.threads)
        WATCHED["database"] = backend_pids(database_url)
        results = measure(port, sessions, burst, args, cadres, items)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    stored = tuple(n - args.earlier for n in stored_ballots(database_url, round_id))
    report(label, results, stored, args)
    shutil.rmtree(instance, ignore_errors=True)


def report(label: str, results: list[dict], stored: tuple[int, int, int], args) -> None:
    """One line per run in the order measured; a phase's ratio is to the mean of the bare runs
    just before and just after it."""
    acknowledged = results.pop()["acknowledged"]
    kind = f"gthread workers x {args.server_threads} threads" if args.server_threads > 1 else "sync workers"
    earlier = f", {args.earlier} ballots cast before" if args.earlier else ""
    print(f"\n== {label}: gunicorn 2 {kind}, {args.threads} client threads, "
          f"mix every {args.mix_every} ballots{earlier} ==")
    print(f"{'':18} {'n':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'of bare':>8}"
          f"   CPU ms/req: {'server':>6} {'db':>5} {'client':>6}")
    for k, r in enumerate(results):
        ratio = "" if r.get("bare") else \
            f"{r['rate'] / ((results[k - 1]['rate'] + results[k + 1]['rate']) / 2):>8.1%}"
        print(f"{r['name']:18} {r['n']:>6} {r['rate']:>9.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['errors']:>6} {ratio:>8} {'':>12} {r['server_ms']:>6.2f} "
              f"{r['database_ms']:>5.2f} {r['client_ms']:>6.2f}")
    bares = [r["rate"] for r in results if r.get("bare")]
    print(f"bare endpoint: {min(bares):.0f} to {max(bares):.0f} req/s over the run")
    burst = next(r for r in results if r["name"] == "burst of phones")
    print(f"burst: {burst['n']} phones cast in {burst['wall']:.2f} s with {burst['errors']} errors "
          f"({args.burst_threads} at once)")
    ballots, receipts, used = stored
    exact = ballots == receipts == used == acknowledged
    print(f"acknowledged {acknowledged}, stored {ballots} ballots with {receipts} distinct receipts, "
          f"{used} invitations used: {'each stored exactly once' if exact else 'MISMATCH'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests for bare and page phases")
    parser.add_argument("--ballots", type=int, default=1500, help="ballots in the casting phase")
    parser.add_argument("--burst", type=int, default=500, help="phones in the burst")
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--burst-threads", type=int, default=100, help="phones casting at once")
    parser.add_argument("--mix-every", type=int, default=int(os.environ.get("PINGYI_MIX_EVERY", 20)),
                        help="PINGYI_MIX_EVERY for the server")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="threads per gunicorn worker (1: sync workers, more: gthread)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--earlier", type=int, default=0,
                        help="ballots the round holds before the bench (cast and mixed)")
    args = parser.parse_args()
    import json
    spec = json.loads((ROOT / "examples" / "round.json").read_text(encoding="utf-8"))
    cadres = [c["key"] for c in spec["cadres"]]
    items = [i["key"] for d in spec["dimensions"] for i in d["items"]]
    if args.db in ("sqlite", "all"):
        path = Path(tempfile.mkdtemp(prefix="pingyi-bench-db-")) / "bench.db"
        bench_database("SQLite", f"sqlite:///{path}", args, cadres, items)
    if args.db in ("postgresql", "all"):
        try:
            with psycopg.connect(PG_ADMIN, connect_timeout=3, autocommit=True) as conn:
                name = f"pingyi_bench_{secrets.token_hex(4)}"
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            print(f"\nPostgreSQL not reachable ({exc}); skipped")
            return
        try:
            bench_database("PostgreSQL", PG_ADMIN.rsplit("/", 1)[0] + "/" + name, args, cadres, items)
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
