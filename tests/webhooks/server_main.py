"""A minimal tidings server for the webhook tests (until ``create_app`` lands on this branch).

``build_app(settings)`` gives a FastAPI app with a Node, the webhook service mounted, a
``POST /api/publish`` and the JSON error shape. Run as a script it serves that app on a port, for
the tests that kill the process::

    python tests/webhooks/server_main.py --settings settings.json --port 8601
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tidings.exceptions import TidingsError
from tidings.node import Node
from tidings.settings import Settings
from tidings.webhooks.service import WebhookService


class PublishIn(BaseModel):
    channel: str
    data: Any = None
    event: str = "message"
    idempotency_key: str | None = None


@dataclass
class Server:
    app: FastAPI
    node: Node
    service: WebhookService


def build_app(settings: Settings) -> Server:
    node = Node(settings)
    service = WebhookService(node)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            await node.stop()

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(TidingsError)
    async def tidings_error(request: Request, exc: TidingsError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(str(e.get("msg")) for e in exc.errors())
        return JSONResponse({"error": {"code": "bad_request", "message": message}},
                            status_code=422)

    @app.post("/api/publish")
    async def publish(body: PublishIn) -> dict[str, Any]:
        result = await node.publish(body.channel, body.data, event=body.event,
                                    idempotency_key=body.idempotency_key)
        pub = result.publication
        return {"channel": pub.channel, "offset": pub.offset, "epoch": pub.epoch, "id": pub.id}

    service.mount(app)
    return Server(app, node, service)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with open(args.settings) as file:
        settings = Settings(**json.load(file))
    server = build_app(settings)
    uvicorn.run(server.app, host="127.0.0.1", port=args.port, log_level="warning", ws="none")


if __name__ == "__main__":
    main()
