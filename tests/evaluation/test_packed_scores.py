"""The packed form of a rating's item scores: two bytes per item, big-endian, 0xFFFF blank."""

import math

import pytest

from evaluation.packed_scores import pack, unpack, unpack_many


def test_scores_pack_two_bytes_each_big_endian_with_blanks_as_ffff():
    assert pack([3, None, 1000, 0]) == b"\x00\x03\xff\xff\x03\xe8\x00\x00"
    assert unpack(b"\x00\x03\xff\xff\x03\xe8\x00\x00") == [3, None, 1000, 0]
    assert pack([]) == b"" and unpack(b"") == []


@pytest.mark.parametrize("value", [-1, 0xFFFF, 70000])
def test_a_score_that_does_not_fit_is_refused_rather_than_stored_as_something_else(value):
    with pytest.raises(ValueError):
        pack([1, value])


def test_many_ratings_unpack_into_rows_with_nan_for_blanks():
    rows = unpack_many([b"\x00\x01\xff\xff", b"\x00\x0a\x00\x02"], 2)
    assert rows.shape == (2, 2)
    assert rows[0, 0] == 1 and math.isnan(rows[0, 1]) and rows[1].tolist() == [10, 2]
    assert unpack_many([b"", b""], 0).shape == (2, 0)


def test_a_rating_with_other_than_the_rounds_number_of_scores_is_refused():
    with pytest.raises(ValueError, match="2 item scores"):
        unpack_many([b"\x00\x01\x00\x02", b"\x00\x01"], 2)
