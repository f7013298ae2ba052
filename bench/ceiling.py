"""The ceiling for a Python receiver: a bare Starlette app on the same uvicorn
settings as `lead-bridge serve` that only parses the JSON and answers 200."""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    leads = json.loads(await request.body())
    body = json.dumps({"accepted": len(leads), "duplicates": 0, "rejected": 0})
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/lead/webhook", webhook, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        proxy_headers=True,
        access_log=False,
        log_config=None,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
