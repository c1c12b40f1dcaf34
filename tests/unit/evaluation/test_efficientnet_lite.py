from __future__ import annotations

import torch

from ganforge.evaluation.efficientnet_lite import EfficientNetLite0, default_weights_path, load_pretrained
from ganforge.evaluation.features import EffNetLite0Features, extract


def test_wheel_weights_load_by_position_and_give_deterministic_features() -> None:
    torch.set_num_threads(2)
    weights = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    model = load_pretrained()
    own = model.state_dict()
    assert len(own) == len(weights) == 296
    for mine, theirs in zip(own.values(), weights.values(), strict=True):
        assert torch.equal(mine, theirs)
    extractor = EffNetLite0Features(torch.device("cpu"), resolution=64)
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b = extract(extractor, images), extract(extractor, images)
    assert a.shape == (4, 1280) and torch.equal(a, b)
    assert bool(torch.isfinite(a).all()) and float(a.std()) > 0
    assert sum(p.numel() for p in EfficientNetLite0().parameters()) == 4_652_008
