"""Readiness, liveness and startup probes, run from inside the pod's network namespace.

HTTP and TCP probes are made by a short-lived helper in the pod's namespace, so `localhost` and
the pod IP mean what they mean to the container; exec probes run the command there too.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_HTTP_CHECK = """
import sys, urllib.request, urllib.error
url, timeout = sys.argv[1], float(sys.argv[2])
try:
    code = urllib.request.urlopen(url, timeout=timeout).status
except urllib.error.HTTPError as error:
    code = error.code
except Exception as error:
    print(error); sys.exit(1)
sys.exit(0 if 200 <= code < 400 else 1)
"""

_TCP_CHECK = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
"""


def _port(value: object, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    for port in container.get("ports", []):
        if port.get("name") == value:
            return int(port["containerPort"])
    return int(str(value))


def run_probe(probe: Mapping[str, Any], container: Mapping[str, Any], netns: str, pod_ip: str) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "exec" in probe:
        argv = list(probe["exec"]["command"])
    elif "httpGet" in probe:
        spec = probe["httpGet"]
        host = spec.get("host") or pod_ip
        url = f"{spec.get('scheme', 'HTTP').lower()}://{host}:{_port(spec['port'], container)}{spec.get('path', '/')}"
        argv = [sys.executable, "-c", _HTTP_CHECK, url, str(timeout)]
    elif "tcpSocket" in probe:
        spec = probe["tcpSocket"]
        argv = [sys.executable, "-c", _TCP_CHECK, spec.get("host") or pod_ip,
                str(_port(spec["port"], container)), str(timeout)]
    else:
        return True
    try:
        result = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


@dataclass
class ProbeState:
    """Thresholds and timing of one probe of one container attempt, as kubelet counts them."""

    probe: Mapping[str, Any]
    started_at: float
    healthy: bool = False
    last_run: float | None = None
    successes: int = 0
    failures: int = 0

    def due(self, now: float) -> bool:
        if now - self.started_at < float(self.probe.get("initialDelaySeconds", 0)):
            return False
        return self.last_run is None or now - self.last_run >= float(self.probe.get("periodSeconds", 10))

    def record(self, success: bool, now: float | None = None) -> None:
        self.last_run = time.monotonic() if now is None else now
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold", 1)):
                self.healthy = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                self.healthy = False

    @property
    def failed(self) -> bool:
        return self.failures >= int(self.probe.get("failureThreshold", 3))
