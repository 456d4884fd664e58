"""Rater bias in one round: lenient, severe, patterned, outlying and cloned ballots; biased groups.

Every rating is put on a 0-1 scale (grade scores by their range, items by the questionnaire scale)
and compared with the leave-one-out consensus: the mean of the *other* ballots for the same cadre
and the same variable (the overall grade, or one item). Per-ballot figures are turned into robust
z-scores (median/MAD) across the ballots of the round. Ballots are referred to by index only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse, stats
from scipy.sparse import csgraph

from stats.robust import robust_z

#: Stable reason codes, in report order.
REASONS = ("lenient", "severe", "straight_line", "all_excellent", "halo",
           "central_tendency", "inconsistent", "outlier", "cluster")
_EPS = 1e-9


@dataclass(frozen=True)
class BiasSettings:
    """Thresholds and minimum-n guards of detect_bias; z thresholds are robust z across ballots."""

    leniency_z: float = 3.0       #: |z| of the mean deviation from consensus: lenient / severe
    outlier_z: float = 3.5        #: z of the pattern distance from consensus: outlier
    halo_z: float = 3.0           #: z of the mean within-cadre item SD below -halo_z: halo
    halo_majority: float = 0.5    #: exact 0 item SD is halo when this share of ballots differ
    central_z: float = 3.0        #: z of the item spread below -central_z ...
    central_band: float = 0.15    #: ... and |mean - midpoint| within this share of the range
    inconsistent_r: float = 0.0   #: Pearson r with the consensus below this: inconsistent
    min_cells: int = 10           #: ratings with a consensus needed for a correlation
    min_cadres: int = 5           #: cadres a ballot must rate before any reason applies to it
    min_others: int = 4           #: other ballots on a cell before its consensus is used
    min_ballots: int = 10         #: eligible ballots before any population comparison (robust z)
    cluster_tol: float = 1.0      #: largest item difference (scale points) still "near-identical"
    cluster_size: int = 3         #: smallest cluster reported
    cluster_alpha: float = 0.001  #: Bonferroni p below which a cluster is reported
    min_group_ballots: int = 3    #: ballots of a group (and of the reference) per cadre
    min_paired_cadres: int = 6    #: paired cadres before a group is tested
    alpha: float = 0.05           #: Holm-adjusted p below which a group is reported
    require_rater_test: bool = True  #: also need the ballot-level Mann-Whitney test below alpha
    chunk_elements: int = 1 << 23    #: bound on elements per chunk of the pairwise cluster search

    def __post_init__(self):
        if not (0 < self.alpha < 1 and 0 < self.cluster_alpha < 1):
            raise ValueError("alpha and cluster_alpha must be between 0 and 1")
        if min(self.min_others, self.min_cadres, self.min_ballots, self.min_group_ballots) < 1:
            raise ValueError("minimum counts must be at least 1")
        if self.cluster_size < 2 or self.min_cells < 3 or self.cluster_tol < 0:
            raise ValueError("need cluster_size >= 2, min_cells >= 3, cluster_tol >= 0")


@dataclass(frozen=True)
class BallotFinding:
    """One flagged ballot: its reasons and the figures behind them (None where not computable)."""

    ballot: int
    reasons: list[str]
    n_cadres: int
    mean_deviation: float | None  #: mean rating minus consensus, share of the scale range
    leniency_z: float | None
    distance_z: float | None      #: robust z of log RMS deviation, the ballot's mean shift removed
    consensus_r: float | None
    halo_sd: float | None         #: mean within-cadre SD of item ratings, share of the range
    halo_z: float | None
    spread_z: float | None        #: robust z of the ballot's mean SD across cadres per item
    cluster: int | None           #: index into BiasReport.clusters


@dataclass(frozen=True)
class Cluster:
    """Near-identical ballots unlikely by chance: expected = other ballots expected to match one."""

    ballots: list[int]
    expected: float
    p: float


@dataclass(frozen=True)
class GroupBias:
    """A rater group against the others on the same cadres (Wilcoxon signed-rank across cadres)."""

    group: int
    direction: str                #: "harsher" or "kinder"
    effect_size: float            #: matched-pairs rank-biserial correlation, -1 .. 1
    p: float                      #: Wilcoxon across cadres, Holm-adjusted across the groups tested
    p_raw: float                  #: the same, unadjusted
    p_raters: float               #: Mann-Whitney of the ballots' mean deviations, Holm-adjusted
    n_cadres: int
    mean_difference: float        #: mean per-cadre difference, share of the scale range
    test: str = "wilcoxon"


@dataclass(frozen=True)
class BiasReport:
    """Flagged ballots, suspicious clusters and biased groups of one round."""

    ballots: list[BallotFinding]
    clusters: list[Cluster]
    groups: list[GroupBias]

    def as_dict(self) -> dict:
        """The report as plain JSON-ready data (ballot indices; the app maps them to receipts)."""
        return {"ballots": [asdict(b) for b in self.ballots],
                "clusters": [asdict(c) for c in self.clusters],
                "groups": [asdict(g) for g in self.groups]}


def detect_bias(grade_idx, grade_scores, items, ballot_group, scale_min, scale_max,
                settings: BiasSettings = BiasSettings()) -> BiasReport:
    """Bias report for grades (n_b, n_c), scores (n_g,), items (n_b, n_c, n_i), groups (n_b,)."""
    g, scores, x, groups = _check_inputs(grade_idx, grade_scores, items, ballot_group,
                                         scale_min, scale_max)
    s = settings
    if g.size == 0:
        return BiasReport([], [], [])
    r = _cells(g, scores, x, scale_min, scale_max)
    n_cadres = ((g >= 0) | (~np.isnan(x)).any(axis=2)).sum(axis=1)
    fig = _consensus_figures(r, s)
    fig.update(_pattern_figures(r, s))
    straight, all_best = _straight_lines(g, x, s)
    flags = _flags(fig, straight, all_best, s) & (n_cadres >= s.min_cadres)[:, None]
    clusters, labels = _clusters(g, x, n_cadres >= s.min_cadres, s)
    flags[:, REASONS.index("cluster")] = labels >= 0
    findings = [_finding(b, flags[b], n_cadres[b], fig, labels[b])
                for b in np.flatnonzero(flags.any(axis=1))]
    return BiasReport(findings, clusters, _group_bias(r, groups, fig["mean_deviation"], s))


def _check_inputs(grade_idx, grade_scores, items, ballot_group, scale_min, scale_max):
    """Validated arrays: grades (n_b, n_c), scores (n_g,), items (n_b, n_c, n_i), groups (n_b,)."""
    g = np.asarray(grade_idx, dtype=np.int64)
    scores = np.asarray(grade_scores, dtype=float)
    x = np.asarray(items, dtype=float)
    groups = np.asarray(ballot_group, dtype=np.int64)
    if g.ndim != 2 or x.ndim != 3 or x.shape[:2] != g.shape or groups.shape != g.shape[:1]:
        raise ValueError("need grade_idx (n_b, n_c), items (n_b, n_c, n_i), ballot_group (n_b,)")
    if scores.ndim != 1 or scores.size == 0 or g.size and (g.min() < -2 or g.max() >= scores.size):
        raise ValueError("grade_idx must be -2, -1 or an index into grade_scores")
    if not scale_max > scale_min:
        raise ValueError("scale_max must exceed scale_min")
    if np.any((x < scale_min) | (x > scale_max)):
        raise ValueError("item ratings outside the scale")
    return g, scores, x, groups


def _cells(g, scores, x, scale_min, scale_max):
    """Ratings on a 0-1 scale, shape (n_b, n_c, 1 + n_i): the grade, then the items; NaN missing."""
    span = np.ptp(scores)
    norm = (scores - scores.min()) / span if span > 0 else np.full_like(scores, 0.5)
    grade = np.where(g >= 0, norm[np.clip(g, 0, None)], np.nan)
    return np.concatenate([grade[:, :, None], (x - scale_min) / (scale_max - scale_min)], axis=2)


def _moments(x, axis):
    """Count, mean and population SD of the non-NaN values of x along axis; NaN where none."""
    valid = ~np.isnan(x)
    n = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(axis=axis) / n
        dev = np.where(valid, x - np.expand_dims(mean, axis), 0.0)
        sd = np.sqrt((dev * dev).sum(axis=axis) / n)
    return n, mean, sd


def _population_z(v, s):
    """Robust z of a per-ballot figure (n_b,) across the ballots having it; NaN if too few do."""
    if np.count_nonzero(~np.isnan(v)) < s.min_ballots:
        return np.full(v.shape, np.nan)
    return robust_z(v)


def _consensus_figures(r, s):
    """Per-ballot (n_b,) mean deviation from the leave-one-out consensus, its z, distance z, r."""
    valid = ~np.isnan(r)
    x = np.where(valid, r, 0.0)
    others = valid.sum(axis=0)[None] - valid
    with np.errstate(invalid="ignore", divide="ignore"):
        cons = (x.sum(axis=0)[None] - x) / others
    cons = np.where(valid & (others >= s.min_others), cons, np.nan)
    d = r - cons
    covered = (~np.isnan(d)).any(axis=2).sum(axis=1) >= s.min_cadres
    flat = d.reshape(d.shape[0], -1)
    n, mean_dev, dist = _moments(flat, 1)
    mean_dev, dist = np.where(covered, mean_dev, np.nan), np.where(covered, dist, np.nan)
    corr = _centred_pearson(np.where(np.isnan(d), np.nan, r), cons)
    corr = np.where(covered & (n >= s.min_cells), corr, np.nan)
    # A distance is a right-skewed scale: its log has a symmetric, z-friendly spread.
    log_dist = np.log(np.maximum(dist, 1e-6))
    return {"mean_deviation": mean_dev, "leniency_z": _population_z(mean_dev, s),
            "distance_z": _population_z(log_dist, s), "consensus_r": corr}


def _centred_pearson(x, y):
    """Pearson r (n_b,) of x and y (n_b, n_c, n_v) over shared cells, each centred per variable.

    Centring per variable asks whether the ballot orders the cadres as the others do; item and
    grade levels alone would otherwise make any ballot look consistent.
    """
    valid = ~(np.isnan(x) | np.isnan(y))
    _, mx, _ = _moments(np.where(valid, x, np.nan), 1)
    _, my, _ = _moments(np.where(valid, y, np.nan), 1)
    dx = np.where(valid, x - mx[:, None], 0.0).reshape(x.shape[0], -1)
    dy = np.where(valid, y - my[:, None], 0.0).reshape(x.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    return np.where(np.abs(dx).sum(axis=1) > _EPS, r, np.nan)


def _pattern_figures(r, s):
    """Per-ballot (n_b,) halo SD (items within a cadre) and z, spread z (across cadres), mean."""
    items = r[:, :, 1:]
    k, _, sd = _moments(items, 2)
    n_sd, halo, _ = _moments(np.where(k >= 2, sd, np.nan), 1)
    halo = np.where(n_sd >= s.min_cadres, halo, np.nan)
    # Range restriction: the SD across cadres within one variable (items, or grades if no items).
    part = items if items.shape[2] else r[:, :, :1]
    n, _, across = _moments(part, 1)
    n_var, spread, _ = _moments(np.where(n >= s.min_cadres, across, np.nan), 1)
    _, mean, _ = _moments(part.reshape(r.shape[0], -1), 1)
    return {"halo_sd": halo, "halo_z": _population_z(halo, s),
            "spread_z": _population_z(np.where(n_var > 0, spread, np.nan), s), "spread_mean": mean}


def _straight_lines(g, x, s):
    """Boolean (n_b,) pair: one grade for all graded cadres or one value for all items; all best."""
    big = np.iinfo(np.int64).max
    valid = g >= 0
    hi = np.where(valid, g, -1).max(axis=1, initial=-1)
    same_grade = (valid.sum(axis=1) >= s.min_cadres) & (hi == np.where(valid, g, big).min(
        axis=1, initial=big))
    seen = ~np.isnan(x)
    flat = (x.shape[0], x.shape[1] * x.shape[2])
    top = np.where(seen, x, -np.inf).reshape(flat).max(axis=1, initial=-np.inf)
    bottom = np.where(seen, x, np.inf).reshape(flat).min(axis=1, initial=np.inf)
    same_item = (seen.any(axis=2).sum(axis=1) >= s.min_cadres) & (top == bottom)
    return same_grade | same_item, same_grade & (hi == 0)


def _flags(fig, straight, all_best, s):
    """Boolean (n_b, len(REASONS)) matrix of reasons, before the cluster and min-cadres guards."""
    halo = fig["halo_sd"]
    known = ~np.isnan(halo)
    most_differ = known.sum() >= s.min_ballots and np.mean(halo[known] > _EPS) >= s.halo_majority
    near_middle = np.abs(fig["spread_mean"] - 0.5) <= s.central_band
    with np.errstate(invalid="ignore"):
        on = {"lenient": fig["leniency_z"] > s.leniency_z,
              "severe": fig["leniency_z"] < -s.leniency_z,
              "straight_line": straight, "all_excellent": all_best,
              "halo": (fig["halo_z"] < -s.halo_z) | (most_differ & (halo <= _EPS)),
              "central_tendency": (fig["spread_z"] < -s.central_z) & near_middle,
              "inconsistent": fig["consensus_r"] < s.inconsistent_r,
              "outlier": fig["distance_z"] > s.outlier_z,
              "cluster": np.zeros(straight.shape, dtype=bool)}
    return np.stack([on[code] for code in REASONS], axis=1)


def _finding(b, row, n_cadres, fig, label):
    """The BallotFinding of ballot b from its reason row (len(REASONS),) and the figure arrays."""
    return BallotFinding(
        ballot=int(b), reasons=[code for code, on in zip(REASONS, row) if on],
        n_cadres=int(n_cadres), mean_deviation=_num(fig["mean_deviation"][b]),
        leniency_z=_num(fig["leniency_z"][b], 2), distance_z=_num(fig["distance_z"][b], 2),
        consensus_r=_num(fig["consensus_r"][b], 3), halo_sd=_num(fig["halo_sd"][b]),
        halo_z=_num(fig["halo_z"][b], 2), spread_z=_num(fig["spread_z"][b], 2),
        cluster=int(label) if label >= 0 else None)


def _num(v, digits=4):
    """A float rounded to digits, or None for NaN/inf."""
    return round(float(v), digits) if np.isfinite(v) else None


def _sig(p):
    """A probability or count rounded to 3 significant digits."""
    return float(f"{float(p):.3g}")


def _clusters(g, x, eligible, s):
    """Suspicious clusters and a cluster label per ballot (n_b,), -1 for none."""
    n_b, n_c = g.shape
    labels = np.full(n_b, -1)
    idx = np.flatnonzero(eligible)
    if idx.size < s.cluster_size:
        return [], labels
    flat = np.nan_to_num(x[idx].reshape(idx.size, n_c * x.shape[2]), nan=-1e9) + 0.0  # no -0.0
    feats = np.concatenate([g[idx].astype(float), flat], axis=1)
    patterns, inverse, counts = _unique_rows(feats)
    comp = _near_components(patterns, counts, n_c, s)
    size = np.bincount(comp, weights=counts)
    found = []
    for c in np.flatnonzero(size >= s.cluster_size):
        members = idx[comp[inverse] == c]
        expected, p = _chance(g, x, eligible, members, s)
        if p < s.cluster_alpha:
            labels[members] = len(found)
            found.append(Cluster(sorted(int(m) for m in members), _sig(expected), _sig(p)))
    return found, labels


def _unique_rows(a):
    """Distinct rows of a (n, k), the inverse (n,) and the counts; rows compared as raw bytes."""
    a = np.ascontiguousarray(a)
    rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(rows, return_index=True, return_inverse=True,
                                          return_counts=True)
    return a[first], inverse.ravel(), counts


def _near_components(patterns, counts, n_c, s):
    """Component id (n_u,) per distinct pattern: same grades and gaps, items within cluster_tol."""
    n_u = patterns.shape[0]
    if s.cluster_tol == 0 or n_u < 2:
        return np.arange(n_u)
    items = patterns[:, n_c:]
    shape_key = np.concatenate([patterns[:, :n_c], items == -1e9], axis=1)
    items = items.astype(np.float32)  # ratings and the sentinel are exact; halves memory traffic
    _, bucket, _ = _unique_rows(shape_key)
    weight = np.bincount(bucket, weights=counts)
    cand = np.flatnonzero((np.bincount(bucket)[bucket] >= 2) & (weight[bucket] >= s.cluster_size))
    src, dst = [], []
    step = max(1, s.chunk_elements // max(1, cand.size * max(1, items.shape[1])))
    for start in range(0, cand.size, step):  # chunks bound memory; pairs are only within a bucket
        rows = cand[start:start + step]
        i, j = np.nonzero((bucket[rows][:, None] == bucket[cand][None, :])
                          & (rows[:, None] < cand[None, :]))
        i, j = rows[i], cand[j]
        close = np.abs(items[i] - items[j]).max(axis=1, initial=0.0) <= s.cluster_tol + _EPS
        src.append(i[close])
        dst.append(j[close])
    src, dst = np.concatenate(src or [[]]).astype(int), np.concatenate(dst or [[]]).astype(int)
    graph = sparse.coo_matrix((np.ones(src.size), (src, dst)), shape=(n_u, n_u))
    return csgraph.connected_components(graph, directed=False)[1]


def _chance(g, x, eligible, members, s):
    """Chance matches expected for one member and the Bonferroni p of as many, from marginals."""
    rep = members[0]
    e = np.flatnonzero(eligible)
    with np.errstate(invalid="ignore"):
        close = ((np.abs(x[e] - x[rep]) <= s.cluster_tol + _EPS)
                 | (np.isnan(x[e]) & np.isnan(x[rep])))
    match = (g[e] == g[rep]) & close.all(axis=2)
    # Cadres are independent under the null; a cadre's grade and items are matched jointly,
    # so halo within a cadre does not make a clone look rarer than it is.
    pi = float(np.exp(np.log(match.mean(axis=0)).sum()))
    n = e.size
    p = min(1.0, n * float(stats.binom.sf(members.size - 2, n - 1, pi)))
    return (n - 1) * pi, p


def _group_bias(r, groups, mean_dev, s):
    """Groups rating the same cadres apart from the other groups; list of GroupBias."""
    _, score, _ = _moments(r, 2)
    valid = ~np.isnan(score)
    labels = np.unique(groups)
    onehot = (groups[None, :] == labels[:, None]).astype(float)
    sums = (onehot @ np.where(valid, score, 0.0), onehot @ valid)
    result = _test_groups(sums, mean_dev, groups, labels, np.zeros(labels.size, dtype=bool), s)
    if result:  # again without the groups found, so one harsh group does not make others look kind
        found = np.isin(labels, [g.group for g in result])
        result = _test_groups(sums, mean_dev, groups, labels, found, s)
    return result


def _test_groups(sums, mean_dev, groups, labels, found, s):
    """Each group against the pooled ballots of the unflagged other groups; the significant ones."""
    total, count = sums
    tested = []
    for k, label in enumerate(labels):
        ref = np.flatnonzero((np.arange(labels.size) != k) & ~found)
        ref = ref if ref.size else np.delete(np.arange(labels.size), k)
        with np.errstate(invalid="ignore", divide="ignore"):
            own = np.where(count[k] >= s.min_group_ballots, total[k] / count[k], np.nan)
            n_ref = count[ref].sum(axis=0)
            d = own - np.where(n_ref >= s.min_group_ballots, total[ref].sum(axis=0) / n_ref, np.nan)
        d = d[~np.isnan(d)]
        if d.size >= s.min_paired_cadres:
            p_r = _rater_test(mean_dev, groups == label, np.isin(groups, labels[ref]), s)
            tested.append((int(label), *_signed_rank(d), d, p_r))
    if not tested:
        return []
    p_cadres = _holm(np.array([t[1] for t in tested]))
    p_raters = _holm(np.array([t[4] for t in tested]))
    keep = (p_cadres < s.alpha) & ((p_raters < s.alpha) | (not s.require_rater_test))
    return [GroupBias(label, "harsher" if rb < 0 else "kinder", round(rb, 3), _sig(p_cadres[k]),
                      _sig(p), _sig(p_raters[k]), int(d.size), round(float(d.mean()), 4))
            for k, (label, p, rb, d, _) in enumerate(tested) if keep[k]]


def _rater_test(mean_dev, in_group, in_ref, s):
    """Two-sided Mann-Whitney p of the group's ballot deviations (n_b,) against the reference's."""
    known = ~np.isnan(mean_dev)
    a, b = mean_dev[known & in_group], mean_dev[known & in_ref]
    if min(a.size, b.size) < s.min_group_ballots:
        return 1.0
    return float(stats.mannwhitneyu(a, b, method="asymptotic").pvalue)


def _signed_rank(d):
    """Two-sided Wilcoxon signed-rank p and matched-pairs rank-biserial r of differences d (n,)."""
    nz = d[np.abs(d) > _EPS]
    if nz.size == 0:
        return 1.0, 0.0
    ranks = stats.rankdata(np.abs(nz))
    rb = float((ranks[nz > 0].sum() - ranks[nz < 0].sum()) / ranks.sum())
    # SciPy's "auto" falls back to a slow permutation test on ties; exact is valid without them.
    exact = nz.size <= 50 and np.unique(np.abs(nz)).size == nz.size
    return float(stats.wilcoxon(nz, method="exact" if exact else "approx").pvalue), rb


def _holm(p):
    """Holm step-down adjusted p-values of p (m,), shape (m,)."""
    order = np.argsort(p)
    m = p.size
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out
