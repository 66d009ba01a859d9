"""Properties of packed Paillier: any in-bounds window sums exactly, even at the largest window.

Hypothesis drives small ``max_contributors`` with real reports; the largest windows are reached
without encrypting millions of reports by raising a ciphertext to the ``k``-th power, which
is the homomorphic sum of ``k`` copies of that report.
"""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic, PaillierSecret, generate_paillier

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def secret() -> PaillierSecret:
    return generate_paillier(2048, key_id="pai-props")


@st.composite
def specs(draw: st.DrawFn, min_contributors: int = 1, usable_bits: int = 2046) -> SlotSpec:
    contributors = draw(st.integers(min_contributors, 6))
    # Leave room for the contributor factor so the spec always fits the plaintext.
    value_bits = draw(st.sampled_from([1, 2, 8, 20, 64, 300, usable_bits - 3]))
    max_value = draw(st.integers(1, (1 << value_bits) - 1))
    count = draw(st.integers(1, 12))
    return SlotSpec(count=count, max_value=max_value, max_contributors=contributors)


def _report(spec: SlotSpec) -> st.SearchStrategy[list[int]]:
    values = st.one_of(st.integers(0, spec.max_value), st.just(spec.max_value), st.just(0))
    return st.lists(values, min_size=spec.count, max_size=spec.count)


def _column_sums(reports: list[list[int]]) -> list[int]:
    return [sum(column) for column in zip(*reports, strict=True)]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_encrypt_add_many_decrypt_equals_exact_slot_sums(
    secret: PaillierSecret, data: st.DataObject
) -> None:
    public = secret.public
    spec = data.draw(specs())
    reports = data.draw(st.lists(_report(spec), min_size=1, max_size=spec.max_contributors))
    loaded = [public.load(public.encrypt(report, spec), spec) for report in reports]
    total = public.dump(public.add_many(loaded))
    assert secret.decrypt(total, spec) == _column_sums(reports)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_pairwise_add_equals_add_many(secret: PaillierSecret, data: st.DataObject) -> None:
    public = secret.public
    spec = data.draw(specs(min_contributors=2))
    reports = data.draw(st.lists(_report(spec), min_size=2, max_size=spec.max_contributors))
    loaded = [public.load(public.encrypt(report, spec), spec) for report in reports]
    running = loaded[0]
    for item in loaded[1:]:
        running = public.add(running, item)
    assert secret.decrypt(public.dump(running), spec) == _column_sums(reports)
    assert running == public.add_many(loaded)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_dump_and_load_are_inverse(secret: PaillierSecret, data: st.DataObject) -> None:
    public = secret.public
    spec = data.draw(specs())
    blobs = public.encrypt(data.draw(_report(spec)), spec)
    assert public.dump(public.load(blobs, spec)) == blobs


def _sum_of_copies(public: PaillierPublic, cts: list[object], copies: int) -> list[bytes]:
    """Homomorphic sum of ``copies`` identical reports: ``c**copies mod n**2``."""
    return public.dump([gmpy2.powmod(c, copies, public.nsquare) for c in cts])


@PROPERTY_SETTINGS
@given(data=st.data())
def test_large_windows_of_mixed_reports_sum_exactly(
    secret: PaillierSecret, data: st.DataObject
) -> None:
    public = secret.public
    max_contributors = data.draw(st.integers(1, 2**60))
    max_value = data.draw(st.integers(1, 2**40))
    spec = SlotSpec(
        count=data.draw(st.integers(1, 8)), max_value=max_value, max_contributors=max_contributors
    )
    first, second = data.draw(_report(spec)), data.draw(_report(spec))
    k1 = data.draw(st.integers(0, max_contributors))
    k2 = data.draw(st.integers(0, max_contributors - k1))
    a = public.load(public.encrypt(first, spec), spec)
    b = public.load(public.encrypt(second, spec), spec)
    # Zero copies is c**0 = 1, the trivial encryption of zero, which load accepts.
    total = public.add_many(
        [public.load(_sum_of_copies(public, cts, k), spec) for cts, k in ((a, k1), (b, k2))]
    )
    expected = [k1 * x + k2 * y for x, y in zip(first, second, strict=True)]
    assert secret.decrypt(public.dump(total), spec) == expected


@pytest.mark.parametrize(
    ("count", "max_value", "contributor_bits"),
    [
        (40, 1000, 40),  # many slots per ciphertext, a trillion-report window
        (250, 1, 8),  # one-bit values, a few ciphertexts
        (7, 2**32 - 1, 32),  # 64-bit slot sums
    ],
)
def test_the_largest_allowed_window_of_all_max_reports_sums_exactly(
    secret: PaillierSecret, count: int, max_value: int, contributor_bits: int
) -> None:
    public = secret.public
    spec = SlotSpec(count=count, max_value=max_value, max_contributors=1 << contributor_bits)
    assert public.capacity_error(spec) is None
    all_max = public.load(public.encrypt([max_value] * count, spec), spec)
    total = _sum_of_copies(public, all_max, spec.max_contributors)
    assert secret.decrypt(total, spec) == [spec.max_slot_sum] * count


def test_a_window_exactly_as_wide_as_the_key_allows_sums_exactly(
    secret: PaillierSecret,
) -> None:
    # Derived from the key itself, so a too-generous usable_bits would wrap mod n and fail.
    public = secret.public
    max_value = (1 << 10) - 1
    spec = SlotSpec(count=3, max_value=max_value, max_contributors=1 << (public.usable_bits - 10))
    assert spec.max_slot_sum.bit_length() == public.usable_bits
    assert public.capacity_error(spec) is None
    all_max = public.load(public.encrypt([max_value] * 3, spec), spec)
    total = _sum_of_copies(public, all_max, spec.max_contributors)
    assert secret.decrypt(total, spec) == [spec.max_slot_sum] * 3


def test_a_window_one_bit_wider_than_the_key_allows_is_refused(secret: PaillierSecret) -> None:
    public = secret.public
    spec = SlotSpec(
        count=1, max_value=(1 << 10) - 1, max_contributors=1 << (public.usable_bits - 9)
    )
    assert spec.max_slot_sum.bit_length() == public.usable_bits + 1
    assert public.capacity_error(spec) is not None
