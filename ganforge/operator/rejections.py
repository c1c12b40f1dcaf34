"""Writes the apiserver refuses for a reason that repeating them unchanged will not fix soon: an
admission rule (PodSecurity, a ResourceQuota, a webhook), an invalid object, missing rights, a kind
it does not serve (an HTTPRoute without the Gateway API's CRDs).

The operator never loops on them silently: the object gets a Warning Event and a condition with the
apiserver's own message, and the next attempt waits longer each time (2 s, doubling, up to the
settings' maxFailureBackoffSeconds), so a fix (a quota raised, a label changed) is picked up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

REASON = "ChildRejected"
FIRST_RETRY_SECONDS = 2.0
# 409 is part of normal operation (exists already, stale resourceVersion); deletions treat 404 as
# done, so a 404 that reaches here answered a create or an update: the kind is not served.
PERSISTENT_STATUSES = frozenset({400, 403, 404, 422})


@dataclass(frozen=True)
class Rejection(Exception):
    """A write refused by the apiserver; `message` is its explanation."""

    status: int
    message: str


def rejection(error: ApiException) -> Rejection | None:
    if error.status not in PERSISTENT_STATUSES:
        return None
    message = error.reason or ""
    try:
        message = json.loads(error.body or "{}").get("message") or message
    except (ValueError, AttributeError):
        pass
    return Rejection(int(error.status), str(message))


def retry_after(streak: int, cap: float) -> float:
    """Seconds before the next attempt after `streak` consecutive rejections (1 = the first)."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(streak - 1, 0), cap))
