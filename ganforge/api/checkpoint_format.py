"""The on-disk checkpoint format, shared by the trainer (which writes and resumes from it) and the
export (which reads the EMA generator out of it).

    ckpt-000000128000/   images seen, zero-padded so names sort by progress
        state.pt         torch.save of the run's tensors (G, D, G_ema, optimisers, RNG, ...)
        spec.json        the job spec that produced it
        manifest.json    written last: formatVersion, progress and model facts, and the size and
                         sha256 of every other file

Only hashlib and json here: verifying a checkpoint needs no torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FORMAT_VERSION = 1
PREFIX = "ckpt-"
MANIFEST = "manifest.json"
STATE_FILE = "state.pt"
SPEC_FILE = "spec.json"
# The EMA generator's state dict inside state.pt: what export serves.
EMA_GENERATOR_KEY = "G_ema"
# Beside the checkpoints, in the same format: the real data's reference feature statistics the
# trainer evaluated against, so that the export can ship them with the model and no later step
# (serving's quality gate) needs the dataset.
REFERENCE_DIR = "reference"


class CheckpointCorrupt(Exception):
    """A checkpoint whose files do not match its manifest (torn, truncated, bit-flipped)."""


def checkpoint_name(nimg: int) -> str:
    return f"{PREFIX}{nimg:012d}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_manifest(files: dict[str, bytes], meta: dict[str, Any]) -> dict[str, bytes]:
    """`files` plus the manifest that lists them (write it last: it is the commit point)."""
    manifest = {
        "formatVersion": FORMAT_VERSION,
        **meta,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"bytes": len(data), "sha256": sha256_hex(data)} for name, data in files.items()},
    }
    return {**files, MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode()}


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """The manifest with `_sha256` (of its own bytes, the checkpoint's identity) added."""
    try:
        manifest: dict[str, Any] = json.loads(raw)
        if manifest.get("formatVersion") != FORMAT_VERSION:
            raise CheckpointCorrupt(f"unsupported format version {manifest.get('formatVersion')!r}")
        if not isinstance(manifest["files"], dict):
            raise CheckpointCorrupt("manifest `files` is not a mapping")
    except (ValueError, KeyError, AttributeError) as error:
        raise CheckpointCorrupt(f"manifest is not valid: {error}") from None
    manifest["_sha256"] = sha256_hex(raw)
    return manifest


def read_verified(manifest: dict[str, Any], read: Callable[[str], bytes]) -> dict[str, bytes]:
    """Every file the manifest lists, read with `read(file_name)` and checked for size and sha256.

    A missing file is corruption; any other read error (EIO, a stale NFS handle, a timeout) says
    nothing about the checkpoint and propagates as OSError, for the caller to retry or report."""
    contents: dict[str, bytes] = {}
    for file_name, entry in manifest["files"].items():
        try:
            data = read(file_name)
        except FileNotFoundError as error:
            raise CheckpointCorrupt(f"{file_name} missing ({error})") from None
        if len(data) != entry["bytes"]:
            raise CheckpointCorrupt(f"{file_name} has {len(data)} bytes, manifest says {entry['bytes']}")
        if sha256_hex(data) != entry["sha256"]:
            raise CheckpointCorrupt(f"{file_name} sha256 mismatch")
        contents[file_name] = data
    return contents
