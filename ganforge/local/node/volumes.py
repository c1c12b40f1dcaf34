"""Pod volumes materialised as host directories, bind-mounted by the shim at each mountPath.

ConfigMap, Secret, downward API and projected volumes are written as files under the pod's state
directory in kubelet's atomic-writer layout: each version of the files lives in its own hidden
directory, `..data` is a symlink to the current one and every visible name is a symlink through
`..data`. A refresh writes a new version and swaps `..data` with one rename, so a running container
sees either the old set of files or the new one, never a mix. Like kubelet, the node re-reads the
sources every VOLUME_REFRESH_SECONDS, so an edited ConfigMap, a rotated Secret or a new CA bundle
reaches running pods; subPath mounts, as on kubelet, keep what they saw at start.

PersistentVolumeClaims resolve to their bound PersistentVolume's host path. The node reads these
objects with its own node identity, so the Node authorizer decides, exactly as it does for kubelet.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ganforge.local.node.environment import Pod, field_ref
from ganforge.local.node.shim import MountSpec

log = logging.getLogger(__name__)

# Refresh a projected token once 80% of its lifetime has passed, like kubelet.
TOKEN_REFRESH_FRACTION = 0.8
DEFAULT_TOKEN_SECONDS = 3607
# How stale a ConfigMap, Secret or projected file may get in a running pod (kubelet: its sync
# period of a minute plus its cache's TTL; shorter here, since a node has few pods).
VOLUME_REFRESH_SECONDS = 10.0
DATA_LINK = "..data"

# A volume's files: relative path -> (content, mode).
Payload = dict[str, tuple[bytes, int]]


class VolumeNotReady(RuntimeError):
    """A volume's source does not exist yet (unbound claim, missing ConfigMap): retry later."""


class VolumeSourceReader(Protocol):
    def object_data(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None: ...
    def binary_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes] | None: ...
    def claim_host_path(self, namespace: str, claim: str) -> str | None: ...
    def request_token(self, pod: Pod, audience: str | None, seconds: int) -> str: ...


@dataclass
class IssuedToken:
    value: bytes
    seconds: int
    issued_at: float

    def due(self, now: float) -> bool:
        return now - self.issued_at > TOKEN_REFRESH_FRACTION * self.seconds


@dataclass
class FileVolume:
    """A volume whose files the node writes, with what it wrote last."""

    spec: Mapping[str, Any]
    directory: Path
    payload: Payload


def _replace_with_symlink(path: Path, target: str) -> None:
    temporary = path.with_name(f"..{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(temporary, path)


def write_atomically(directory: Path, payload: Payload) -> None:
    """Publish `payload` as the volume's files in one rename (kubelet's AtomicWriter layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=directory))
    for relative, (content, mode) in payload.items():
        path = version / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    version.chmod(0o755)
    _replace_with_symlink(directory / DATA_LINK, version.name)
    visible = {Path(relative).parts[0] for relative in payload}
    for name in visible:
        link = directory / name
        if not (link.is_symlink() and os.readlink(link) == f"{DATA_LINK}/{name}"):
            _replace_with_symlink(link, f"{DATA_LINK}/{name}")
    for entry in directory.iterdir():
        if entry.name in (DATA_LINK, version.name) or entry.name in visible:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class PodVolumes:
    """Prepares every volume of one pod under `root` and keeps file volumes fresh."""

    def __init__(self, pod: Pod, root: Path, reader: VolumeSourceReader) -> None:
        self.pod = pod
        self.root = root
        self.reader = reader
        self.host_paths: dict[str, str] = {}
        self.file_volumes: dict[str, FileVolume] = {}
        self.tokens: dict[tuple[str, str], IssuedToken] = {}
        self.refreshed_at = time.monotonic()

    def prepare(self) -> None:
        for volume in self.pod["spec"].get("volumes", []):
            if volume["name"] not in self.host_paths:
                self.host_paths[volume["name"]] = self._prepare_one(volume)

    def _prepare_one(self, volume: Mapping[str, Any]) -> str:
        name = volume["name"]
        namespace = self.pod["metadata"]["namespace"]
        if "emptyDir" in volume:
            path = self.root / "empty-dir" / name
            path.mkdir(parents=True, exist_ok=True)
            return str(path)
        if "hostPath" in volume:
            source = volume["hostPath"]
            kind = source.get("type", "")
            if kind == "DirectoryOrCreate":
                Path(source["path"]).mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate":
                Path(source["path"]).parent.mkdir(parents=True, exist_ok=True)
                Path(source["path"]).touch()
            elif not Path(source["path"]).exists():
                raise VolumeNotReady(f"volume {name!r}: hostPath {source['path']} does not exist")
            return str(source["path"])
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            host_path = self.reader.claim_host_path(namespace, claim)
            if host_path is None:
                raise VolumeNotReady(f"volume {name!r}: PersistentVolumeClaim {claim!r} is not bound")
            Path(host_path).mkdir(parents=True, exist_ok=True)
            return host_path
        if not any(kind in volume for kind in ("configMap", "secret", "downwardAPI", "projected")):
            kinds = sorted(set(volume) - {"name"})
            raise VolumeNotReady(f"volume {name!r}: unsupported volume type {kinds}")
        file_volume = FileVolume(volume, self.root / "files" / name, self._payload(volume))
        write_atomically(file_volume.directory, file_volume.payload)
        self.file_volumes[name] = file_volume
        return str(file_volume.directory)

    def refresh(self, force: bool = False) -> None:
        """Re-read every file volume's sources and publish what changed; tokens near expiry are
        re-issued. A source that disappeared leaves the files as they were, as on kubelet."""
        now = time.monotonic()
        token_due = any(token.due(now) for token in self.tokens.values())
        if not (force or token_due or now - self.refreshed_at >= VOLUME_REFRESH_SECONDS):
            return
        self.refreshed_at = now
        for name, volume in self.file_volumes.items():
            try:
                payload = self._payload(volume.spec)
            except Exception as error:  # a missing source or an unreachable apiserver alike: keep the files
                log.warning("pod %s volume %s not refreshed: %s", self.pod["metadata"]["name"], name, error)
                continue
            if payload != volume.payload:
                write_atomically(volume.directory, payload)
                volume.payload = payload

    # -- what a file volume holds ----------------------------------------------------------------

    def _payload(self, volume: Mapping[str, Any]) -> Payload:
        if "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            source = volume.get("configMap") or volume["secret"]
            object_name = source.get("name") or source.get("secretName", "")
            return self._object_payload(kind, object_name, source, source.get("defaultMode", 0o644))
        if "downwardAPI" in volume:
            source = volume["downwardAPI"]
            return self._downward_payload(source.get("items", []), source.get("defaultMode", 0o644))
        return self._projected_payload(volume["name"], volume["projected"])

    def _object_payload(self, kind: str, object_name: str, source: Mapping[str, Any], default_mode: int) -> Payload:
        namespace = self.pod["metadata"]["namespace"]
        data = self.reader.binary_data(kind, namespace, object_name)
        if data is None:
            if source.get("optional"):
                return {}
            raise VolumeNotReady(f"{kind} {object_name!r} not found")
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        payload: Payload = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise VolumeNotReady(f"{kind} {object_name!r} has no key {item['key']!r}")
            payload[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
        return payload

    def _downward_payload(self, items: list[Mapping[str, Any]], default_mode: int) -> Payload:
        payload: Payload = {}
        for item in items:
            if "fieldRef" not in item:
                raise VolumeNotReady(f"downwardAPI item {item['path']!r}: only fieldRef is supported")
            value = field_ref(self.pod, item["fieldRef"]["fieldPath"]).encode()
            payload[item["path"]] = (value, item.get("mode", default_mode))
        return payload

    def _projected_payload(self, volume_name: str, projected: Mapping[str, Any]) -> Payload:
        mode = projected.get("defaultMode", 0o644)
        payload: Payload = {}
        for source in projected.get("sources", []):
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                token = self._token(volume_name, spec)
                payload[spec["path"]] = (token.value, mode)
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                spec = source.get("configMap") or source["secret"]
                payload.update(self._object_payload(kind, spec["name"], spec, mode))
            elif "downwardAPI" in source:
                payload.update(self._downward_payload(source["downwardAPI"].get("items", []), mode))
        return payload

    def _token(self, volume_name: str, spec: Mapping[str, Any]) -> IssuedToken:
        key = (volume_name, spec["path"])
        token = self.tokens.get(key)
        now = time.monotonic()
        if token is None or token.due(now):
            seconds = int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
            value = self.reader.request_token(self.pod, spec.get("audience"), seconds)
            token = self.tokens[key] = IssuedToken(value.encode(), seconds, now)
        return token

    def mounts_for(self, container: Mapping[str, Any]) -> list[MountSpec]:
        mounts = []
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in self.host_paths:
                raise VolumeNotReady(f"volumeMount {mount['name']!r} refers to no volume of the pod")
            source = Path(self.host_paths[mount["name"]])
            if mount.get("subPath"):
                source = source / mount["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(
                MountSpec(str(source), mount["mountPath"], bool(mount.get("readOnly")), is_file=source.is_file())
            )
        return mounts


def decode_binary(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    if kind == "Secret":
        return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
    data = {key: value.encode() for key, value in (obj.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    return data
