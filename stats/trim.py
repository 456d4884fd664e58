"""NaN-aware trimmed means along the ballots axis, vectorised over every other axis.

Each slice along the axis keeps its own count of valid (non-NaN) values, so one call trims a
slice of 30 ballots and a slice of 4 ballots by their own rule. Values are sorted with NaN
last and a rank mask keeps ranks ``[d, n - d)``, where ``d`` is the number dropped from each
end; ties at an extreme therefore lose exactly one copy per dropped rank, never all copies.
``scipy.stats.trim_mean`` is not used: it cuts by a proportion of the whole axis, NaN included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("none", "drop_extremes", "proportion")
#: Guards floor(proportion * n) against 0.29 * 100 == 28.999999999999996.
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class TrimRule:
    """How many values to drop from each end of a slice: none, k each end, or a proportion."""

    method: str = "drop_extremes"
    #: Values dropped from each end under "drop_extremes".
    k: int = 1
    #: Share of the valid values dropped from each end under "proportion" (floored).
    proportion: float = 0.1
    #: Trim only slices with at least this many valid values; smaller slices are left whole.
    min_n: int = 6

    def __post_init__(self) -> None:
        """Refuse rules that cannot work (a trimmed slice must keep a value)."""
        if self.method not in METHODS:
            raise ValueError(f"trim method must be one of {METHODS}, not {self.method!r}")
        if self.k < 0:
            raise ValueError("k must be >= 0")
        if not 0 <= self.proportion < 0.5:
            raise ValueError("proportion must be in [0, 0.5)")
        if self.min_n < 1:
            raise ValueError("min_n must be >= 1")
        if self.method == "drop_extremes" and self.min_n < 2 * self.k + 1:
            raise ValueError("min_n must be >= 2k + 1 so a trimmed slice keeps a value")

    def n_drop(self, n):
        """Values dropped from each end for valid counts n: int array, same shape as n."""
        n = np.asarray(n, dtype=np.int64)
        if self.method == "drop_extremes":
            drop = np.full(n.shape, self.k, dtype=np.int64)
        elif self.method == "proportion":
            drop = np.floor(self.proportion * n + _FLOOR_EPS).astype(np.int64)
        else:
            drop = np.zeros(n.shape, dtype=np.int64)
        return np.where(n >= self.min_n, drop, 0)


@dataclass(frozen=True)
class Trimmed:
    """A trimmed mean and the counts behind it, each shaped like the input without the axis."""

    #: Mean of the kept values, in the input's units; NaN where no value is valid.
    mean: np.ndarray
    #: Values kept after trimming (int).
    n_used: np.ndarray
    #: Valid (non-NaN) values before trimming (int).
    n_valid: np.ndarray


def trimmed_mean(x, axis: int = 0, rule: TrimRule = TrimRule()) -> Trimmed:
    """Trimmed mean of float x along axis (NaN = missing); fields shaped x.shape without axis."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    n_valid = np.count_nonzero(~np.isnan(x), axis=-1)
    drop = rule.n_drop(n_valid)
    ordered = np.sort(x, axis=-1)  # NaN sorts last, so ranks < n_valid are the valid values
    ranks = np.arange(x.shape[-1])
    keep = (ranks >= drop[..., None]) & (ranks < (n_valid - drop)[..., None])
    n_used = n_valid - 2 * drop
    total = np.where(keep, ordered, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_used > 0, total / n_used, np.nan)
    return Trimmed(mean=mean, n_used=n_used, n_valid=n_valid)

