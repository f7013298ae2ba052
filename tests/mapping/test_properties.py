"""Property-based: any JSON in any field maps or fails with MappingError, deterministically."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import MappingError
from bridge.mapping import DEFAULT_MAPPINGS, compile_filter, compile_mapping
from bridge.mapping.transforms import TRANSFORMS

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SEED_KEYS = [
    "first_name",
    "last_name",
    "phone",
    "email",
    "organization_size",
    "organization_country",
    "organization_state",
    "state",
    "created",
    "x",
]
data = st.dictionaries(st.sampled_from(SEED_KEYS) | st.text(max_size=8), json_values, max_size=8)
leads = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "url": json_values,
        "created": json_values,
        "data": data | json_values,
    },
)

_ARGS = {"truncate": "truncate(5)", "date": "date", "datetime": "datetime"}
KITCHEN_SINK: dict[str, Any] = {
    **{
        f"t_{name}": {"source": "data.x", "transform": [_ARGS.get(name, name)]}
        for name in TRANSFORMS
    },
    "template": {"template": "{data.first_name} {data.x} {id}"},
    "first_of": {"first_of": ["data.phone", "data.x"], "transform": ["phone_e164"]},
    "join": {"join": ["data.x", "data.email", "url"]},
    "map": {"source": "data.x", "map": {"a": 1, "2": "two"}, "default": 0},
    "required": {"source": "data.x", "required": True},
}
MAPPINGS = [
    compile_mapping(rules, unmapped={"collect_into": "notes"}, path="m")
    for rules in [KITCHEN_SINK, *DEFAULT_MAPPINGS.values()]
]
FILTER = compile_filter(
    {
        "any": [
            {"field": "data.x", "regex": "a"},
            {"field": "data.x", "in": ["1", 2]},
            {"not": {"field": "data.x", "empty": True}},
            {"field": "id", "exists": False},
        ]
    },
    path="when",
)


def outcome(mapping: Any, lead: Any) -> Any:
    try:
        result = mapping.apply(lead)
    except MappingError as exc:
        return ("error", exc.field, str(exc))
    return ("ok", result.record, result.unmapped_keys)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lead=leads)
def test_any_json_maps_or_raises_only_mapping_error_deterministically(lead: dict[str, Any]) -> None:
    before = copy.deepcopy(lead)
    for mapping in MAPPINGS:
        first = outcome(mapping, lead)
        assert outcome(mapping, copy.deepcopy(lead)) == first
    assert lead == before  # mapping never changes the stored lead


# One mapping per rule, so an error in one transform cannot hide the others.
SINGLE_RULES = [
    compile_mapping({k: v}, unmapped="ignore", path="m") for k, v in KITCHEN_SINK.items()
]


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_every_transform_accepts_any_json_value(value: Any) -> None:
    for mapping in SINGLE_RULES:
        kind, *_ = outcome(mapping, {"id": "led_1", "data": {"x": value}})
        assert kind in ("ok", "error")


@settings(max_examples=200, deadline=None)
@given(lead=leads)
def test_filters_never_raise(lead: dict[str, Any]) -> None:
    assert FILTER is not None
    assert FILTER.matches(lead) in (True, False)
