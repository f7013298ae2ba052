"""Reading the console's HTML forms (``application/x-www-form-urlencoded``).

Parsed here rather than with python-multipart: the console uploads no files,
and a bounded read keeps a huge body from being buffered.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

MAX_FORM_BYTES = 1_048_576  # a pasted lead plus a destination's YAML fits easily


class FormError(Exception):
    """The body is not a form the console can read; the message says why."""


class Form:
    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))

    def flag(self, name: str) -> bool:
        return self.get(name) in {"1", "on", "true", "yes"}


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> Form:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormError(f"the form is larger than {limit // 1024} KiB")
    if not body:
        return Form({})  # no fields at all (so no CSRF token either)
    if kind != "application/x-www-form-urlencoded":
        raise FormError("expected an HTML form (application/x-www-form-urlencoded)")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise FormError("the form is not UTF-8") from None
    return Form(parse_qs(text, keep_blank_values=True, max_num_fields=10_000))
