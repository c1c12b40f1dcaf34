"""An image folder is decoded by rank 0 alone; the other ranks, and the next gang, read the cache."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.integration.trainer.launch import Gang, tiny_spec, write_spec


def test_two_ranks_decode_an_image_folder_once(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    for label in range(2):
        (folder / f"class-{label}").mkdir(parents=True)
        for i in range(32):
            Image.new("L", (24, 24), (label * 128 + i * 3) % 256).save(folder / f"class-{label}" / f"{i}.png")
    spec = tiny_spec(workers=2, total_kimg=0.032)
    spec["dataset"] = {"uri": str(folder), "format": "image-folder", "resolution": 16, "conditional": True}
    config = write_spec(tmp_path / "job.yaml", spec)
    run_cache = tmp_path / "cache"

    first = Gang(config, tmp_path / "run", 2, run_cache)
    assert first.wait() == [0, 0], first.output()
    rank0, rank1 = (log.read_text() for log in first.logs)
    assert "decoded 64 images" in rank0 and "decoded" not in rank1
    assert "64 images from the decode cache" in rank1

    second = Gang(config, tmp_path / "run2", 2, run_cache)
    assert second.wait() == [0, 0], second.output()
    assert all("decoded" not in log.read_text() for log in second.logs)
