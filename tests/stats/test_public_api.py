"""The names other tools import from `stats` (DESIGN.md, "Interfaces other tools rely on")."""

import numpy as np


def test_documented_functions_import_from_the_package():
    from stats import fleiss_kappa, icc, kendall_w, krippendorff_alpha, wilson_interval
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert set(icc(x)) == {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
    w = kendall_w(x.T)
    assert {"W", "chi2", "df", "p"} <= set(w._fields)
    low, high = wilson_interval(5, 15)
    assert 0 < low < 1 / 3 < high < 1
    assert -1 <= krippendorff_alpha(x.T.astype(float), "ordinal") <= 1
    assert np.isfinite(fleiss_kappa(np.array([[2, 1], [0, 3], [3, 0]])))
