"""Publish from a script with the server API client (sync), idempotently.

    python examples/python_publish.py news '{"headline": "hi"}'
"""

from __future__ import annotations

import json
import os
import sys
import uuid

import tidings

with tidings.ServerAPI(os.environ.get("TIDINGS_URL", "http://127.0.0.1:8600"),
                       api_key=os.environ.get("TIDINGS_API_KEY")) as api:
    key = str(uuid.uuid4())  # retrying with the same key publishes once
    result = api.publish(sys.argv[1], json.loads(sys.argv[2]), idempotency_key=key)
    print(f"published at offset {result['offset']} (epoch {result['epoch']})")
