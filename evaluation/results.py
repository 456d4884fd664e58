"""The results of a closed round: one query loads the ratings into arrays, stats/ computes.

The document returned by compute_results is the `results --format json` shape of DESIGN.md:
plain dicts, lists, str, int, float, bool and None (NaN becomes None). Whatever could show a
rater group of fewer than min_group_size ballots on its own is left out and named in a note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from evaluation.errors import ResultsNotReadyError
from evaluation.models import Ballot, Invitation, Rating, Round
from evaluation.packed_scores import unpack_many
from evaluation.results_export import cadre_entry, document_shape, label_of, round_entry
from evaluation.rounds import get_round, is_closing
from stats import (
    AggregateRules, TrimRule, aggregate, dissatisfaction, icc, icc_oneway_matrix,
    krippendorff_alpha,
)
from stats.aggregate import DONT_KNOW, NOT_RATED
from stats.bias import BiasSettings, detect_bias

#: Only these rounds have results; a draft or open round has none (ballots may still come).
RESULT_STATUSES = ("closed", "published", "archived")
#: Rows fetched from the database per batch: bounds the memory of the tuples in flight.
FETCH_ROWS = 100_000
PUBLIC = "public"
APPROVAL_MIN = 2 / 3



@dataclass(frozen=True)
class RoundArrays:
    """A round's valid ballots as dense arrays (axes: ballots by id, cadres, items by position)."""

    #: (n_b, n_c) grade position, NOT_RATED (-1) or DONT_KNOW (-2).
    grade_idx: np.ndarray
    #: (n_b, n_c, n_i) item ratings in the item scale's units, NaN where missing.
    items: np.ndarray
    #: (n_b,) group position of each ballot.
    ballot_group: np.ndarray
    receipts: list[str]


def compute_results(session: Session, round_id: int) -> dict:
    """The results document of a closed, published or archived round (ResultsNotReadyError else)."""
    round_ = get_round(session, round_id)
    if round_.status not in RESULT_STATUSES:
        raise ResultsNotReadyError(
            f"round {round_.id} is {round_.status}: results exist only once it is closed")
    if is_closing(round_):  # its ballots are neither mixed nor sealed yet
        raise ResultsNotReadyError(
            f"round {round_.id}: closing did not finish; close it again to mix and seal the "
            "ballots, then the results exist")
    arrays = load_arrays(session, round_)
    doc = build_results(round_, arrays)
    add_comments(doc["cadres"], round_, comment_rows(session, round_.id))
    doc["turnout"] = turnout(session, round_)
    session.rollback()  # read only: end the transaction (and any server-side cursor)
    return doc


# --- loading ----------------------------------------------------------------------------------


def _valid_ballots(round_id: int):
    """CTE of the round's valid ballots numbered 0.. by id (random), the ballot axis."""
    return (select(Ballot.id, Ballot.group_id, Ballot.receipt,
                   (func.row_number().over(order_by=Ballot.id) - 1).label("idx"))
            .where(Ballot.round_id == round_id, Ballot.is_valid.is_(True))
            .cte("valid_ballots"))


def rating_rows(round_id: int):
    """The one query of a round's ratings: (ballot index, participation id, grade id or -1 for
    "don't know", packed item scores)."""
    b = _valid_ballots(round_id)
    return (select(b.c.idx, Rating.participation_id, func.coalesce(Rating.grade_id, -1),
                   Rating.scores)
            .select_from(b).join(Rating, Rating.ballot_id == b.c.id))


def _lookup(ids: list[int], values=None) -> np.ndarray:
    """An id -> position table (or id -> values[k]); -1 for ids not listed."""
    table = np.full(max(ids, default=0) + 2, -1, dtype=np.int64)
    table[np.asarray(ids, dtype=np.int64)] = np.arange(len(ids)) if values is None else values
    return table


def load_arrays(session: Session, round_: Round) -> RoundArrays:
    """Load the round's valid ballots and ratings into RoundArrays with one query for ratings."""
    b = _valid_ballots(round_.id)
    ballots = session.execute(select(b.c.group_id, b.c.receipt).order_by(b.c.idx)).all()
    n_b, n_c, n_i = len(ballots), len(round_.participations), len(round_.items)
    group_of = _lookup([g.id for g in round_.groups])
    arrays = RoundArrays(
        grade_idx=np.full((n_b, n_c), NOT_RATED, dtype=np.int64),
        items=np.full((n_b, n_c, n_i), np.nan),
        ballot_group=group_of[np.array([g for g, _ in ballots], dtype=np.int64).reshape(-1)],
        receipts=[r for _, r in ballots])
    cadre_of = _lookup([p.id for p in round_.participations])
    grade_ids = [g.id for g in round_.grades]
    # Grade ids shift by one so that -1 ("don't know") lands on slot 0.
    grade_of = _lookup([0] + [i + 1 for i in grade_ids], [DONT_KNOW, *range(len(grade_ids))])
    for part in fetch_rows(session, rating_rows(round_.id)):
        ballot, participation, grade, scores = zip(*part)
        rows = np.array([ballot, participation, grade], dtype=np.int64)
        _scatter(arrays, rows, unpack_many(scores, n_i), cadre_of, grade_of)
    return arrays


def fetch_rows(session: Session, stmt):
    """Yield the rows of a Core statement in lists of plain tuples, from the DBAPI cursor.

    Millions of rows: SQLAlchemy's Row objects would double the time, so the statement (its
    only parameters are our own integers, rendered inline) runs on the session's DBAPI
    connection, inside its transaction; PostgreSQL streams it through a server-side cursor in
    binary format (integers arrive without text parsing).
    """
    connection = session.connection()
    sql = str(stmt.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    driver = connection.connection.driver_connection
    is_pg = connection.dialect.name == "postgresql"
    cursor = driver.cursor(name="pingyi_results", binary=True) if is_pg else driver.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield rows
    finally:
        cursor.close()


def _scatter(arrays: RoundArrays, rows: np.ndarray, scores: np.ndarray, cadre_of,
             grade_of) -> None:
    """Write k ratings into the dense arrays: rows (3, k) of (ballot, participation id, grade id
    or -1) and their item scores (k, n_i)."""
    ballot, cadre = rows[0], cadre_of[np.minimum(rows[1], cadre_of.size - 1)]
    known = cadre >= 0
    ballot, cadre = ballot[known], cadre[known]
    arrays.grade_idx[ballot, cadre] = grade_of[np.minimum(rows[2, known] + 1, grade_of.size - 1)]
    arrays.items[ballot, cadre] = scores[known]


# --- computing --------------------------------------------------------------------------------


def round_rules(round_: Round) -> AggregateRules:
    """The round's aggregation rules as stats.AggregateRules."""
    trim = TrimRule(method=round_.trim_method, k=round_.trim_k,
                    proportion=round_.trim_proportion, min_n=round_.trim_min_n)
    return AggregateRules(
        trim=trim, min_group_size=round_.min_group_size, threshold_num=round_.threshold_num,
        threshold_den=round_.threshold_den, strict=round_.strict, approval_min=APPROVAL_MIN,
        kpi_weight=round_.kpi_weight, bands=tuple(round_.bands) if round_.bands else None)


def grade_flags(round_: Round) -> tuple[np.ndarray, np.ndarray]:
    """Dissatisfied and approval (the two best grades, never a dissatisfied one) bool (n_g,)."""
    dissatisfied = np.array([g.is_dissatisfied for g in round_.grades], dtype=bool)
    approval = (np.arange(dissatisfied.size) < 2) & ~dissatisfied
    return dissatisfied, approval


def _dimension_inputs(round_: Round):
    """item_dimension (n_i,) and dimension weights (n_d,) or None when no dimension has one."""
    position = {d.id: k for k, d in enumerate(round_.dimensions)}
    item_dimension = np.array([position[i.dimension_id] for i in round_.items], dtype=np.int64)
    weights = [d.weight for d in round_.dimensions]
    if all(w is None for w in weights):
        return item_dimension, None
    return item_dimension, np.array([w or 0.0 for w in weights], dtype=float)


def build_results(round_: Round, arrays: RoundArrays) -> dict:
    """The results document (without turnout) from the round's settings and its arrays."""
    rules = round_rules(round_)
    dissatisfied, approval = grade_flags(round_)
    item_dimension, dimension_weights = _dimension_inputs(round_)
    kpi = np.array([np.nan if p.kpi is None else p.kpi for p in round_.participations], float)
    agg = aggregate(
        arrays.grade_idx, [g.score for g in round_.grades], arrays.items, item_dimension,
        arrays.ballot_group, [g.weight for g in round_.groups], rules,
        dissatisfied=dissatisfied, approval=approval, dimension_weights=dimension_weights, kpi=kpi)
    keys = [g.key for g in round_.groups]
    public = None
    if PUBLIC in keys:
        public = dissatisfaction(arrays.grade_idx, dissatisfied, rules,
                                 ballot_mask=arrays.ballot_group == keys.index(PUBLIC))
    shape = document_shape(round_, agg, public, PUBLIC, APPROVAL_MIN)
    doc_round = round_entry(round_, len(arrays.receipts), dissatisfied, approval, APPROVAL_MIN)
    doc_round["flags"] = {"flagged": int(agg.flagged.sum()),
                          "certain": int(agg.flag_certain.sum()),
                          "borderline": int((agg.flag_status == "borderline").sum())}
    return {
        "round": doc_round,
        "cadres": [cadre_entry(shape, c) for c in range(len(round_.participations))],
        "reliability": reliability(round_, arrays),
        "rater_bias": rater_bias(round_, arrays),
    }


# --- comments ---------------------------------------------------------------------------------


def comment_rows(session: Session, round_id: int) -> list[tuple[int, str]]:
    """(participation id, comment) of every comment on a valid ballot."""
    return [tuple(row) for row in session.execute(
        select(Rating.participation_id, Rating.comment)
        .join(Ballot, Ballot.id == Rating.ballot_id)
        .where(Ballot.round_id == round_id, Ballot.is_valid.is_(True),
               Rating.comment.is_not(None)))]


def add_comments(cadres: list[dict], round_: Round, rows) -> None:
    """Give each cadre entry its comments, sorted by text: never in the order stored or cast,
    and with nothing else of the ballot. Not even the grade: beside the groups' own grade
    counts, a grade that only one group gave would name the comment's group, and perhaps its
    writer. A cadre rated on fewer than min_group_size valid ballots shows none, and a note
    says that some were withheld."""
    position = {p.id: k for k, p in enumerate(round_.participations)}
    found: list[list[str]] = [[] for _ in cadres]
    for participation_id, text in rows:
        found[position[participation_id]].append(text)
    for entry, comments in zip(cadres, found):
        if entry["n_ballots"] >= round_.min_group_size:
            entry["comments"] = sorted(comments)
        else:
            entry["comments"] = []
            if comments:
                entry["notes"].append({"code": "comments_withheld",
                                       "min_group_size": round_.min_group_size})


# --- reliability, rater bias, turnout ---------------------------------------------------------


def _num(value) -> float | None:
    """A JSON number: a float, or None for NaN and infinities."""
    value = float(value)
    return value if np.isfinite(value) else None


def item_scores(arrays: RoundArrays) -> np.ndarray:
    """(n_b, n_c) mean item rating per ballot and cadre over validly graded cells; NaN else."""
    x = np.where((arrays.grade_idx >= 0)[:, :, None], arrays.items, np.nan)
    n = np.count_nonzero(~np.isnan(x), axis=2)
    total = np.where(np.isnan(x), 0.0, x).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _alpha(grades: np.ndarray) -> float | None:
    """Ordinal Krippendorff's alpha of grades (coders = ballots, units = cadres); None if too little."""
    if grades.shape[0] < 2:
        return None
    try:
        return _num(krippendorff_alpha(grades, "ordinal"))
    except ValueError:
        return None


def icc_summary(scores: np.ndarray) -> dict | None:
    """ICC of (n_b, n_c) item scores: two-way random ICC(2) when ballots are crossed with cadres
    (every ballot scored every cadre), else the one-way ICC(1) for unbalanced data."""
    y = scores.T  # targets x raters
    y = y[~np.isnan(y).all(axis=1)][:, ~np.isnan(y).all(axis=0)]
    if min(y.shape) < 2:
        return None
    crossed = not np.isnan(y).any()
    try:
        forms = icc(y) if crossed else icc_oneway_matrix(y)
    except ValueError:
        return None
    form = "ICC2" if crossed else "ICC1"
    return {"design": "crossed" if crossed else "nested", "form": form,
            "single": _num(forms[form]), "average": _num(forms[form + "k"]),
            "n_cadres": int(y.shape[0]), "n_ballots": int(y.shape[1])}


def reliability(round_: Round, arrays: RoundArrays) -> dict:
    """Alpha on the grades and ICC on the item scores, overall and per group large enough."""
    grades = np.where(arrays.grade_idx >= 0, arrays.grade_idx, np.nan).astype(float)
    scores = item_scores(arrays)

    def figures(mask):
        return {"n_ballots": int(mask.sum()), "alpha": _alpha(grades[mask]),
                "alpha_level": "ordinal", "icc": icc_summary(scores[mask])}

    out = {"overall": figures(np.ones(len(arrays.receipts), dtype=bool)), "groups": [],
           "folded": []}
    for k, group in enumerate(round_.groups):
        mask = arrays.ballot_group == k
        if mask.sum() >= round_.min_group_size:
            out["groups"].append({"group": group.key, "label": label_of(group), **figures(mask)})
        elif mask.any():
            out["folded"].append(group.key)
    return out


def rater_bias(round_: Round, arrays: RoundArrays) -> dict:
    """The rater-bias report with ballots named by receipt and groups by key."""
    if not arrays.receipts:
        return {"ballots": [], "clusters": [], "groups": []}
    settings = BiasSettings(
        min_group_ballots=max(BiasSettings().min_group_ballots, round_.min_group_size))
    report = detect_bias(arrays.grade_idx, [g.score for g in round_.grades], arrays.items,
                         arrays.ballot_group, round_.item_min, round_.item_max, settings)
    receipts, keys = arrays.receipts, [g.key for g in round_.groups]
    ballots = [{"receipt": receipts[f.ballot], "reasons": list(f.reasons),
                **{k: v for k, v in vars(f).items() if k not in ("ballot", "reasons")}}
               for f in report.ballots]
    return {
        "ballots": sorted(ballots, key=lambda b: b["receipt"]),
        "clusters": [{"receipts": sorted(receipts[b] for b in c.ballots),
                      "expected": c.expected, "p": c.p} for c in report.clusters],
        "groups": [{"group": keys[g.group], "label": label_of(round_.groups[g.group]),
                    "direction": g.direction,
                    "effect_size": g.effect_size, "p": g.p, "p_raters": g.p_raters,
                    "n_cadres": g.n_cadres, "mean_difference": g.mean_difference}
                   for g in report.groups],
    }


def turnout(session: Session, round_: Round) -> dict:
    """Ballots cast against invitations issued, per group with at least min_group_size ballots."""
    invited = dict(session.execute(
        select(Invitation.group_id, func.count()).where(Invitation.round_id == round_.id)
        .group_by(Invitation.group_id)).all())
    cast = {gid: (n, valid or 0) for gid, n, valid in session.execute(
        select(Ballot.group_id, func.count(), func.sum(case((Ballot.is_valid, 1), else_=0)))
        .where(Ballot.round_id == round_.id).group_by(Ballot.group_id)).all()}
    rows = [{"group": g.key, "label": label_of(g), "invited": invited.get(g.id, 0),
             "cast": cast.get(g.id, (0, 0))[0], "valid": cast.get(g.id, (0, 0))[1]}
            for g in round_.groups]
    shown = [r for r in rows if r["cast"] >= round_.min_group_size]
    folded = [r for r in rows if r["cast"] < round_.min_group_size]
    total, folded_counts = _counts(rows), _counts(folded)
    voted = [r for r in folded if r["cast"]]
    if voted and (len(voted) < 2 or folded_counts["cast"] < round_.min_group_size):
        # The sum would be one small group's count, and the total minus the shown groups too.
        hidden = {"cast": None, "valid": None, "rate": None}
        total, folded_counts = total | hidden, folded_counts | hidden
    return {**total, "min_group_size": round_.min_group_size,
            "groups": [r | {"rate": _rate(r)} for r in shown],
            "folded": {"groups": [r["group"] for r in folded], **folded_counts} if folded else None}


def _counts(rows: list[dict]) -> dict:
    """Summed invited, cast and valid counts of turnout rows, with the rate."""
    total = {k: sum(r[k] for r in rows) for k in ("invited", "cast", "valid")}
    return total | {"rate": _rate(total)}


def _rate(row: dict) -> float | None:
    """Ballots cast over invitations issued, None without invitations."""
    return row["cast"] / row["invited"] if row["invited"] else None
