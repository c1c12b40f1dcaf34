"""What the cluster services hand to the API and to CoreDNS, checked without a cluster."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from ganforge.local.cluster_dns import corefile
from ganforge.local.provisioner import PROVISIONED_BY, PROVISIONER_NAME, STORAGE_CLASS, persistent_volume, storage_class


def test_corefile_serves_only_the_cluster_zones_on_the_host_address(tmp_path: Path) -> None:
    text = corefile("192.0.2.7", 1053, tmp_path / "dns.kubeconfig", 4001, 4002)
    assert text.splitlines()[0] == "cluster.local:1053 in-addr.arpa:1053 ip6.arpa:1053 {"
    assert "bind 192.0.2.7" in text
    assert f"kubeconfig {tmp_path / 'dns.kubeconfig'} ganforge-local" in text
    assert "ready 127.0.0.1:4002" in text and "health 127.0.0.1:4001" in text
    assert "forward" not in text  # no upstream resolver exists here


def test_volume_is_prebound_to_its_claim_under_the_root(tmp_path: Path) -> None:
    claim = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data", namespace="team", uid="1234"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteMany"],
            storage_class_name=STORAGE_CLASS,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "2Gi"}),
        ),
    )
    volume = persistent_volume(tmp_path, claim)
    assert volume.metadata.name == "pvc-1234"
    assert volume.metadata.annotations == {PROVISIONED_BY: PROVISIONER_NAME}
    assert volume.spec.host_path.path == str(tmp_path / "team-data-1234")
    assert volume.spec.capacity == {"storage": "2Gi"}
    assert volume.spec.access_modes == ["ReadWriteMany"]
    assert volume.spec.persistent_volume_reclaim_policy == "Delete"
    assert volume.spec.node_affinity is None  # every node shares the machine's filesystem
    ref = volume.spec.claim_ref
    assert (ref.namespace, ref.name, ref.uid) == ("team", "data", "1234")


def test_storage_class_is_the_default_and_binds_immediately() -> None:
    storage = storage_class()
    assert storage.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert storage.volume_binding_mode == "Immediate"
    assert storage.reclaim_policy == "Delete"
    assert storage.provisioner == PROVISIONER_NAME
