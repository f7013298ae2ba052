"""The YAML config loader (``load_runtime``: YAML, ``${VAR}`` expansion, the
typed models, destinations, mappings, filters) over generated documents: a
valid runtime or a ConfigError whose problems name a key path, never another
exception."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from hypothesis import given, note
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.config import Config, FlowConfig, RetryConfig
from bridge.destinations import load_runtime
from bridge.errors import ConfigError
from tests.fuzz.conftest import count, fuzz

ENV = {"LB_SET": "value", "LB_NUM": "42", "LB_EMPTY": ""}

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.sampled_from(
        [
            "5m",
            "250ms",
            "3d",
            "-1",
            "0",
            "100MB",
            "64MiB",
            "/lead/webhook",
            "sqlite:///{tmp}/x.db",
            "postgresql://u@127.0.0.1:1/db",
            "${LB_SET}",
            "${LB_NUM}",
            "${LB_UNSET}",
            "${LB_UNSET:-fallback}",
            "${file:/nonexistent/secret}",
            "${bad name}",
            "$${literal}",
            "${",
            "data.email",
            "email",
            "{{ data.email }}",
            "https://127.0.0.1:1/hook",
            "\x00",
            "a\x00b",
            "",
        ]
    ),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
CONNECTOR_TYPES = st.sampled_from(
    ["jsonl", "webhook", "slack", "hubspot", "salesforce", "nope", "zz_fuzz_missing:Thing", ""]
)
SETTING_KEYS = st.sampled_from(
    ["path", "url", "webhook_url", "token", "access_token", "object", "instance_url", "headers"]
)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, list):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in get_args(annotation))


def destination() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries(
        {"name": st.sampled_from(["crm", "crm", "a-b.c", "bad name", ""]) | _text},
        optional={
            "type": CONNECTOR_TYPES,
            "enabled": st.booleans() | JUNK,
            "settings": st.dictionaries(SETTING_KEYS, SCALARS, max_size=3) | JUNK,
            "mapping": st.dictionaries(
                _text | st.sampled_from(["Email", "email"]), JUNK, max_size=3
            )
            | JUNK,
            "when": JUNK,
            "unmapped": st.sampled_from(["ignore", "drop", {"collect_into": "notes"}]) | JUNK,
            "retry": model_tree(RetryConfig, depth=1),
            "flow": model_tree(FlowConfig, depth=1),
        },
    )
    return item | JUNK


def model_tree(annotation: Any, depth: int = 3) -> st.SearchStrategy[Any]:
    """Documents shaped like the config model (its real keys, nested), with
    junk values and unknown keys mixed in."""
    models = _models_in(annotation)
    if not models or depth <= 0:
        return JUNK
    model = models[0]
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in model.model_fields.items():
        if name == "destinations":
            optional[name] = st.lists(destination(), max_size=3) | JUNK
            continue
        value = model_tree(field.annotation, depth - 1) if _models_in(field.annotation) else JUNK
        if _is_list(field.annotation):
            value = st.lists(value, max_size=3) | value
        optional[name] = value | JUNK
    known = st.fixed_dictionaries({}, optional=optional)
    unknown = st.dictionaries(_text, JUNK, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, unknown) | JUNK


DOCUMENTS = st.one_of(
    model_tree(Config).map(lambda tree: ("tree", tree)),
    _text.map(lambda text: ("text", text)),
    st.text(max_size=200).map(lambda text: ("text", text)),
    st.sampled_from(
        [
            "!!python/object/apply:os.system ['true']",
            "a: &x [*x]",
            "server: {port: 8443\n",
            "\ufeffserver:\n  port: 1\n",
            "- just\n- a list\n",
            "key: value\nkey: again\n",
        ]
    ).map(lambda text: ("text", text)),
)


def first_key(where: str) -> str:
    """The top-level key a problem's path starts with (``["a.b"].c`` -> ``a.b``)."""
    if where.startswith("["):
        key, _ = json.JSONDecoder().raw_decode(where[1:])
        return str(key)
    return where.split(".")[0].split("[")[0]


def _dump(tree: Any, tmp: Path) -> str:
    text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    return text.replace("{tmp}", str(tmp))


@fuzz(400)
@given(document=DOCUMENTS)
def test_config_documents_load_or_name_their_key_path(tmp_path: Path, document: Any) -> None:
    count("config loader documents")
    kind, content = document
    text = _dump(content, tmp_path) if kind == "tree" else content
    note(text)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    try:
        load_runtime(path, env=ENV)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError says what is wrong"
        for where, message in exc.problems:
            assert message.strip(), "every problem has a message"
            if isinstance(parsed, dict) and parsed and where:
                top = first_key(where)
                assert top in parsed or top in Config.model_fields, (where, message)
        if isinstance(parsed, dict) and parsed:
            # a mapping's problems are located by key path (file-level ones by
            # the file name): never an anonymous message
            assert all(where or str(path) in message for where, message in exc.problems), (
                exc.problems
            )
