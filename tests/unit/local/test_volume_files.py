"""ConfigMap, Secret and projected volume files: kubelet's atomic layout and their refresh."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from ganforge.local.node import volumes
from ganforge.local.node.environment import Pod
from ganforge.local.node.volumes import DATA_LINK, PodVolumes, write_atomically


class Sources:
    """The objects a node would read from the apiserver, editable by the test."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, bytes]] = {}
        self.tokens_issued = 0

    def binary_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes] | None:
        return self.objects.get((kind, name))

    def object_data(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        data = self.binary_data(kind, namespace, name)
        return None if data is None else {k: v.decode() for k, v in data.items()}

    def claim_host_path(self, namespace: str, claim: str) -> str | None:
        return None

    def request_token(self, pod: Pod, audience: str | None, seconds: int) -> str:
        self.tokens_issued += 1
        return f"token-{self.tokens_issued}"


def pod_with(*pod_volumes: dict[str, object]) -> Pod:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"volumes": list(pod_volumes)}}


def test_files_are_symlinks_through_one_data_link(tmp_path: Path) -> None:
    write_atomically(tmp_path, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    version = os.readlink(tmp_path / DATA_LINK)
    assert version.startswith("..") and (tmp_path / version).is_dir()
    assert os.readlink(tmp_path / "a") == f"{DATA_LINK}/a"
    assert os.readlink(tmp_path / "dir") == f"{DATA_LINK}/dir"
    assert (tmp_path / "dir" / "b").read_bytes() == b"2"
    assert oct((tmp_path / "dir" / "b").stat().st_mode & 0o777) == "0o600"

    write_atomically(tmp_path, {"a": (b"changed", 0o644)})
    assert (tmp_path / "a").read_bytes() == b"changed"
    assert not (tmp_path / "dir").exists() and not (tmp_path / version).exists()
    # Only the data link, the current version and the visible names remain.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DATA_LINK, os.readlink(tmp_path / DATA_LINK), "a"])


def test_a_directory_of_plain_files_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("old")
    write_atomically(tmp_path, {"a": (b"new", 0o644), "sub/x": (b"new", 0o644)})
    assert (tmp_path / "a").read_text() == "new" and (tmp_path / "sub" / "x").read_text() == "new"


def test_an_edited_configmap_reaches_the_files_at_the_next_refresh(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sources = Sources()
    sources.objects[("ConfigMap", "settings")] = {"mode": b"a"}
    pod = pod_with({"name": "cfg", "configMap": {"name": "settings"}})
    pod_volumes = PodVolumes(pod, tmp_path, sources)
    pod_volumes.prepare()
    file = Path(pod_volumes.host_paths["cfg"]) / "mode"
    assert file.read_text() == "a"

    sources.objects[("ConfigMap", "settings")] = {"mode": b"b"}
    pod_volumes.refresh()  # within the refresh period: nothing is read yet
    assert file.read_text() == "a"
    monkeypatch.setattr(volumes, "VOLUME_REFRESH_SECONDS", 0.0)
    pod_volumes.refresh()
    assert file.read_text() == "b"

    del sources.objects[("ConfigMap", "settings")]  # a deleted source keeps the last files
    pod_volumes.refresh()
    assert file.read_text() == "b"


def test_projected_token_is_kept_until_due_and_ca_follows_its_configmap(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sources = Sources()
    sources.objects[("ConfigMap", "kube-root-ca.crt")] = {"ca.crt": b"old-ca"}
    projected = {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}
    pod_volumes = PodVolumes(pod_with({"name": "sa", "projected": projected}), tmp_path, sources)
    pod_volumes.prepare()
    directory = Path(pod_volumes.host_paths["sa"])
    assert [(directory / n).read_text() for n in ("token", "ca.crt", "namespace")] == ["token-1", "old-ca", "ns"]

    monkeypatch.setattr(volumes, "VOLUME_REFRESH_SECONDS", 0.0)
    sources.objects[("ConfigMap", "kube-root-ca.crt")] = {"ca.crt": b"new-ca"}
    pod_volumes.refresh()
    assert (directory / "ca.crt").read_text() == "new-ca"
    assert (directory / "token").read_text() == "token-1" and sources.tokens_issued == 1

    for token in pod_volumes.tokens.values():
        token.issued_at -= 0.81 * 3600  # past 80% of its lifetime
    pod_volumes.refresh()
    assert (directory / "token").read_text() == "token-2"
