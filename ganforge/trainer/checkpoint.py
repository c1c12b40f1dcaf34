"""Checkpoints: atomic, verified, pruned, written in the background.

The format (directory layout, manifest, verification) is ganforge.api.checkpoint_format's. A
checkpoint exists once its directory has its final name (local: a temp directory is fsynced and
renamed) or once manifest.json exists (object stores, where the manifest is the commit point). On
load, every file is checked against the manifest, so torn, truncated or bit-flipped checkpoints are
skipped in favour of the newest one that verifies. A read that fails for another reason (EIO, a
stale handle, a store timeout) is retried and never taken for corruption; and if checkpoints exist
but none verifies, the run stops rather than silently start over from zero.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ganforge.api.checkpoint_format import (
    MANIFEST,
    PREFIX,
    SPEC_FILE,
    STATE_FILE,
    CheckpointCorrupt,
    checkpoint_name,
    parse_manifest,
    read_verified,
    sha256_hex,
    with_manifest,
)
from ganforge.trainer.config import resolve_uri
from ganforge.trainer.errors import CheckpointStorageError, ConfigError, NoUsableCheckpointError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
# A checkpoint being replaced by one of the same name is renamed to this prefix first; if the
# writer dies before the new one takes its name, the next prepare() renames it back.
REPLACED_PREFIX = ".replaced-"
READ_ATTEMPTS = 4
READ_RETRY_SECONDS = 0.5  # doubled after each failed attempt: 0.5 + 1 + 2 s in all

# fsspec protocols whose filesystem ships in an extra, and that extra's name.
STORE_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def with_retries(description: str, action: Callable[[], Any], attempts: int = READ_ATTEMPTS) -> Any:
    """`action()`, retried with backoff on errors that may pass (not on a missing file)."""
    delay = READ_RETRY_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except FileNotFoundError:
            raise
        except OSError as error:
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d of %d), retrying in %.1fs: %s", description, attempt, attempts,
                        delay, error)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class Storage(Protocol):
    def describe(self, name: str = "") -> str: ...
    def probe(self) -> None: ...
    def list_names(self) -> list[str]: ...
    def exists(self, name: str) -> bool: ...
    def read(self, name: str, file: str) -> bytes: ...
    def write_checkpoint(self, name: str, files: dict[str, bytes]) -> None: ...
    def delete(self, name: str) -> None: ...
    def quarantine(self, name: str) -> str: ...
    def cleanup_partial(self) -> list[str]: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: str | Path, uri: str | None = None) -> None:
        self.root = Path(root)
        # How the job names this place (pvc://claim/dir, file:///dir). The job's status and the
        # errors say that, since the mount path means nothing outside this pod.
        self.uri = uri or str(self.root)

    def describe(self, name: str = "") -> str:
        return f"{self.uri.rstrip('/')}/{name}" if name else self.uri

    def _named(self) -> str:
        return f"{self.uri} (mounted at {self.root})" if self.uri.startswith("pvc://") else self.uri

    def probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as error:
            raise CheckpointStorageError(
                f"checkpoint location {self._named()} is not writable: {error.strerror or error}"
            ) from None

    def list_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith(PREFIX) and p.is_dir())

    def exists(self, name: str) -> bool:
        return (self.root / name / MANIFEST).is_file()

    def read(self, name: str, file: str) -> bytes:
        return (self.root / name / file).read_bytes()

    def write_checkpoint(self, name: str, files: dict[str, bytes]) -> None:
        tmp = self.root / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        target = self.root / name
        replaced = None
        try:
            tmp.mkdir(parents=True)
            # The manifest goes last so that even a non-atomic copy of the directory is detectable.
            for file_name in sorted(files, key=lambda n: n == MANIFEST):
                with open(tmp / file_name, "wb") as handle:
                    handle.write(files[file_name])
                    handle.flush()
                    os.fsync(handle.fileno())
            _fsync_dir(tmp)
            if target.exists():
                # Same progress written again (a finished run restarted): the old one steps aside
                # under a name prepare() restores, so there is no moment without a checkpoint.
                replaced = self.root / f"{REPLACED_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
                os.rename(target, replaced)
            os.rename(tmp, target)
            _fsync_dir(self.root)
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)
        except OSError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if replaced is not None and not target.exists():
                # The new one never took the name: the old one has it back (or, if even that
                # fails, at the next prepare()), and the write's own error is what is reported.
                with contextlib.suppress(OSError):
                    os.rename(replaced, target)
            raise CheckpointStorageError(f"writing checkpoint {target} failed: {error.strerror or error}") from None

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def quarantine(self, name: str) -> str:
        new_name = f"corrupt-{name}-{uuid.uuid4().hex[:6]}"
        os.rename(self.root / name, self.root / new_name)
        return new_name

    def cleanup_partial(self) -> list[str]:
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path.name)
            elif path.name.startswith(REPLACED_PREFIX):
                name = path.name.removeprefix(REPLACED_PREFIX).rsplit("-", 1)[0]
                if (self.root / name).exists():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
                else:  # the writer died between the two renames: the old one is still the checkpoint
                    os.rename(path, self.root / name)
                    log.warning("restored checkpoint %s, whose replacement was never completed", name)
        return removed


class FsspecStorage:
    """Object stores and other fsspec filesystems: no rename, so manifest.json is the commit point."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.url)

    def describe(self, name: str = "") -> str:
        return f"{self.url}/{name}" if name else self.url

    def _p(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def probe(self) -> None:
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            probe = self._p(f"{TMP_PREFIX}probe-{uuid.uuid4().hex}")
            self.fs.pipe(probe, b"ok")
            self.fs.rm(probe)
        except Exception as error:
            raise CheckpointStorageError(f"checkpoint location {self.url} is not writable: {error}") from None

    def list_names(self) -> list[str]:
        try:
            entries = with_retries(f"listing {self.url}", lambda: self.fs.ls(self.path, detail=False))
        except FileNotFoundError:
            return []
        names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n.startswith(PREFIX))

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self._p(name, MANIFEST)))

    def read(self, name: str, file: str) -> bytes:
        data: bytes = with_retries(f"reading {self.describe(name)}/{file}",
                                   lambda: self.fs.cat_file(self._p(name, file)))
        return data

    def write_checkpoint(self, name: str, files: dict[str, bytes]) -> None:
        try:
            if self.exists(name):
                # An object store cannot swap a directory atomically. A checkpoint's name is its
                # image count, and the state at a given count is fixed by the run's trajectory,
                # so the complete one already there is kept rather than torn down and rewritten.
                log.info("checkpoint %s already exists complete; kept", self.describe(name))
                return
            for file_name in sorted(files, key=lambda n: n == MANIFEST):
                path, data = self._p(name, file_name), files[file_name]
                with_retries(f"writing {self.describe(name)}/{file_name}",
                             functools.partial(self.fs.pipe, path, data))
        except Exception as error:
            raise CheckpointStorageError(f"writing checkpoint {self.describe(name)} failed: {error}") from None

    def delete(self, name: str) -> None:
        try:
            self.fs.rm(self._p(name), recursive=True)
        except FileNotFoundError:
            pass

    def quarantine(self, name: str) -> str:
        new_name = f"corrupt-{name}-{uuid.uuid4().hex[:6]}"
        self.fs.mv(self._p(name), self._p(new_name), recursive=True)
        return new_name

    def cleanup_partial(self) -> list[str]:
        removed = []
        for name in self.list_names():
            if not self.exists(name):
                self.delete(name)
                removed.append(name)
        return removed


def open_storage(uri: str, pvc_root: str) -> Storage:
    """The storage behind a checkpoint URI: a path, file://, pvc://claim/path (mounted under
    `pvc_root`) or any fsspec URL."""
    location = resolve_uri(uri, pvc_root)
    if "://" in location:
        _require_filesystem(location)
        return FsspecStorage(location)
    return LocalStorage(location, uri)


def _require_filesystem(url: str) -> None:
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as error:
        extra = STORE_EXTRAS.get(protocol)
        hint = f"install ganforge[{extra}]" if extra else "install the fsspec filesystem for it"
        raise ConfigError(f"spec.checkpoint.uri {url}: no filesystem for {protocol}:// in this image ({hint}): "
                          f"{error}") from None
    except ValueError as error:
        raise ConfigError(f"spec.checkpoint.uri {url}: unknown protocol {protocol}://: {error}") from None


@dataclass(frozen=True)
class CheckpointInfo:
    name: str
    uri: str
    nimg: int
    step: int
    manifest_sha256: str
    created: str
    write_seconds: float = 0.0

    @property
    def kimg(self) -> float:
        return self.nimg / 1000.0


def software_versions() -> dict[str, str | None]:
    """What wrote a checkpoint, for its manifest: a resume or an export on other software can say so."""
    import platform
    from importlib import metadata

    try:
        ganforge_version: str | None = metadata.version("ganforge")
    except metadata.PackageNotFoundError:
        ganforge_version = None
    return {"ganforge": ganforge_version, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version()}


def to_host(obj: Any) -> Any:
    """Deep copy of a state tree with every tensor on the CPU: the only part of a checkpoint that
    stalls training. Afterwards the loop may keep mutating its tensors."""
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu":
            return obj.detach().clone()
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_host(v) for v in obj)
    return obj


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_all_finite(v) for v in obj)
    return True


def encode_checkpoint(state: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {STATE_FILE: buffer.getvalue(), SPEC_FILE: json.dumps(spec, indent=2, sort_keys=True).encode()}
    return with_manifest(files, meta)


def verify(storage: Storage, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest, file contents) of a checkpoint whose every file matches its manifest."""
    try:
        raw_manifest = storage.read(name, MANIFEST)
    except FileNotFoundError as error:
        raise CheckpointCorrupt(f"no manifest ({error})") from None
    manifest = parse_manifest(raw_manifest)
    return manifest, read_verified(manifest, lambda file_name: storage.read(name, file_name))


def decode_state(data: bytes) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state


def info_from_manifest(storage: Storage, name: str, manifest: dict[str, Any], seconds: float = 0.0) -> CheckpointInfo:
    return CheckpointInfo(
        name=name,
        uri=storage.describe(name),
        nimg=int(manifest["nimg"]),
        step=int(manifest["step"]),
        manifest_sha256=manifest["_sha256"],
        created=manifest["created"],
        write_seconds=seconds,
    )


@dataclass
class WriteOutcome:
    info: CheckpointInfo | None = None
    error: BaseException | None = None


@dataclass
class CheckpointManager:
    """Used on rank 0 only. At most one write is in flight; a new save waits for the previous."""

    storage: Storage
    keep_last: int
    on_written: Callable[[CheckpointInfo], None] | None = None
    on_failed: Callable[[BaseException], None] | None = None
    consecutive_failures: int = 0
    newest: CheckpointInfo | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _outcome: WriteOutcome | None = field(default=None, repr=False)

    def prepare(self) -> None:
        self.storage.probe()
        removed = self.storage.cleanup_partial()
        if removed:
            log.warning("removed %d partial checkpoint(s) left by an interrupted write: %s", len(removed), removed)

    def load_latest(self) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """Newest checkpoint that verifies. Corrupt ones are skipped with a warning and renamed to
        corrupt-ckpt-...: kept for inspection, but out of the ordering so they neither shadow newer
        progress nor count towards `keep_last`. A read that keeps failing after retries raises
        CheckpointStorageError and moves nothing; so does finding only corrupt checkpoints
        (NoUsableCheckpointError): starting over would silently throw the run away."""
        names = self.storage.list_names()
        skipped: dict[str, str] = {}
        found: tuple[dict[str, Any], CheckpointInfo] | None = None
        for name in reversed(names):
            try:
                manifest, contents = with_retries(f"reading checkpoint {self.storage.describe(name)}",
                                                  functools.partial(verify, self.storage, name))
                state = decode_state(contents[STATE_FILE])
            except CheckpointCorrupt as error:
                reason = str(error)
            except OSError as error:
                raise CheckpointStorageError(
                    f"reading checkpoint {self.storage.describe(name)} failed {READ_ATTEMPTS} times: {error}; "
                    "nothing was moved") from None
            except Exception as error:  # a payload that verifies but cannot be unpickled
                reason = f"cannot load state.pt: {error}"
            else:
                found = state, info_from_manifest(self.storage, name, manifest)
                self.newest = found[1]
                break
            log.warning("skipping checkpoint %s: %s", self.storage.describe(name), reason)
            skipped[name] = reason
        if found is None and skipped:
            listed = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
            raise NoUsableCheckpointError(
                f"{len(skipped)} checkpoint(s) at {self.storage.describe()} and none verifies ({listed}); nothing "
                "was moved; delete them or set a new spec.checkpoint.uri to start over")
        for name in skipped:
            try:
                log.warning("moved corrupt checkpoint %s aside as %s", name, self.storage.quarantine(name))
            except Exception as error:
                log.warning("could not move corrupt checkpoint %s aside: %s", name, error)
        return found

    def save(self, state: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any], background: bool) -> None:
        """`state` must already be a host copy (see to_host)."""
        self.wait()
        if background:
            self._thread = threading.Thread(target=self._write, args=(state, meta, spec), name="checkpoint-writer",
                                            daemon=True)
            self._thread.start()
        else:
            self._write(state, meta, spec)
            self._raise_if_failed()

    def wait(self) -> WriteOutcome | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        outcome, self._outcome = self._outcome, None
        return outcome

    def _raise_if_failed(self) -> None:
        outcome = self.wait()
        if outcome is not None and outcome.error is not None:
            raise outcome.error

    def _write(self, state: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any]) -> None:
        start = time.perf_counter()
        name = checkpoint_name(int(meta["nimg"]))
        try:
            if not _all_finite({k: state[k] for k in ("G", "D", "G_ema")}):
                raise CheckpointStorageError(f"refusing to write {name}: model weights are not finite")
            files = encode_checkpoint(state, meta, spec)
            self.storage.write_checkpoint(name, files)
            manifest = json.loads(files[MANIFEST])
            manifest["_sha256"] = sha256_hex(files[MANIFEST])
            info = info_from_manifest(self.storage, name, manifest, time.perf_counter() - start)
            self._prune(keep=name)
        except BaseException as error:
            self.consecutive_failures += 1
            self._outcome = WriteOutcome(error=error)
            log.error("checkpoint %s failed (%d in a row): %s", name, self.consecutive_failures, error)
            if self.on_failed is not None:
                self.on_failed(error)
            return
        self.consecutive_failures = 0
        self.newest = info
        self._outcome = WriteOutcome(info=info)
        log.info("checkpoint %s written in %.2fs", info.uri, info.write_seconds)
        if self.on_written is not None:
            self.on_written(info)

    def _prune(self, keep: str) -> None:
        complete = [n for n in self.storage.list_names() if self.storage.exists(n)]
        for name in complete[: max(0, len(complete) - self.keep_last)]:
            if name != keep:
                self.storage.delete(name)
