"""The mapping playground: for each destination, the filter verdict, the mapped
record, the unmapped keys and each mapping error — what ``lead-bridge map``
prints, the admin API's ``POST /admin/map`` answers and the console shows."""

from __future__ import annotations

from typing import Any

from bridge.destinations import Destination, Runtime
from bridge.errors import MappingError
from bridge.leads import element_problem, invalid_text


def evaluate_destination(dest: Destination, lead: dict[str, Any]) -> dict[str, Any]:
    """One destination's verdict for one lead: ``matched`` (its ``when:``), then
    ``record`` and ``unmapped_keys``, or ``error`` {field, message}."""
    out: dict[str, Any] = {
        "name": dest.name,
        "type": dest.config.type,
        "enabled": dest.config.enabled,
        "matched": dest.when is None or dest.when.matches(lead),
    }
    if not out["matched"]:
        return out
    try:
        mapped = dest.mapping.apply(lead)
    except MappingError as exc:
        out["error"] = {"field": exc.field, "message": str(exc)}
        return out
    out["record"] = mapped.record
    out["unmapped_keys"] = mapped.unmapped_keys
    return out


def evaluate(runtime: Runtime, leads: list[dict[str, Any]]) -> dict[str, Any]:
    """Every lead through every destination: ``{ok, warnings, leads: [{index, id,
    unrouted, destinations: [evaluate_destination(...)]}]}``; a lead intake would
    quarantine (no id, ``data`` not an object, ...) has ``quarantined`` (the
    reason) and no destinations. ``ok`` is False when any lead is quarantined
    or any mapping failed."""
    reports: list[dict[str, Any]] = []
    for index, lead in enumerate(leads):
        lead_id = lead.get("id") if isinstance(lead, dict) else None
        report: dict[str, Any] = {
            "index": index,
            "id": lead_id if isinstance(lead_id, str) else None,
        }
        # Intake's own rules first: a lead it would quarantine reaches no destination.
        problem = element_problem(lead) or invalid_text(lead)
        if problem is not None:
            reports.append(
                {**report, "quarantined": problem, "unrouted": False, "destinations": []}
            )
            continue
        results = [evaluate_destination(dest, lead) for dest in runtime.destinations]
        report["unrouted"] = not any(r["matched"] and r["enabled"] for r in results)
        report["destinations"] = results
        reports.append(report)
    ok = not any(
        "quarantined" in lead or any("error" in r for r in lead["destinations"]) for lead in reports
    )
    return {
        "ok": ok,
        "warnings": [{"path": p, "message": m} for p, m in runtime.warnings],
        "leads": reports,
    }
