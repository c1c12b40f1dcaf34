"""The fields every ganforge condition shares: Kubernetes' metav1.Condition, minus observedGeneration.

Each resource narrows `type` to its own condition types. `ConditionFields` is a mixin without
configuration of its own (training_job.py, which defines `ApiModel`, imports it), so a condition
class lists `ApiModel` first for the camelCase wire names and the strict config:

    class Condition(ApiModel, ConditionFields):
        type: Literal["Ready"] = Field(description="Condition type.")

A redeclared `type` keeps its place as the first field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ConditionStatus = Literal["True", "False", "Unknown"]


class ConditionFields(BaseModel):
    type: str = Field(description="Condition type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, for machines.")
    message: str = Field("", description="Explanation, for people.")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
