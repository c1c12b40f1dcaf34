"""Small JSON state files that other processes read while they are being replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, payload: object) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's object, or None when it does not exist (yet) or cannot be parsed."""
    try:
        value: dict[str, Any] = json.loads(path.read_text())
        return value
    except (FileNotFoundError, json.JSONDecodeError):
        return None
