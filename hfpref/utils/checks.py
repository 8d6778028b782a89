"""Checks a training script runs before it saves a model, so a run never ends "successfully" with a broken one."""

from __future__ import annotations

import contextlib
import glob
import math
import os
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


class CorruptCheckpointError(OSError):
    """A checkpoint file that cannot be read: truncated, overwritten or not a safetensors file."""


def _unreadable_safetensors(name_or_path: str) -> list[str]:
    """The local safetensors files of `name_or_path` (a folder, or a Hub id's cached snapshot) that fail to open."""
    from safetensors import safe_open

    if os.path.isdir(name_or_path):
        files = sorted(glob.glob(os.path.join(name_or_path, "*.safetensors")))
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "model.safetensors")
        files = [cached] if isinstance(cached, str) else []
    bad = []
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key)
        except Exception:  # safetensors raises SafetensorError, OSError or ValueError depending on the damage
            bad.append(file)
    return bad


@contextlib.contextmanager
def naming_corrupt_checkpoint(name_or_path: str | os.PathLike):
    """
    Turn a safetensors error raised while loading `name_or_path` into one that names the damaged file.

    `safetensors` reports a truncated or overwritten file as `Error while deserializing header: ...` without saying
    which file; wrapped around a `from_pretrained` call, this names it and says what to do.

    Args:
        name_or_path (`str` or `os.PathLike`):
            What was passed to `from_pretrained`: a local folder or a Hub id.

    Raises:
        [`CorruptCheckpointError`]: naming the unreadable file(s) and the original error.

    Example:

    ```python
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "model.safetensors"), "wb") as handle:
    ...     _ = handle.write(b"not a checkpoint")
    >>> with naming_corrupt_checkpoint(folder):  # doctest: +ELLIPSIS
    ...     from safetensors.torch import load_file
    ...     _ = load_file(os.path.join(folder, "model.safetensors"))
    Traceback (most recent call last):
    ...
    hfpref.utils.checks.CorruptCheckpointError: .../model.safetensors: unreadable safetensors file (...); re-save it or download it again.

    ```
    """
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        name = os.fspath(name_or_path)
        bad = _unreadable_safetensors(name)
        where = ", ".join(bad) if bad else f"a safetensors file of {name}"
        raise CorruptCheckpointError(
            f"{where}: unreadable safetensors file ({error}); re-save it or download it again."
        ) from error


TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0", "none", "")


def check_training_arguments(args) -> None:
    """
    Refuse `TrainingArguments` that would train nothing or train on NaN, and read `resume_from_checkpoint` words.

    Call it at the start of a config's `__post_init__`, so a bad YAML stops the run before any data or embedding work.
    It checks that the learning rate, weight decay, epochs and gradient clipping are finite, that the learning rate
    is positive, and that the run has some steps (`num_train_epochs > 0` unless `max_steps > 0`). A
    `resume_from_checkpoint` of `"true"` (from YAML or `--resume_from_checkpoint true`) becomes `True` (resume from the
    last checkpoint in `output_dir`, as `Trainer.train` understands it) and `"false"` becomes `None`; anything else
    stays a checkpoint path.

    Args:
        args ([`~transformers.TrainingArguments`]):
            The configuration, before `TrainingArguments.__post_init__` runs.

    Raises:
        `ValueError`: naming the option, its value and what would be valid.

    Example:

    ```python
    >>> from types import SimpleNamespace
    >>> args = SimpleNamespace(
    ...     learning_rate=1e-3, weight_decay=0.0, num_train_epochs=-1, max_steps=-1, max_grad_norm=1.0,
    ...     resume_from_checkpoint=None,
    ... )
    >>> check_training_arguments(args)
    Traceback (most recent call last):
    ...
    ValueError: num_train_epochs=-1 trains nothing: set num_train_epochs > 0, or max_steps > 0.

    ```
    """
    for name in ("learning_rate", "weight_decay", "num_train_epochs", "max_grad_norm"):
        value = getattr(args, name, None)
        if value is not None and (isinstance(value, bool) or not math.isfinite(value)):
            raise ValueError(f"{name}={value!r} must be a finite number.")
    if not args.learning_rate > 0:
        raise ValueError(f"learning_rate={args.learning_rate} must be positive.")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise ValueError(
            f"num_train_epochs={args.num_train_epochs} trains nothing: set num_train_epochs > 0, or max_steps > 0."
        )
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.strip().lower() in TRUE_WORDS:
        args.resume_from_checkpoint = True
    elif isinstance(resume, str) and resume.strip().lower() in FALSE_WORDS or resume is False:
        args.resume_from_checkpoint = None
