"""Reliability statistics against published worked examples and reference implementations."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from stats import reliability
from stats.reliability import (
    LEVELS,
    fleiss_kappa,
    fleiss_kappa_detail,
    icc,
    icc_oneway,
    icc_oneway_matrix,
    icc_table,
    kendall_w,
    krippendorff_alpha,
)

NAN = np.nan

#: Shrout, P. E. & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
#: reliability. Psychological Bulletin 86(2), 420-428. Table 2: 6 targets (rows) x 4 judges.
SHROUT_FLEISS_1979 = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)

#: Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability. Annenberg School for
#: Communication, University of Pennsylvania, Departmental Papers 43. The 4 observers (rows)
#: x 12 units example with missing values; "." in the paper is NaN here.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)

#: Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. Psychological
#: Bulletin 76(5), 378-382, Table 1: 30 patients x 5 diagnoses (depression, personality disorder,
#: schizophrenia, neurosis, other), 6 psychiatrists per patient. Cell = number of raters.
#: The same table ships as irr::diagnoses (Gamer et al., R package irr).
FLEISS_1971 = np.array(
    [
        [0, 0, 0, 6, 0], [0, 3, 0, 0, 3], [0, 1, 4, 0, 1], [0, 0, 0, 0, 6], [0, 3, 0, 3, 0],
        [2, 0, 4, 0, 0], [0, 0, 4, 0, 2], [2, 0, 3, 1, 0], [2, 0, 0, 4, 0], [0, 0, 0, 0, 6],
        [1, 0, 0, 5, 0], [1, 1, 0, 4, 0], [0, 3, 3, 0, 0], [1, 0, 0, 5, 0], [0, 2, 0, 3, 1],
        [0, 0, 5, 0, 1], [3, 0, 0, 1, 2], [5, 1, 0, 0, 0], [0, 2, 0, 4, 0], [1, 0, 2, 0, 3],
        [0, 0, 0, 0, 6], [0, 1, 0, 5, 0], [0, 2, 0, 1, 3], [2, 0, 0, 4, 0], [1, 0, 0, 4, 1],
        [0, 5, 0, 1, 0], [4, 0, 0, 0, 2], [0, 2, 0, 4, 0], [1, 0, 5, 0, 0], [0, 0, 0, 0, 6],
    ]
)

#: Wikipedia, "Fleiss' kappa", worked example: 10 subjects x 5 categories, 14 raters each.
WIKIPEDIA_FLEISS = np.array(
    [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
)

#: irr::anxiety (Gamer, Lemon, Fellows & Singh, R package irr): 20 subjects x 3 raters,
#: anxiety ratings on a 1-6 scale with many ties.
ANXIETY = np.array(
    [
        [3, 3, 2], [3, 6, 1], [3, 4, 4], [4, 6, 4], [5, 2, 3], [5, 4, 2], [2, 2, 1],
        [3, 4, 6], [5, 3, 1], [2, 3, 1], [2, 2, 1], [6, 3, 2], [1, 3, 3], [5, 3, 3],
        [2, 2, 1], [2, 2, 1], [1, 1, 3], [2, 3, 3], [4, 3, 2], [3, 4, 2],
    ],
    dtype=float,
)


def _random_ratings(seed, shape, missing=0.0, high=10):
    """Integer 1..high ratings with a target effect, NaN in a `missing` share of cells."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, high + 1, size=shape) + rng.integers(0, 3, size=(shape[0], 1))
    x = x.astype(float)
    x[rng.random(shape) < missing] = np.nan
    return x


def _pingouin_icc(x, nan_policy="raise"):
    pd = pytest.importorskip("pandas")
    pg = pytest.importorskip("pingouin")
    n, k = x.shape
    long = pd.DataFrame(
        {
            "target": np.repeat(np.arange(n), k),
            "rater": np.tile(np.arange(k), n),
            "score": x.ravel(),
        }
    )
    table = pg.intraclass_corr(long, "target", "rater", "score", nan_policy=nan_policy)
    return table.set_index("Type")


#: pingouin's labels (Liljequist et al. 2019 naming) for the Shrout & Fleiss forms.
PINGOUIN_TYPES = {
    "ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)",
    "ICC1k": "ICC(1,k)", "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)",
}


# --- purity -----------------------------------------------------------------------------------


def test_module_imports_only_stdlib_numpy_and_scipy():
    tree = ast.parse(Path(reliability.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - set(sys.stdlib_module_names) <= {"numpy", "scipy"}


# --- ICC --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "published"),
    [
        ("ICC1", 0.17), ("ICC2", 0.29), ("ICC3", 0.71),
        ("ICC1k", 0.44), ("ICC2k", 0.62), ("ICC3k", 0.91),
    ],
)
def test_icc_reproduces_shrout_fleiss_1979_table_4(form, published):
    # Shrout & Fleiss (1979), Table 4: ICC(1,1)=.17, ICC(2,1)=.29, ICC(3,1)=.71,
    # ICC(1,4)=.44, ICC(2,4)=.62, ICC(3,4)=.91 for the Table 2 data.
    assert round(icc(SHROUT_FLEISS_1979)[form], 2) == published


def test_icc_mean_squares_reproduce_shrout_fleiss_1979_table_3():
    # Shrout & Fleiss (1979), Table 3 ANOVA: BMS 11.24, WMS 6.26, JMS 32.49, EMS 1.02.
    ms = reliability._two_way_mean_squares(SHROUT_FLEISS_1979)
    assert [round(v, 2) for v in (ms.msr, ms.msw, ms.msc, ms.mse)] == [11.24, 6.26, 32.49, 1.02]


def test_icc_returns_exactly_the_six_forms_as_floats():
    result = icc(SHROUT_FLEISS_1979)
    assert list(result) == ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    assert all(type(v) is float for v in result.values())


def test_icc_table_reproduces_irr_twoway_agreement_on_anxiety():
    # irr::icc(anxiety, model = "twoway", type = "agreement") prints ICC(A,1) = 0.198 with the
    # 95% interval -0.039 < ICC < 0.494 (McGraw & Wong 1996 interval), Gamer et al., package irr.
    row = icc_table(ANXIETY)["ICC2"]
    published = (0.198, -0.039, 0.494)
    assert (round(row.icc, 3), round(row.ci_low, 3), round(row.ci_high, 3)) == published


@pytest.mark.parametrize("form", list(PINGOUIN_TYPES))
@pytest.mark.parametrize(("seed", "shape"), [(1, (30, 5)), (2, (8, 3)), (3, (200, 12))])
def test_icc_table_matches_pingouin(seed, shape, form, monkeypatch):
    pg = pytest.importorskip("pingouin")
    monkeypatch.setitem(pg.options, "round.column.CI95", None)  # pingouin rounds CIs to 2 dp
    x = _random_ratings(seed, shape)
    ours = icc_table(x)[form]
    ref = _pingouin_icc(x).loc[PINGOUIN_TYPES[form]]
    assert ours.icc == pytest.approx(ref["ICC"], abs=1e-9)
    assert ours.F == pytest.approx(ref["F"], rel=1e-9)
    assert (ours.df1, ours.df2) == (ref["df1"], ref["df2"])
    assert ours.p == pytest.approx(ref["pval"], rel=1e-9, abs=1e-15)
    assert [ours.ci_low, ours.ci_high] == pytest.approx(list(ref["CI95"]), abs=1e-9)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_icc_matches_pingouin_listwise_deletion_on_data_with_missing_values(seed):
    x = _random_ratings(seed, (60, 6), missing=0.02)
    complete = x[~np.isnan(x).any(axis=1)]
    ref = _pingouin_icc(x, nan_policy="omit")["ICC"]
    ours = icc(complete)
    assert [ours[f] for f in PINGOUIN_TYPES] == pytest.approx(
        [ref[label] for label in PINGOUIN_TYPES.values()], abs=1e-9
    )


@pytest.mark.parametrize(
    "x",
    [
        pytest.param(np.where(SHROUT_FLEISS_1979 == 1, np.nan, SHROUT_FLEISS_1979), id="nan"),
        pytest.param(SHROUT_FLEISS_1979[:1], id="one-target"),
        pytest.param(SHROUT_FLEISS_1979[:, :1], id="one-rater"),
        pytest.param(SHROUT_FLEISS_1979[0], id="1-d"),
        pytest.param(np.where(SHROUT_FLEISS_1979 == 1, np.inf, SHROUT_FLEISS_1979), id="inf"),
    ],
)
def test_icc_rejects_incomplete_or_too_small_input(x):
    with pytest.raises(ValueError):
        icc(x)


def test_icc_table_rejects_confidence_outside_0_1():
    with pytest.raises(ValueError):
        icc_table(SHROUT_FLEISS_1979, confidence=1.0)


# --- one-way ICC for unbalanced data ----------------------------------------------------------


def test_icc_oneway_hand_example_with_unequal_group_sizes():
    # Targets A: 1 3 | B: 4 6 5 | C: 8 8 9 7 8.  N = 10, k = 3, sizes 2, 3, 5.
    # Means 2, 5, 8, grand mean 5.9. SSB = 2(3.9^2) + 3(0.9^2) + 5(2.1^2) = 54.9, MSB = 27.45.
    # SSW = 2 + 2 + 2 = 6, MSW = 6/7. n0 = (10 - 38/10) / 2 = 3.1.
    # ICC1 = (27.45 - 6/7) / (27.45 + 2.1 * 6/7) = 3723/4095; ICC1k = (27.45 - 6/7) / 27.45
    # = 3723/3843; F = 27.45 / (6/7) = 32.025 on (2, 7) df.
    values = np.array([1, 3, 4, 6, 5, 8, 8, 9, 7, 8], dtype=float)
    targets = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    result = icc_oneway(values, targets)
    assert result["n0"] == pytest.approx(3.1)
    assert result["ICC1"] == pytest.approx(3723 / 4095)
    assert result["ICC1k"] == pytest.approx(3723 / 3843)
    assert result["F"] == pytest.approx(32.025)
    assert (result["df1"], result["df2"]) == (2, 7)
    assert result["p"] == pytest.approx(sps.f.sf(32.025, 2, 7))


@pytest.mark.parametrize("seed", [7, 8])
def test_icc_oneway_matches_pingouin_icc1_on_complete_data(seed):
    x = _random_ratings(seed, (40, 7))
    ours = icc_oneway_matrix(x)
    ref = _pingouin_icc(x)
    assert ours["ICC1"] == pytest.approx(ref.loc["ICC(1,1)", "ICC"], abs=1e-9)
    assert ours["ICC1k"] == pytest.approx(ref.loc["ICC(1,k)", "ICC"], abs=1e-9)
    assert ours["p"] == pytest.approx(ref.loc["ICC(1,1)", "pval"], rel=1e-9)
    assert ours["n0"] == 7


@pytest.mark.parametrize("seed", [9, 10, 11])
def test_icc_oneway_f_test_matches_scipy_f_oneway_on_unbalanced_data(seed):
    x = _random_ratings(seed, (25, 9), missing=0.3)
    ours = icc_oneway_matrix(x)
    groups = [row[~np.isnan(row)] for row in x if (~np.isnan(row)).any()]
    ref = sps.f_oneway(*groups)
    sizes = np.array([g.size for g in groups])
    n0 = (sizes.sum() - (sizes**2).sum() / sizes.sum()) / (sizes.size - 1)
    assert ours["F"] == pytest.approx(ref.statistic, rel=1e-9)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours["n0"] == pytest.approx(n0)
    # ICC(1) from F: (F - 1) / (F + n0 - 1), the ANOVA estimator in terms of the F ratio.
    assert ours["ICC1"] == pytest.approx((ref.statistic - 1) / (ref.statistic + n0 - 1), rel=1e-9)


def test_icc_oneway_drops_missing_values():
    x = _random_ratings(12, (15, 6), missing=0.25)
    present = ~np.isnan(x)
    targets = np.broadcast_to(np.arange(15)[:, None], x.shape)
    assert icc_oneway(x[present], targets[present]) == icc_oneway_matrix(x)


@pytest.mark.parametrize(
    ("values", "targets"),
    [
        pytest.param([1.0, 2.0, 3.0], [0, 0], id="length-mismatch"),
        pytest.param([1.0, 2.0, 3.0], [0, 0, 0], id="one-target"),
        pytest.param([1.0, 2.0, NAN], [0, 1, 1], id="no-within-df"),
        pytest.param([[1.0, 2.0]], [[0, 1]], id="2-d"),
    ],
)
def test_icc_oneway_rejects_too_little_data(values, targets):
    with pytest.raises(ValueError):
        icc_oneway(values, targets)


# --- Krippendorff's alpha ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_alpha_reproduces_krippendorff_2011(level, published):
    # Krippendorff (2011), 4 observers x 12 units with missing data:
    # alpha_nominal = .743, alpha_ordinal = .815, alpha_interval = .849, alpha_ratio = .797.
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == published


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("seed", "shape", "missing", "high"),
    [
        (13, (5, 40), 0.2, 5),
        (14, (30, 300), 0.1, 10),
        (15, (3, 25), 0.4, 4),
        (16, (12, 80), 0.3, 300),
    ],
)
def test_krippendorff_alpha_matches_krippendorff_package(level, seed, shape, missing, high):
    krippendorff = pytest.importorskip("krippendorff")
    x = _random_ratings(seed, shape, missing, high)
    expected = krippendorff.alpha(x, level_of_measurement=level)
    assert krippendorff_alpha(x, level) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_handles_non_integer_values(level):
    krippendorff = pytest.importorskip("krippendorff")
    x = _random_ratings(17, (6, 50), 0.2) / 4 + 0.1
    expected = krippendorff.alpha(x, level_of_measurement=level)
    assert krippendorff_alpha(x, level) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_sparse_counts_give_the_dense_result(level, monkeypatch):
    x = _random_ratings(18, (8, 60), 0.3)
    dense = krippendorff_alpha(x, level)
    monkeypatch.setattr(reliability, "_DENSE_COUNTS_LIMIT", 0)
    assert krippendorff_alpha(x, level) == pytest.approx(dense, abs=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_ignores_units_with_a_single_value(level):
    lonely = np.array([[7.0], [NAN], [NAN], [NAN]])
    with_lonely = np.hstack([KRIPPENDORFF_2011, lonely])
    assert krippendorff_alpha(with_lonely, level) == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_2011, level), abs=1e-12
    )


@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_is_one_for_perfect_agreement(level):
    x = np.tile([1.0, 2.0, 3.0, 5.0, NAN], (3, 1))
    assert krippendorff_alpha(x, level) == pytest.approx(1.0)


def test_krippendorff_alpha_is_nan_without_variation():
    assert np.isnan(krippendorff_alpha(np.full((3, 4), 2.0), "interval"))


@pytest.mark.parametrize(
    ("x", "level"),
    [
        pytest.param(KRIPPENDORFF_2011, "likert", id="unknown-level"),
        pytest.param(np.full((3, 4), NAN), "nominal", id="all-missing"),
        pytest.param(np.array([[1.0, NAN], [NAN, 2.0]]), "interval", id="nothing-pairable"),
        pytest.param(np.array([1.0, 2.0, 3.0]), "interval", id="1-d"),
        pytest.param(np.array([[1.0, np.inf], [1.0, 2.0]]), "interval", id="inf"),
    ],
)
def test_krippendorff_alpha_rejects_bad_input(x, level):
    with pytest.raises(ValueError):
        krippendorff_alpha(x, level)


# --- Fleiss' kappa ----------------------------------------------------------------------------


def test_fleiss_kappa_reproduces_fleiss_1971():
    # Fleiss (1971), diagnoses example: kappa = .430.
    assert round(fleiss_kappa(FLEISS_1971), 3) == 0.430


def test_fleiss_kappa_detail_reproduces_fleiss_1971_categories_and_irr_z():
    # Per-category kappas .245, .245, .520, .471, .566 (Fleiss 1971); z = 17.652 overall and
    # 5.192 for depression under the Fleiss, Nee & Landis (1979) null SE, as printed by
    # irr::kappam.fleiss(diagnoses, detail = TRUE).
    detail = fleiss_kappa_detail(FLEISS_1971)
    assert list(np.round(detail.category_kappa, 3)) == [0.245, 0.245, 0.520, 0.471, 0.566]
    assert round(detail.z, 3) == 17.652
    assert round(detail.category_z[0], 3) == 5.192
    assert detail.kappa == fleiss_kappa(FLEISS_1971)
    assert detail.p < 1e-10


def test_fleiss_kappa_reproduces_wikipedia_worked_example():
    # Wikipedia "Fleiss' kappa" worked example: P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
    assert round(fleiss_kappa(WIKIPEDIA_FLEISS), 3) == 0.210


@pytest.mark.parametrize(("seed", "raters"), [(19, 3), (20, 7), (21, 15)])
def test_fleiss_kappa_matches_statsmodels(seed, raters):
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(seed)
    ratings = rng.integers(0, 4, size=(50, raters)) + (rng.random((50, 1)) < 0.5)
    counts, _ = inter_rater.aggregate_raters(ratings)
    assert fleiss_kappa(counts) == pytest.approx(inter_rater.fleiss_kappa(counts), abs=1e-12)


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param([[3, 0], [2, 2]], id="ragged-rows"),
        pytest.param([[1, 0], [0, 1]], id="one-rater"),
        pytest.param([[3, -1], [1, 1]], id="negative"),
        pytest.param([[2], [2]], id="one-category"),
        pytest.param([2, 0], id="1-d"),
    ],
)
def test_fleiss_kappa_rejects_bad_tables(counts):
    with pytest.raises(ValueError):
        fleiss_kappa(counts)


# --- Kendall's W ------------------------------------------------------------------------------


def test_kendall_w_reproduces_irr_anxiety():
    # irr::kendall(anxiety, correct = TRUE): Wt = 0.54, Chisq(19) = 30.8, p-value = 0.0429
    # (Gamer et al., R package irr). irr's rows are subjects, so judges x objects is anxiety.T.
    result = kendall_w(ANXIETY.T)
    assert (round(result.W, 2), round(result.chi2, 1), result.df, round(result.p, 4)) == (
        0.54, 30.8, 19, 0.0429,
    )


def test_kendall_w_hand_example_with_one_tie():
    # Judges' ranks: 1 2 3 4 | 1.5 1.5 3 4 (one tie, t = 2, T = 6) | 2 1 3 4.
    # Rank sums 4.5 4.5 9 12, mean m(n+1)/2 = 7.5, S = 9 + 9 + 2.25 + 20.25 = 40.5.
    # W = 12 * 40.5 / (9 * 60 - 3 * 6) = 486 / 522 = 27/29; chi2 = m(n-1)W = 243/29.
    result = kendall_w([[1, 2, 3, 4], [1, 1, 3, 4], [2, 1, 3, 4]])
    assert result.W == pytest.approx(27 / 29)
    assert result.chi2 == pytest.approx(243 / 29)
    assert result.df == 3
    assert result.p == pytest.approx(sps.chi2.sf(243 / 29, 3))


@pytest.mark.parametrize(
    "row",
    [pytest.param([3, 1, 4, 2, 5], id="no-ties"), pytest.param([1, 1, 2, 3, 3], id="ties")],
)
def test_kendall_w_is_one_for_identical_judges(row):
    # With ties the uncorrected W would be 12 S / (m^2 (n^3 - n)) < 1; the correction restores 1.
    assert kendall_w(np.tile(row, (4, 1))).W == pytest.approx(1.0)


def test_kendall_w_tie_correction_increases_w():
    x = ANXIETY.T
    m, n = x.shape
    rank_sums = sps.rankdata(x, axis=1).sum(axis=0)
    uncorrected = 12 * ((rank_sums - m * (n + 1) / 2) ** 2).sum() / (m**2 * (n**3 - n))
    assert kendall_w(x).W > uncorrected


@pytest.mark.parametrize("seed", [22, 23, 24])
def test_kendall_w_chi2_matches_scipy_friedman(seed):
    # Friedman's tie-corrected chi-square equals m (n - 1) W (Kendall & Babington Smith 1939).
    x = np.random.default_rng(seed).integers(1, 6, size=(9, 7)).astype(float)
    ref = sps.friedmanchisquare(*x.T)
    result = kendall_w(x)
    assert result.chi2 == pytest.approx(ref.statistic, rel=1e-9)
    assert result.p == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    "x",
    [
        pytest.param([[1, 2, NAN], [1, 2, 3]], id="nan"),
        pytest.param([[1, 2, 3]], id="one-judge"),
        pytest.param([[1], [2]], id="one-object"),
        pytest.param([1, 2, 3], id="1-d"),
    ],
)
def test_kendall_w_rejects_bad_input(x):
    with pytest.raises(ValueError):
        kendall_w(x)


def test_icc_of_scores_that_never_vary_is_undefined_not_an_error():
    """Every rater gives every target the same score: 0 / 0, so NaN (shown as "no figure")."""
    same = np.full((4, 5), 8.0)
    assert all(np.isnan(v) for v in icc(same).values())
    row = icc_table(same)["ICC2"]
    assert np.isnan(row.icc) and np.isnan(row.ci_low) and np.isnan(row.ci_high)
    # Targets differ but raters agree exactly: the residual is 0, ICC(3) and ICC(2) are 1.
    agreed = np.repeat(np.array([[3.0], [5.0], [8.0]]), 4, axis=1)
    assert icc(agreed)["ICC3"] == pytest.approx(1.0) and icc(agreed)["ICC2"] == pytest.approx(1.0)
