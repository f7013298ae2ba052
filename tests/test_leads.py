"""bridge.leads: a webhook body into leads and refused elements."""

from __future__ import annotations

import json

import pytest

from bridge.leads import MAX_DEPTH, parse_body


def test_leads_keep_every_key_verbatim_and_index_created_and_url() -> None:
    body = (
        b'[{"id": "a", "url": "https://x.test", "created": "2018-07-12T16:29:42Z",'
        b' "new_top": [1, 2], "data": {"first_name": "J\\u00f6rg", "new_key": null}}]'
    )
    batch = parse_body(body)
    assert batch.problem is None and batch.received == 1 and batch.rejected == []
    [lead] = batch.leads
    assert (lead.id, lead.url, lead.created) == ("a", "https://x.test", "2018-07-12T16:29:42Z")
    assert json.loads(lead.payload) == json.loads(body)[0]
    assert "Jörg" in lead.payload  # UTF-8, not escaped


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ("1", "expected an object, got a number"),
        ("[1]", "expected an object, got an array"),
        ('"x"', "expected an object, got a string"),
        ("{}", "missing 'id'"),
        ('{"id": 7}', "'id' must be a non-empty string, got a number"),
        ('{"id": "  "}', "'id' must be a non-empty string, got a string"),
        ('{"id": "a\\u0000b"}', "'id' contains control or invalid characters"),
        (f'{{"id": "{"x" * 256}"}}', "'id' is longer than 255 characters"),
        ('{"id": "ok", "data": [1]}', "'data' must be an object, got an array"),
    ],
)
def test_bad_elements_are_refused_one_by_one(element: str, reason: str) -> None:
    batch = parse_body(f'[{{"id": "good"}}, {element}]'.encode())
    assert [lead.id for lead in batch.leads] == ["good"]
    [refused] = batch.rejected
    assert (refused.reason, refused.item_index) == (f"element 1: {reason}", 1)
    assert json.loads(refused.raw) == json.loads(element)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"", "invalid_json", "the body is not valid JSON: Expecting value at line 1, column 1"),
        (b'[{"id": "a"', "invalid_json", "the body is not valid JSON: Expecting ',' delimiter"),
        (b"\xff", "invalid_json", "the body is not valid JSON: the body is not UTF-8"),
        (b'{"id": "a"}', "not_an_array", "got an object"),
        (b"null", "not_an_array", "got null"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep", "deeper than 32 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep", "deeper than 32 levels"),
    ],
)
def test_refused_bodies_say_why(body: bytes, code: str, message: str) -> None:
    batch = parse_body(body)
    assert batch.problem is not None
    assert batch.problem[0] == code
    assert message in batch.problem[1]
    assert batch.leads == [] and batch.received == 0


def test_nesting_at_the_limit_is_accepted() -> None:
    # array, lead, data: 3 levels, then MAX_DEPTH - 3 nested arrays = MAX_DEPTH.
    inner = b"[" * (MAX_DEPTH - 3) + b"]" * (MAX_DEPTH - 3)
    batch = parse_body(b'[{"id": "deep", "data": {"x": ' + inner + b"}}]")
    assert batch.problem is None and [lead.id for lead in batch.leads] == ["deep"]
    one_more = b'[{"id": "deep", "data": {"x": [' + inner + b"]}}]"
    assert parse_body(one_more).problem == ("too_deep", "the JSON nests deeper than 32 levels")


def test_numbers_the_fast_parser_would_change_are_kept_exactly() -> None:
    body = b'[{"id": "n", "data": {"big": 98765432109876543210, "nan": NaN, "inf": -Infinity}}]'
    [lead] = parse_body(body).leads
    assert (
        lead.payload == '{"id":"n","data":{"big":98765432109876543210,"nan":NaN,"inf":-Infinity}}'
    )


def test_a_lone_surrogate_is_quarantined_with_its_path() -> None:
    # Issue 12 item 7: accepted, such a lead failed every attempt for 72 h.
    batch = parse_body(b'[{"id": "x", "data": {"a": "\\ud800"}}, {"id": "ok", "data": {}}]')
    assert [lead.id for lead in batch.leads] == ["ok"]
    [bad] = batch.rejected
    assert bad.reason == (
        "element 0: data.a holds a lone surrogate (an unpaired \\uXXXX escape): "
        "it is not valid Unicode text and no destination can accept it"
    )
    assert (bad.lead_id, bad.item_index) == ("x", 0)
    assert bad.raw == '{"id":"x","data":{"a":"\\ud800"}}'  # kept escaped, storable


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'[{"id": "x", "data": {"l": [1, "\\udfff"]}}]', "data.l[1] holds"),
        (b'[{"id": "x", "data": {"\\ud800": 1}}]', "a key in data holds"),
        (b'[{"id": "x", "url": "\\ud800"}]', "url holds"),
    ],
)
def test_lone_surrogates_are_found_anywhere(body: bytes, where: str) -> None:
    batch = parse_body(body)
    assert batch.leads == [] and where in batch.rejected[0].reason


def test_a_surrogate_pair_is_text() -> None:
    [lead] = parse_body(b'[{"id": "x", "data": {"a": "\\ud83d\\ude00"}}]').leads
    assert json.loads(lead.payload)["data"]["a"] == "\U0001f600"


def test_an_empty_array_is_a_probe() -> None:
    batch = parse_body(b"[]")
    assert batch.problem is None and batch.received == 0 and batch.leads == []


def test_nesting_through_objects_counts_too() -> None:
    inner = b'{"a":' * (MAX_DEPTH - 2) + b"1" + b"}" * (MAX_DEPTH - 2)
    assert parse_body(b'[{"id": "deep", "data": ' + inner + b"}]").problem is None
    inner = b'{"a":' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1)
    assert parse_body(b'[{"id": "deep", "data": ' + inner + b"}]").problem == (
        "too_deep",
        "the JSON nests deeper than 32 levels",
    )


@pytest.mark.parametrize(
    ("value", "column"),
    [
        ('"2018-07-12T16:29:42Z"', "2018-07-12T16:29:42Z"),
        ('"Zürich"', "Zürich"),  # non-ASCII text is kept
        ("7", None),  # not text
        ("null", None),
        ('"a\\u0000b"', None),  # NUL: no database column takes it
        (f'"{"x" * 2048}"', "x" * 2048),
        (f'"{"x" * 2049}"', None),  # too long to be an index key
    ],
)
def test_created_and_url_columns_hold_only_storable_text(value: str, column: str | None) -> None:
    batch = parse_body(f'[{{"id": "a", "created": {value}, "url": {value}}}]'.encode())
    [lead] = batch.leads
    assert (lead.created, lead.url) == (column, column)
    assert json.loads(lead.payload)["url"] == json.loads(value)  # the payload keeps it anyway


def test_ids_at_the_limits() -> None:
    body = json.dumps(
        [{"id": "x" * 255}, {"id": " a "}, {"id": "é"}, {"id": "x" * 256}, {"id": "\t"}]
    )
    batch = parse_body(body.encode())
    assert [lead.id for lead in batch.leads] == ["x" * 255, " a ", "é"]
    assert [r.item_index for r in batch.rejected] == [3, 4]


def test_data_must_be_an_object_when_present() -> None:
    batch = parse_body(b'[{"id": "a"}, {"id": "b", "data": {}}, {"id": "c", "data": null}]')
    assert [lead.id for lead in batch.leads] == ["a", "b"]
    [refused] = batch.rejected
    assert refused.reason == "element 2: 'data' must be an object, got null"
