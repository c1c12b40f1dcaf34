"""Dynamic volumes for the one-machine cluster: a StorageClass and a small external provisioner.

The StorageClass `ganforge-local` (the default class) names the provisioner `ganforge.io/local-path`.
For each PersistentVolumeClaim of that class without a volume, the provisioner makes a directory
`<root>/<namespace>-<claim>-<claim uid>` and a PersistentVolume on it (hostPath) whose claimRef
already names the claim; kube-controller-manager's PV controller then binds the two, exactly as
it binds volumes from any external provisioner. When a claim is deleted the PV controller marks
its volume Released, and with reclaimPolicy Delete the provisioner removes directory and PV.

All local nodes share this machine's filesystem, so a volume carries no node affinity and behaves
like network storage: a pod rescheduled to another node sees the same data. It is not capacity
limited: the request is recorded as the PV's capacity but nothing enforces it.

The provisioner is level-triggered: any watch event, or a resync every few seconds, makes it
compare all claims and volumes with what should exist, so a missed event only costs a delay.
Run it with `python -m ganforge.local.provisioner --kubeconfig FILE --root DIR`, or start it
beside a cluster with LocalStorage.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ganforge.local.control_plane import ControlPlane
from ganforge.local.processes import ManagedProcess
from ganforge.local.service_support import api_client, create_or_replace, grant_cluster_role, launch, wait_until

log = logging.getLogger(__name__)

STORAGE_CLASS = "ganforge-local"
PROVISIONER_NAME = "ganforge.io/local-path"
PROVISIONER_USER = "ganforge:local-path-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# The PV controller sets this on claims it leaves to an external provisioner.
STORAGE_PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
RESYNC_SECONDS = 5.0

_PROVISIONER_RULES = [
    client.V1PolicyRule(api_groups=[""], resources=["persistentvolumeclaims"], verbs=["get", "list", "watch"]),
    client.V1PolicyRule(
        api_groups=[""], resources=["persistentvolumes"], verbs=["get", "list", "watch", "create", "delete"]
    ),
]


def storage_class() -> client.V1StorageClass:
    return client.V1StorageClass(
        metadata=client.V1ObjectMeta(
            name=STORAGE_CLASS,
            annotations={"storageclass.kubernetes.io/is-default-class": "true"},
        ),
        provisioner=PROVISIONER_NAME,
        reclaim_policy="Delete",
        # Every node sees every volume, so there is no reason to wait for a pod's node choice.
        volume_binding_mode="Immediate",
    )


# API objects are typed Any below: the generated client declares every field Optional, even those
# the API server always sets (metadata, spec), which would turn each access into a None check.
Claim = Any
Volume = Any


def volume_name(claim: Claim) -> str:
    # The claim's UID makes the name unique and lets a restarted provisioner find its own work.
    return f"pvc-{claim.metadata.uid}"


def volume_directory(root: Path, claim: Claim) -> Path:
    meta = claim.metadata
    return root / f"{meta.namespace}-{meta.name}-{meta.uid}"


def persistent_volume(root: Path, claim: Claim) -> client.V1PersistentVolume:
    meta = claim.metadata
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=volume_name(claim), annotations={PROVISIONED_BY: PROVISIONER_NAME}),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": claim.spec.resources.requests["storage"]},
            access_modes=list(claim.spec.access_modes or ["ReadWriteOnce"]),
            persistent_volume_reclaim_policy="Delete",
            storage_class_name=STORAGE_CLASS,
            volume_mode="Filesystem",
            host_path=client.V1HostPathVolumeSource(
                path=str(volume_directory(root, claim)), type="DirectoryOrCreate"
            ),
            # Pre-binding: the PV controller binds this volume to this claim and no other.
            claim_ref=client.V1ObjectReference(
                api_version="v1", kind="PersistentVolumeClaim",
                namespace=meta.namespace, name=meta.name, uid=meta.uid,
            ),
        ),
    )


def claim_host_path(core: client.CoreV1Api, namespace: str, claim: str) -> str | None:
    """The host directory behind a bound claim (hostPath or local volume); None while it is
    unbound, missing, not readable by this client, or on another kind of volume."""
    try:
        pvc = json.loads(core.read_namespaced_persistent_volume_claim(claim, namespace, _preload_content=False).data)
    except ApiException as error:
        if error.status in (403, 404):
            return None
        raise
    if pvc.get("status", {}).get("phase") != "Bound":
        return None
    volume = json.loads(core.read_persistent_volume(pvc["spec"]["volumeName"], _preload_content=False).data)
    source = volume["spec"].get("hostPath") or volume["spec"].get("local")
    return None if source is None else str(source["path"])


def _items(listing: Any) -> list[Any]:
    items: list[Any] = listing.items
    return items


@dataclass
class Provisioner:
    """The reconcile loop. `api` acts as PROVISIONER_USER; `root` holds the volume directories."""

    api: ApiClient
    root: Path
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def run(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        core = client.CoreV1Api(self.api)
        for lister in (core.list_persistent_volume_claim_for_all_namespaces, core.list_persistent_volume):
            threading.Thread(target=self._watch, args=(lister,), daemon=True).start()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.reconcile()
            except ApiException as error:
                log.warning("reconcile failed: %s %s", error.status, error.reason)
            except OSError as error:
                log.warning("reconcile failed: %s", error)
            self._wake.wait(RESYNC_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _watch(self, lister: Callable[..., Any]) -> None:
        # Events only wake the loop; it re-lists, so the watch needs no bookmark bookkeeping.
        while not self._stopping.is_set():
            try:
                events = watch.Watch().stream(lister, timeout_seconds=60)  # type: ignore[no-untyped-call]
                for _ in events:
                    self._wake.set()
            except Exception as error:  # a broken watch is retried, never fatal
                log.debug("watch ended: %s", error)
                time.sleep(1)

    def reconcile(self) -> None:
        core = client.CoreV1Api(self.api)
        volumes: dict[str, Volume] = {pv.metadata.name: pv for pv in _items(core.list_persistent_volume())}
        for claim in _items(core.list_persistent_volume_claim_for_all_namespaces()):
            if self._wants_volume(claim) and volume_name(claim) not in volumes:
                self._provision(core, claim)
        for volume in volumes.values():
            annotations = volume.metadata.annotations or {}
            if (
                annotations.get(PROVISIONED_BY) == PROVISIONER_NAME
                and volume.status is not None
                and volume.status.phase in ("Released", "Failed")
                and volume.spec.persistent_volume_reclaim_policy == "Delete"
                and volume.metadata.deletion_timestamp is None
            ):
                self._delete(core, volume)

    @staticmethod
    def _wants_volume(claim: Claim) -> bool:
        # A claim created with no class is given the default one by the PV controller
        # (retroactive default StorageClass assignment), so checking the class suffices.
        return (
            claim.spec.storage_class_name == STORAGE_CLASS
            and not claim.spec.volume_name
            and claim.metadata.deletion_timestamp is None
            # A directory cannot back a raw block device; such a claim stays Pending.
            and (claim.spec.volume_mode or "Filesystem") == "Filesystem"
            and (claim.status is None or claim.status.phase in (None, "Pending"))
        )

    def _provision(self, core: client.CoreV1Api, claim: Claim) -> None:
        directory = volume_directory(self.root, claim)
        directory.mkdir(parents=True, exist_ok=True)
        # Pods run as any user; the directory is theirs the way a fresh network volume would be.
        directory.chmod(0o777)
        try:
            core.create_persistent_volume(persistent_volume(self.root, claim))
        except ApiException as error:
            if error.status != 409:
                raise
            return
        log.info("provisioned %s for %s/%s at %s", volume_name(claim), claim.metadata.namespace,
                 claim.metadata.name, directory)

    def _delete(self, core: client.CoreV1Api, volume: Volume) -> None:
        path = Path(volume.spec.host_path.path)
        # Never delete outside our root, whatever a PV with our annotation says.
        if path.resolve().parent == self.root.resolve():
            shutil.rmtree(path, ignore_errors=True)
        else:
            log.warning("not deleting %s of %s: outside %s", path, volume.metadata.name, self.root)
        try:
            core.delete_persistent_volume(volume.metadata.name)
        except ApiException as error:
            if error.status != 404:
                raise
        log.info("deleted %s and %s", volume.metadata.name, path)


@dataclass
class LocalStorage:
    """Installs the StorageClass and runs the provisioner as a supervised cluster process."""

    plane: ControlPlane
    root: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def volumes_root(self) -> Path:
        return self.root if self.root is not None else self.plane.workdir / "volumes"

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            with api_client(self.plane.admin_kubeconfig) as api:
                grant_cluster_role(api, "ganforge:local-path-provisioner", PROVISIONER_USER, _PROVISIONER_RULES)
                storage = client.StorageV1Api(api)
                create_or_replace(
                    lambda: storage.create_storage_class(storage_class()),
                    # Parameters of a StorageClass are immutable; an existing one is left as it is.
                    lambda: None,
                )
            kubeconfig = self.plane.issue_client_kubeconfig("local-path-provisioner", PROVISIONER_USER)
            self.volumes_root.mkdir(parents=True, exist_ok=True)
            ready_file = self.plane.workdir / "local-path-provisioner.ready"
            ready_file.unlink(missing_ok=True)
            self.process = launch(
                self.plane,
                "local-path-provisioner",
                [
                    sys.executable, "-m", "ganforge.local.provisioner",
                    f"--kubeconfig={kubeconfig}", f"--root={self.volumes_root}", f"--ready-file={ready_file}",
                ],
            )
            wait_until(
                self.process,
                lambda: None if ready_file.exists() else "no first reconcile yet",
                deadline,
                "the provisioner's first reconcile",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganforge.local.provisioner", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--root", required=True, type=Path, help="directory that holds the volumes")
    parser.add_argument("--ready-file", type=Path, help="touched after the first successful reconcile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    with api_client(args.kubeconfig) as api:
        provisioner = Provisioner(api, args.root)
        # Fail fast on a bad kubeconfig or missing permission, before claiming to be ready.
        provisioner.reconcile()
        if args.ready_file is not None:
            args.ready_file.touch()

        def on_term(signum: int, frame: FrameType | None) -> None:
            provisioner.stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        provisioner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
