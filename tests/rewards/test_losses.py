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


def test_forward_l2_penalty_equals_the_penalty_of_the_parameters_with_its_gradient():
    from hfpref.rewards.losses import ForwardL2Penalty

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    model[2].bias.requires_grad_(False)  # frozen parameters do not count
    trainable = [p for p in model.parameters() if p.requires_grad]
    by_hand = sum((p.detach() ** 2).sum() for p in trainable)
    penalty = ForwardL2Penalty(model)
    model(torch.randn(2, 3))
    model(torch.randn(5, 3))  # a second pass in the same step counts once
    value = penalty.pop()
    torch.testing.assert_close(value, by_hand)
    value.backward()
    for p in trainable:
        torch.testing.assert_close(p.grad, 2 * p.detach())  # d||p||^2/dp = 2p
    assert model[2].bias.grad is None
    model(torch.randn(1, 3))
    torch.testing.assert_close(penalty.pop(reduction="mean"), by_hand / sum(p.numel() for p in trainable))
    assert penalty.pop() is None  # nothing ran since


def test_forward_l2_penalty_backward_survives_freed_parameters():
    # ZeRO-3 and FSDP free a module's full parameters after its forward pass; the penalty's backward must not read them.
    from hfpref.rewards.losses import ForwardL2Penalty

    layer = torch.nn.Linear(2, 2)
    penalty = ForwardL2Penalty(layer)
    layer(torch.ones(1, 2))
    value = penalty.pop()
    expected = 2 * layer.weight.detach().clone()
    with torch.no_grad():  # overwritten after the forward pass: autograd refuses if backward needs the parameter
        layer.weight.zero_()
        layer.bias.zero_()
    value.backward()
    torch.testing.assert_close(layer.weight.grad, expected)


def test_bradley_terry_direction_scale_and_margin_per_row_by_hand():
    # d = r_w - r_l = 0.3, -0.2, 0; s = 2.5; margins 0.5, -1, 0: loss_i = log(1 + exp(-(s d_i - m_i))).
    chosen, rejected, margin = [0.8, 0.3, 0.5], [0.5, 0.5, 0.5], [0.5, -1.0, 0.0]
    terms = [math.log1p(math.exp(-(2.5 * (r_w - r_l) - m))) for r_w, r_l, m in zip(chosen, rejected, margin)]
    loss = bradley_terry_loss(torch.tensor(chosen), torch.tensor(rejected), scale=2.5, margin=torch.tensor(margin))
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    # A tie costs log 2 at any scale; ranking the rejected caption higher costs more than ranking it lower.
    assert bradley_terry_loss(torch.tensor([0.4]), torch.tensor([0.4]), scale=7.0).item() == pytest.approx(math.log(2))
    right = bradley_terry_loss(torch.tensor([0.7]), torch.tensor([0.2]), scale=2.0).item()
    wrong = bradley_terry_loss(torch.tensor([0.2]), torch.tensor([0.7]), scale=2.0).item()
    assert right == pytest.approx(math.log1p(math.exp(-1.0))) and wrong == pytest.approx(math.log1p(math.exp(1.0)))
    # The default scale is 10.
    assert bradley_terry_loss(torch.tensor([0.7]), torch.tensor([0.2])).item() == pytest.approx(
        math.log1p(math.exp(-5))
    )


def test_binary_feedback_gradients_push_rewards_toward_the_labels():
    rewards = torch.tensor([0.3, 0.6], requires_grad=True)
    labels = torch.tensor([1, 0])
    binary_feedback_loss(rewards, labels).backward()
    # d/dr of -(y log r + (1 - y) log(1 - r)) / 2 = (r - y) / (2 r (1 - r)).
    torch.testing.assert_close(rewards.grad, torch.tensor([-0.7 / (2 * 0.3 * 0.7), 0.6 / (2 * 0.6 * 0.4)]))
    rewards.grad = None
    binary_feedback_loss(rewards, labels, loss_type="mse").backward()
    torch.testing.assert_close(rewards.grad, torch.tensor([2 * (0.3 - 1) / 2, 2 * 0.6 / 2]))  # d/dr (r - y)^2 / 2


def test_forward_l2_penalty_without_grad_and_mean_over_modules_of_different_sizes():
    from hfpref.rewards.losses import ForwardL2Penalty

    # Two layers: weights (2 x 3) of 1s, bias 2s; weight (1 x 2) of 3s, no bias. ||theta||^2 = 6 + 8 + 18 = 32 over
    # 6 + 2 + 2 = 10 numbers: the mean is over numbers, not over modules or tensors.
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(2.0)
        model[1].weight.fill_(3.0)
    penalty = ForwardL2Penalty(model)
    with torch.no_grad():  # evaluation reads the penalty without building a graph
        model(torch.zeros(1, 3))
    assert penalty.pop().item() == pytest.approx(32.0)
    model(torch.zeros(4, 3))
    value = penalty.pop(reduction="mean")
    assert value.item() == pytest.approx(3.2) and value.requires_grad
    assert l2_penalty(model.parameters(), reduction="mean").item() == pytest.approx(3.2)
    penalty.remove()
    model(torch.zeros(1, 3))
    assert penalty.pop() is None  # no hooks left
