"""Aggregation of one round: flags, Wilson intervals, folding, pooling, trimming, rank and bands.

Every expected value is worked out by hand in the comment beside it.
"""

import numpy as np
import pytest

from stats.aggregate import (
    AggregateRules,
    aggregate,
    competition_rank,
    dissatisfaction,
    forced_bands,
)
from stats.trim import TrimRule

NAN = np.nan
SCORES = np.array([100.0, 80.0, 60.0, 40.0])  # Excellent, Competent, Basically comp., Incompetent
WEIGHTS = np.array([0.30, 0.25, 0.25, 0.20])  # superior, peer, subordinate, public
SUP, PEER, SUB, PUB = range(4)
EX, COMP, BASIC, INC = range(4)
DK = -2
LAST_GRADE = np.array([False, False, False, True])
STRICT = AggregateRules()
NOT_STRICT = AggregateRules(strict=False)


def ballots(cadres):
    """grade_idx (n_b, n_c) and ballot_group (n_b,): one ballot per (group, grade) of one cadre."""
    entries = [(c, group, grade) for c, pairs in enumerate(cadres) for group, grade in pairs]
    grade_idx = np.full((len(entries), len(cadres)), -1)
    grade_idx[np.arange(len(entries)), [e[0] for e in entries]] = [e[2] for e in entries]
    return grade_idx, np.array([e[1] for e in entries])


def run(cadres, rules=STRICT, items=None, item_dimension=(0,), **kwargs):
    """aggregate() on ballots(cadres) with the default scale and weights; items NaN by default."""
    grade_idx, groups = ballots(cadres)
    if items is None:
        items = np.full(grade_idx.shape + (len(item_dimension),), NAN)
    return aggregate(grade_idx, SCORES, items, np.array(item_dimension), groups, WEIGHTS,
                     rules, **kwargs)


def column(dissatisfied, satisfied, dont_know=0, not_rated=0):
    """grade_idx (n, 1) for one cadre: Incompetent, Excellent, don't know, not rated."""
    values = [INC] * dissatisfied + [EX] * satisfied + [DK] * dont_know + [-1] * not_rated
    return np.array(values).reshape(-1, 1)


# --- dissatisfaction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "rules", "flagged"),
    [
        (5, 15, STRICT, False),  # exactly one third is not "more than one third"
        (5, 15, NOT_STRICT, True),  # Beijing's "one third or more"
        (6, 15, STRICT, True),
        (4, 15, NOT_STRICT, False),
        (1, 3, STRICT, False),
        (1, 3, NOT_STRICT, True),
        (34, 100, STRICT, True),  # 0.34 > 1/3
        (33, 100, NOT_STRICT, False),  # 0.33 < 1/3
    ],
)
def test_flag_compares_the_exact_fraction(k, n, rules, flagged):
    result = dissatisfaction(column(k, n - k), LAST_GRADE, rules)
    assert result.flagged.tolist() == [flagged]
    assert result.dissatisfied_k.tolist() == [k]
    assert result.valid_n.tolist() == [n]
    assert result.dissatisfied_share[0] == pytest.approx(k / n)


def test_dont_know_and_not_rated_leave_the_denominator():
    # 5 dissatisfied of 14 valid = 0.357 > 1/3; counting the 2 "don't know" would give 5/16 < 1/3.
    result = dissatisfaction(column(5, 9, dont_know=2, not_rated=3), LAST_GRADE, STRICT)
    assert result.valid_n.tolist() == [14]
    assert result.dissatisfied_share[0] == pytest.approx(5 / 14)
    assert result.flagged.tolist() == [True]


def test_wilson_interval_of_five_in_fifteen():
    # Wilson (1927) score interval, z = 1.959964: centre (1/3 + z^2/30) / (1 + z^2/15) = 0.36731,
    # half-width z * sqrt(2/135 + z^2/900) / (1 + z^2/15) = 0.21555 -> (0.1518, 0.5829).
    result = dissatisfaction(column(5, 10), LAST_GRADE, STRICT)
    np.testing.assert_allclose(result.dissatisfied_ci[0], [0.1518, 0.5829], atol=5e-5)


@pytest.mark.parametrize(
    ("k", "n", "flagged", "certain", "status"),
    [
        # Wilson 60/100: low 0.5020 > 1/3.
        (60, 100, True, True, "certain"),
        # Wilson 6/15: (0.1982, 0.6425): flagged at 0.4 but the low bound is under 1/3.
        (6, 15, True, False, "borderline"),
        # 5/15 not flagged (strict) but the high bound 0.5829 passes 1/3.
        (5, 15, False, False, "borderline"),
        # Wilson 0/15: high = z^2 / (15 + z^2) = 0.2039 < 1/3.
        (0, 15, False, False, "clear"),
        # Wilson 1/40: high 0.1289 < 1/3.
        (1, 40, False, False, "clear"),
    ],
)
def test_flag_certainty_comes_from_the_wilson_bounds(k, n, flagged, certain, status):
    result = dissatisfaction(column(k, n - k), LAST_GRADE, STRICT)
    assert result.flagged.tolist() == [flagged]
    assert result.flag_certain.tolist() == [certain]
    assert result.flag_status.tolist() == [status]


@pytest.mark.parametrize("rules", [STRICT, NOT_STRICT])
def test_no_valid_grade_is_never_flagged(rules):
    result = dissatisfaction(column(0, 0, dont_know=3, not_rated=1), LAST_GRADE, rules)
    assert result.valid_n.tolist() == [0]
    assert np.isnan(result.dissatisfied_share[0])
    assert np.isnan(result.dissatisfied_ci).all()
    assert result.flagged.tolist() == [False]
    assert result.flag_status.tolist() == ["clear"]


def test_ballot_mask_restricts_to_one_group():
    # Cadre 0: public 2 of 4 dissatisfied (flagged), others 0 of 6; overall 2/10 (not flagged).
    grade_idx, groups = ballots([[(PUB, INC)] * 2 + [(PUB, EX)] * 2 + [(SUP, EX)] * 6])
    public = dissatisfaction(grade_idx, LAST_GRADE, STRICT, ballot_mask=groups == PUB)
    overall = dissatisfaction(grade_idx, LAST_GRADE, STRICT)
    assert (public.dissatisfied_k.tolist(), public.valid_n.tolist()) == ([2], [4])
    assert public.flagged.tolist() == [True]
    assert (overall.dissatisfied_k.tolist(), overall.valid_n.tolist()) == ([2], [10])
    assert overall.flagged.tolist() == [False]


def test_dissatisfied_may_cover_two_grades():
    # 3 Basically competent + 2 Incompetent of 12: 5/12 > 1/3 when both grades count, 2/12 when not.
    grade_idx = np.array([BASIC] * 3 + [INC] * 2 + [EX] * 7).reshape(-1, 1)
    both = dissatisfaction(grade_idx, [False, False, True, True], STRICT)
    last = dissatisfaction(grade_idx, LAST_GRADE, STRICT)
    assert both.flagged.tolist() == [True]
    assert last.flagged.tolist() == [False]


# --- folding, pooling, trimming -------------------------------------------------------------

# Cadre 0: superior 3x Excellent, peer 3x Competent, subordinate 3x Basically competent, public
# only 2 ballots (Incompetent) -> public folded. Cadre 1: every group under 3 -> pooled.
FOLDING = [
    [(SUP, EX)] * 3 + [(PEER, COMP)] * 3 + [(SUB, BASIC)] * 3 + [(PUB, INC)] * 2,
    [(SUP, EX)] * 2 + [(PEER, COMP)] * 2 + [(SUB, BASIC)] + [(PUB, INC)] * 2,
]


def test_a_small_group_is_folded_and_the_weights_renormalised():
    result = run(FOLDING)
    assert result.group_shown[0].tolist() == [True, True, True, False]
    assert result.folded[0].tolist() == [False, False, False, True]
    # .30 / .80, .25 / .80, .25 / .80
    np.testing.assert_allclose(result.weights_used[0], [0.375, 0.3125, 0.3125, 0.0])
    np.testing.assert_allclose(result.group_score[0], [100, 80, 60, 40])
    # .375 * 100 + .3125 * 80 + .3125 * 60 = 37.5 + 25 + 18.75
    assert result.score[0] == pytest.approx(81.25)
    assert result.pooled[0] == False  # noqa: E712 - NumPy bool


def test_folded_ballots_still_count_in_unweighted_figures():
    result = run(FOLDING)
    assert result.n_ballots[0] == 11
    assert result.group_n[0].tolist() == [3, 3, 3, 2]
    assert result.grade_counts[0, PUB].tolist() == [0, 0, 0, 2]
    assert result.valid_n[0] == 11
    assert result.dissatisfied_share[0] == pytest.approx(2 / 11)


def test_all_groups_small_pools_every_ballot():
    result = run(FOLDING)
    assert result.pooled[1] == True  # noqa: E712 - NumPy bool
    assert not result.group_shown[1].any()
    assert result.folded[1].tolist() == [True, True, True, True]
    np.testing.assert_allclose(result.weights_used[1], 0.0)
    # 7 ballots >= 6: drop one 40 and one 100 from [40 40 60 80 80 100 100] -> 360 / 5.
    assert result.score[1] == pytest.approx(72.0)


def test_a_group_with_no_ballot_is_absent_not_folded():
    # Superior 3x Excellent, peer 3x Competent, nothing else: weights .30/.55 and .25/.55.
    result = run([[(SUP, EX)] * 3 + [(PEER, COMP)] * 3])
    assert result.folded[0].tolist() == [False, False, False, False]
    assert result.group_shown[0].tolist() == [True, True, False, False]
    assert result.score[0] == pytest.approx((0.30 * 100 + 0.25 * 80) / 0.55)


def test_dont_know_does_not_hold_a_group_open():
    # Public: 2 grades + 2 "don't know" = 4 ballots, but only 2 valid grades -> folded.
    result = run([[(SUP, EX)] * 3 + [(PUB, INC)] * 2 + [(PUB, DK)] * 2])
    assert result.group_n[0, PUB] == 4
    assert result.dont_know[0, PUB] == 2
    assert result.folded[0, PUB] == True  # noqa: E712 - NumPy bool
    assert result.score[0] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        (6, 100.0),  # 7 ballots: trim drops the 40 and one 100
        (5, 100.0),  # 6 ballots: still trimmed
        (4, 88.0),  # 5 ballots, untrimmed: (4 * 100 + 40) / 5
    ],
)
def test_a_planted_outlier_does_not_move_a_trimmed_group_score(others, expected):
    result = run([[(SUP, EX)] * others + [(SUP, INC)]])
    assert result.group_score[0, SUP] == pytest.approx(expected)


def test_an_outlier_item_rating_is_trimmed_too():
    # 7 superior ballots: six give 10, one gives 1 -> trimmed item mean 10.
    grade_idx, groups = ballots([[(SUP, EX)] * 7])
    items = np.array([10.0] * 6 + [1.0]).reshape(7, 1, 1)
    result = aggregate(grade_idx, SCORES, items, np.array([0]), groups, WEIGHTS)
    assert result.item_means[0, SUP, 0] == pytest.approx(10.0)
    assert result.item_means_all[0, 0] == pytest.approx(10.0)


def test_no_trimming_keeps_the_outlier():
    rules = AggregateRules(trim=TrimRule("none"))
    result = run([[(SUP, EX)] * 6 + [(SUP, INC)]], rules=rules)
    assert result.group_score[0, SUP] == pytest.approx(640 / 7)  # (6 * 100 + 40) / 7


# --- items and dimensions -------------------------------------------------------------------


def items_case(dimension_weights=None):
    """Superior 3 ballots, peer 2, subordinate 1 "don't know" whose item ratings must be ignored."""
    grade_idx, groups = ballots([[(SUP, EX)] * 3 + [(PEER, COMP)] * 2 + [(SUB, DK)]])
    items = np.array(
        [[8, 6, 10], [8, 6, 10], [8, 6, 10], [10, NAN, 4], [6, NAN, 4], [1, 1, 1]], dtype=float
    ).reshape(6, 1, 3)
    return aggregate(grade_idx, SCORES, items, np.array([0, 0, 1]), groups, WEIGHTS,
                     dimension_weights=dimension_weights)


def test_item_means_and_dimension_scores_per_group():
    result = items_case()
    np.testing.assert_allclose(result.item_means[0, SUP], [8, 6, 10])
    np.testing.assert_allclose(result.item_means[0, PEER], [8, NAN, 4])  # (10 + 6) / 2
    assert np.isnan(result.item_means[0, SUB]).all()  # "don't know" items ignored
    np.testing.assert_allclose(result.dimension_scores[0, SUP], [7, 10])  # (8 + 6) / 2
    np.testing.assert_allclose(result.dimension_scores[0, PEER], [8, 4])  # NaN item skipped
    np.testing.assert_allclose(result.item_score[0, :2], [8.5, 6])  # equal dimension weights


def test_item_tables_over_all_ballots():
    result = items_case()
    # Item 0: [8 8 8 10 6] (5 values, untrimmed) = 8; item 1: 6; item 2: (30 + 8) / 5 = 7.6.
    np.testing.assert_allclose(result.item_means_all[0], [8, 6, 7.6])
    np.testing.assert_allclose(result.dimension_scores_all[0], [7, 7.6])
    assert result.item_score_all[0] == pytest.approx(7.3)


def test_dimension_weights_weight_the_item_score():
    result = items_case(dimension_weights=np.array([3.0, 1.0]))
    # Superior: (3 * 7 + 1 * 10) / 4; over all ballots: (3 * 7 + 7.6) / 4.
    assert result.item_score[0, SUP] == pytest.approx(7.75)
    assert result.item_score_all[0] == pytest.approx(7.15)


# --- composite and approval -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kpi_weight", "kpi", "expected"),
    [
        (0.5, 90.0, 85.625),  # .5 * 81.25 + .5 * 90
        (0.3, 90.0, 83.875),  # .7 * 81.25 + .3 * 90
        (0.0, 90.0, 81.25),
        (0.5, NAN, NAN),  # no KPI, no composite
    ],
)
def test_composite_mixes_score_and_kpi(kpi_weight, kpi, expected):
    rules = AggregateRules(kpi_weight=kpi_weight)
    result = run(FOLDING[:1], rules=rules, kpi=np.array([kpi]))
    np.testing.assert_allclose(result.composite, [expected], equal_nan=True)


def test_composite_without_kpi_is_nan():
    assert np.isnan(run(FOLDING).composite).all()


@pytest.mark.parametrize(
    ("approving", "others", "dont_know", "warning"),
    [
        (6, 4, 0, True),  # 0.6 < 2/3
        (7, 3, 0, False),  # 0.7
        (4, 2, 0, False),  # exactly 2/3 is no warning
        (4, 2, 3, False),  # "don't know" is not in the denominator: still 4/6
    ],
)
def test_approval_under_two_thirds_warns(approving, others, dont_know, warning):
    half = approving // 2
    cadre = [(SUP, EX)] * half + [(SUP, COMP)] * (approving - half) + [(SUP, BASIC)] * others
    result = run([cadre + [(SUP, DK)] * dont_know])
    assert result.approval_share[0] == pytest.approx(approving / (approving + others))
    assert result.approval_warning.tolist() == [warning]


# --- rank and bands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "rank"),
    [
        ([90, 80, 80, 70], [1, 2, 2, 4]),
        ([70, 80, 90, 80], [4, 2, 1, 2]),
        ([50, NAN, 50, 60], [2, 0, 2, 1]),
        ([80.00000000000001, 80, 79], [1, 1, 3]),  # float noise is a tie
        ([NAN, NAN], [0, 0]),
    ],
)
def test_competition_rank(score, rank):
    assert competition_rank(np.array(score)).tolist() == rank


@pytest.mark.parametrize("bands", [(3, 5, 2), (0.3, 0.5, 0.2), (30, 50, 20)])
def test_bands_split_ten_cadres_three_five_two(bands):
    band = forced_bands(np.arange(1, 11), bands)
    assert band.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]


def test_bands_round_half_up_and_skip_unranked():
    # 5 ranked: ends 5 * 3/10 = 1.5 -> 2 and 5 * 8/10 = 4; the unranked (rank 0) gets -1.
    band = forced_bands(np.array([1, 2, 3, 4, 5, 0]), (3, 5, 2))
    assert band.tolist() == [0, 0, 1, 1, 2, -1]


def test_tied_cadres_share_the_better_band():
    # Ranks 1, 2, 3, 3, 5 ... : the two thirds both land in the top band.
    rank = competition_rank(np.array([100, 99, 98, 98, 96, 95, 94, 93, 92, 91]))
    assert forced_bands(rank, (3, 5, 2)).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_no_bands_gives_minus_one():
    assert forced_bands(np.array([1, 2, 0]), None).tolist() == [-1, -1, -1]


def test_aggregate_ranks_and_bands_by_score():
    # Ten cadres, each with 3 superior ballots of grade c // 3: scores 100 x3, 80 x3, 60 x3, 40
    # -> ranks 1,1,1,4,4,4,7,7,7,10; band ends 3, 8, 10, each tie takes its first rank's band.
    cadres = [[(SUP, c // 3)] * 3 for c in range(10)]
    result = run(cadres, rules=AggregateRules(bands=(3, 5, 2)))
    assert result.rank.tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7, 10]
    assert result.band.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2]


# --- shape and consistency on random data ---------------------------------------------------


def test_random_round_is_consistent():
    rng = np.random.default_rng(7)
    n_b, n_c, n_i = 120, 40, 6
    grade_idx = rng.integers(-2, 4, size=(n_b, n_c))
    items = np.where(rng.random((n_b, n_c, n_i)) < 0.1, NAN, rng.integers(1, 11, (n_b, n_c, n_i)))
    groups = rng.integers(0, 4, size=n_b)
    result = aggregate(grade_idx, SCORES, items, np.array([0, 0, 1, 1, 2, 3]), groups, WEIGHTS,
                       AggregateRules(bands=(3, 5, 2)))
    np.testing.assert_array_equal(result.grade_counts.sum(axis=(1, 2)), result.valid_n)
    np.testing.assert_array_equal(result.group_n.sum(axis=1), result.n_ballots)
    np.testing.assert_array_equal(result.n_ballots, (grade_idx != -1).sum(axis=0))
    sums = result.weights_used.sum(axis=1)
    np.testing.assert_allclose(sums[~result.pooled], 1.0)
    assert result.dissatisfied_ci.shape == (n_c, 2)
    assert set(result.flag_status.tolist()) <= {"certain", "borderline", "clear"}
    assert (result.score >= 40).all() and (result.score <= 100).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_num": 0},
        {"threshold_num": 3, "threshold_den": 3},
        {"min_group_size": 0},
        {"kpi_weight": 1.5},
        {"bands": ()},
        {"bands": (3, -1, 2)},
    ],
)
def test_bad_rules_are_refused(kwargs):
    with pytest.raises(ValueError):
        AggregateRules(**kwargs)


def test_weights_must_add_up_to_one():
    grade_idx, groups = ballots([[(SUP, EX)] * 3])
    with pytest.raises(ValueError, match="add up to 1"):
        aggregate(grade_idx, SCORES, np.full((3, 1, 1), NAN), np.array([0]), groups,
                  np.array([0.3, 0.3, 0.3, 0.3]))
