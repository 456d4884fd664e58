"""Trimmed means: exact ends dropped, small slices left whole, NaN-aware and vectorised."""

import numpy as np
import pytest

from stats.trim import TrimRule, trimmed_mean

NAN = np.nan
DROP_ONE = TrimRule(method="drop_extremes", k=1, min_n=6)


@pytest.mark.parametrize(
    ("values", "rule", "mean", "n_used"),
    [
        # (2 + 3 + 4 + 5) / 4: the outlier 100 and the low 1 go.
        ([1, 2, 3, 4, 5, 100], DROP_ONE, 3.5, 4),
        # 5 values under min_n = 6: untrimmed, (1 + 2 + 3 + 4 + 100) / 5.
        ([1, 2, 3, 4, 100], DROP_ONE, 22.0, 5),
        # Ties at both ends lose one copy each: (1 + 5 + 9 + 9) / 4.
        ([1, 1, 5, 9, 9, 9], DROP_ONE, 6.0, 4),
        ([7, 7, 7, 7, 7, 7], DROP_ONE, 7.0, 4),
        # k = 2 on 8 values keeps the middle four: (3 + 4 + 5 + 6) / 4.
        ([8, 1, 7, 2, 6, 3, 5, 4], TrimRule("drop_extremes", k=2, min_n=6), 4.5, 4),
        # NaN does not count: 6 valid values of 8, (2 + 3 + 4 + 5) / 4.
        ([NAN, 1, 2, NAN, 3, 4, 5, 100], DROP_ONE, 3.5, 4),
        # Only 5 valid values among 7: untrimmed.
        ([NAN, 1, 2, 3, 4, NAN, 100], DROP_ONE, 22.0, 5),
        ([1, 2, 3, 4, 5, 100], TrimRule("none"), 115 / 6, 6),
        # proportion 0.1 of 10 -> floor(1.0) = 1 from each end: (2 + ... + 9) / 8.
        (list(range(1, 11)), TrimRule("proportion", proportion=0.1), 5.5, 8),
        # proportion 0.1 of 19 -> floor(1.9) = 1 from each end: (2 + ... + 18) / 17 = 10.
        (list(range(1, 20)), TrimRule("proportion", proportion=0.1), 10.0, 17),
        # proportion 0.2 of 10 with 1000 at the top -> 2 each end: (3 + 4 + 5 + 6 + 7 + 8) / 6.
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000], TrimRule("proportion", proportion=0.2), 5.5, 6),
        # proportion 0.1 of 9 -> floor(0.9) = 0: untrimmed mean 5.
        (list(range(1, 10)), TrimRule("proportion", proportion=0.1), 5.0, 9),
        # proportion 0.29 of 100 -> 29 each end even though 0.29 * 100 == 28.999999999999996.
        (list(range(1, 101)), TrimRule("proportion", proportion=0.29), 50.5, 42),
        # proportion below min_n: 5 values, untrimmed.
        ([1, 2, 3, 4, 100], TrimRule("proportion", proportion=0.2, min_n=6), 22.0, 5),
    ],
)
def test_trimmed_mean_of_one_slice(values, rule, mean, n_used):
    result = trimmed_mean(np.array(values, dtype=float), axis=0, rule=rule)
    assert float(result.mean) == pytest.approx(mean)
    assert int(result.n_used) == n_used


def test_all_nan_slice_gives_nan_and_zero_counts():
    result = trimmed_mean(np.full((4, 2), NAN), axis=0, rule=DROP_ONE)
    assert np.isnan(result.mean).all()
    assert result.n_used.tolist() == [0, 0]
    assert result.n_valid.tolist() == [0, 0]


def test_slices_with_different_counts_are_trimmed_by_their_own_count():
    # Columns: 6 valid (trimmed), 5 valid (whole), 7 valid (trimmed), 1 valid, none.
    x = np.array(
        [
            [1, 1, 10, 4, NAN],
            [2, 2, 20, NAN, NAN],
            [3, 3, 30, NAN, NAN],
            [4, 4, 40, NAN, NAN],
            [5, 100, 50, NAN, NAN],
            [100, NAN, 60, NAN, NAN],
            [NAN, NAN, 700, NAN, NAN],
        ]
    )
    result = trimmed_mean(x, axis=0, rule=DROP_ONE)
    expected = [3.5, 22.0, 40.0, 4.0, NAN]  # 40 = (20 + 30 + 40 + 50 + 60) / 5
    np.testing.assert_allclose(result.mean, expected, equal_nan=True)
    assert result.n_used.tolist() == [4, 5, 5, 1, 0]
    assert result.n_valid.tolist() == [6, 5, 7, 1, 0]


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_any_axis_is_the_ballots_axis(axis):
    base = np.array([1, 2, 3, 4, 5, 100], dtype=float)
    x = np.moveaxis(np.broadcast_to(base, (2, 3, 6)), -1, axis)
    result = trimmed_mean(x, axis=axis, rule=DROP_ONE)
    assert result.mean.shape == (2, 3)
    np.testing.assert_allclose(result.mean, 3.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "median"},
        {"k": -1},
        {"method": "proportion", "proportion": 0.5},
        {"min_n": 0},
        {"method": "drop_extremes", "k": 3, "min_n": 6},
    ],
)
def test_bad_rules_are_refused(kwargs):
    with pytest.raises(ValueError):
        TrimRule(**kwargs)
