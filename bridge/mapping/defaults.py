"""Mappings used when a destination has no ``mapping:``, keyed by connector type.

They map the provider's standard ``data`` fields to what each destination
expects. ``webhook`` and ``jsonl`` have no entry: they receive the lead as sent.

A default mapping leaves the destination's ``unmapped:`` policy alone: a
Salesforce destination that wants new provider keys kept in the Lead sets
``unmapped: {collect_into: Description}`` (config.example.yaml does), and
either way the keys are counted as unmapped for the schema drift metric.
"""

from __future__ import annotations

from typing import Any

NOT_PROVIDED = "[not provided]"

# The provider's organization_size ranges. Salesforce NumberOfEmployees is an
# integer: take the upper bound.
EMPLOYEES_UPPER_BOUND: dict[str, int] = {
    "1-10": 10,
    "11-50": 50,
    "51-100": 100,
    "101-250": 250,
    "251-500": 500,
    "501-1000": 1000,
    "1001-5000": 5000,
    "5001-10000": 10000,
    "10000+": 10000,
    "10001+": 10000,
}

# HubSpot's numemployees is an enumeration that accepts only its own buckets; a
# range spanning two buckets goes to the one holding its upper bound.
HUBSPOT_BUCKETS: dict[str, str] = {
    "1-10": "5-25",
    "11-50": "25-50",
    "51-100": "50-100",
    "101-250": "100-500",
    "251-500": "100-500",
    "501-1000": "500-1000",
    "1001-5000": "1000+",
    "5001-10000": "1000+",
    "10000+": "1000+",
    "10001+": "1000+",
    **{b: b for b in ("1-5", "5-25", "25-50", "50-100", "100-500", "500-1000", "1000+")},
}


def _text(path: str, max_chars: int) -> dict[str, Any]:
    # Salesforce rejects (rather than cuts) text longer than a field holds.
    return {"source": path, "transform": ["collapse_spaces", f"truncate({max_chars})"]}


SALESFORCE: dict[str, Any] = {
    "FirstName": _text("data.first_name", 40),
    # Salesforce requires LastName and Company on a Lead.
    "LastName": {**_text("data.last_name", 80), "default": NOT_PROVIDED},
    "Email": {"source": "data.email", "transform": ["strip", "lower"]},
    "Phone": {"source": "data.phone", "transform": ["phone_e164(US)"]},
    "Title": _text("data.position", 128),
    "Company": {**_text("data.organization_name", 255), "default": NOT_PROVIDED},
    "City": _text("data.organization_city", 40),
    # Names, not codes: orgs with state and country picklists accept the names here.
    "State": {
        "first_of": ["data.organization_state", "data.state"],
        "transform": ["collapse_spaces"],
    },
    "Country": _text("data.organization_country", 80),
    "NumberOfEmployees": {"source": "data.organization_size", "map": EMPLOYEES_UPPER_BOUND},
    "LeadSource": {"value": "Web"},
    "Description": {"source": "data.interested_in", "transform": ["strip", "truncate(32000)"]},
}

HUBSPOT: dict[str, Any] = {
    # The contact is upserted by email (the connector's default id_property).
    "email": {"source": "data.email", "transform": ["strip", "lower"], "required": True},
    "firstname": {"source": "data.first_name", "transform": ["collapse_spaces"]},
    "lastname": {"source": "data.last_name", "transform": ["collapse_spaces"]},
    "phone": {"source": "data.phone", "transform": ["phone_e164(US)"]},
    "jobtitle": {"source": "data.position", "transform": ["collapse_spaces"]},
    "company": {"source": "data.organization_name", "transform": ["collapse_spaces"]},
    "city": {"source": "data.organization_city", "transform": ["collapse_spaces"]},
    "state": {
        "first_of": ["data.organization_state", "data.state"],
        "transform": ["collapse_spaces"],
    },
    "country": {"source": "data.organization_country", "transform": ["collapse_spaces"]},
    "numemployees": {"source": "data.organization_size", "map": HUBSPOT_BUCKETS},
    "message": {"source": "data.interested_in", "transform": ["strip"]},
}

# The Slack connector builds its card from these keys.
SLACK: dict[str, Any] = {
    "title": {
        "template": "{data.first_name} {data.last_name}",
        "transform": ["collapse_spaces"],
        "default": "New lead",
    },
    "company": "data.organization_name",
    "email": "data.email",
    "phone": "data.phone",
    "position": "data.position",
    "location": {
        "join": ["data.organization_city", "data.organization_state", "data.organization_country"]
    },
    "company_size": "data.organization_size",
    "form_url": "url",
    "lead_id": "id",
    "created": "created",
}

DEFAULT_MAPPINGS: dict[str, dict[str, Any]] = {
    "salesforce": SALESFORCE,
    "hubspot": HUBSPOT,
    "slack": SLACK,
}
