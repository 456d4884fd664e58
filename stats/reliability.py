"""Inter-rater reliability on NumPy arrays: ICC, Krippendorff's alpha, Fleiss' kappa, Kendall's W.

Everything is vectorised: sums of squares, coincidence matrices and rank sums are built with
array reductions and bincounts, never with a Python loop over ratings, raters or targets.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse, stats

#: Levels of measurement understood by krippendorff_alpha.
LEVELS = ("nominal", "ordinal", "interval", "ratio")
#: Units x distinct values above which the per-unit value counts are kept sparse.
_DENSE_COUNTS_LIMIT = 1 << 22


class IccRow(NamedTuple):
    """One ICC form with its F test and confidence interval."""

    icc: float
    F: float
    df1: int
    df2: int
    p: float
    ci_low: float
    ci_high: float


class FleissKappa(NamedTuple):
    """Fleiss' kappa, per-category kappas, and z tests of kappa = 0 (two-sided p)."""

    kappa: float
    se: float
    z: float
    p: float
    category_kappa: np.ndarray
    category_se: float
    category_z: np.ndarray
    category_p: np.ndarray


class KendallW(NamedTuple):
    """Kendall's W (tie-corrected) with its chi-square test."""

    W: float
    chi2: float
    df: int
    p: float


class _MeanSquares(NamedTuple):
    """Two-way ANOVA mean squares: rows (targets), within rows, columns (raters), residual."""

    n: int
    k: int
    msr: float
    msw: float
    msc: float
    mse: float


# --- intraclass correlation -------------------------------------------------------------------


def _two_way_mean_squares(x) -> _MeanSquares:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError("icc needs a 2-D targets x raters array")
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("icc needs at least 2 targets and 2 raters")
    if not np.isfinite(x).all():
        raise ValueError("icc needs complete data: x contains NaN or inf (use icc_oneway)")
    d = x - x.mean()
    row = d.mean(axis=1)
    col = d.mean(axis=0)
    # The residual is formed directly, not as SST - SSR - SSC, to keep precision when ICC ~ 1.
    resid = d - row[:, None] - col[None, :]
    ss_rows = k * float(row @ row)
    ss_cols = n * float(col @ col)
    ss_err = float(np.einsum("ij,ij->", resid, resid))
    return _MeanSquares(
        n=n,
        k=k,
        msr=ss_rows / (n - 1),
        msw=(ss_cols + ss_err) / (n * (k - 1)),
        msc=ss_cols / (k - 1),
        mse=ss_err / ((n - 1) * (k - 1)),
    )


def _icc_forms(ms: _MeanSquares) -> dict[str, float]:
    """NaN (or inf) where a form is undefined, e.g. scores that never vary: 0 / 0."""
    n, k, msr, msw, msc, mse = (np.float64(v) for v in ms)
    with np.errstate(divide="ignore", invalid="ignore"):
        forms = {
            "ICC1": (msr - msw) / (msr + (k - 1) * msw),
            "ICC2": (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n),
            "ICC3": (msr - mse) / (msr + (k - 1) * mse),
            "ICC1k": (msr - msw) / msr,
            "ICC2k": (msr - mse) / (msr + (msc - mse) / n),
            "ICC3k": (msr - mse) / msr,
        }
    return {key: float(np.float64(value)) for key, value in forms.items()}


def icc(x) -> dict[str, float]:
    """Shrout & Fleiss (1979) ICCs of a complete (n targets, k raters) array; unitless floats."""
    return _icc_forms(_two_way_mean_squares(x))


def _icc2_ci(ms: _MeanSquares, value: float, q: float) -> tuple[float, float]:
    # Satterthwaite df for ICC(2,1) as in McGraw & Wong (1996), Table 7, case 2A.
    n, k, msr, _, msc, mse = (np.float64(v) for v in ms)
    fj = msc / mse
    a = n * (1 + (k - 1) * value) - k * value
    v = (n - 1) * (k - 1) * (k * value * fj + a) ** 2
    v /= (n - 1) * k**2 * value**2 * fj**2 + a**2
    f_up = stats.f.ppf(q, n - 1, v)
    f_lo = stats.f.ppf(q, v, n - 1)
    low = n * (msr - f_up * mse) / (f_up * (k * msc + (k * n - k - n) * mse) + n * msr)
    high = n * (f_lo * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_lo * msr)
    return float(low), float(high)


def _single_from_f(f, k):
    return float((f - 1) / (f + k - 1))


def _average_from_f(f):
    return float(1 - 1 / f)


def icc_table(x, confidence: float = 0.95) -> dict[str, IccRow]:
    """ICCs of a complete (n targets, k raters) array with F, df, p and CI (McGraw & Wong 1996)."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    ms = _two_way_mean_squares(x)
    n, k = ms.n, ms.k
    forms = _icc_forms(ms)
    q = 1 - (1 - confidence) / 2
    df_w, df_e = n * (k - 1), (n - 1) * (k - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = float(np.float64(ms.msr) / ms.msw)
        f3 = float(np.float64(ms.msr) / ms.mse)
        f1_lo, f1_hi = f1 / stats.f.ppf(q, n - 1, df_w), f1 * stats.f.ppf(q, df_w, n - 1)
        f3_lo, f3_hi = f3 / stats.f.ppf(q, n - 1, df_e), f3 * stats.f.ppf(q, df_e, n - 1)
        lo2, hi2 = _icc2_ci(ms, forms["ICC2"], q)
        lo2k, hi2k = (float(r * k / (1 + r * (k - 1))) for r in (lo2, hi2))
    p1 = float(stats.f.sf(f1, n - 1, df_w))
    p3 = float(stats.f.sf(f3, n - 1, df_e))
    one_way = (f1, n - 1, df_w, p1)
    two_way = (f3, n - 1, df_e, p3)
    return {
        "ICC1": IccRow(forms["ICC1"], *one_way, _single_from_f(f1_lo, k), _single_from_f(f1_hi, k)),
        "ICC2": IccRow(forms["ICC2"], *two_way, lo2, hi2),
        "ICC3": IccRow(forms["ICC3"], *two_way, _single_from_f(f3_lo, k), _single_from_f(f3_hi, k)),
        "ICC1k": IccRow(forms["ICC1k"], *one_way, _average_from_f(f1_lo), _average_from_f(f1_hi)),
        "ICC2k": IccRow(forms["ICC2k"], *two_way, lo2k, hi2k),
        "ICC3k": IccRow(forms["ICC3k"], *two_way, _average_from_f(f3_lo), _average_from_f(f3_hi)),
    }


def icc_oneway(values, targets) -> dict[str, float]:
    """One-way random ICC(1) and ICC(1,k): values (N,) ratings, targets (N,) labels, unbalanced.

    NaN values are dropped; targets left with no rating disappear. The ANOVA estimator uses
    n0 = (N - sum(n_i**2) / N) / (k - 1); ICC1k is ICC1 stepped up to k = n0 by Spearman-Brown,
    which equals (MSB - MSW) / MSB = 1 - 1/F. Returns ICC1, ICC1k, n0, F, df1, df2 and p.
    """
    values = np.asarray(values, dtype=float)
    targets = np.asarray(targets)
    if values.ndim != 1 or values.shape != targets.shape:
        raise ValueError("values and targets must be 1-D arrays of the same length")
    keep = ~np.isnan(values)
    values, targets = values[keep], targets[keep]
    if not np.isfinite(values).all():
        raise ValueError("values contain inf")
    _, group = np.unique(targets, return_inverse=True)
    sizes = np.bincount(group)
    n_total, k = values.size, sizes.size
    if k < 2 or n_total - k < 1:
        raise ValueError("icc_oneway needs 2+ targets and some target with 2+ ratings")
    d = values - values.mean()
    sums = np.bincount(group, weights=d, minlength=k)
    means = sums / sizes
    resid = d - means[group]
    msb = float(sums @ means) / (k - 1)
    msw = float(resid @ resid) / (n_total - k)
    n0 = (n_total - float(sizes @ sizes) / n_total) / (k - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.float64(msb) / msw
        icc1 = (msb - msw) / (np.float64(msb) + (n0 - 1) * msw)
        icc1k = (msb - msw) / np.float64(msb)
    return {
        "ICC1": float(icc1),
        "ICC1k": float(icc1k),
        "n0": float(n0),
        "F": float(f),
        "df1": int(k - 1),
        "df2": int(n_total - k),
        "p": float(stats.f.sf(f, k - 1, n_total - k)),
    }


def icc_oneway_matrix(x) -> dict[str, float]:
    """icc_oneway of an (n targets, k raters) array with NaN for missing ratings; same mapping."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError("icc_oneway_matrix needs a 2-D targets x raters array")
    targets = np.broadcast_to(np.arange(x.shape[0])[:, None], x.shape)
    return icc_oneway(x.ravel(), targets.ravel())


# --- Krippendorff's alpha ---------------------------------------------------------------------


def _integer_counts(x: np.ndarray, low: float, span: int):
    """Counts (units, span) of x - low per unit when x holds integers (NaN = missing), else None."""
    n_units = x.shape[1]
    # fmin maps NaN to span, the slot for "missing", in the same pass that bounds the codes.
    keys = np.subtract(x, low)
    np.fmin(keys, span, out=keys)
    keys += (np.arange(n_units) * (span + 1.0))[None, :]
    codes = keys.astype(np.intp)
    if not np.array_equal(codes, keys):
        return None
    counts = np.bincount(codes.ravel(), minlength=n_units * (span + 1))
    return counts.reshape(n_units, span + 1)[:, :span]


def _unit_value_counts(x: np.ndarray):
    """Sorted distinct values (V,) and how often each unit got each: (units, V), dense or sparse."""
    n_units = x.shape[1]
    low, high = np.fmin.reduce(x, axis=None), np.fmax.reduce(x, axis=None)  # both skip NaN
    if np.isnan(low):
        raise ValueError("too little data: x has no values")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("x contains inf")
    span = int(high - low) + 1
    if n_units * (span + 1) <= _DENSE_COUNTS_LIMIT:
        # Integer scales (grades, 1-10 items) are coded by offset from the minimum: no sort.
        counts = _integer_counts(x, low, span)
        if counts is not None:
            used = counts.any(axis=0)
            return low + np.flatnonzero(used), counts[:, used].astype(float)
    coder, unit = np.nonzero(~np.isnan(x))
    domain, code = np.unique(x[coder, unit], return_inverse=True)
    code = code.ravel()
    if n_units * domain.size <= _DENSE_COUNTS_LIMIT:
        counts = np.bincount(unit * domain.size + code, minlength=n_units * domain.size)
        return domain, counts.reshape(n_units, domain.size).astype(float)
    shape = (n_units, domain.size)
    return domain, sparse.csr_matrix((np.ones(code.size), (unit, code)), shape=shape)


def _coincidences(counts) -> np.ndarray:
    """Coincidence matrix o (V, V): o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1), m_u >= 2."""
    m = np.asarray(counts.sum(axis=1)).ravel()
    if not (m >= 2).any():
        raise ValueError("too little data: no unit has two or more values")
    weight = np.divide(1.0, m - 1, out=np.zeros(m.size), where=m >= 2)
    if sparse.issparse(counts):
        o = (counts.T @ counts.multiply(weight[:, None]).tocsr()).toarray()
    else:
        o = counts.T @ (counts * weight[:, None])
    # A value is not paired with itself: take n_uc / (m_u - 1) off the diagonal.
    o[np.diag_indices_from(o)] -= counts.T @ weight
    return o


def _distances(domain: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    """Squared distance delta^2 (V, V) between the sorted distinct values, Krippendorff (2011)."""
    if level == "nominal":
        return 1.0 - np.eye(domain.size)
    if level == "ordinal":
        # sum_{g=c..k} n_g - (n_c + n_k) / 2 is the gap between mid-points of the cumulative counts.
        mid = np.cumsum(n_c) - n_c / 2
        return (mid[:, None] - mid[None, :]) ** 2
    diff = domain[:, None] - domain[None, :]
    if level == "interval":
        return diff**2
    total = domain[:, None] + domain[None, :]
    ratio = np.divide(diff, total, out=np.zeros_like(diff), where=total != 0)
    return ratio**2


def krippendorff_alpha(x, level: str) -> float:
    """Krippendorff's alpha of an (m coders, u units) array with NaN for missing; unitless.

    level is one of "nominal", "ordinal", "interval", "ratio". Units with fewer than two values
    are not pairable and are dropped; alpha is NaN when the pairable values do not vary. Memory
    grows with the square of the number of distinct values.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError("krippendorff_alpha needs a 2-D coders x units array")
    domain, counts = _unit_value_counts(x)
    # Values seen only in unpairable units get zero weight, hence n_c = 0 and no influence.
    o = _coincidences(counts)
    n_c = o.sum(axis=1)
    delta = _distances(domain, n_c, level)
    observed = float(np.einsum("ij,ij->", o, delta))
    expected = float(n_c @ delta @ n_c)
    if expected == 0:
        return float("nan")
    return 1.0 - (n_c.sum() - 1) * observed / expected


# --- Fleiss' kappa ----------------------------------------------------------------------------


def _fleiss_table(counts) -> tuple[np.ndarray, int]:
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 2:
        raise ValueError("fleiss_kappa needs a 2-D subjects x categories table, 2+ categories")
    if not np.isfinite(table).all() or (table < 0).any():
        raise ValueError("counts must be finite and non-negative")
    raters = table.sum(axis=1)
    if (raters != raters[0]).any():
        raise ValueError("every subject needs the same number of ratings (rows sum differently)")
    if raters[0] < 2:
        raise ValueError("fleiss_kappa needs at least 2 ratings per subject")
    return table, int(raters[0])


def fleiss_kappa(counts) -> float:
    """Fleiss' (1971) kappa of a (subjects, categories) table of rating counts; unitless."""
    table, n = _fleiss_table(counts)
    n_subjects = table.shape[0]
    p_j = table.sum(axis=0) / (n_subjects * n)
    pairs = n_subjects * n * (n - 1)
    agreement = (np.einsum("ij,ij->", table, table) - n_subjects * n) / pairs
    chance = float(p_j @ p_j)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(agreement - chance) / (1 - chance))


def fleiss_kappa_detail(counts) -> FleissKappa:
    """Fleiss' kappa of a (subjects, categories) count table with per-category kappas and z tests.

    Standard errors under kappa = 0 follow Fleiss, Nee & Landis (1979); p values are two-sided.
    """
    table, n = _fleiss_table(counts)
    n_subjects = table.shape[0]
    kappa = fleiss_kappa(table)
    p_j = table.sum(axis=0) / (n_subjects * n)
    pq = p_j * (1 - p_j)
    scale = n_subjects * n * (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        category_kappa = 1 - (table * (n - table)).sum(axis=0) / (scale * pq)
        spread = pq.sum() ** 2 - float(pq @ (1 - 2 * p_j))
        se = float(np.sqrt(2 / scale) * np.sqrt(spread) / pq.sum())
        z = np.float64(kappa) / se
        category_se = float(np.sqrt(2 / scale))
        category_z = category_kappa / category_se
    return FleissKappa(
        kappa=kappa,
        se=se,
        z=float(z),
        p=float(2 * stats.norm.sf(abs(z))),
        category_kappa=category_kappa,
        category_se=category_se,
        category_z=category_z,
        category_p=2 * stats.norm.sf(np.abs(category_z)),
    )


# --- Kendall's W ------------------------------------------------------------------------------


def kendall_w(x) -> KendallW:
    """Tie-corrected Kendall's W of an (m judges, n objects) score array, ranked within each row."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError("kendall_w needs a 2-D judges x objects array")
    m, n = x.shape
    if m < 2 or n < 2:
        raise ValueError("kendall_w needs at least 2 judges and 2 objects")
    if not np.isfinite(x).all():
        raise ValueError("kendall_w needs complete data: x contains NaN or inf")
    low = stats.rankdata(x, method="min", axis=1)
    high = stats.rankdata(x, method="max", axis=1)
    rank_sums = ((low + high) / 2).sum(axis=0)  # average ranks for ties
    s = float(((rank_sums - m * (n + 1) / 2) ** 2).sum())
    # Sum over tie groups of t**3 - t equals the sum over scores of t**2 - 1 (t = own group size).
    tie = float(((high - low + 1) ** 2 - 1).sum())
    denominator = m * m * (n**3 - n) - m * tie
    w = 12 * s / denominator if denominator > 0 else float("nan")
    chi2 = m * (n - 1) * w
    return KendallW(W=w, chi2=chi2, df=n - 1, p=float(stats.chi2.sf(chi2, n - 1)))
