import math

import pytest
import torch

from hfpref.rewards.losses import binary_feedback_loss, bradley_terry_loss, l2_penalty


def test_bradley_terry_matches_hand_computation():
    chosen = torch.tensor([0.9, 0.4, 0.5])
    rejected = torch.tensor([0.1, 0.6, 0.5])
    s = 10.0
    expected = sum(math.log1p(math.exp(-s * (c - r))) for c, r in zip([0.9, 0.4, 0.5], [0.1, 0.6, 0.5])) / 3
    assert bradley_terry_loss(chosen, rejected, scale=s).item() == pytest.approx(expected, rel=1e-5)
    # The scale sharpens the loss: s = 1 on the same pairs.
    expected_s1 = sum(math.log1p(math.exp(-(c - r))) for c, r in zip([0.9, 0.4, 0.5], [0.1, 0.6, 0.5])) / 3
    assert bradley_terry_loss(chosen, rejected, scale=1.0).item() == pytest.approx(expected_s1, rel=1e-5)


def test_bradley_terry_margin_and_gradient_direction():
    chosen = torch.tensor([0.6], requires_grad=True)
    rejected = torch.tensor([0.4], requires_grad=True)
    loss = bradley_terry_loss(chosen, rejected, scale=10.0, margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-(10 * 0.2 - 1.0))), rel=1e-5)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


def test_bradley_terry_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_l2_penalty_sum_and_mean():
    a = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    frozen = torch.tensor([100.0])  # requires_grad False: not penalised
    assert l2_penalty([a, b, frozen]).item() == pytest.approx(1 + 4 + 0.25 + 9)
    assert l2_penalty([a, b], reduction="mean").item() == pytest.approx(14.25 / 5)
    with pytest.raises(ValueError, match="reduction"):
        l2_penalty([a], reduction="max")


def test_binary_feedback_losses_by_hand():
    rewards = torch.tensor([0.9, 0.2, 0.6])
    labels = torch.tensor([1, 0, 0])
    bce = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    mse = (0.01 + 0.04 + 0.36) / 3
    assert binary_feedback_loss(rewards, labels).item() == pytest.approx(bce, rel=1e-5)
    assert binary_feedback_loss(rewards, labels, loss_type="mse").item() == pytest.approx(mse, rel=1e-5)


def test_binary_feedback_rejects_bad_labels_and_loss_type():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        binary_feedback_loss(torch.tensor([0.5]), torch.tensor([2]))
    with pytest.raises(ValueError, match=r"loss_type='hinge' is not one of \['bce', 'mse'\]"):
        binary_feedback_loss(torch.tensor([0.5]), torch.tensor([1]), loss_type="hinge")
