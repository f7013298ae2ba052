"""The error tree's classification helpers: Retry-After parsing and unexpected exceptions."""

from __future__ import annotations

import email.utils

import pytest

from bridge.errors import PermanentError, classify_unexpected, parse_retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("1e12", 1e12),  # finite: the engine bounds it by retry.max_retry_after
        ("inf", None),
        ("Infinity", None),
        ("1e999", None),  # overflows to infinity
        ("nan", None),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Mon, 01 Jan 99999 00:00:00 GMT", None),  # beyond what a date can hold
    ],
)
def test_retry_after_values(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_http_dates() -> None:
    soon = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(soon, now=NOW) == pytest.approx(90)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0
    far = parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT", now=NOW)
    assert far is not None and far > 2e9  # returned as is, bounded by the engine


def test_encoding_errors_are_permanent() -> None:
    try:
        "\ud800".encode()
    except UnicodeEncodeError as exc:
        error = classify_unexpected(exc)
    assert isinstance(error, PermanentError)
    assert "surrogates not allowed" in error.message


@pytest.mark.parametrize("exc", [ZeroDivisionError("boom"), OSError(5, "I/O error"), KeyError("x")])
def test_other_unexpected_errors_stay_unclassified(exc: Exception) -> None:
    assert classify_unexpected(exc) is None
