"""The CustomResourceDefinitions of ganforge, generated from the pydantic models.

The OpenAPI schema of each CRD is derived from its model's JSON schema, so a field added to the
models reaches the apiserver without touching this file. What JSON schema cannot carry - the
models' Python validators, immutability and the Kubernetes-only list/column settings - is declared
per resource in a `CrdDefinition`, by camelCase path; a path that no longer exists fails generation
instead of being silently ignored.

`python -m ganforge.api.crd [--kind KIND]` prints a manifest (GANTrainingJob's by default) and
`--list` names every kind with its file; `make manifests` writes them all to manifests/crds
(tests/unit/api/test_crd.py fails when a committed file is stale).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ganforge.api import inference_service as gis
from ganforge.api.storage import CHECKPOINT_CLAIM_SUFFIX
from ganforge.api.training_job import (
    ADAPTIVE_AUGMENT_NEEDS_LOGITS,
    ADAPTIVE_AUGMENT_NEEDS_POLICY,
    API_GROUP,
    CHECKPOINT_URI_FORMS,
    COMPILE_CHANNELS_LAST_ON_GPU,
    DATASET_URI_FORMS,
    DNS_1035_LABEL_PATTERN,
    FAKE_URI_PATTERN,
    FSSPEC_URI_PATTERN,
    KIND,
    LOCAL_URI_PATTERN,
    MAX_JOB_NAME_LENGTH,
    MODEL_REPOSITORY_ON_CHECKPOINT_CLAIM,
    PLURAL,
    PVC_URI_PATTERN,
    QUANTITY_PATTERN,
    RESERVED_SCHEME_PATTERN,
    VERSION,
    GANTrainingJob,
)
from ganforge.api.trajectory import immutable_paths

MANIFEST_DIR = Path("manifests/crds")

# JSON-schema keywords that mean the same in a structural OpenAPI v3 schema and are copied as-is.
_KEPT = {
    "type", "description", "enum", "default", "minimum", "maximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "required",
}
# Emitted in this order, so the manifest reads top-down: what a field is, then its bounds, then children.
_KEY_ORDER = (
    "type", "description", "nullable", "enum", "default", "minimum", "exclusiveMinimum", "maximum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "x-kubernetes-list-type",
    "items", "additionalProperties", "properties", "required", "x-kubernetes-validations",
)


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry; messages spell out the camelCase path they are about."""

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def _cel_matches(pattern: str, subject: str = "self") -> str:
    # The patterns avoid backslashes, so a single-quoted CEL literal holds them verbatim.
    assert "\\" not in pattern and "'" not in pattern, pattern
    return f"{subject}.matches('{pattern}')"


@dataclass(frozen=True)
class Column:
    """One `additionalPrinterColumns` entry."""

    name: str
    type: str
    json_path: str
    # None: the description of the field at `json_path`, which must then exist in the schema
    # (the apiserver describes .metadata columns itself).
    description: str | None = None

    def to_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description is not None:
            entry["description"] = self.description
        elif not self.json_path.startswith(".metadata."):
            # Reading the description from the schema also proves the column's path exists.
            entry["description"] = _node(schema, self.json_path.removeprefix("."))["description"]
        entry["jsonPath"] = self.json_path
        return entry


AGE_COLUMN = Column("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class CrdDefinition:
    """One CRD: the model it is generated from, and what only Kubernetes knows about it.

    Paths are camelCase schema paths; "" is the object itself, whose rules may read
    self.metadata.name.
    """

    model: type[BaseModel]
    kind: str
    plural: str
    short_names: tuple[str, ...]
    # The model's Python validators, restated for the apiserver as CEL.
    rules: Mapping[str, tuple[Rule, ...]]
    # Fields that may not change once the object exists.
    immutable: tuple[str, ...]
    columns: tuple[Column, ...]
    # Validators that OpenAPI can state without CEL.
    power_of_two: tuple[str, ...] = ()
    patterns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sets: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def manifest_path(self) -> Path:
        return MANIFEST_DIR / f"{self.name}.yaml"

    @property
    def source(self) -> str:
        """The file that defines the model, named in the manifest's header."""
        return self.model.__module__.replace(".", "/") + ".py"

    @property
    def header(self) -> str:
        return f"# Generated by `make manifests` from {self.source}. Do not edit by hand.\n"


# Shared by both resources' rollout policy.
_ROLLOUT_STEPS_RULE = Rule(
    # Uniqueness comes from the list being a set; sorted plus unique is strictly increasing.
    "size(self) == 0 || (self.isSorted() && self[size(self) - 1] == 100)",
    "spec.rollout.steps must increase strictly and end at 100",
)

# -- GANTrainingJob ----------------------------------------------------------------------------

# Both kinds name Services after themselves (see DNS_1035_LABEL_PATTERN).
_NAME_IS_A_SERVICE_NAME = Rule(
    _cel_matches(DNS_1035_LABEL_PATTERN, "self.metadata.name"),
    "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): "
    "Service names are derived from it",
)

def _spec_path(message: str) -> str:
    """A pydantic message, whose field names start at spec, with the apiserver's from the root."""
    return re.sub(r"\b(dataset|model|training|resources)\.", r"spec.\1.", message)


# The pydantic validators of training_job.py, restated for the apiserver. Cross-field rules sit on
# `spec`: the apiserver also checks rules against a `default: {}` before nested defaults fill it,
# and spec (required, no default) is only ever checked once defaulting is done.
_JOB_RULES: dict[str, tuple[Rule, ...]] = {
    "": (
        Rule(
            f"size(self.metadata.name) <= {MAX_JOB_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_JOB_NAME_LENGTH} characters "
            "(pod and service names are derived from it)",
        ),
        _NAME_IS_A_SERVICE_NAME,
        Rule(
            # pvc://CLAIM/... splits into ["pvc:", "", CLAIM, ...]; without spec.checkpoint.uri the
            # operator makes the claim <name>-checkpoints.
            "!has(self.spec.export) || !has(self.spec.export.modelRepository) || "
            "!self.spec.export.modelRepository.startsWith('pvc://') || "
            "self.spec.export.modelRepository.split('/')[2] != "
            "(has(self.spec.checkpoint) && has(self.spec.checkpoint.uri) ? "
            "(self.spec.checkpoint.uri.startsWith('pvc://') ? self.spec.checkpoint.uri.split('/')[2] : '') : "
            f"self.metadata.name + '{CHECKPOINT_CLAIM_SUFFIX}')",
            MODEL_REPOSITORY_ON_CHECKPOINT_CLAIM,
            ".spec.export.modelRepository",
        ),
    ),
    "spec": (
        Rule(
            # A zero worker count is the schema's error to report, not a division by zero.
            "self.resources.workers < 1 || self.training.batchSize % (self.resources.workers * "
            "(has(self.resources.processesPerWorker) ? self.resources.processesPerWorker : "
            "(self.resources.gpusPerWorker > 0 ? self.resources.gpusPerWorker : 1))) == 0",
            "spec.training.batchSize must be divisible by the number of ranks, spec.resources.workers x "
            "processes per worker",
            ".training.batchSize",
        ),
        Rule(
            "!has(self.resources.processesPerWorker) || self.resources.gpusPerWorker == 0 || "
            "self.resources.processesPerWorker == self.resources.gpusPerWorker",
            "spec.resources.processesPerWorker must equal spec.resources.gpusPerWorker: one process per GPU",
            ".resources.processesPerWorker",
        ),
        Rule(
            "!(self.training.compile && self.training.channelsLast) || self.resources.gpusPerWorker == 0",
            # The apiserver names fields from the object's root.
            _spec_path(COMPILE_CHANNELS_LAST_ON_GPU),
            ".training.channelsLast",
        ),
        Rule(
            "!has(self.dataset) || self.model.architecture != 'sngan-resnet' || self.dataset.resolution >= 16",
            "spec.dataset.resolution must be >= 16 for spec.model.architecture sngan-resnet",
            ".dataset.resolution",
        ),
        Rule(
            "!has(self.training.augment.adaptive) || "
            "(has(self.training.augment.policy) && size(self.training.augment.policy) > 0)",
            _spec_path(ADAPTIVE_AUGMENT_NEEDS_POLICY),
            ".training.augment.adaptive",
        ),
        Rule(
            "!has(self.training.augment.adaptive) || self.model.loss != 'wgan-gp'",
            _spec_path(ADAPTIVE_AUGMENT_NEEDS_LOGITS),
            ".training.augment.adaptive",
        ),
        Rule(
            "self.model.loss != 'wgan-gp' || self.model.regularization.gpLambda > 0.0",
            "spec.model.regularization.gpLambda must be > 0 when spec.model.loss is wgan-gp",
            ".model.regularization.gpLambda",
        ),
        Rule(
            "!('mode_collapse' in self.evaluation.metrics) || 'domain' in self.evaluation.featureExtractors",
            "spec.evaluation.metrics mode_collapse needs the domain classifier in spec.evaluation.featureExtractors",
            ".evaluation.featureExtractors",
        ),
        Rule(
            "!('label_adherence' in self.evaluation.metrics) || 'domain' in self.evaluation.featureExtractors",
            "spec.evaluation.metrics label_adherence needs the domain classifier in spec.evaluation.featureExtractors",
            ".evaluation.featureExtractors",
        ),
        Rule(
            "!('torchscript' in self.evaluation.featureExtractors) || has(self.evaluation.customExtractor)",
            "spec.evaluation.featureExtractors contains torchscript but spec.evaluation.customExtractor is not set",
            ".evaluation.customExtractor",
        ),
    ),
    "spec.dataset.uri": (
        Rule(
            f"{_cel_matches(LOCAL_URI_PATTERN)} || {_cel_matches(FAKE_URI_PATTERN)}",
            f"spec.dataset.uri must be {DATASET_URI_FORMS}",
        ),
    ),
    "spec.checkpoint.uri": (
        Rule(
            f"{_cel_matches(LOCAL_URI_PATTERN)} || "
            f"({_cel_matches(FSSPEC_URI_PATTERN)} && !{_cel_matches(RESERVED_SCHEME_PATTERN)})",
            f"spec.checkpoint.uri must be {CHECKPOINT_URI_FORMS}",
        ),
    ),
    "spec.export.modelRepository": (
        Rule(_cel_matches(PVC_URI_PATTERN), "spec.export.modelRepository must be a pvc://claim/path URI"),
    ),
    "spec.rollout.steps": (_ROLLOUT_STEPS_RULE,),
}

# Fixed for the life of a job (ganforge/api/trajectory.py); the rest may change mid-run.
_JOB_IMMUTABLE = immutable_paths()

FD_COLUMN_DESCRIPTION = (
    "Fréchet distance between generated and real images in the domain classifier's feature space "
    "(status.metrics.fd_domain); lower is better."
)

TRAINING_JOB = CrdDefinition(
    model=GANTrainingJob,
    kind=KIND,
    plural=PLURAL,
    short_names=("gtj",),
    rules=_JOB_RULES,
    immutable=_JOB_IMMUTABLE,
    columns=(
        Column("Phase", "string", ".status.phase"),
        Column("Kimg", "number", ".status.progress.kimg"),
        Column("FD", "number", ".status.metrics.fd_domain", FD_COLUMN_DESCRIPTION),
        Column("Preemptions", "integer", ".status.preemptions"),
        AGE_COLUMN,
    ),
    power_of_two=("spec.dataset.resolution",),
    patterns={"spec.resources.cpu": QUANTITY_PATTERN, "spec.resources.memory": QUANTITY_PATTERN},
    sets=("spec.rollout.steps", "spec.training.augment.policy"),
)

# -- GANInferenceService -----------------------------------------------------------------------

# The pydantic validators of inference_service.py, restated for the apiserver.
_SERVICE_RULES: dict[str, tuple[Rule, ...]] = {
    "": (
        Rule(
            f"size(self.metadata.name) <= {gis.MAX_SERVICE_NAME_LENGTH}",
            f"metadata.name must be at most {gis.MAX_SERVICE_NAME_LENGTH} characters "
            "(Deployments and Services are named <name>-<revision>)",
        ),
        _NAME_IS_A_SERVICE_NAME,
    ),
    "spec.source": (
        Rule(
            "has(self.trainingJob) != has(self.artifact)",
            "spec.source must set exactly one of spec.source.trainingJob and spec.source.artifact",
        ),
    ),
    "spec.source.artifact.uri": (
        Rule(_cel_matches(PVC_URI_PATTERN), "spec.source.artifact.uri must be a pvc://claim/path URI"),
    ),
    "spec.rollout.steps": (_ROLLOUT_STEPS_RULE,),
}

INFERENCE_SERVICE = CrdDefinition(
    model=gis.GANInferenceService,
    kind=gis.KIND,
    plural=gis.PLURAL,
    short_names=(gis.SHORT_NAME,),
    rules=_SERVICE_RULES,
    # Clients call the model by this name; a new name is a new service.
    immutable=("spec.modelName",),
    columns=(
        Column("Model", "string", ".status.modelName"),
        Column("Stable", "string", ".status.stableRevision"),
        Column("Canary", "string", ".status.canaryRevision"),
        Column("Weight", "integer", ".status.canaryWeight"),
        Column(
            "Ready",
            "string",
            '.status.conditions[?(@.type=="Ready")].status',
            "Status of the Ready condition: True when the stable revision serves.",
        ),
        AGE_COLUMN,
    ),
    patterns={"spec.triton.cpu": QUANTITY_PATTERN, "spec.triton.memory": QUANTITY_PATTERN,
              "spec.triton.modelVolume.sizeLimit": QUANTITY_PATTERN},
    sets=("spec.rollout.steps",),
)

DEFINITIONS: dict[str, CrdDefinition] = {
    definition.kind: definition for definition in (TRAINING_JOB, INFERENCE_SERVICE)
}

# The GANTrainingJob CRD, as tests and tools name it.
CRD_NAME = TRAINING_JOB.name
MANIFEST_PATH = TRAINING_JOB.manifest_path




class UnsupportedSchemaError(ValueError):
    """A model construct with no structural OpenAPI equivalent; simplify the model instead."""


# -- JSON schema -> structural OpenAPI v3 ----------------------------------------------------


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref`; the referring node's own keys (its field description) win over the model's."""
    if "$ref" not in node:
        return node
    rest = {key: value for key, value in node.items() if key != "$ref"}
    target = defs[node["$ref"].rsplit("/", 1)[-1]]
    return {**_resolve(target, defs), **rest}


def _unwrap_nullable(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (an `X | None` field) becomes X with `nullable: true`."""
    if "anyOf" not in node:
        return node
    options = node["anyOf"]
    others = [option for option in options if option != {"type": "null"}]
    if len(options) != 2 or len(others) != 1:
        raise UnsupportedSchemaError(f"only `X | None` unions are supported, got anyOf {options}")
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    return {**_resolve(others[0], defs), **rest, "nullable": True}


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _unwrap_nullable(_resolve(node, defs), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "nullable"):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 gives the bound itself; OpenAPI 3.0 a flag on minimum/maximum.
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            # `false` (extra="forbid") is left to pruning and kubectl's strict field validation:
            # structural schemas may not combine it with `properties`.
            if isinstance(value, dict):
                out[key] = _convert(value, defs)
        elif key == "default":
            if value is not None:
                out[key] = value
        elif key in _KEPT:
            out[key] = value
        else:
            raise UnsupportedSchemaError(f"JSON schema keyword {key!r} has no structural equivalent: {node}")
    if node.get("nullable"):
        out["nullable"] = True
    if "properties" in out or "additionalProperties" in out:
        out["type"] = "object"
    return out


# -- defaults pydantic computes at runtime (default_factory) --------------------------------


def _models_in(annotation: Any, schema: dict[str, Any]) -> Iterator[tuple[type[BaseModel], dict[str, Any]]]:
    """The pydantic models inside a field annotation, each with the schema node that describes it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, schema
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        yield from _models_in(args[0], schema)
    elif origin is list:
        yield from _models_in(args[0], schema["items"])
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, schema)


def _add_factory_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Give default_factory fields their default; a nested model defaults to {} so the apiserver
    fills in that model's own defaults, exactly as pydantic would."""
    for name, field in model.model_fields.items():
        prop = schema["properties"][field.alias or name]
        if field.default_factory is not None:
            if field.default_factory_takes_validated_data:
                raise UnsupportedSchemaError(f"{model.__name__}.{name}: a default computed from other fields")
            value = field.default_factory()  # type: ignore[call-arg]
            prop["default"] = {} if isinstance(value, BaseModel) else to_jsonable_python(value)
        for nested, nested_schema in _models_in(field.annotation, prop):
            _add_factory_defaults(nested, nested_schema)


# -- Kubernetes-only additions, by path ------------------------------------------------------


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in filter(None, path.split(".")):
        properties = node.get("properties", {})
        if part not in properties:
            raise KeyError(f"{path!r}: no field {part!r} in the generated schema (was it renamed?)")
        node = properties[part]
    return node


def _add_rules(node: dict[str, Any], rules: list[dict[str, str]]) -> None:
    node.setdefault("x-kubernetes-validations", []).extend(rules)


def _add_immutability(schema: dict[str, Any], path: str) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _node(schema, parent_path)
    field = _node(schema, path)
    message = f"{path} is immutable"
    if "default" in field or name in parent.get("required", ()):
        # Always present after defaulting, so a rule on the field itself sees every change.
        _add_rules(field, [Rule("self == oldSelf", message).to_schema()])
        return
    # Optional without a default: transition rules only run when old and new both have the field,
    # so the parent checks that it is neither added nor removed either.
    rule = f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
    _add_rules(parent, [Rule(rule, message, f".{name}").to_schema()])


def _power_of_two_enum(node: dict[str, Any]) -> None:
    low, high = node.pop("minimum"), node.pop("maximum")
    node["enum"] = [2**k for k in range(high.bit_length()) if low <= 2**k <= high]


def _kubernetes_additions(schema: dict[str, Any], definition: CrdDefinition) -> None:
    for path in definition.power_of_two:
        _power_of_two_enum(_node(schema, path))
    for path, pattern in definition.patterns.items():
        _node(schema, path)["pattern"] = pattern
    for path in definition.sets:
        _node(schema, path)["x-kubernetes-list-type"] = "set"
    for path, rules in definition.rules.items():
        _add_rules(_node(schema, path), [rule.to_schema() for rule in rules])
    for path in definition.immutable:
        _add_immutability(schema, path)


def _envelope(schema: dict[str, Any]) -> None:
    """apiVersion, kind and metadata belong to the apiserver: it allows no constraints on them."""
    properties = schema["properties"]
    for key in ("apiVersion", "kind"):
        properties[key] = {"type": "string", "description": properties[key]["description"]}
    properties["metadata"] = {"type": "object"}
    properties["status"].pop("nullable", None)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """The schema with every node's keys in `_KEY_ORDER`; property order stays the models' field order."""
    out = {key: node[key] for key in _KEY_ORDER if key in node}
    if set(out) != set(node):
        raise UnsupportedSchemaError(f"unexpected schema keys {sorted(set(node) - set(out))}")
    if "properties" in out:
        out["properties"] = {name: _ordered(child) for name, child in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if key in out:
            out[key] = _ordered(out[key])
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Any ApiModel as a structural OpenAPI v3 schema, defaults included (no CRD specifics)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _convert(raw, defs)
    _add_factory_defaults(model, schema)
    return _ordered(schema)


def openapi_schema(definition: CrdDefinition = TRAINING_JOB) -> dict[str, Any]:
    """The `openAPIV3Schema` of a CRD: the model's schema plus what only Kubernetes knows."""
    schema = structural_schema(definition.model)
    _envelope(schema)
    _kubernetes_additions(schema, definition)
    return _ordered(schema)


def crd_manifest(definition: CrdDefinition = TRAINING_JOB) -> dict[str, Any]:
    schema = openapi_schema(definition)
    kind = definition.kind
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": definition.name},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": definition.plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": list(definition.short_names),
                "categories": ["ganforge"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.to_schema(schema) for column in definition.columns],
                }
            ],
        },
    }


def crd_yaml(definition: CrdDefinition = TRAINING_JOB) -> str:
    body = yaml.safe_dump(crd_manifest(definition), sort_keys=False, allow_unicode=True, width=120)
    return definition.header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganforge.api.crd", description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--kind", choices=list(DEFINITIONS), default=TRAINING_JOB.kind, help="the CRD to print (default: %(default)s)"
    )
    choice.add_argument(
        "--list", action="store_true", help="print each kind and the path of its manifest, one per line"
    )
    args = parser.parse_args(argv)
    if args.list:
        text = "".join(f"{definition.kind} {definition.manifest_path}\n" for definition in DEFINITIONS.values())
    else:
        text = crd_yaml(DEFINITIONS[args.kind])
    # Bytes, so the output is UTF-8 whatever the locale says.
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
