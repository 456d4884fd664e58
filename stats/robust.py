"""Robust location/scale and binomial intervals: small building blocks shared by stats/."""

from __future__ import annotations

import numpy as np
from scipy import special

#: MAD of a normal sample times this estimates its standard deviation.
MAD_TO_SD = 1.482602218505602
#: Mean absolute deviation times this estimates a normal standard deviation.
MEANAD_TO_SD = 1.2533141373155001


def wilson_interval(k, n, confidence: float = 0.95):
    """Wilson score interval for k successes in n trials; returns a (low, high) pair.

    k and n may be scalars or arrays of the same shape; where n == 0 both bounds are NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n")
    z = float(special.ndtri(1 - (1 - confidence) / 2))
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    low = np.where(n > 0, low, np.nan)
    high = np.where(n > 0, high, np.nan)
    # Exact ends: no successes means the low bound is 0, all successes the high bound 1.
    low = np.where((k == 0) & (n > 0), 0.0, low)
    high = np.where((k == n) & (n > 0), 1.0, high)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def _centre_and_scale(x: np.ndarray, axis):
    """NaN-aware median and robust scale (1.4826 MAD, or 1.2533 mean |x - median| where MAD is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        med = np.nanmedian(x, axis=axis, keepdims=True)
        dev = np.abs(x - med)
        mad = np.nanmedian(dev, axis=axis, keepdims=True) * MAD_TO_SD
        meanad = np.nanmean(dev, axis=axis, keepdims=True) * MEANAD_TO_SD
    return med, np.where(mad > 0, mad, meanad)


def robust_scale(x, axis=None):
    """NaN-aware robust standard deviation: 1.4826 * MAD, or 1.2533 * mean |x - median| where MAD is 0."""
    _med, scale = _centre_and_scale(np.asarray(x, dtype=float), axis)
    if axis is None:
        return float(scale.reshape(()))
    return np.squeeze(scale, axis=axis)


def robust_z(x, axis=None):
    """Robust z-scores (x - median) / robust_scale along axis; NaN in, NaN out; NaN where the scale is 0."""
    x = np.asarray(x, dtype=float)
    med, scale = _centre_and_scale(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x - med) / np.where(scale > 0, scale, np.nan)
