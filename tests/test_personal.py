"""One definition of a personal field, for the console and mask_lead alike."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.console.render import fields, flatten
from bridge.personal import is_personal, is_personal_key, mask_lead

LEAD: dict[str, Any] = {
    "id": "x",
    "data": {
        "email": "john@example.com",
        "Work-Email": "jd@corp.example",
        "phone": "+1 555 0167",
        "mobile": "+44 7700 900123",
        "first_name": "John",
        "fullName": "John Doe",
        "street": "1 Main St",
        "date_of_birth": "1990-01-01",
        "note": "mail me at john@example.com",
        "organization_size": "11-50",
        "company_name": "Acme",
        "utm_source": "ads",
        "tags": ["a", "b"],
    },
}


@pytest.mark.parametrize(
    "key",
    ["email", "E-Mail", "phone", "mobile", "tel", "fax", "street", "zip", "dob", "ip",
     "name", "first_name", "Last-Name", "fullname", "address_line_1", "birth_date"],
)  # fmt: skip
def test_personal_keys(key: str) -> None:
    assert is_personal_key(key)


@pytest.mark.parametrize(
    "key", ["organization_name", "company_name", "account_name", "form_name", "file_name",
            "utm_source", "id", "budget"],
)  # fmt: skip
def test_keys_that_are_not_personal(key: str) -> None:
    assert not is_personal_key(key)


def test_an_email_under_any_key_is_personal() -> None:
    assert is_personal("note", "write to a@b.example")
    assert not is_personal("note", "no contact here")


def test_mask_lead() -> None:
    assert mask_lead(LEAD)["data"] == {
        "email": "j***@example.com",
        "Work-Email": "j***@corp.example",
        "phone": "***67",
        "mobile": "***23",
        "first_name": "J***",
        "fullName": "J***",
        "street": "1***",
        "date_of_birth": "1***",
        "note": "mail me at j***@example.com",
        "organization_size": "11-50",
        "company_name": "Acme",
        "utm_source": "ads",
        "tags": ["a", "b"],
    }


def test_the_console_masks_exactly_the_fields_mask_lead_masks() -> None:
    masked_by_console = {row["path"] for row in fields(LEAD) if row["masked"] is not None}
    changed_by_mask_lead = {
        path
        for (path, before), (_, after) in zip(flatten(LEAD), flatten(mask_lead(LEAD)), strict=True)
        if before != after
    }
    assert masked_by_console == changed_by_mask_lead
    assert "data.organization_size" not in masked_by_console
