"""Reward-model losses: Bradley-Terry for pairwise preferences, BCE and MSE for binary feedback."""

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def _squared_norm(parameter: torch.Tensor) -> torch.Tensor:
    """
    `||p||^2` with gradient `2p`, computed from a copy of `p`: backward never reads `p` itself, which ZeRO-3 and FSDP
    free (or partition) between the forward and backward passes.
    """
    held = parameter.detach().clone()
    return (parameter * (2 * held)).sum() - (held * held).sum()


def l2_penalty(parameters: Iterable[torch.Tensor], reduction: str = "sum") -> torch.Tensor:
    """
    Squared L2 norm of the trainable parameters, `||theta||^2` (`reduction="sum"`), or its mean
    over the parameter count, `||theta||^2 / |theta|` (`reduction="mean"`).

    Example:
    ```python
    >>> import torch
    >>> theta = [torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([[2.0]]))]
    >>> l2_penalty(theta).item()
    9.0
    >>> l2_penalty(theta, reduction="mean").item()
    3.0

    ```
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r} is not one of ['sum', 'mean']")
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("l2_penalty: no trainable parameters.")
    total = torch.stack([_squared_norm(p) for p in trainable]).sum()
    if reduction == "mean":
        total = total / sum(p.numel() for p in trainable)
    return total


class ForwardL2Penalty:
    """
    [`l2_penalty`] of a model's trainable parameters, read inside its forward pass: forward hooks on every module
    that holds parameters record `||p||^2` while the module runs. There every engine holds the parameters whole (DDP,
    DeepSpeed ZeRO-3 gathers them per module, FSDP2 unshards them), so the penalty and its gradient are the same as
    on one process; read outside the forward pass, ZeRO-3 parameters are empty partitions and FSDP2's are shards.

    Hooks are registered before an engine wraps the model, so they run before ZeRO-3 releases the parameters. A module
    run twice in one step (e.g. chosen and rejected rewards in two passes) counts once: its last pass is kept.

    Example:
    ```python
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
    >>> _ = torch.nn.init.ones_(model[0].weight)
    >>> penalty = ForwardL2Penalty(model)
    >>> _ = model(torch.zeros(1, 2))
    >>> penalty.pop().item(), penalty.pop(reduction="mean")
    (2.0, None)

    ```
    """

    def __init__(self, model: torch.nn.Module):
        self._terms: dict[int, tuple[torch.Tensor, int]] = {}
        self._handles = []
        for module in model.modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                self._handles.append(module.register_forward_hook(self._record))
        if not self._handles:
            raise ValueError("ForwardL2Penalty: the model has no trainable parameters.")

    def _record(self, module, args, output):
        trainable = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if torch.is_grad_enabled():
            total = torch.stack([_squared_norm(p) for p in trainable]).sum()
        else:
            total = torch.stack([p.detach().float().pow(2).sum() for p in trainable]).sum()
        self._terms[id(module)] = (total, sum(p.numel() for p in trainable))

    def pop(self, reduction: str = "sum") -> torch.Tensor | None:
        """The penalty of the forward passes since the last `pop` (`None` if none ran), and forget them."""
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction={reduction!r} is not one of ['sum', 'mean']")
        if not self._terms:
            return None
        terms = list(self._terms.values())
        self._terms.clear()
        total = torch.stack([t for t, _ in terms]).sum()
        return total / sum(n for _, n in terms) if reduction == "mean" else total

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    scale: float = 10.0,
    margin: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """
    Bradley-Terry loss with a scaled reward difference, `-log sigmoid(s * (r_w - r_l))`, averaged.

    From "Aligning Audio Captions with Human Preferences" (https://huggingface.co/papers/2509.14659), eq. 2-4. The rewards
    lie in (0, 1), so their difference is at most 1; the scale `s` lets the loss still separate
    pairs (the paper's value was lost in extraction; 10 is hfpref's default).

    Args:
        chosen_rewards (`torch.Tensor` of shape `(batch,)`):
            Rewards `r(a, c_w)` of the preferred captions.
        rejected_rewards (`torch.Tensor` of shape `(batch,)`):
            Rewards `r(a, c_l)` of the dispreferred captions.
        scale (`float`, *optional*, defaults to `10.0`):
            The factor `s` on the reward difference.
        margin (`torch.Tensor` of shape `(batch,)`, *optional*):
            Subtracted from the scaled difference, as in Llama 2's margin loss; `None` for none.
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` over the batch, or `"none"` (per pair).

    Example:
    ```python
    >>> import torch
    >>> loss = bradley_terry_loss(torch.tensor([0.7]), torch.tensor([0.2]), scale=10.0)
    >>> round(loss.item(), 4)  # -log sigmoid(10 * 0.5) = log(1 + e^-5)
    0.0067

    ```
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"bradley_terry_loss: chosen {tuple(chosen_rewards.shape)} and rejected "
            f"{tuple(rejected_rewards.shape)} rewards differ in shape."
        )
    logits = scale * (chosen_rewards - rejected_rewards)
    if margin is not None:
        logits = logits - margin
    losses = -F.logsigmoid(logits)
    return _reduce(losses, reduction)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction={reduction!r} is not one of ['mean', 'none']")


def binary_feedback_loss(
    rewards: torch.Tensor, labels: torch.Tensor, *, loss_type: str = "bce", reduction: str = "mean"
) -> torch.Tensor:
    """
    Loss of rewards in (0, 1) against binary human feedback (BATON,
    https://huggingface.co/papers/2402.00744, section 3.2).

    Args:
        rewards (`torch.Tensor` of shape `(batch,)`):
            Predicted rewards, probabilities in (0, 1).
        labels (`torch.Tensor` of shape `(batch,)`):
            Human labels, 0 or 1.
        loss_type (`str`, *optional*, defaults to `"bce"`):
            `"bce"` (binary cross-entropy) or `"mse"` (squared error).
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` over the batch, or `"none"` (per row).

    Example:
    ```python
    >>> import torch
    >>> round(binary_feedback_loss(torch.tensor([0.8, 0.4]), torch.tensor([1, 0])).item(), 4)  # -(ln .8 + ln .6) / 2
    0.367
    >>> round(binary_feedback_loss(torch.tensor([0.8, 0.4]), torch.tensor([1, 0]), loss_type="mse").item(), 4)
    0.1

    ```
    """
    labels = labels.to(rewards.dtype)
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"binary_feedback_loss: labels must be 0 or 1, got {labels.unique().tolist()}.")
    if loss_type == "bce":
        return _reduce(F.binary_cross_entropy(rewards, labels, reduction="none"), reduction)
    if loss_type == "mse":
        return _reduce(F.mse_loss(rewards, labels, reduction="none"), reduction)
    raise ValueError(f"loss_type={loss_type!r} is not one of ['bce', 'mse']")
