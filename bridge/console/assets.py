"""Static files under a content hash: ``static/<hash>/console.css``.

A changed file gets a new URL, so every asset can be cached forever
(``Cache-Control: immutable``); an old hash answers 404 rather than stale bytes.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"


class Assets:
    def __init__(self, prefix: str, directory: Path = STATIC) -> None:
        self.prefix = prefix.rstrip("/")
        self._files: dict[str, tuple[str, bytes, str]] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                body = path.read_bytes()
                digest = hashlib.sha256(body).hexdigest()[:16]
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self._files[path.name] = (digest, body, kind)

    def url(self, name: str) -> str:
        digest = self._files[name][0]
        return f"{self.prefix}/{digest}/{name}"

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = self._files.get(name)
        if found is None or found[0] != request.path_params["digest"]:
            return Response("not found", status_code=404, media_type="text/plain")
        digest, body, kind = found
        charset = (
            "; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else ""
        )
        return Response(
            body,
            headers={
                "Content-Type": kind + charset,
                "Cache-Control": IMMUTABLE,
                "ETag": f'"{digest}"',
                "X-Content-Type-Options": "nosniff",
            },
        )
