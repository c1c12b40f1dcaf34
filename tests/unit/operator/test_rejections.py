"""A write the apiserver refuses: which refusals persist, what the user is told, how long to wait."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from ganforge.operator.rejections import rejection, retry_after


def refused(status: int, message: str | None) -> ApiException:
    error = ApiException(status=status, reason="Forbidden")
    error.body = json.dumps({"kind": "Status", "message": message}) if message is not None else None
    return error


def test_admission_quota_and_invalid_objects_are_rejections_with_the_apiservers_words() -> None:
    quota = rejection(refused(403, 'pods "gan-g0-w1" is forbidden: exceeded quota: pods, requested: pods=1'))
    assert quota is not None and quota.status == 403 and "exceeded quota" in quota.message
    invalid = rejection(refused(422, 'Service "1gan" is invalid: metadata.name: Invalid value'))
    assert invalid is not None and "metadata.name" in invalid.message
    bare = rejection(refused(400, None))
    assert bare is not None and bare.message == "Forbidden"  # no body: the HTTP reason


def test_a_kind_that_is_not_served_is_a_rejection() -> None:
    missing = rejection(refused(404, 'the server could not find the requested resource (post httproutes...)'))
    assert missing is not None and "could not find the requested resource" in missing.message


def test_normal_answers_are_not_rejections() -> None:
    for status in (409, 500, 503):
        assert rejection(refused(status, "x")) is None


def test_the_wait_doubles_from_two_seconds_up_to_the_cap() -> None:
    assert [retry_after(n, 300) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert retry_after(20, 300) == 300 and retry_after(3, 5) == 5
