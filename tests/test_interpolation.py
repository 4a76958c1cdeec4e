"""The dev-picked interpolation between the identity start and the trained head."""

import torch

from modeling.training.run import interpolate


def test_interpolation_ends_and_middle():
    start = {"delta": torch.zeros(2, 2), "base_weight": torch.eye(2), "steps": torch.tensor(3)}
    end = {"delta": torch.ones(2, 2), "base_weight": torch.eye(2), "steps": torch.tensor(7)}
    assert torch.equal(interpolate(start, end, 0.0)["delta"], start["delta"])
    assert torch.equal(interpolate(start, end, 1.0)["delta"], end["delta"])
    assert torch.allclose(interpolate(start, end, 0.25)["delta"], torch.full((2, 2), 0.25))
    assert torch.equal(interpolate(start, end, 0.5)["base_weight"], torch.eye(2))
    assert interpolate(start, end, 0.5)["steps"].item() == 7  # non-float tensors are taken as trained
