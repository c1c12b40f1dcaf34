"""What `ganforge local`'s Prometheus is told to scrape: running pods with the named port (the
configuration itself is checked with promtool in tests/integration/observability)."""

from __future__ import annotations

from kubernetes import client

from ganforge.local.monitoring import pod_targets


def _pod(name: str, phase: str, ip: str | None, ports: dict[str, int]) -> client.V1Pod:
    container = client.V1Container(name="main", ports=[client.V1ContainerPort(container_port=port, name=port_name)
                                                      for port_name, port in ports.items()])
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, namespace="ns"),
                        spec=client.V1PodSpec(containers=[container], node_name="spot-1"),
                        status=client.V1PodStatus(phase=phase, pod_ip=ip))


def test_only_running_pods_with_the_port_are_targets() -> None:
    pods = [_pod("w0", "Running", "10.244.2.2", {"metrics": 9100, "rendezvous": 29500}),
            _pod("pending", "Pending", None, {"metrics": 9100}),
            _pod("no-metrics", "Running", "10.244.2.3", {"http": 8000})]
    assert pod_targets(pods, "metrics") == [
        {"targets": ["10.244.2.2:9100"], "labels": {"namespace": "ns", "pod": "w0", "node": "spot-1"}}]
