"""Request bodies, bounded before a parser allocates anything for them.

Size: werkzeug enforces ``request.max_content_length`` (``MAX_CONTENT_LENGTH``, or a smaller
per-route cap) on a declared ``Content-Length`` before reading, so a huge header with a
small body is 413 at once. A chunked body (no length) is read only because gunicorn sets
``wsgi.input_terminated``, and werkzeug then stops reading *at* the limit without saying
so: the body would be silently cut to its first ``max_content_length`` bytes (which may
even parse). So a chunked body that reaches the limit is refused with 413 here.

Shape: a few kilobytes can expand into gigabytes of Python objects (``[{},{},...]`` costs
~30 bytes of memory per input byte; a CBOR value-sharing tag lets 300 bytes stand for a
tree of 2**40 nodes, whose repr in an error message never finishes). So before parsing:

- CBOR is walked head by head (no recursion): tags (value sharing, string references,
  dates, bignums...), indefinite lengths, simple values other than false/true/null, map keys
  that are not text and lengths beyond the body are refused; depth and item count are capped.
- JSON's containers and items are bounded by counting ``{``, ``[`` and ``,`` bytes (an upper
  bound: base64url, our names and decimal digits contain none of them), and its nesting
  depth is checked after parsing (the parser itself stops at Python's recursion limit).
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from blindsum.shared import codec
from blindsum.shared.errors import InvalidInput

MAX_DEPTH = 8  # a report batch nests 5 deep (batch, reports, report, ct, phe pair)
ITEMS_PER_REPORT = 16 + 3 * codec.MAX_CIPHERTEXTS  # keys, values, ciphertexts, phe pairs
BATCH_ITEMS = 16 + codec.MAX_BATCH_REPORTS * ITEMS_PER_REPORT
_SIMPLE_OK = (20, 21, 22, 25, 26, 27)  # false, true, null, half/single/double floats


def read_wire_body(max_items: int, max_bytes: int | None = None) -> Any:
    """Parse the request body (JSON or CBOR by Content-Type) within the limits.

    ``max_bytes`` lowers the body size limit for this request (413 beyond it).

    Raises:
        UnsupportedMediaType: not JSON or CBOR.
        InvalidInput: empty, malformed, too deep or too many items.
        RequestEntityTooLarge: the body is over the size limit (a chunked one: at it).
    """
    media = codec.media_type(request.content_type)
    if max_bytes is not None:
        request.max_content_length = min(max_bytes, request.max_content_length or max_bytes)
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()
    if not raw:
        raise InvalidInput("request body is empty")
    if media == codec.CBOR:
        scan_cbor(raw, max_items, MAX_DEPTH)  # bounds the depth too
        return codec.loads(raw, media)
    scan_json(raw, max_items)
    data = codec.loads(raw, media)
    check_depth(data, MAX_DEPTH)
    return data


def scan_json(raw: bytes, max_items: int) -> None:
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > max_items or raw.count(b",") > max_items:
        raise InvalidInput(f"body holds more than {max_items} JSON values")


def check_depth(data: Any, max_depth: int) -> None:
    """Refuse data nested deeper than ``max_depth`` containers (iteratively)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            raise InvalidInput(f"body nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def scan_cbor(raw: bytes, max_items: int, max_depth: int) -> None:
    """Check that ``raw`` is one plain CBOR data item we are willing to decode.

    Raises:
        InvalidInput: naming what was refused.
    """
    pos, items = 0, 0
    levels: list[list[Any]] = [[1, False]]  # [items still expected, is a map]
    while levels:
        level = levels[-1]
        if level[0] == 0:
            levels.pop()
            continue
        is_key = level[1] and level[0] % 2 == 0
        level[0] -= 1
        items += 1
        if items > max_items:
            raise InvalidInput(f"body holds more than {max_items} CBOR items")
        major, info, argument, pos = _head(raw, pos)
        if is_key and major != 3:
            raise InvalidInput("CBOR map keys must be text strings")
        if major in (2, 3):
            if argument > len(raw) - pos:
                raise _truncated()
            pos += argument
        elif major in (4, 5):
            if len(levels) > max_depth:
                raise InvalidInput(f"body nests deeper than {max_depth} levels")
            count = argument * (2 if major == 5 else 1)
            if count > len(raw) - pos:  # every item takes at least one byte
                raise _truncated()
            levels.append([count, major == 5])
        elif major == 6:
            raise InvalidInput("CBOR tags are not accepted (plain data items only)")
        elif major == 7 and info not in _SIMPLE_OK:
            raise InvalidInput("CBOR simple values other than false, true and null are "
                               "not accepted")
    if pos != len(raw):
        raise InvalidInput("body is not valid CBOR: bytes follow the first data item")


def _head(raw: bytes, pos: int) -> tuple[int, int, int, int]:
    """(major type, additional info, argument, position after the head)."""
    if pos >= len(raw):
        raise _truncated()
    major, info = raw[pos] >> 5, raw[pos] & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info > 27:
        raise InvalidInput("body is not valid CBOR: indefinite lengths and reserved "
                           "encodings are not accepted")
    size = 1 << (info - 24)
    if pos + size > len(raw):
        raise _truncated()
    return major, info, int.from_bytes(raw[pos:pos + size], "big"), pos + size


def _truncated() -> InvalidInput:
    return InvalidInput("body is not valid CBOR: it ends inside a data item")
