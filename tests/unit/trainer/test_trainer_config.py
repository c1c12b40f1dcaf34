from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.api.trajectory import PLACEMENT_FIELDS, immutable_paths
from ganforge.trainer import cli
from ganforge.trainer.config import (
    OPTIONS_FILE,
    accepted_trajectory_hashes,
    load_spec_file,
    parse_spec,
    resolve_uri,
    trajectory_hash,
)
from ganforge.trainer.errors import ConfigError

BASE = {"dataset": {"uri": "fake://x", "format": "fake", "resolution": 16}, "resources": {"workers": 2}}


def _spec(**overrides: object) -> dict[str, object]:
    doc = json.loads(json.dumps(BASE))
    for path, value in overrides.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return doc


def test_defaults_and_camel_case_round_trip() -> None:
    spec, name = parse_spec(_spec())
    assert name is None
    wire = spec.to_wire()
    assert wire["training"]["batchSize"] == 64
    assert wire["model"]["ema"]["halfLifeKimg"] == 10.0
    assert GANTrainingJobSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"training__batchSize": 0}, "spec.training.batchSize: Input should be greater than or equal to 1"),
        ({"training__batchSize": 63},
         "spec: training.batchSize (63) must be divisible by the number of ranks, resources.workers x "
         "processes per worker (2)"),
        ({"training__bogus": 1}, "spec.training.bogus: Extra inputs are not permitted"),
        ({"model__loss": "lsgan"}, "spec.model.loss: Input should be 'nonsaturating', 'hinge' or 'wgan-gp'"),
        ({"dataset__resolution": 48}, "spec.dataset.resolution: must be a power of two, got 48"),
        ({"training__optimizer__betas": [0.5, 1.0]}, "spec.training.optimizer.betas.1: Input should be less than 1"),
        ({"resources__memory": "lots"}, "spec.resources.memory: not a Kubernetes quantity: 'lots'"),
        ({"rollout": {"service": "svc", "steps": [50, 10, 100]}}, "spec.rollout.steps: must increase strictly"),
        (
            {"model__loss": "wgan-gp", "model__regularization": {"gpLambda": 0}},
            "spec: model.regularization.gpLambda must be > 0 when model.loss is wgan-gp",
        ),
    ],
)
def test_validation_errors_name_the_field(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(_spec(**overrides), "job.yaml")
    assert str(info.value).startswith("job.yaml: ")
    assert expected in str(info.value)


def test_whole_object_form_reports_spec_paths(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "ganforge.io/v1alpha1", "kind": "GANTrainingJob",
                                    "metadata": {"name": "fashion"}, "spec": _spec(training={"dStepsPerG": 99})}))
    with pytest.raises(ConfigError, match=r"spec\.training\.dStepsPerG: Input should be less than or equal to 16"):
        load_spec_file(path)
    path.write_text(yaml.safe_dump({"kind": "GANTrainingJob", "metadata": {"name": "fashion"}, "spec": _spec()}))
    spec, name = load_spec_file(path)
    assert name == "fashion" and spec.resources.workers == 2


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_spec_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML/JSON"):
        load_spec_file(bad)


def test_trajectory_hash_ignores_duration_but_not_hyperparameters() -> None:
    spec, _ = parse_spec(_spec())
    longer, _ = parse_spec(_spec(training__totalKimg=999, checkpoint__keepLast=9, evaluation__numSamples=100))
    faster, _ = parse_spec(_spec(training__optimizer__gLr=1e-3))
    assert trajectory_hash(spec) == trajectory_hash(longer)
    assert trajectory_hash(spec) != trajectory_hash(faster)


def test_fields_added_later_keep_older_fingerprints_while_at_their_old_behaviour() -> None:
    """A checkpoint made before augment.probability and augment.adaptive existed resumes: the
    fingerprint of a spec that leaves them alone is the one computed before they were added (the
    ADDED_LATER way: the written fingerprint itself is unchanged)."""
    document = {"dataset": {"uri": "fake://x", "format": "fake", "resolution": 32},
                "training": {"augment": {"policy": ["cutout"]}}}
    assert trajectory_hash(GANTrainingJobSpec.model_validate(document)) == "fb222fef55d50bb0"
    for change in ({"probability": 0.5}, {"adaptive": {}}):
        document["training"]["augment"] = {"policy": ["cutout"], **change}
        assert trajectory_hash(GANTrainingJobSpec.model_validate(document)) != "fb222fef55d50bb0", change


# Fingerprints the trainers of earlier versions wrote (each computed by running that version's
# trajectory_hash): before compile/deterministic/lazy R1 joined, before processesPerWorker, before
# augmentation, and today's.
PLAIN = {"dataset": {"uri": "fake://x", "format": "fake", "resolution": 32}}
RICH = {"dataset": {"uri": "fake://x", "format": "fake", "resolution": 32, "conditional": True},
        "model": {"architecture": "sngan-resnet", "loss": "hinge",
                  "regularization": {"r1Gamma": 1.0, "spectralNorm": True}},
        "training": {"precision": "bf16", "compile": True, "batchSize": 32, "dStepsPerG": 2},
        "resources": {"workers": 2}}
WRITTEN_BY_EARLIER_TRAINERS = {
    "plain": (PLAIN, ["57cc47f471bd83f9", "ce2a58bea14c3638", "9d429871d18d4992", "aea54efe38bb5067"]),
    "rich": (RICH, ["3abf57e55b22af65", "bec5fc954c47ca2c", "8a710780fc0059dc", "5c1bba8ad966c942"]),
}


@pytest.mark.parametrize("name", WRITTEN_BY_EARLIER_TRAINERS)
def test_checkpoints_of_earlier_trainers_resume_under_the_same_spec(name: str) -> None:
    """An upgraded trainer resumes a running job's checkpoints: it accepts every fingerprint an
    earlier version wrote for the same spec, and writes its own."""
    document, written = WRITTEN_BY_EARLIER_TRAINERS[name]
    spec = GANTrainingJobSpec.model_validate(document)
    assert trajectory_hash(spec) == written[0]
    assert accepted_trajectory_hashes(spec) == written


def test_earlier_fingerprints_are_accepted_only_while_the_spec_means_what_they_meant() -> None:
    """A field an earlier trainer lacked, set to a value it could not have run, rules that
    trainer's fingerprints out (and every older one)."""
    plain = WRITTEN_BY_EARLIER_TRAINERS["plain"][1]
    uses = {
        "deterministic": ({"training": {"deterministic": True}}, 3),
        "lazy R1": ({"model": {"regularization": {"r1Gamma": 1.0, "r1Interval": 4}}}, 3),
        "two processes per worker": ({"resources": {"processesPerWorker": 2, "gpusPerWorker": 0}}, 2),
        "augmentation": ({"training": {"augment": {"policy": ["cutout"]}}}, 1),
    }
    for what, (change, newer) in uses.items():
        accepted = accepted_trajectory_hashes(GANTrainingJobSpec.model_validate({**PLAIN, **change}))
        assert len(accepted) == newer, what
        assert not set(accepted) & set(plain), what


def test_uri_mapping() -> None:
    assert resolve_uri("pvc://ckpt/fashion/run1", "/mnt/pvc") == "/mnt/pvc/ckpt/fashion/run1"
    assert resolve_uri("file:///data/x", "/mnt/pvc") == "/data/x"
    assert resolve_uri("s3://bucket/x", "/mnt/pvc") == "s3://bucket/x"
    with pytest.raises(ConfigError):
        resolve_uri("pvc://", "/mnt/pvc")


def test_cli_dry_run_prints_resolved_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_spec()))
    code = cli.main(["--config", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"])
    assert code == ExitCode.SUCCESS
    printed = json.loads(capsys.readouterr().out)
    assert printed["spec"]["resources"]["workers"] == 2
    assert printed["runtime"]["run_dir"] == str(tmp_path / "run")
    assert not (tmp_path / "run" / OPTIONS_FILE).exists()


def test_cli_config_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_spec(training__batchSize=3)))
    assert cli.main(["--config", str(path), "--dry-run"]) == ExitCode.CONFIG_ERROR
    assert "training.batchSize (3) must be divisible" in capsys.readouterr().err
    assert cli.main(["--bogus"]) == ExitCode.USAGE_ERROR


def test_the_resume_fingerprint_covers_exactly_the_fields_the_crd_fixes() -> None:
    base = {"dataset": {"uri": "fake://x"}, "training": {"batchSize": 64}}

    def spec_with(path: str, value: object) -> GANTrainingJobSpec:
        document: dict[str, Any] = json.loads(json.dumps(base))
        section, *key = path.removeprefix("spec.").split(".")
        if key:
            document.setdefault(section, {})[key[0]] = value
        else:
            document[section] = value
        return GANTrainingJobSpec.model_validate(document)

    reference = trajectory_hash(GANTrainingJobSpec.model_validate(base))
    changed = {"spec.dataset": {"uri": "fake://y"}, "spec.model": {"latentDim": 32},
               "spec.training.batchSize": 32, "spec.training.dStepsPerG": 2, "spec.training.precision": "bf16",
               "spec.training.seed": 9, "spec.training.optimizer": {"gLr": 0.001},
               "spec.training.channelsLast": True, "spec.training.compile": True,
               "spec.training.deterministic": True, "spec.training.augment": {"xflip": True},
               "spec.resources.workers": 2,
               "spec.resources.processesPerWorker": 1}
    fingerprinted = [path for path in immutable_paths() if path not in PLACEMENT_FIELDS]
    assert sorted(changed) == sorted(fingerprinted)
    for path, value in changed.items():
        assert trajectory_hash(spec_with(path, value)) != reference, path
    # Mutable fields leave the fingerprint alone.
    for path, value in {"spec.training.totalKimg": 5.0, "spec.backoffLimit": 9,
                        "spec.checkpoint": {"intervalKimg": 2.0, "retain": False}}.items():
        assert trajectory_hash(spec_with(path, value)) == reference, path
