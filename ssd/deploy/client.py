"""A client of the detection server (`ssd.deploy.server`): post one image, get its JSON reply.

Standard library only, so a client machine needs none of the model's dependencies.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def post_image(url: str, body: bytes, threshold: float | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Client: POST image bytes to `url` (server root or .../detect); the JSON reply, errors included.

    A 4xx/5xx reply is returned as its JSON body plus "status"; connection errors raise OSError.
    """
    base = url.rstrip("/")
    target = base if base.endswith("/detect") else base + "/detect"
    if threshold is not None:
        target += f"?threshold={threshold}"
    request = urllib.request.Request(target, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"status": response.status, **json.loads(response.read())}
    except urllib.error.HTTPError as err:
        return {"status": err.code, **json.loads(err.read() or b"{}")}
