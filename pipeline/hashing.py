"""Content hashes for cache keys: the same payload always gives the same short key."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def hash_payload(payload: Any) -> str:
    """Stable short content hash of a JSON-able payload (sorted keys), used for cache keys."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
