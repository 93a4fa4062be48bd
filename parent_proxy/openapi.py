"""``python -m parent_proxy.openapi``: print the API's OpenAPI document (checked in as docs/openapi.json).

The document depends only on the routes and schemas, so it is built from an app whose services are never used.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI

from parent_proxy.app import create_app


def openapi_document() -> dict[str, Any]:
    app: FastAPI = create_app(None)  # type: ignore[arg-type]  # routes only; no request is served
    document: dict[str, Any] = app.openapi()
    return document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
