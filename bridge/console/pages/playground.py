"""Mapping playground: a pasted or stored lead through every destination's
filter and mapping — ``lead-bridge map``'s own code path — optionally with one
destination's YAML edited in the page (never saved)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import yaml
from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route

from bridge.config import DestinationConfig
from bridge.config_load import describe_error
from bridge.console.web import Call, Console
from bridge.destinations import Runtime, build_destination
from bridge.operations.mapping import evaluate

SAMPLE = {
    "id": "led_playground_1",
    "url": "https://example.com/form/",
    "created": "2018-07-12T16:29:42Z",
    "data": {"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com"},
}


def _destination_yaml(runtime: Runtime, name: str) -> str:
    dest = runtime.destination(name)
    if dest is None:
        return ""
    # Settings stay out of the editor: they may hold secrets and do not affect mapping.
    tree = dest.config.model_dump(
        mode="json", exclude={"settings"}, exclude_defaults=True, exclude_none=True
    )
    tree["name"] = dest.config.name
    tree["type"] = dest.config.type
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


def _edited_runtime(
    runtime: Runtime, name: str, text: str
) -> tuple[Runtime | None, list[tuple[str, str]]]:
    """The runtime with destination ``name`` rebuilt from ``text``, or the problems."""
    index = next((i for i, d in enumerate(runtime.destinations) if d.name == name), None)
    if index is None:
        return None, [("destination", f"unknown destination {name!r}")]
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, [("yaml", str(exc))]
    if not isinstance(tree, dict):
        return None, [("yaml", "expected a mapping (name:, type:, mapping:, when:, ...)")]
    original = runtime.destinations[index].config
    tree = {**tree, "name": original.name, "type": original.type, "settings": original.settings}
    try:
        cfg = DestinationConfig.model_validate(tree)
    except ValidationError as exc:
        return None, [describe_error(dict(e), DestinationConfig) for e in exc.errors()]
    dest, problems, _ = build_destination(index, cfg, lenient=True)
    if dest is None:
        return None, problems
    destinations = list(runtime.destinations)
    destinations[index] = dest
    return replace(runtime, destinations=destinations), []


async def playground(console: Console, call: Call) -> Response:
    runtime = console.state.runtime
    form = call.form
    names = [d.name for d in runtime.destinations]
    lead_text = json.dumps(SAMPLE, indent=2)
    stored_id = ""
    edit_name = ""
    edit_text = ""
    report: dict[str, Any] | None = None
    problems: list[tuple[str, str]] = []
    if form is not None:
        lead_text = form.get("lead")
        stored_id = form.get("stored_id").strip()
        edit_name = form.get("edit_destination")
        edit_text = form.get("edit_yaml")
        if form.get("action") == "load_yaml" or (edit_name and not edit_text.strip()):
            edit_text = _destination_yaml(runtime, edit_name)
        leads: list[dict[str, Any]] = []
        if stored_id:
            record = await console.state.store.get_lead(stored_id)
            if record is None:
                problems.append(("stored lead", "no lead with this id"))
            elif record.payload is None:
                problems.append(("stored lead", "its payload was purged or erased"))
            else:
                lead_text = json.dumps(json.loads(record.payload), indent=2, ensure_ascii=False)
        if not problems:
            try:
                parsed = json.loads(lead_text)
            except json.JSONDecodeError as exc:
                problems.append(
                    ("lead", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
                )
            else:
                leads = parsed if isinstance(parsed, list) else [parsed]
                if not all(isinstance(lead, dict) for lead in leads):
                    problems.append(("lead", "expected a lead object or an array of them"))
        used = runtime
        if edit_name and edit_text.strip() and not problems:
            edited, found = _edited_runtime(runtime, edit_name, edit_text)
            problems += found
            used = edited or runtime
        if not problems:
            report = evaluate(used, leads)
    return console.render(
        call.request,
        "playground.html",
        call.principal,
        lead_text=lead_text,
        stored_id=stored_id,
        names=names,
        edit_name=edit_name,
        edit_text=edit_text,
        problems=problems,
        report=report,
    )


def routes(console: Console) -> list[Route]:
    # POST only reads (the lead travels in the body, not the URL): viewers may use it.
    return [Route("/playground", console.page(playground), methods=["GET", "POST"])]
