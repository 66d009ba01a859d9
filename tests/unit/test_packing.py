"""Slot packing: layout, exact inverses, and no carry between slots within the width."""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from blindsum.shared.errors import InvalidInput
from blindsum.shared.packing import chunk_slots, pack, slot_width, slots_per_plaintext, unpack


def test_slot_width_is_the_bit_length_of_the_window_maximum() -> None:
    assert slot_width(1) == 1
    assert slot_width(255) == 8
    assert slot_width(256) == 9
    assert slot_width(10**6 * 1000) == (10**9).bit_length()


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "8"])
def test_slot_width_rejects_a_window_maximum_that_is_not_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidInput):
        slot_width(bad)  # type: ignore[arg-type]


def test_slots_per_plaintext_is_floor_of_usable_bits_over_width() -> None:
    assert slots_per_plaintext(3070, 30) == 102
    assert slots_per_plaintext(2046, 2046) == 1
    assert slots_per_plaintext(2046, 1) == 2046


def test_slots_per_plaintext_rejects_a_slot_wider_than_the_plaintext() -> None:
    with pytest.raises(InvalidInput, match="does not fit"):
        slots_per_plaintext(2046, 2047)


@pytest.mark.parametrize("bad_width", [0, -3, True])
def test_slots_per_plaintext_rejects_a_non_positive_width(bad_width: int) -> None:
    with pytest.raises(InvalidInput):
        slots_per_plaintext(2046, bad_width)


def test_pack_puts_slot_i_at_bit_offset_i_times_width() -> None:
    assert pack([1, 2, 3], 8) == 1 + (2 << 8) + (3 << 16)
    assert pack([], 8) == 0
    assert pack([0, 0, 5], 4) == 5 << 8


@pytest.mark.parametrize("bad_slot", [-1, 256, True, 1.5, "1", None])
def test_pack_rejects_a_slot_outside_its_window(bad_slot: object) -> None:
    with pytest.raises(InvalidInput, match="slot 1"):
        pack([0, bad_slot, 0], 8)  # type: ignore[list-item]


def test_unpack_reads_the_slots_back() -> None:
    assert unpack(1 + (2 << 8) + (3 << 16), 8, 3) == [1, 2, 3]
    assert unpack(0, 8, 4) == [0, 0, 0, 0]


def test_unpack_accepts_gmpy2_integers_and_returns_plain_slots() -> None:
    assert unpack(gmpy2.mpz(pack([7, 9], 5)), 5, 2) == [7, 9]


def test_unpack_rejects_bits_beyond_the_last_slot() -> None:
    with pytest.raises(InvalidInput, match="does not fit"):
        unpack(1 << 24, 8, 3)


def test_unpack_rejects_a_negative_value() -> None:
    with pytest.raises(InvalidInput):
        unpack(-1, 8, 3)


def test_chunk_slots_splits_in_order_with_a_short_last_chunk() -> None:
    assert chunk_slots([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunk_slots([1, 2], 5) == [[1, 2]]
    assert chunk_slots([], 3) == []


def test_chunk_slots_rejects_an_empty_chunk_size() -> None:
    with pytest.raises(InvalidInput):
        chunk_slots([1, 2], 0)


@st.composite
def _slots_and_width(draw: st.DrawFn) -> tuple[list[int], int]:
    width = draw(st.integers(1, 80))
    slots = draw(st.lists(st.integers(0, (1 << width) - 1), max_size=40))
    return slots, width


@given(_slots_and_width())
def test_unpack_inverts_pack(case: tuple[list[int], int]) -> None:
    slots, width = case
    assert unpack(pack(slots, width), width, len(slots)) == slots


@given(st.data())
def test_packed_sums_equal_slot_sums_when_every_sum_fits_the_width(data: st.DataObject) -> None:
    max_value = data.draw(st.integers(1, 2**40))
    contributors = data.draw(st.integers(1, 50))
    count = data.draw(st.integers(1, 20))
    width = slot_width(max_value * contributors)
    reports = data.draw(
        st.lists(
            st.lists(st.integers(0, max_value), min_size=count, max_size=count),
            min_size=1,
            max_size=contributors,
        )
    )
    total = sum(pack(report, width) for report in reports)
    assert unpack(total, width, count) == [sum(column) for column in zip(*reports, strict=True)]


@given(st.integers(2048, 4096), st.integers(1, 4094))
def test_a_full_plaintext_stays_below_any_modulus_of_its_size(n_bits: int, width: int) -> None:
    usable = n_bits - 2
    assume(width <= usable)
    per = slots_per_plaintext(usable, width)
    all_max = pack([(1 << width) - 1] * per, width)
    smallest_n_of_that_size = 1 << (n_bits - 1)
    assert all_max < smallest_n_of_that_size
