"""The chart's generated files (CRDs, values schema) and the Argo CD health patch are what their
sources generate; the bundle rendered with helm is checked in tests/integration/test_chart.py."""

from __future__ import annotations

import json

from ganforge.local import chart


def test_generated_chart_files_are_current() -> None:
    for path, text in chart.generated_files().items():
        assert path.read_text() == text, f"{path} is stale: run `make manifests`"
    crds = chart.CHART / "files" / "crds"
    shipped = set(crds.glob("*.yaml"))
    assert shipped == {path for path in chart.generated_files() if path.parent == crds}  # none left over


def test_the_values_schema_closes_every_object_and_describes_settings_by_the_operators_model() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert {"global", "enabled"} <= set(schema["properties"])
    settings = schema["properties"]["settings"]
    assert settings["additionalProperties"] is False and "trainerImage" in settings["properties"]
    for name, value in schema["properties"].items():
        if value.get("type") == "object" and "properties" in value:
            assert value["additionalProperties"] is False, name
