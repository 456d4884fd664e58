"""The e-mail queue: where REDIS_URL is set, the round page hands invitations and reminders to a
worker (`flask --app wsgi mail-worker`) and returns at once, however long the list.

A job carries the round, the group, the addresses and who asked for it: never a link. The worker
issues each link as it sends it (as the command-line `invite` does), so neither Redis nor a dump
of it holds a working link. One mailing per round runs at a time (a lock in Redis), so two
uploads of the same list cannot both take an address as new. Progress and the report travel in
the job's meta, which the round page reads; jobs and their reports are kept for a week.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from flask import current_app
from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue, get_current_job
from rq.job import Job

from core.extensions import db
from evaluation.errors import PingyiError
from evaluation.inviting import MailReport, RoundClosedForMail, invite, remind
from evaluation.mailer import Mailer, MailSettings
from evaluation.models import Round

#: A mailing of thousands of addresses at a few per second still ends within this.
JOB_TIMEOUT = 4 * 3600
#: The per-round lock lives this long unless the mailing holding it shows progress, so a worker
#: killed mid-mailing holds up the next mailing of that round for at most this long.
LOCK_SECONDS = 120
#: Jobs, their reports and each round's list of mailings are kept this long.
KEEP_SECONDS = 7 * 24 * 3600
#: Mailings listed on the round page.
RECENT = 10
#: Failed addresses kept in a report; the rest are counted.
MAX_FAILED_KEPT = 50
#: Progress is written to Redis every this many messages, or this many seconds, and at the end.
PROGRESS_EVERY, PROGRESS_SECONDS = 10, 15
#: A started mailing that has shown no progress for this long is shown as stalled.
STALLED_SECONDS = 300

KINDS = ("invite", "remind")


class QueueUnavailable(PingyiError):
    """Redis did not answer: nothing was queued."""


class _RoundMissing(Exception):
    """The job's round is not in this database."""


@dataclass(frozen=True)
class Mailing:
    """One queued mailing as the round page shows it."""

    id: str
    #: invite, remind, or None when the job has expired
    kind: str | None
    group: str | None
    #: queued, started, stalled (started, no progress for a while), finished, failed (an
    #: unexpected error: see the worker's log), cancelled, or gone (expired)
    status: str
    done: int
    total: int | None
    sent: int | None = None
    skipped: int | None = None
    failed: tuple[tuple[str, str], ...] = ()
    failed_count: int = 0
    #: Why a mailing stopped early: (what, detail), what one of mail_server, round_closed,
    #: round_missing, busy, other_instance; or ("refused", message, path, values), a Problem's
    #: parts; else None.
    error: tuple | None = None


def enabled(config) -> bool:
    return bool(config.redis_url)


_CLIENTS: dict[str, Redis] = {}


def _redis(config) -> Redis:
    """One client (and connection pool) per Redis URL and process."""
    client = _CLIENTS.get(config.redis_url)
    if client is None:
        client = _CLIENTS[config.redis_url] = Redis.from_url(
            config.redis_url, socket_connect_timeout=2, socket_timeout=5)
    return client


def _instance_tags(config) -> tuple[str, ...]:
    """Who queued a job: a keyed hash of the secret key (and of the fallback keys, so that a
    rotation does not strand queued mail). A worker runs only the jobs of its own instance."""
    return tuple(hmac.new(key.encode(), b"pingyi mail queue", hashlib.sha256).hexdigest()[:16]
                 for key in (config.secret_key, *config.secret_key_fallbacks))


def _round_key(config, round_id: int) -> str:
    return f"{config.mail_queue}:round:{round_id}"


def enqueue(config, kind: str, round_id: int, actor: str, group_key: str | None = None,
            addresses: list[str] | None = None) -> str:
    """Queue a mailing of the round (invite: the addresses into the group; remind: everyone
    unused); its job id. The job and the round's list of mailings are written in one
    transaction: QueueUnavailable if Redis does not answer, and then nothing is queued."""
    if kind not in KINDS:
        raise ValueError(kind)
    addresses = list(addresses or ())
    try:
        conn = _redis(config)
        key = _round_key(config, round_id)
        with conn.pipeline() as pipe:
            job = Queue(config.mail_queue, connection=conn).enqueue_call(
                run_mailing, kwargs={"kind": kind, "round_id": round_id, "actor": actor,
                                     "group_key": group_key, "addresses": addresses,
                                     "instance": _instance_tags(config)[0]},
                timeout=JOB_TIMEOUT, result_ttl=KEEP_SECONDS, failure_ttl=KEEP_SECONDS,
                meta={"kind": kind, "group": group_key, "done": 0,
                      "total": len(addresses) if kind == "invite" else None},
                pipeline=pipe)
            pipe.lpush(key, job.id).ltrim(key, 0, RECENT - 1).expire(key, KEEP_SECONDS)
            pipe.execute()
    except RedisError as exc:
        raise QueueUnavailable(f"the mail queue (Redis) did not answer: {type(exc).__name__}") from None
    return job.id


def recent(config, round_id: int) -> list[Mailing]:
    """The round's latest mailings, newest first. QueueUnavailable if Redis does not answer."""
    try:
        conn = _redis(config)
        ids = [raw.decode() for raw in conn.lrange(_round_key(config, round_id), 0, RECENT - 1)]
        jobs = Job.fetch_many(ids, connection=conn) if ids else []
        return [_mailing(job_id, job) for job_id, job in zip(ids, jobs)]
    except RedisError as exc:
        raise QueueUnavailable(f"the mail queue (Redis) did not answer: {type(exc).__name__}") from None


_STATES = {"queued": "queued", "deferred": "queued", "scheduled": "queued", "started": "started",
           "finished": "finished", "failed": "failed", "stopped": "cancelled",
           "canceled": "cancelled"}


def _mailing(job_id: str, job: Job | None) -> Mailing:
    if job is None:  # expired or removed
        return Mailing(job_id, None, None, "gone", 0, None)
    meta = job.meta
    status = job.get_status(refresh=False)
    status = _STATES.get(getattr(status, "value", status), "queued")
    if status == "started" and time.time() - meta.get("beat", time.time()) > STALLED_SECONDS:
        status = "stalled"
    error = meta.get("error")
    return Mailing(job_id, meta.get("kind", "invite"), meta.get("group"), status,
                   meta.get("done", 0), meta.get("total"), meta.get("sent"), meta.get("skipped"),
                   tuple(tuple(pair) for pair in meta.get("failed", ())),
                   meta.get("failed_count", 0), tuple(error) if error else None)


class _Progress:
    """What a running mailing writes into its job's meta: progress, a heartbeat, the report;
    and, as it goes, it keeps the round's lock alive."""

    def __init__(self, job, lock, report: MailReport):
        self.job, self.lock, self.report, self.saved = job, lock, report, time.monotonic()

    def save(self, **values) -> None:
        report = self.report
        self.job.meta.update(values, beat=time.time(), sent=len(report.sent),
                             skipped=len(report.skipped), failed=report.failed[:MAX_FAILED_KEPT],
                             failed_count=len(report.failed))
        self.job.save_meta()
        self.saved = time.monotonic()

    def __call__(self, n: int, total: int, _address: str) -> None:
        self.lock.extend(LOCK_SECONDS, replace_ttl=True)
        if n == total or n % PROGRESS_EVERY == 0 or time.monotonic() - self.saved > PROGRESS_SECONDS:
            self.save(done=n, total=total)


def run_mailing(kind: str, round_id: int, actor: str, group_key: str | None = None,
                addresses: list[str] | None = None, instance: str | None = None) -> dict:
    """The worker's job: send, writing progress and the report into the job's meta.

    Runs in the worker's app context. A mail server that cannot be reached, or a round that no
    longer takes mail, stops the mailing with its reason in the report, and what was sent
    before is counted; sending again is safe.
    """
    job = get_current_job()
    config = current_app.config["PINGYI"]
    if instance not in _instance_tags(config):
        # Queued by another instance sharing this Redis server and prefix: its round ids name
        # other rounds here. Touch nothing.
        job.meta.update(error=("other_instance", ""), beat=time.time())
        job.save_meta()
        return {"error": job.meta["error"]}
    lock = job.connection.lock(f"{config.mail_queue}:lock:{round_id}", timeout=LOCK_SECONDS,
                               blocking_timeout=LOCK_SECONDS + 10)
    progress = _Progress(job, lock, MailReport())
    try:
        if not lock.acquire():
            raise LockError("lock not acquired")
        try:
            progress.save()
            _send(config, kind, round_id, actor, group_key, addresses or [], progress)
        finally:
            try:
                lock.release()
            except LockError:  # expired meanwhile
                pass
    except OSError as exc:  # smtplib's errors included
        job.meta["error"] = ("mail_server", str(exc) or type(exc).__name__)
    except _RoundMissing:
        job.meta["error"] = ("round_missing", "")
    except RoundClosedForMail as exc:
        job.meta["error"] = ("round_closed", exc.status)
    except PingyiError as exc:  # kept as a template and its values: the page translates it
        job.meta["error"] = ("refused", exc.summary.message, exc.summary.path, exc.summary.values)
    except LockError:
        job.meta["error"] = ("busy", "")
    finally:  # what was done is kept, whatever stopped it (an unexpected error fails the job)
        db.session.remove()
        progress.save()
    report = progress.report
    return {"sent": len(report.sent), "skipped": len(report.skipped),
            "failed": len(report.failed), "error": job.meta.get("error")}


def _send(config, kind: str, round_id: int, actor: str, group_key: str | None,
          addresses: list[str], progress: _Progress) -> None:
    keys = current_app.extensions["pingyi.keys"]
    round_ = db.session.get(Round, round_id)
    if round_ is None:
        raise _RoundMissing()
    with Mailer(MailSettings.from_config(config)) as mailer:
        if kind == "invite":
            invite(db.session, round_, group_key or "", addresses, keys, mailer, config.base_url,
                   actor, progress, progress.report)
        else:
            remind(db.session, round_, keys, mailer, config.base_url, actor, progress,
                   progress.report)
