"""A webhook body into leads: parse, check, split. Pure functions, no I/O.

Used by intake, and by a store backend that takes raw bodies to parse them
elsewhere (the SQLite writer process, so that the event loop does not). A body that is not a
JSON array of at most MAX_DEPTH levels is refused whole (``Batch.problem``);
otherwise each element is a lead or a quarantined element with its reason.
Every key, known or new, is kept verbatim in the lead's payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.models import IngestResult, LeadIn, QuarantineIn

MAX_DEPTH = 32
MAX_ID_LENGTH = 255
UTF8_BOM = b"\xef\xbb\xbf"
NOT_UTF8 = (
    "invalid_encoding",
    "the body must be JSON encoded as UTF-8 (RFC 8259); it looks like UTF-16 or UTF-32",
)


def not_utf8(body: bytes) -> bool:
    """A UTF-16/32 byte order mark, or a NUL among the first four bytes (how JSON
    text in UTF-16/32 starts; UTF-8 JSON never holds a raw NUL)."""
    return body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]


def parse_body(body: bytes) -> Batch:
    """The body as leads and refused elements, or the reason it is refused whole.

    JSON in UTF-8 only; a leading UTF-8 byte order mark is ignored (RFC 8259
    lets a parser ignore it), UTF-16 and UTF-32 bodies are refused whole.
    """
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    elif not_utf8(body):
        return Batch([], [], problem=NOT_UTF8)
    scan = body.translate(_SCAN)
    try:
        parsed, fast = _loads(body, _LONG_NUMBER in scan)
    except RecursionError:
        return Batch([], [], problem=("too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels"))
    except (ValueError, UnicodeDecodeError) as exc:
        return Batch(
            [], [], problem=("invalid_json", f"the body is not valid JSON: {_json_error(exc)}")
        )
    if not isinstance(parsed, list):
        message = f"the body must be a JSON array of lead objects, got {_json_type(parsed)}"
        return Batch([], [], problem=("not_an_array", message))
    # Fewer brackets than the limit cannot nest deeper than it: skip the walk.
    if scan.count(b"[") > MAX_DEPTH and too_deep(parsed, MAX_DEPTH):
        return Batch([], [], problem=("too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels"))
    if fast:
        return split_batch(parsed)
    # Only the standard library accepts lone surrogate escapes ("\ud800"): look for them.
    return split_batch(parsed, _dump_stdlib, check_text=True)


def quarantined_body(body: bytes, problem: tuple[str, str]) -> QuarantineIn:
    """A refused body as kept for inspection."""
    code, message = problem
    return QuarantineIn(reason=f"{code}: {message}", raw=body.decode("utf-8", "backslashreplace"))


def too_deep(node: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (the top level counts as 1)."""
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(current, dict):
            stack.extend((v, depth + 1) for v in current.values() if isinstance(v, dict | list))
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current if isinstance(v, dict | list))
    return False


def element_problem(element: Any) -> str | None:
    if not isinstance(element, dict):
        return f"expected an object, got {_json_type(element)}"
    lead_id = element.get("id")
    if not isinstance(lead_id, str) or not lead_id.strip():
        if "id" not in element:
            return "missing 'id'"
        return f"'id' must be a non-empty string, got {_json_type(lead_id)}"
    if len(lead_id) > MAX_ID_LENGTH:
        return f"'id' is longer than {MAX_ID_LENGTH} characters"
    if not lead_id.isprintable():
        # Ids end up in URLs, log lines and database keys (PostgreSQL text refuses NUL).
        return "'id' contains control or invalid characters"
    if "data" in element and not isinstance(element["data"], dict):
        return f"'data' must be an object, got {_json_type(element['data'])}"
    return None


# One pass over the body finds what orjson alone would get wrong, and what
# needs a closer look: every digit becomes "0", every "[" and "{" a "[", all
# else a space (bytes.translate, far cheaper than a regex). 19 digits in a row
# may be an integer beyond 64 bits, which orjson would turn into a float
# (losing digits) where the standard library keeps it exact.
_SCAN = bytes(48 if 48 <= i <= 57 else 91 if i in (91, 123) else 32 for i in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(body: bytes, long_number: bool) -> tuple[Any, bool]:
    """orjson where it can (faster), the standard library otherwise.

    orjson refuses a little that the standard library accepts (NaN, Infinity,
    lone surrogate escapes, numbers out of a double's range): those bodies, and
    invalid ones, are parsed again by the standard library, which either
    accepts them or gives the error message the provider sees. Bodies with very
    long digit runs go to the standard library directly (see _LONG_NUMBER).
    Returns the value and whether orjson parsed it (then orjson can also write
    it back exactly; see split_batch).
    """
    if not long_number:
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _dump_stdlib(value: Any) -> str:
    """For values only the standard library parsed: it writes NaN and Infinity
    back as they came (orjson would write null) and integers of any size."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escape to ASCII so it can be stored
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def _dump(value: Any) -> str:
    try:
        # orjson is much faster; it refuses what it cannot represent exactly
        # (integers beyond 64 bits, lone surrogates such as "\ud800"), and then the
        # standard library takes over, escaping to ASCII so that any string can be
        # stored (a lone surrogate cannot be encoded as UTF-8).
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


@dataclass
class Batch:
    """A webhook body, parsed and split: the leads to store and the elements refused."""

    leads: list[LeadIn]
    rejected: list[QuarantineIn]
    received: int = 0  # elements in the array
    problem: tuple[str, str] | None = None  # (code, message): the whole body is refused
    # The parsed element of each lead (same order as ``leads``): the SQLite
    # writer reads the search index's email and phone from it, not from a
    # second parse of the payload text.
    elements: list[Any] = field(default_factory=list)


@dataclass
class BodyResult:
    """What became of one webhook body (what intake answers)."""

    problem: tuple[str, str] | None = None  # (code, message): refused whole, quarantined
    received: int = 0  # elements in the array; 0 without a problem is a probe
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: int = 0  # elements quarantined one by one
    lead_ids: list[str] = field(default_factory=list)  # the valid leads' ids, in order


def body_result(batch: Batch, stored: IngestResult | None) -> BodyResult:
    """What intake answers for a parsed body, once it is stored (``stored`` is
    None for a refused body or a probe: no leads were stored)."""
    if batch.problem is not None:
        return BodyResult(problem=batch.problem)
    if stored is None:
        return BodyResult()
    return BodyResult(
        received=batch.received,
        accepted=stored.accepted,
        duplicates=stored.duplicates,
        rejected=len(batch.rejected),
        lead_ids=[lead.id for lead in batch.leads],
    )


def split_batch(
    elements: list[Any], dump: Callable[[Any], str] = _dump, *, check_text: bool = False
) -> Batch:
    """``check_text``: also refuse elements holding text that is not valid Unicode
    (needed when the standard library parsed the body; orjson refuses such text)."""
    leads: list[LeadIn] = []
    kept: list[Any] = []
    rejected: list[QuarantineIn] = []
    for index, element in enumerate(elements):
        problem = element_problem(element)
        if problem is None and check_text:
            problem = invalid_text(element)
        if problem is not None:
            lead_id = element.get("id") if isinstance(element, dict) else None
            rejected.append(
                QuarantineIn(
                    reason=f"element {index}: {problem}",
                    raw=dump(element),
                    lead_id=_column(lead_id),
                    item_index=index,
                )
            )
            continue
        # Positional: a named tuple built with keywords costs more (hot path).
        leads.append(
            LeadIn(
                element["id"],
                dump(element),
                _column(element.get("created")),
                _column(element.get("url")),
            )
        )
        kept.append(element)
    return Batch(leads, rejected, len(elements), elements=kept)


def invalid_text(node: Any) -> str | None:
    """Why a lead cannot be delivered if it holds a lone surrogate, or None.

    JSON may escape half of a UTF-16 pair alone ("\ud800"); Python keeps it in a
    str, but it is not Unicode text: no connector can encode it, so a lead holding
    one would fail every attempt. Such an element is quarantined at intake instead.
    """
    stack: list[tuple[Any, str]] = [(node, "")]
    while stack:
        current, path = stack.pop()
        if isinstance(current, str):
            if not _encodable(current):
                return (
                    f"{path or 'the element'} holds a lone surrogate (an unpaired \\uXXXX "
                    "escape): it is not valid Unicode text and no destination can accept it"
                )
        elif isinstance(current, dict):
            for key, value in current.items():
                name = f"{path}.{key}" if path else str(key)
                if not _encodable(name):
                    return f"a key in {path or 'the element'} holds a lone surrogate " + (
                        "(an unpaired \\uXXXX escape): it is not valid Unicode text"
                    )
                stack.append((value, name))
        elif isinstance(current, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(current))
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _column(value: Any) -> str | None:
    # Indexed copies of `created`, `url` and quarantined ids; the payload keeps the
    # original anyway. Only text any database can store: no NUL, valid UTF-8.
    if not isinstance(value, str) or "\x00" in value or len(value) > 2048:
        return None
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return None
    return value


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8"
    return str(exc)
