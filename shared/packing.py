"""Slot packing: many small non-negative integers in one big plaintext.

A report of ``k`` slots is laid out as the integer

    P = s_0 + s_1 * 2**w + s_2 * 2**(2w) + ... + s_(k-1) * 2**((k-1)w)

i.e. slot ``i`` occupies bits ``i*w .. (i+1)*w - 1``. Adding packed plaintexts adds the slots
position by position, *provided no slot sum ever needs more than ``w`` bits*: a carry out of
slot ``i`` would land in slot ``i+1`` and corrupt it silently.

Why overflow is impossible: the width is chosen from the policy's window maximum,
``w = max_slot_sum.bit_length()``, so every slot of every window aggregate satisfies
``0 <= sum <= max_slot_sum < 2**w``. Each slot window therefore holds its whole sum and no
carry crosses a slot boundary. A scheme packs at most ``usable // w`` slots per plaintext,
so the packed aggregate is ``< 2**(w * (usable // w)) <= 2**usable``; with
``usable = n.bit_length() - 2`` that is ``< 2**(n.bit_length() - 1) <= n``, so the sum is
never reduced modulo ``n`` either.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2

from .errors import InvalidInput


def slot_width(max_slot_sum: int) -> int:
    """Bits per slot: the smallest ``w`` with ``max_slot_sum < 2**w``."""
    if not _is_int(max_slot_sum) or max_slot_sum < 1:
        raise InvalidInput("max_slot_sum must be an integer >= 1")
    return max_slot_sum.bit_length()


def slots_per_plaintext(n_bits_usable: int, width: int) -> int:
    """How many ``width``-bit slots fit in ``n_bits_usable`` bits (at least one, or raise)."""
    if not _is_int(width) or width < 1:
        raise InvalidInput("slot width must be an integer >= 1")
    if not _is_int(n_bits_usable) or n_bits_usable < width:
        raise InvalidInput(
            f"a {width}-bit slot does not fit in {n_bits_usable} usable plaintext bits"
        )
    return n_bits_usable // width


def pack(slots: Sequence[int], width: int) -> int:
    """The integer with slot ``i`` at bit offset ``i * width``.

    Raises ``InvalidInput`` for a slot outside ``0 .. 2**width - 1``: such a value would
    spill into its neighbour.
    """
    if not _is_int(width) or width < 1:
        raise InvalidInput("slot width must be an integer >= 1")
    limit = 1 << width
    value = 0
    # Highest slot first so each step is a shift of the partial result, never a long OR chain.
    for index in range(len(slots) - 1, -1, -1):
        slot = slots[index]
        if not _is_int(slot) or not 0 <= slot < limit:
            raise InvalidInput(f"slot {index} is not an integer in 0..2**{width}-1")
        value = (value << width) | slot
    return value


def unpack(value: int, width: int, count: int) -> list[int]:
    """Inverse of ``pack``: the ``count`` slots of ``value``.

    Raises ``InvalidInput`` if ``value`` is negative or has bits beyond the ``count`` slots,
    since dropping them would hide an overflow or a forged plaintext.
    """
    if not _is_int(width) or width < 1:
        raise InvalidInput("slot width must be an integer >= 1")
    if not _is_int(count) or count < 0:
        raise InvalidInput("slot count must be an integer >= 0")
    if not _is_int(value) or value < 0 or value.bit_length() > width * count:
        raise InvalidInput(f"packed value does not fit in {count} slots of {width} bits")
    value = int(value)
    mask = (1 << width) - 1
    return [(value >> (i * width)) & mask for i in range(count)]


def chunk_slots(slots: Sequence[int], per_chunk: int) -> list[list[int]]:
    """Consecutive runs of at most ``per_chunk`` slots (the last may be shorter)."""
    if not _is_int(per_chunk) or per_chunk < 1:
        raise InvalidInput("per_chunk must be an integer >= 1")
    return [list(slots[i : i + per_chunk]) for i in range(0, len(slots), per_chunk)]


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a slot value is a caller bug, not the number 1.
    if isinstance(value, bool):
        return False
    # gmpy2.mpz is what decryption hands back.
    return isinstance(value, int | gmpy2.mpz)
