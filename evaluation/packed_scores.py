"""A rating's item scores, packed into one value of its row.

One unsigned 16-bit big-endian number per item of the round, in questionnaire order
(Item.position), and MISSING where the voter gave none (a blank item beside "don't know"): a
round of n items stores 2n bytes in every rating, none for a round without items. The items of
a round are frozen once it opens, before any ballot, so the order never shifts under the
ballots. A cast writes one row per cadre instead of one per cadre and item; the item scale
(at most 0..1000, see evaluation.specs) fits with room to spare.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

MISSING = 0xFFFF
#: NumPy's name for the packed numbers.
DTYPE = np.dtype(">u2")


def pack(values: Sequence[int | None]) -> bytes:
    """The packed form of one rating's scores (None: no score); ValueError for a score that
    does not fit (MISSING itself would read back as a blank)."""
    if any(v is not None and not 0 <= v < MISSING for v in values):
        raise ValueError(f"an item score must be from 0 to {MISSING - 1}")
    return struct.pack(f">{len(values)}H", *(MISSING if v is None else v for v in values))


def unpack(packed: bytes) -> list[int | None]:
    """One rating's scores (None: no score)."""
    values = struct.unpack(f">{len(packed) // 2}H", packed)
    return [None if v == MISSING else v for v in values]


def unpack_many(packed: Sequence[bytes], n_items: int) -> np.ndarray:
    """(len(packed), n_items) float scores of many ratings, NaN where none was given.

    ValueError if a rating holds other than n_items scores: never guess which item is which.
    """
    if any(len(p) != 2 * n_items for p in packed):
        raise ValueError(f"a rating holds other than the round's {n_items} item scores")
    raw = np.frombuffer(b"".join(packed), dtype=DTYPE).reshape(len(packed), n_items)
    return np.where(raw == MISSING, np.nan, raw.astype(float))
