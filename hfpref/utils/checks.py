"""Checks a training script runs before it saves a model, so a run never ends "successfully" with a broken one."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


class NonFiniteModelError(RuntimeError):
    """A model or its training loss holds NaN or inf: saving it would ship a broken checkpoint."""


LOSS_KEYS = ("loss", "train_loss", "eval_loss")


def check_finite_training(
    model: torch.nn.Module, log_history: Iterable[Mapping] | None = None, *, what: str = "the model"
) -> None:
    """
    Refuse a model whose weights or logged losses are NaN or inf.

    Call it after training and before `save_model`: it raises instead of letting the run save the checkpoint and
    exit 0, so scripts, the quickstart and CI see the failure. Every floating-point parameter and buffer is checked,
    and every `loss`, `train_loss` and `eval_loss` in the trainer's `state.log_history`.

    Args:
        model (`torch.nn.Module`):
            The trained model.
        log_history (`Iterable[Mapping]`, *optional*):
            `trainer.state.log_history`.
        what (`str`, *optional*, defaults to `"the model"`):
            How the error names the model, e.g. its output folder.

    Raises:
        [`NonFiniteModelError`]: naming the first non-finite tensors or the first logged step whose loss is not
            finite, and what usually causes it.

    Example:

    ```python
    >>> import torch
    >>> layer = torch.nn.Linear(2, 1)
    >>> check_finite_training(layer, [{"loss": 0.7, "step": 10}])
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(float("nan"))
    >>> check_finite_training(layer)
    Traceback (most recent call last):
    ...
    hfpref.utils.checks.NonFiniteModelError: the model has NaN or inf values in ['weight']; not saving it. Check the learning rate, loss scales and inputs (a NaN loss or an infinite setting such as bt_scale poisons every weight).

    ```
    """
    hint = (
        "Check the learning rate, loss scales and inputs (a NaN loss or an infinite setting such as bt_scale "
        "poisons every weight)."
    )
    for entry in log_history or ():
        for key in LOSS_KEYS:
            value = entry.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise NonFiniteModelError(
                    f"{what}: the logged {key} is {value} at step {entry.get('step', '?')}; not saving it. {hint}"
                )
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = [name for name, tensor in tensors if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteModelError(f"{what} has NaN or inf values in {bad[:5]}{more}; not saving it. {hint}")
