"""Time the results of a big synthetic round: `python -m bench.results [--quick] [--db sqlite|postgresql]`.

A closed round of 2,000 cadres x 200 ballots x 10 items (4 million item ratings; every ballot
rates every cadre) goes into SQLite in a temporary folder, and into a scratch PostgreSQL database
where 127.0.0.1:5432 answers (PINGYI_TEST_PG overrides the admin URL). Then, per database:

  (a) fetching the rating rows into NumPy with one plain query (DBAPI cursor, no ORM, no Core rows)
  (b) the whole results computation from the database: evaluation.results.compute_results
  (c) stats/ alone on the in-memory arrays (aggregate, bias, reliability), and its reliability part
  (d) the same reliability figures through pingouin.intraclass_corr and krippendorff.alpha

Goals: (b) within 3x of (a); stats/ at least 10x faster than pingouin's ICC and 2x faster than
krippendorff; peak memory under 1 GB. Filling and measuring run in two child processes per
database, so that the peak RSS printed with the timings is the results' own, not the filling's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psycopg
from sqlalchemy import select

from core.config import Config
from core.extensions import db
from evaluation.models import Round
from evaluation.packed_scores import pack, unpack_many
from evaluation.results import (
    PUBLIC, compute_results, fetch_rows, grade_flags, icc_summary, item_scores, load_arrays,
    rating_rows, round_rules,
)
from evaluation.rounds import create_round, transition_round
from evaluation.specs import validate_spec
from stats import aggregate, dissatisfaction, icc, icc_table, krippendorff_alpha
from stats.bias import detect_bias
from wsgi import create_app

PG_ADMIN_URL = os.environ.get("PINGYI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
FULL = (2000, 200, 10)
QUICK = (300, 60, 10)
#: Share of the ballots per group: superior, peer, subordinate, public.
GROUP_SHARES = (0.1, 0.2, 0.4, 0.3)
BALLOTS_PER_BATCH = 10


# --- filling the database ---------------------------------------------------------------------


def round_spec(n_c: int, n_i: int) -> dict:
    """A round spec with n_c cadres and n_i items in five dimensions, default groups and rules."""
    dims = [{"key": f"d{d}", "label": f"D{d}", "items": []} for d in range(5)]
    for i in range(n_i):
        dims[i % 5]["items"].append({"key": f"i{i:02d}", "label": f"Item {i}"})
    rng = np.random.default_rng(1)
    cadres = [{"key": f"b{c:05d}", "name": f"Cadre {c}", "kpi": float(rng.integers(60, 100))}
              for c in range(n_c)]
    return validate_spec({"title": "Bench", "period": "2026", "dimensions": dims,
                          "cadres": cadres, "rules": {"bands": [3, 5, 2]}})


def synthetic_ratings(n_b: int, n_c: int, n_i: int, seed: int = 7):
    """Grade positions (n_b, n_c) and item ratings 1-10 (n_b, n_c, n_i) from cadre quality and
    ballot leniency; every ballot grades every cadre (raters crossed with cadres)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_c)
    leniency = rng.normal(0, 0.4, n_b)
    latent = quality[None, :] + leniency[:, None] + rng.normal(0, 0.7, (n_b, n_c))
    grades = 3 - np.digitize(latent, [-1.3, -0.2, 1.0])
    base = 6 + 1.5 * (quality[None, :, None] + leniency[:, None, None])
    items = np.clip(np.rint(base + rng.normal(0, 1, (n_b, n_c, n_i))), 1, 10).astype(np.int64)
    return grades, items


def fill(app, size: tuple[int, int, int]) -> dict[str, float]:
    """Create, fill and close the synthetic round; return the seconds each part took."""
    n_c, n_b, n_i = size
    times, start = {}, time.perf_counter()
    with app.app_context():
        db.create_all()
        round_ = create_round(db.session, round_spec(n_c, n_i), "bench")
        transition_round(db.session, round_, "open", "bench")
        grades, items = synthetic_ratings(n_b, n_c, n_i)
        ids = {"p": np.array([p.id for p in round_.participations]),
               "i": np.array([i.id for i in round_.items]),
               "g": np.array([g.id for g in round_.grades]),
               "k": np.array([g.id for g in round_.groups])}
        ballot_ids = sorted(secrets.token_hex(16) for _ in range(n_b))
        group = np.resize(np.repeat(np.arange(4), np.round(np.array(GROUP_SHARES) * n_b)
                                    .astype(int)), n_b)
        times["create"], start = time.perf_counter() - start, time.perf_counter()
        raw = db.engine.raw_connection()
        try:
            writer = _copy_rows if db.engine.dialect.name == "postgresql" else _insert_rows
            writer(raw, round_.id, ballot_ids, ids, group, grades, items)
            raw.commit()
        finally:
            raw.close()
        times["insert"], start = time.perf_counter() - start, time.perf_counter()
        transition_round(db.session, round_, "close", "bench")
        times["close"] = time.perf_counter() - start
    return times


def _tables(round_id, ballot_ids, ids, group, grades, items):
    """Yield (table, columns, rows) batches of ballots and ratings (item scores packed)."""
    today = dt.date(2026, 1, 6)
    yield "ballots", ("id", "round_id", "group_id", "receipt", "cast_on", "is_paper", "is_valid"), [
        (b, round_id, int(ids["k"][group[n]]), secrets.token_hex(6), today, False, True)
        for n, b in enumerate(ballot_ids)]
    pids = ids["p"].tolist()
    for start in range(0, len(ballot_ids), BALLOTS_PER_BATCH):
        chunk = range(start, min(start + BALLOTS_PER_BATCH, len(ballot_ids)))
        yield "ratings", ("ballot_id", "participation_id", "grade_id", "scores"), [
            (ballot_ids[b], p, g, pack(scores)) for b in chunk
            for p, g, scores in zip(pids, ids["g"][grades[b]].tolist(), items[b].tolist())]


def _insert_rows(raw, *data) -> None:
    """SQLite: executemany in big batches, in key order (the tables are WITHOUT ROWID)."""
    cursor = raw.cursor()
    cursor.execute("PRAGMA synchronous = OFF")
    for table, columns, rows in _tables(*data):
        marks = ", ".join("?" * len(columns))
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    cursor.close()


def _copy_rows(raw, *data) -> None:
    """PostgreSQL: COPY ... FROM STDIN through psycopg, then ANALYZE for the planner."""
    conn = raw.driver_connection
    with conn.cursor() as cursor:
        # The generated rows are consistent: skip the per-row foreign-key triggers where allowed
        # (a superuser on the scratch database), which otherwise dominate the load.
        try:
            with conn.transaction():
                cursor.execute("SET session_replication_role = replica")
        except psycopg.Error:
            pass
        for table, columns, rows in _tables(*data):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    conn.commit()
    with conn.cursor() as cursor:
        cursor.execute("RESET session_replication_role")
        cursor.execute("ANALYZE ballots, ratings")


# --- the timings ------------------------------------------------------------------------------


def timed(func, *args, repeat: int = 1):
    """(best wall time in seconds over repeat runs, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def plain_fetch(round_id: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(a) The rating query, plain tuples off the DBAPI cursor, into an (N, 3) int64 array of
    (ballot, cadre, grade) and an (N, n_items) array of the item scores unpacked."""
    keys, scores = [], []
    for rows in fetch_rows(db.session, rating_rows(round_id)):
        *columns, packed = zip(*rows)
        keys.append(np.array(columns, dtype=np.int64).T)
        scores.append(unpack_many(packed, n_items))
    db.session.rollback()
    return np.concatenate(keys), np.concatenate(scores)


def whole_results(round_id: int) -> dict:
    """(b) The whole use case, as the command and the page run it."""
    return compute_results(db.session, round_id)


def scopes(arrays) -> list[np.ndarray]:
    """Ballot masks of the reliability figures: all ballots, then each group."""
    groups = np.unique(arrays.ballot_group)
    return [np.ones(arrays.ballot_group.size, bool)] + [arrays.ballot_group == g for g in groups]


def ours_reliability(grades, scores, masks):
    """(c) Alpha (ordinal) and ICC through stats/ for every scope, as evaluation.results does."""
    alphas = [krippendorff_alpha(grades[m], "ordinal") for m in masks]
    return alphas, [icc_summary(scores[m]) for m in masks]


def ours_everything(round_: Round, arrays, grades, scores, masks):
    """(c) stats/ alone: aggregate, the public share, bias detection and the reliability figures."""
    dissatisfied, approval = grade_flags(round_)
    rules = round_rules(round_)
    dims = {d.id: k for k, d in enumerate(round_.dimensions)}
    agg = aggregate(arrays.grade_idx, [g.score for g in round_.grades], arrays.items,
                    [dims[i.dimension_id] for i in round_.items], arrays.ballot_group,
                    [g.weight for g in round_.groups], rules, dissatisfied=dissatisfied,
                    approval=approval)
    public = [g.key for g in round_.groups].index(PUBLIC)
    dissatisfaction(arrays.grade_idx, dissatisfied, rules, ballot_mask=arrays.ballot_group == public)
    detect_bias(arrays.grade_idx, [g.score for g in round_.grades], arrays.items,
                arrays.ballot_group, round_.item_min, round_.item_max)
    return agg, ours_reliability(grades, scores, masks)


def theirs_icc(frames):
    """(d) pingouin.intraclass_corr on long-format frames, one per scope."""
    import pingouin
    return [pingouin.intraclass_corr(data=f, targets="cadre", raters="ballot", ratings="score")
            for f in frames]


def theirs_alpha(grades, masks):
    """(d) krippendorff.alpha (ordinal) on coders x units, one per scope."""
    import krippendorff
    return [krippendorff.alpha(reliability_data=grades[m], level_of_measurement="ordinal")
            for m in masks]


def long_frames(scores, masks):
    """Long-format (ballot, cadre, score) pandas frames per scope, for pingouin."""
    import pandas as pd
    frames = []
    for m in masks:
        x = scores[m]
        b, c = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), indexing="ij")
        frames.append(pd.DataFrame({"ballot": b.ravel(), "cadre": c.ravel(), "score": x.ravel()}))
    return frames


def app_for(url: str):
    """The app on the bench database."""
    return create_app(Config.from_env({}, instance_path=Path(tempfile.mkdtemp()) / "instance",
                                      database_url=url, secret_key="bench-" + "x" * 40))


def max_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_fill(url: str, size: tuple[int, int, int], label: str) -> None:
    """Child process 1: create, fill and close the round; print the time and the peak memory."""
    t = fill(app_for(url), size)
    print(f"[{label}] {size[0]} cadres x {size[1]} ballots x {size[2]} items: round created in "
          f"{t['create']:.1f} s, ratings inserted in {t['insert']:.1f} s, closed (mixed, sealed, "
          f"vacuumed) in {t['close']:.1f} s; peak RSS of this process {max_rss_mib():.0f} MiB",
          flush=True)


def step_measure(url: str, label: str) -> None:
    """Child process 2, fresh: the timings, so that its peak memory is the results' alone."""
    app = app_for(url)
    with app.app_context():
        round_id = db.session.scalar(select(Round.id).where(Round.status == "closed"))
        db.session.rollback()
        measure(round_id, label)
        db.session.remove()
        db.engine.dispose()


def measure(round_id: int, label: str) -> None:
    """The timings (a)-(d) of one filled database, printed."""
    t = {}
    round_ = db.session.get(Round, round_id)
    n_items = len(round_.items)
    db.session.rollback()
    t["a"], (rows, _scores) = timed(plain_fetch, round_id, n_items, repeat=3)
    t["b"], _ = timed(whole_results, round_id, repeat=3)
    round_ = db.session.get(Round, round_id)
    arrays = load_arrays(db.session, round_)
    grades = np.where(arrays.grade_idx >= 0, arrays.grade_idx, np.nan)
    scores, masks = item_scores(arrays), scopes(arrays)
    t["c"], _ = timed(ours_everything, round_, arrays, grades, scores, masks, repeat=3)
    t["c_alpha"], mine_alpha = timed(
        lambda: [krippendorff_alpha(grades[m], "ordinal") for m in masks], repeat=5)
    t["c_icc"], _ = timed(lambda: [icc(scores[m].T) for m in masks], repeat=5)
    t["c_icc_table"], mine_icc = timed(lambda: [icc_table(scores[m].T) for m in masks], repeat=5)
    frames = long_frames(scores, masks)
    t["d_icc"], their_icc = timed(theirs_icc, frames)
    t["d_alpha"], their_alpha = timed(theirs_alpha, grades, masks, repeat=3)
    t["diff_alpha"] = max(abs(a - b) for a, b in zip(mine_alpha, their_alpha))
    t["diff_icc"] = max(abs(m["ICC2"].icc - f.set_index("Type").loc["ICC(A,1)", "ICC"])
                        for m, f in zip(mine_icc, their_icc))
    t["rss"] = max_rss_mib()  # before tracing, which holds memory of its own
    report(label, rows.shape[0], len(masks), t, traced_peak(round_id))


def report(label: str, n_rows: int, n_scopes: int, t: dict, peak: int) -> None:
    """Print the figures of one database."""
    def p(text):
        print(f"[{label}] {text}", flush=True)
    c_rel = t["c_alpha"] + t["c_icc_table"]
    p(f"(a) fetch {n_rows:,} rating rows into NumPy, one plain query:  {t['a']:8.3f} s")
    p(f"(b) whole results computation from the database:            {t['b']:8.3f} s")
    p(f"(c) stats/ alone on the arrays (aggregate, bias, reliability): {t['c']:7.3f} s")
    p(f"    reliability in stats/, {n_scopes} scopes (all ballots, each group): "
      f"alpha {t['c_alpha']:.4f} s, icc {t['c_icc']:.4f} s, icc_table (F, p, CI) "
      f"{t['c_icc_table']:.4f} s")
    p(f"(d) pingouin.intraclass_corr {t['d_icc']:.3f} s, krippendorff.alpha {t['d_alpha']:.4f} s"
      f"; largest difference from stats/: alpha {t['diff_alpha']:.1e}, ICC(2,1) {t['diff_icc']:.1e}")
    p(f"ratios: (b)/(a) = {t['b'] / t['a']:.2f} (goal <= 3); pingouin / stats icc_table = "
      f"{t['d_icc'] / t['c_icc_table']:.0f} (goal >= 10); krippendorff / stats alpha = "
      f"{t['d_alpha'] / t['c_alpha']:.1f} (goal >= 2); (d)/(c reliability) = "
      f"{(t['d_icc'] + t['d_alpha']) / c_rel:.0f}")
    p(f"peak memory: max RSS of the process timing (a)-(d) {t['rss']:.0f} MiB (goal < 1024); "
      f"tracemalloc peak during one more run of (b) {peak / 2**20:.0f} MiB")


def traced_peak(round_id: int) -> int:
    """Peak bytes allocated (Python and NumPy) during one run of (b), by tracemalloc."""
    db.session.remove()
    tracemalloc.start()
    try:
        whole_results(round_id)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- databases --------------------------------------------------------------------------------


def pg_reachable() -> bool:
    """Whether the PostgreSQL admin URL answers."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def run_steps(url: str, label: str, quick: bool) -> None:
    """Fill, then measure, each in a child process of its own."""
    extra = ["--quick"] if quick else []
    for step in ("fill", "measure"):
        subprocess.run([sys.executable, "-m", "bench.results", "--step", step, "--url", url,
                        "--label", label, *extra], check=True)


def on_database(name: str, quick: bool) -> None:
    """SQLite in a temporary folder, or a scratch PostgreSQL database created and dropped as
    tests/conftest.py does."""
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            run_steps(f"sqlite:///{Path(tmp) / 'bench.db'}", name, quick)
        return
    scratch = f"pingyi_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        run_steps(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + scratch, name, quick)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def main(argv=None) -> None:
    """Run on SQLite and, where it answers, PostgreSQL (or only --db); --step is internal."""
    parser = argparse.ArgumentParser(prog="python -m bench.results",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a smaller round: {QUICK}")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], help="one database only")
    parser.add_argument("--step", choices=["fill", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "fill":
        return step_fill(args.url, QUICK if args.quick else FULL, args.label)
    if args.step == "measure":
        return step_measure(args.url, args.label)
    names = [args.db] if args.db else ["sqlite"] + (["postgresql"] if pg_reachable() else [])
    if "postgresql" not in names and not args.db:
        print(f"PostgreSQL not reachable at {PG_ADMIN_URL}: SQLite only", flush=True)
    for name in names:
        on_database(name, args.quick)


if __name__ == "__main__":
    main()
