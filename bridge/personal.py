"""Which lead fields hold personal data, and how a lead is shown masked.

One definition for every place that masks a lead: the console's field tables
(masked until revealed) and :func:`mask_lead` for lookups that show a lead as
received. A field is personal by its key (the last path segment, lower-cased,
"-" read as "_") or, under any other key, by holding an email address or a
phone number (a note, a description).
"""

from __future__ import annotations

import re
from typing import Any

from bridge.logs import mask_email, mask_phone, redact

PERSONAL_KEY = re.compile(
    r"e_?mail|phone|mobile|^tel|fax|address|street|postcode|zip|birth|^dob$|ssn|^ip$|"
    r"^(first|last|middle|full|given|family|sur|contact|display)?_?name$"
)
# Keys the pattern would catch that name an organisation or a thing, not a person.
NOT_PERSONAL = ("organization", "organisation", "company", "org_", "account", "form", "file")
_EMAIL_KEY = re.compile(r"e_?mail")
_PHONE_KEY = re.compile(r"phone|mobile|^tel|fax")


def _normal(key: str) -> str:
    return key.lower().replace("-", "_")


def is_personal_key(key: str) -> bool:
    """Whether a field's key (its last path segment) names personal data."""
    k = _normal(key)
    return bool(PERSONAL_KEY.search(k)) and not k.startswith(NOT_PERSONAL)


def is_personal(key: str, value: Any) -> bool:
    """A personal key, or an email address or phone number under any key."""
    return is_personal_key(key) or (isinstance(value, str) and redact(value) != value)


def mask_field(key: str | None, value: Any) -> Any:
    """One leaf of a lead, masked if personal (``j***@example.com``, ``***67``,
    ``J***``); other text with any email or phone in it masked too."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return value
    text = str(value)
    if key is not None and is_personal_key(key):
        k = _normal(key)
        if _EMAIL_KEY.search(k):
            return mask_email(text)
        if _PHONE_KEY.search(k):
            return mask_phone(text)
        return f"{text[:1]}***" if text else text
    return redact(text) if isinstance(value, str) else value


def mask_lead(payload: Any) -> Any:
    """A copy of a lead with every personal field masked (:func:`mask_field`)."""

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        return mask_field(key, node)

    return walk(payload, None)
