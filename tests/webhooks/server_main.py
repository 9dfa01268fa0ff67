"""The tidings app for the webhook tests: ``build_app(settings)`` is ``create_app``, wrapped.

Run as a script it serves the app on a port, for the tests that kill the process::

    python tests/webhooks/server_main.py --settings settings.json --port 8601
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import uvicorn

from tidings.node import Node
from tidings.server.app import TidingsApp, create_app
from tidings.settings import Settings
from tidings.webhooks.service import WebhookService


@dataclass
class Server:
    app: TidingsApp
    node: Node
    service: WebhookService


def build_app(settings: Settings) -> Server:
    app = create_app(settings)
    return Server(app, app.node, app.webhooks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with open(args.settings) as file:
        settings = Settings(**json.load(file))
    server = build_app(settings)
    uvicorn.run(server.app, host="127.0.0.1", port=args.port, log_level="warning", ws="none", lifespan="on")


if __name__ == "__main__":
    main()
