"""The Dockerfile, checked without a Docker engine (there is none here; CI with a registry builds
it: .github/workflows/images.yml): what it copies exists and passes .dockerignore, what it runs is
ganforge's own command, every ganforge image the manifests and the operator name is one of its
targets, each target runs as a non-root user, and the pinned versions satisfy pyproject.toml."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ganforge.cli import SUBCOMMANDS
from ganforge.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Instructions with their continuation lines joined.
INSTRUCTIONS = [line.strip() for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions."""
    found: dict[str, list[str]] = {}
    current = None
    for instruction in INSTRUCTIONS:
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", instruction, re.IGNORECASE)
        if match:
            current = match[1]
            found[current] = []
        elif current is not None:
            found[current].append(instruction)
    return found


def ignored(path: str) -> bool:
    """.dockerignore semantics for the patterns used there: last match wins, `!` re-includes."""
    verdict = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(f"{pattern}/"):
            verdict = not negated
    return verdict


def test_what_it_copies_exists_and_reaches_the_build_context() -> None:
    copies = [i for i in INSTRUCTIONS if i.startswith("COPY") and "--from" not in i]
    assert copies
    for instruction in copies:
        *sources, _ = instruction.split()[1:]
        for source in sources:
            assert (ROOT / source).exists(), f"{instruction}: {source} does not exist"
            assert not ignored(source), f"{instruction}: .dockerignore leaves {source} out of the context"
    for package_file in ("ganforge/cli.py", "ganforge/local/tool_versions.env"):
        assert not ignored(package_file)
    assert ignored(".venv/bin/python") and ignored("tests/unit/test_dockerfile.py")


def test_each_image_runs_a_ganforge_command_as_a_non_root_user() -> None:
    for target in ("operator", "trainer"):
        instructions = stages()[target]
        [entrypoint] = [i for i in instructions if i.startswith("ENTRYPOINT")]
        command = yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT"))
        assert command[0] == "ganforge" and command[1] in SUBCOMMANDS, entrypoint
        [user] = [i for i in instructions if i.startswith("USER")]
        uid = user.split()[1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, user  # numeric, so runAsNonRoot can check it


def test_every_ganforge_image_named_anywhere_is_a_target() -> None:
    named = {OperatorSettings().trainer_image}
    for manifest in [*(ROOT / "manifests").rglob("*.yaml"), *(ROOT / "charts").rglob("*.yaml")]:
        named |= set(re.findall(r"(?:image|trainerImage):\s*(ganforge/[\w.-]+:[\w.-]+)", manifest.read_text()))
    values = yaml.safe_load((ROOT / "charts" / "ganforge" / "values.yaml").read_text())
    named.add(f"{values['image']['repository']}:{values['image']['tag']}")
    targets = set(stages())
    assert {"ganforge/operator:dev", "ganforge/trainer:dev"} <= named
    for image in named:
        target = image.split("/")[1].split(":")[0]
        assert target in targets, f"{image} is no target of the Dockerfile ({sorted(targets)})"


def test_the_operator_image_installs_no_torch_and_the_pins_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [Requirement(r) for r in project["dependencies"]]
    trainer = [Requirement(r) for r in project["optional-dependencies"]["trainer"]]
    assert "torch" not in {r.name for r in base} and "torch" in {r.name for r in trainer}
    operator_install = next(i for i in stages()["operator"] if i.startswith("RUN") and "pip install" in i)
    assert "[trainer]" not in operator_install
    assert "[trainer]" in next(i for i in stages()["trainer"] if i.startswith("RUN") and "pip install" in i)
    pins = {}
    for line in (ROOT / "images" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for requirement in base + trainer:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"images/constraints.txt pins no version of {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"images/constraints.txt pins {requirement.name}=={version}, outside {requirement.specifier}")
