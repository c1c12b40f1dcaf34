"""A checkpoint write killed half-way never hides the previous checkpoint, and a damaged newest
checkpoint is detected and skipped by the next start."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import Gang, tiny_spec, write_spec

# Holds the writer inside its first fsync (state.pt written, manifest not yet, directory not renamed)
# and announces it, so the SIGKILL lands mid-write every time rather than by luck.
_KILLED_WRITER = """
import os, sys, time, torch
from ganforge.trainer.checkpoint import CheckpointManager, LocalStorage
root, marker = sys.argv[1], sys.argv[2]
def stalled_fsync(fd):
    open(marker, "w").close()
    time.sleep(120)
os.fsync = stalled_fsync
manager = CheckpointManager(LocalStorage(root), keep_last=3)
state, info = manager.load_latest()
state["padding"] = torch.zeros(4_000_000)
manager.save(state, {"nimg": info.nimg + 1600, "step": info.step + 100}, {}, background=False)
"""


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path: Path, cache_dir: Path) -> None:
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=1, total_kimg=0.64))
    first = Gang(config, tmp_path / "run", 1, cache_dir)
    assert first.wait() == [0], first.output()
    checkpoints = tmp_path / "run" / "checkpoints"
    previous = checkpoint_name(640)
    assert (checkpoints / previous / "manifest.json").exists()

    marker = tmp_path / "in-fsync"
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(checkpoints), str(marker)])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert writer.poll() is None, "writer exited before reaching the write"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    assert writer.wait() == -signal.SIGKILL
    partial = [p.name for p in checkpoints.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1 and partial[0].startswith(f".tmp-{checkpoint_name(640 + 1600)}")
    assert not (checkpoints / checkpoint_name(640 + 1600)).exists()

    # The next start resumes from the previous checkpoint and clears the debris.
    spec = tiny_spec(workers=1, total_kimg=0.96)
    write_spec(config, spec)
    second = Gang(config, tmp_path / "run", 1, cache_dir)
    assert second.wait() == [0], second.output()
    log = second.full_output()
    assert "removed 1 partial checkpoint(s)" in log
    assert f"resuming from {checkpoints / previous} (kimg 0.640, step 40)" in log
    assert not any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())
    assert (checkpoints / checkpoint_name(960) / "manifest.json").exists()


def test_corrupted_newest_checkpoint_is_skipped(tmp_path: Path, cache_dir: Path) -> None:
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=1, total_kimg=0.8))
    first = Gang(config, tmp_path / "run", 1, cache_dir)
    assert first.wait() == [0], first.output()
    checkpoints = tmp_path / "run" / "checkpoints"
    newest, older = checkpoint_name(800), checkpoint_name(400)
    state_file = checkpoints / newest / "state.pt"
    data = bytearray(state_file.read_bytes())
    for offset in range(1000, 1016):
        data[offset] ^= 0xA5
    state_file.write_bytes(bytes(data))

    spec = yaml.safe_load(config.read_text())["spec"]
    spec["training"]["totalKimg"] = 0.96
    write_spec(config, spec)
    second = Gang(config, tmp_path / "run", 1, cache_dir)
    assert second.wait() == [0], second.output()
    log = second.full_output()
    assert f"skipping checkpoint {checkpoints / newest}: state.pt sha256 mismatch" in log
    assert f"resuming from {checkpoints / older} (kimg 0.400, step 25)" in log
    assert any(p.name.startswith(f"corrupt-{newest}") for p in checkpoints.iterdir())
    assert (checkpoints / checkpoint_name(960) / "manifest.json").exists()
