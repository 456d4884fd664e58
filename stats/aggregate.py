"""Per-cadre results of one round: grade counts, trimmed scores, folding, flags, rank and bands.

Arrays come dense from one query: ``grade_idx`` (n_b, n_c) holds the overall grade index per
ballot and cadre (0 = best grade), ``-1`` where the ballot did not rate the cadre and ``-2`` for
"don't know"; ``items`` (n_b, n_c, n_i) holds item ratings with NaN for missing. Interpretation
choices, all deliberate:

- A *valid* grade is a real grade (``grade_idx >= 0``). "Don't know" and not-rated leave every
  denominator: grade scores, dissatisfaction, approval, and the item means too (a ballot's item
  ratings for a cadre it graded "don't know" or did not rate are ignored).
- ``n_ballots`` and ``group_n`` count ballots that rated the cadre (``grade_idx != -1``), so they
  include "don't know"; ``valid_n`` counts only valid grades.
- Folding: a group is *shown* for a cadre when it holds at least ``min_group_size`` valid grades
  for that cadre. Counting valid grades rather than ballots keeps a group score from resting on
  fewer than ``min_group_size`` people (anonymity) and guarantees every shown group has a score.
  A group with ballots for the cadre (don't know included) but too few valid grades is
  ``folded``; a group with no ballot for the cadre is neither shown nor folded. Folded ballots
  still count in every unweighted figure (n_ballots, grade counts, dissatisfaction, approval,
  ``*_all`` item tables); they leave only the weighted score. The weights of the shown groups
  are renormalised to add up to 1 (``weights_used``).
  Per-group arrays are filled for every group: callers must hide what ``group_shown`` hides.
- Trimming (``rules.trim``) runs along the ballots axis per cadre and group (grade scores) and
  per cadre, group and item (item ratings); the pooled score and ``*_all`` tables trim over all
  of a cadre's ballots. ``dimension_scores`` average the item means of a dimension (NaN items
  skipped); ``item_score`` weights the dimension scores by ``dimension_weights`` (equal when
  None), renormalised over the dimensions that have a score.
- ``score`` = sum of ``weights_used * group_score`` over shown groups. When no group is shown (or
  the shown groups' weights add up to 0) the score is the trimmed mean of all valid grade scores
  of the cadre pooled, and ``pooled`` is True; with no valid grade at all the score is NaN and
  ``pooled`` False. ``score`` is a weighted grade score, never a satisfaction rate.
- ``composite`` = (1 - kpi_weight) * score + kpi_weight * kpi, NaN where the KPI is missing
  (never a silent score-only composite).
- Dissatisfaction flag: exact integer comparison ``k * den > num * n`` (strict) or ``>=``; n == 0
  is not flagged, share and interval NaN, status "clear". ``flag_certain``: the Wilson lower bound
  is above the threshold (``>`` strict, ``>=`` otherwise). ``flag_status``: "certain";
  "borderline" when flagged but not certain, or not flagged while the Wilson upper bound passes
  the threshold by the same comparison; "clear" otherwise.
- ``rank``: competition ranking by score descending (1, 2, 2, 4); scores equal after rounding to
  9 decimals tie; a NaN score gets rank 0 (unranked).
- ``band``: parts such as (3, 5, 2) are normalised; with m ranked cadres band j ends at position
  ``floor(m * cum_j / total + 1/2)`` (round half up, computed exactly with fractions of the
  decimal parts). A cadre's band is the first whose end is at or after its rank, so tied cadres
  share the better band. Unranked cadres and ``bands=None`` give -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction

import numpy as np

from stats.robust import wilson_interval
from stats.trim import TrimRule, trimmed_mean

NOT_RATED = -1
DONT_KNOW = -2
#: Scores equal to this many decimals tie in the ranking (float sums differ in the last bits).
RANK_DECIMALS = 9


@dataclass(frozen=True)
class AggregateRules:
    """Round settings for aggregation; the threshold is the exact fraction num/den."""

    trim: TrimRule = field(default_factory=TrimRule)
    #: Fewer valid grades than this for a cadre folds the group (anonymity and weighting).
    min_group_size: int = 3
    threshold_num: int = 1
    threshold_den: int = 3
    #: True: flag when the share is strictly above num/den; False: at or above.
    strict: bool = True
    #: Approval share (e.g. Excellent + Competent) below this raises a warning.
    approval_min: float = 2 / 3
    #: Weight of the KPI completion (0-100) in the composite; the score gets the rest.
    kpi_weight: float = 0.5
    #: Forced distribution parts, best band first, e.g. (3, 5, 2); None = no bands.
    bands: tuple[float, ...] | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        """Refuse settings that cannot work."""
        if self.min_group_size < 1:
            raise ValueError("min_group_size must be >= 1")
        if not 0 < self.threshold_num < self.threshold_den:
            raise ValueError("need 0 < threshold_num < threshold_den")
        if not 0 <= self.kpi_weight <= 1:
            raise ValueError("kpi_weight must be in [0, 1]")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")
        if self.bands is not None and (
            len(self.bands) == 0 or min(self.bands) < 0 or sum(self.bands) <= 0
        ):
            raise ValueError("bands must be non-negative parts with a positive sum")

    @property
    def threshold(self) -> float:
        """The dissatisfaction threshold num/den as a float (for interval bounds only)."""
        return self.threshold_num / self.threshold_den


@dataclass(frozen=True)
class Dissatisfaction:
    """Dissatisfaction per cadre, all shaped (n_c,) except ci (n_c, 2); shares are fractions."""

    dissatisfied_k: np.ndarray
    valid_n: np.ndarray
    dissatisfied_share: np.ndarray
    #: Wilson interval [low, high] of the share at rules.confidence; NaN where valid_n == 0.
    dissatisfied_ci: np.ndarray
    flagged: np.ndarray
    flag_certain: np.ndarray
    #: "certain" | "borderline" | "clear".
    flag_status: np.ndarray


@dataclass(frozen=True)
class Aggregate:
    """Results of one round; per cadre (n_c,), per cadre and group (n_c, n_k), or as noted."""

    n_ballots: np.ndarray
    group_n: np.ndarray
    #: (n_c, n_k, n_g) valid grades per grade.
    grade_counts: np.ndarray
    dont_know: np.ndarray
    #: (n_c, n_k, n_i) trimmed item means, in the item scale's units.
    item_means: np.ndarray
    #: (n_c, n_k, n_d) mean of the item means of each dimension.
    dimension_scores: np.ndarray
    #: (n_c, n_k) dimension-weighted mean of dimension_scores (weights renormalised over non-NaN).
    item_score: np.ndarray
    item_means_all: np.ndarray
    dimension_scores_all: np.ndarray
    item_score_all: np.ndarray
    #: (n_c, n_k) trimmed mean of the group's valid grade scores.
    group_score: np.ndarray
    group_shown: np.ndarray
    folded: np.ndarray
    weights_used: np.ndarray
    score: np.ndarray
    pooled: np.ndarray
    composite: np.ndarray
    #: The dissatisfaction fields over all ballots, as in Dissatisfaction.
    dissatisfied_k: np.ndarray
    valid_n: np.ndarray
    dissatisfied_share: np.ndarray
    dissatisfied_ci: np.ndarray
    flagged: np.ndarray
    flag_certain: np.ndarray
    flag_status: np.ndarray
    approval_share: np.ndarray
    approval_warning: np.ndarray
    #: 1-based competition rank by score; 0 = unranked (NaN score).
    rank: np.ndarray
    #: 0 = top band; -1 = no band.
    band: np.ndarray


def dissatisfaction(grade_idx, dissatisfied, rules: AggregateRules = AggregateRules(),
                    ballot_mask=None) -> Dissatisfaction:
    """Dissatisfied share of valid grades per cadre: grade_idx (n_b, n_c), dissatisfied (n_g,).

    ballot_mask: bool (n_b,) or (n_b, n_c) selecting the ballots to count (e.g. the public group).
    """
    grade_idx = np.asarray(grade_idx)
    dissatisfied = np.asarray(dissatisfied, dtype=bool)
    valid = _valid(grade_idx, ballot_mask)
    hit = valid & dissatisfied[np.clip(grade_idx, 0, None)]
    k = hit.sum(axis=0)
    n = valid.sum(axis=0)
    num, den = rules.threshold_num, rules.threshold_den
    flagged = (k * den > num * n) if rules.strict else (k * den >= num * n)
    flagged &= n > 0
    low, high = (np.asarray(b, dtype=float) for b in wilson_interval(k, n, rules.confidence))
    certain = _passes(low, rules) & flagged
    maybe = _passes(high, rules)
    status = np.where(certain, "certain", np.where(flagged | maybe, "borderline", "clear"))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    return Dissatisfaction(
        dissatisfied_k=k, valid_n=n, dissatisfied_share=share,
        dissatisfied_ci=np.stack([low, high], axis=-1), flagged=flagged,
        flag_certain=certain, flag_status=status,
    )


def aggregate(grade_idx, grade_scores, items, item_dimension, ballot_group, group_weights,
              rules: AggregateRules = AggregateRules(), *, dissatisfied=None, approval=None,
              dimension_weights=None, kpi=None) -> Aggregate:
    """Aggregate a round: grade_idx (n_b, n_c), items (n_b, n_c, n_i), kpi 0-100 (n_c,)."""
    grade_idx = np.asarray(grade_idx)
    grade_scores = np.asarray(grade_scores, dtype=float)
    ballot_group = np.asarray(ballot_group)
    group_weights = np.asarray(group_weights, dtype=float)
    n_g = grade_scores.shape[0]
    dissatisfied = _grade_flags(dissatisfied, n_g, default=slice(n_g - 1, None))
    approval = _grade_flags(approval, n_g, default=slice(0, 2))
    _check(grade_idx, n_g, items, item_dimension, ballot_group, group_weights, kpi)
    groups = [ballot_group == g for g in range(group_weights.shape[0])]

    valid = grade_idx >= 0
    scores = np.where(valid, grade_scores[np.clip(grade_idx, 0, None)], np.nan)
    per_group = [trimmed_mean(scores[m], axis=0, rule=rules.trim) for m in groups]
    group_score = np.stack([t.mean for t in per_group], axis=1)
    group_valid = np.stack([t.n_valid for t in per_group], axis=1)
    group_n = np.stack([(grade_idx[m] != NOT_RATED).sum(axis=0) for m in groups], axis=1)
    shown, folded, weights_used = _fold(group_valid, group_n, group_weights, rules.min_group_size)
    score, pooled = _score(scores, group_score, shown, weights_used, rules.trim)

    tables = _item_tables(items, valid, groups, item_dimension, dimension_weights, rules.trim)
    approval_n = (valid & approval[np.clip(grade_idx, 0, None)]).sum(axis=0)
    valid_n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        approval_share = np.where(valid_n > 0, approval_n / np.maximum(valid_n, 1), np.nan)
    rank = competition_rank(score)
    return Aggregate(
        n_ballots=(grade_idx != NOT_RATED).sum(axis=0), group_n=group_n,
        grade_counts=_grade_counts(grade_idx, groups, n_g),
        dont_know=np.stack([(grade_idx[m] == DONT_KNOW).sum(axis=0) for m in groups], axis=1),
        **tables, group_score=group_score, group_shown=shown, folded=folded,
        weights_used=weights_used, score=score, pooled=pooled,
        composite=_composite(score, kpi, rules.kpi_weight),
        **_fields(dissatisfaction(grade_idx, dissatisfied, rules)),
        approval_share=approval_share, approval_warning=approval_share < rules.approval_min,
        rank=rank, band=forced_bands(rank, rules.bands),
    )


def competition_rank(score):
    """Competition rank (1, 2, 2, 4) of float score (n_c,) descending: int (n_c,), 0 where NaN."""
    score = np.round(np.asarray(score, dtype=float), RANK_DECIMALS)
    finite = np.isfinite(score)
    ordered = np.sort(score[finite])
    higher = ordered.size - np.searchsorted(ordered, score, side="right")
    return np.where(finite, higher + 1, 0).astype(np.int64)


def forced_bands(rank, bands):
    """Band (0 = top, -1 = none) of int rank (n_c,) (0 = unranked) under parts bands: int (n_c,)."""
    rank = np.asarray(rank, dtype=np.int64)
    if bands is None:
        return np.full(rank.shape, -1, dtype=np.int64)
    m = int(np.count_nonzero(rank > 0))
    parts = [Fraction(str(p)) for p in bands]
    total = sum(parts)
    ends, cum = [], Fraction(0)
    for part in parts:  # one step per band: exact round-half-up boundaries
        cum += part
        ends.append(int(cum * m / total + Fraction(1, 2)))
    band = np.searchsorted(np.asarray(ends, dtype=np.int64), rank, side="left")
    return np.where(rank > 0, band, -1).astype(np.int64)


def _fields(obj) -> dict:
    """A frozen dataclass's fields as a shallow dict (dataclasses.asdict would copy the arrays)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _valid(grade_idx, ballot_mask):
    """Valid grades bool (n_b, n_c), restricted to ballot_mask (n_b,) or (n_b, n_c) when given."""
    valid = grade_idx >= 0
    if ballot_mask is None:
        return valid
    mask = np.asarray(ballot_mask, dtype=bool)
    if mask.ndim == 1:
        mask = mask[:, None]
    return valid & mask


def _passes(bound, rules: AggregateRules):
    """Whether float bounds (n_c,) pass the threshold by the rules' comparison; NaN never passes."""
    return bound > rules.threshold if rules.strict else bound >= rules.threshold


def _grade_flags(flags, n_g: int, default: slice):
    """A bool (n_g,) grade selector, or the default slice of grades when flags is None."""
    if flags is None:
        out = np.zeros(n_g, dtype=bool)
        out[default] = True
        return out
    out = np.asarray(flags, dtype=bool)
    if out.shape != (n_g,):
        raise ValueError(f"grade flags must have shape ({n_g},), not {out.shape}")
    return out


def _fold(group_valid, group_n, group_weights, min_size: int):
    """Shown, folded bool and renormalised weights (n_c, n_k) from valid grades per group."""
    shown = group_valid >= min_size
    folded = ~shown & (group_n > 0)
    raw = np.where(shown, group_weights[None, :], 0.0)
    total = raw.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights_used = np.where(total > 0, raw / np.where(total > 0, total, 1.0), 0.0)
    return shown, folded, weights_used


def _score(scores, group_score, shown, weights_used, trim: TrimRule):
    """Weighted score and pooled (n_c,) from grade scores (n_b, n_c) and group scores (n_c, n_k)."""
    has_weight = weights_used.sum(axis=1) > 0
    weighted = np.where(shown, weights_used * np.nan_to_num(group_score), 0.0).sum(axis=1)
    whole = trimmed_mean(scores, axis=0, rule=trim)
    pooled = ~has_weight & (whole.n_valid > 0)
    score = np.where(has_weight, weighted, whole.mean)
    return score, pooled


def _composite(score, kpi, kpi_weight: float):
    """(1 - w) * score + w * kpi (n_c,), both 0-100; NaN where the KPI (or the score) is missing."""
    if kpi is None:
        return np.full(score.shape, np.nan)
    return (1 - kpi_weight) * score + kpi_weight * np.asarray(kpi, dtype=float)


def _grade_counts(grade_idx, groups, n_g: int):
    """Valid grades per cadre, group and grade: int (n_c, n_k, n_g)."""
    levels = np.arange(n_g)
    per_group = [(grade_idx[m][:, :, None] == levels).sum(axis=0) for m in groups]
    return np.stack(per_group, axis=1)


def _item_tables(items, valid, groups, item_dimension, dimension_weights, trim: TrimRule):
    """Trimmed item means, dimension scores and item scores, per group and over all ballots."""
    items = np.where(valid[:, :, None], np.asarray(items, dtype=float), np.nan)
    item_dimension = np.asarray(item_dimension)
    n_d = int(item_dimension.max()) + 1 if item_dimension.size else 0
    if dimension_weights is not None:
        n_d = max(n_d, len(dimension_weights))
    onehot = (item_dimension[:, None] == np.arange(n_d)).astype(float)  # (n_i, n_d)
    weights = np.ones(n_d) if dimension_weights is None else np.asarray(dimension_weights, float)
    means = np.stack([trimmed_mean(items[m], axis=0, rule=trim).mean for m in groups], axis=1)
    means_all = trimmed_mean(items, axis=0, rule=trim).mean
    dims, dims_all = _nan_mean_by(means, onehot), _nan_mean_by(means_all, onehot)
    return {
        "item_means": means, "dimension_scores": dims,
        "item_score": _nan_mean_by(dims, weights[:, None])[..., 0],
        "item_means_all": means_all, "dimension_scores_all": dims_all,
        "item_score_all": _nan_mean_by(dims_all, weights[:, None])[..., 0],
    }


def _nan_mean_by(x, w):
    """Weighted mean of x (..., n) into (..., m) by weights w (n, m), skipping NaN; NaN if none."""
    present = ~np.isnan(x)
    total = np.where(present, x, 0.0) @ w
    weight = present.astype(float) @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)
    return out


def _check(grade_idx, n_g, items, item_dimension, ballot_group, group_weights, kpi) -> None:
    """Raise ValueError when the arrays' shapes or codes disagree."""
    if grade_idx.ndim != 2:
        raise ValueError("grade_idx must have shape (n_b, n_c)")
    n_b, n_c = grade_idx.shape
    if grade_idx.size and (grade_idx.min() < DONT_KNOW or grade_idx.max() >= n_g):
        raise ValueError(f"grade_idx values must be -2, -1 or 0..{n_g - 1}")
    if np.shape(items)[:2] != (n_b, n_c) or np.ndim(items) != 3:
        raise ValueError("items must have shape (n_b, n_c, n_i)")
    if np.shape(item_dimension) != (np.shape(items)[2],):
        raise ValueError("item_dimension must have shape (n_i,)")
    if ballot_group.shape != (n_b,):
        raise ValueError("ballot_group must have shape (n_b,)")
    n_k = group_weights.shape[0]
    if ballot_group.size and (ballot_group.min() < 0 or ballot_group.max() >= n_k):
        raise ValueError(f"ballot_group values must be 0..{n_k - 1}")
    if not np.isclose(group_weights.sum(), 1.0) or np.any(group_weights < 0):
        raise ValueError("group_weights must be non-negative and add up to 1")
    if kpi is not None and np.shape(kpi) != (n_c,):
        raise ValueError("kpi must have shape (n_c,)")
