"""Pod volumes materialised as host directories, bind-mounted by the shim at each mountPath.

ConfigMap, Secret, downward API and projected ServiceAccount tokens are written as files under
the pod's state directory; PersistentVolumeClaims resolve to their bound PersistentVolume's host
path. The node reads these objects with its own node identity, so the Node authorizer decides,
exactly as it does for kubelet.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ganforge.local.node.environment import Pod, field_ref
from ganforge.local.node.shim import MountSpec

# Refresh a projected token once 80% of its lifetime has passed, like kubelet.
TOKEN_REFRESH_FRACTION = 0.8
DEFAULT_TOKEN_SECONDS = 3607


class VolumeNotReady(RuntimeError):
    """A volume's source does not exist yet (unbound claim, missing ConfigMap): retry later."""


class VolumeSourceReader(Protocol):
    def object_data(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None: ...
    def binary_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes] | None: ...
    def claim_host_path(self, namespace: str, claim: str) -> str | None: ...
    def request_token(self, pod: Pod, audience: str | None, seconds: int) -> str: ...


@dataclass
class TokenFile:
    path: Path
    audience: str | None
    seconds: int
    written_at: float


def _write_file(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    temporary.chmod(mode)
    os.replace(temporary, path)


class PodVolumes:
    """Prepares every volume of one pod under `root` and remembers tokens to refresh."""

    def __init__(self, pod: Pod, root: Path, reader: VolumeSourceReader) -> None:
        self.pod = pod
        self.root = root
        self.reader = reader
        self.host_paths: dict[str, str] = {}
        self.tokens: list[TokenFile] = []

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
        directory = self.root / "files" / name
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume or "secret" in volume:
            self._write_object_files(directory, volume, volume.get("configMap") or volume["secret"])
        elif "downwardAPI" in volume:
            self._write_downward(directory, volume["downwardAPI"].get("items", []), volume["downwardAPI"])
        elif "projected" in volume:
            self._write_projected(directory, volume["projected"])
        else:
            kinds = sorted(set(volume) - {"name"})
            raise VolumeNotReady(f"volume {name!r}: unsupported volume type {kinds}")
        return str(directory)

    def _write_object_files(self, directory: Path, volume: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        object_name = source.get("name") or source.get("secretName", "")
        self._write_keys(directory, kind, object_name, source, default_mode=source.get("defaultMode", 0o644))

    def _write_keys(
        self, directory: Path, kind: str, object_name: str, source: Mapping[str, Any], default_mode: int
    ) -> None:
        namespace = self.pod["metadata"]["namespace"]
        data = self.reader.binary_data(kind, namespace, object_name)
        if data is None:
            if source.get("optional"):
                return
            raise VolumeNotReady(f"{kind} {object_name!r} not found")
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise VolumeNotReady(f"{kind} {object_name!r} has no key {item['key']!r}")
            _write_file(directory / item["path"], data[item["key"]], item.get("mode", default_mode))

    def _write_downward(self, directory: Path, items: list[Mapping[str, Any]], source: Mapping[str, Any]) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise VolumeNotReady(f"downwardAPI item {item['path']!r}: only fieldRef is supported")
            value = field_ref(self.pod, item["fieldRef"]["fieldPath"]).encode()
            _write_file(directory / item["path"], value, item.get("mode", source.get("defaultMode", 0o644)))

    def _write_projected(self, directory: Path, projected: Mapping[str, Any]) -> None:
        mode = projected.get("defaultMode", 0o644)
        for source in projected.get("sources", []):
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                token = TokenFile(directory / spec["path"], spec.get("audience"),
                                  int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)), 0.0)
                self._write_token(token, mode)
                self.tokens.append(token)
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                spec = source.get("configMap") or source["secret"]
                self._write_keys(directory, kind, spec["name"], spec, default_mode=mode)
            elif "downwardAPI" in source:
                self._write_downward(directory, source["downwardAPI"].get("items", []), {"defaultMode": mode})

    def _write_token(self, token: TokenFile, mode: int = 0o644) -> None:
        value = self.reader.request_token(self.pod, token.audience, token.seconds)
        _write_file(token.path, value.encode(), mode)
        token.written_at = time.monotonic()

    def refresh_tokens(self) -> None:
        for token in self.tokens:
            if time.monotonic() - token.written_at > TOKEN_REFRESH_FRACTION * token.seconds:
                self._write_token(token)

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
