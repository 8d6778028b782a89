"""Checks a training script runs before it saves a model, so a run never ends "successfully" with a broken one."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import torch


logger = logging.getLogger(__name__)


class NonFiniteModelError(RuntimeError):
    """A model or its training loss holds NaN or inf: saving it would ship a broken checkpoint."""


class DivergedTrainingError(NonFiniteModelError):
    """Training diverged: the last logged loss is finite but far above the first (saving it would ship a broken model)."""


LOSS_KEYS = ("loss", "train_loss", "eval_loss")
# A run has diverged when its last logged training or evaluation loss exceeds DIVERGENCE_FACTOR times the first logged
# training loss (or LOSS_FLOOR, whichever is larger, in magnitude). Generous on purpose: the tiny models of the tests
# and smoke runs are noisy, but no run that learns ends 100x above where it started; a diverged one (a reward model at
# learning rate 1e6: eval loss 3e10) ends many orders of magnitude above. The floor keeps losses that start near 0
# (policy-gradient losses, whose sign and size follow the advantages) from being read as diverged.
DIVERGENCE_FACTOR = 100.0
LOSS_FLOOR = 1.0


def _is_loss_key(key: str) -> bool:
    """`loss`, `eval_loss` and the loss of a named evaluation set (`eval_<name>_loss`); not `train_loss`, the run's mean."""
    return key == "loss" or (key.startswith("eval_") and key.endswith("loss"))


def check_not_diverged(
    log_history: Iterable[Mapping] | None,
    *,
    initial_loss: float | None = None,
    what: str = "the model",
    factor: float = DIVERGENCE_FACTOR,
    floor: float = LOSS_FLOOR,
) -> None:
    """
    Refuse a run whose last logged loss is finite but exploded: more than `factor` times its initial loss (at least
    `floor`), in magnitude.

    Checked: the last value of `loss` and of every `eval_*loss` key in `log_history`, against `initial_loss` (the loss
    of the run's first optimizer step, which [`~hfpref.trainers.base_trainer.BaseTrainer`] records) or, without it,
    the first logged `loss`. `train_loss` (the mean over the whole run, logged once at its end) is not: a spike the
    run recovered from would count in it. Against the first logged loss alone, a run that diverged within its first
    logging window is caught only when its losses or weights are no longer finite ([`check_finite_training`]);
    non-finite values are that function's to report.

    Args:
        log_history (`Iterable[Mapping]`, *optional*):
            `trainer.state.log_history`.
        initial_loss (`float`, *optional*):
            The loss of the first optimizer step (before any update); defaults to the first logged `loss`.
        what (`str`, *optional*, defaults to `"the model"`):
            How the error names the model, e.g. its output folder.
        factor (`float`, *optional*, defaults to `DIVERGENCE_FACTOR` (100)):
            How far above the first loss the last one may end.
        floor (`float`, *optional*, defaults to `LOSS_FLOOR` (1.0)):
            The smallest reference loss: a run whose first loss is below it may end up to `factor * floor`.

    Raises:
        [`DivergedTrainingError`]: naming the loss, its last value and step, and the first loss.

    Example:

    ```python
    >>> check_not_diverged([{"loss": 0.69, "step": 5}, {"loss": 0.41, "step": 10}, {"eval_loss": 0.52, "step": 10}])
    >>> check_not_diverged([{"loss": 0.69, "step": 5}, {"loss": 2.0e9, "step": 10}])
    Traceback (most recent call last):
    ...
    hfpref.utils.checks.DivergedTrainingError: the model diverged: the last logged loss is 2e+09 at step 10, more than 100x the first logged training loss 0.69 (taken as at least 1); not saving it. Lower the learning rate (or clip gradients: max_grad_norm).

    ```
    """
    entries = list(log_history or ())
    first = next((e["loss"] for e in entries if isinstance(e.get("loss"), (int, float))), None)
    source = "first logged training loss"
    if initial_loss is not None and math.isfinite(initial_loss):
        first, source = initial_loss, "loss of the first training step"
    if first is None or not math.isfinite(first):
        return
    reference = max(abs(float(first)), floor)
    last: dict[str, tuple[float, Any]] = {}
    for entry in entries:
        for key, value in entry.items():
            if _is_loss_key(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                last[key] = (float(value), entry.get("step", "?"))
    for key, (value, step) in last.items():
        if math.isfinite(value) and abs(value) > factor * reference:
            raise DivergedTrainingError(
                f"{what} diverged: the last logged {key} is {value:.4g} at step {step}, more than {factor:g}x the "
                f"{source} {first:.4g} (taken as at least {floor:g}); not saving it. Lower the learning rate (or clip "
                "gradients: max_grad_norm)."
            )


def check_training_losses(
    log_history: Iterable[Mapping] | None, *, initial_loss: float | None = None, what: str = "the model"
) -> None:
    """
    Refuse a training log whose `loss`, `train_loss` or `eval_loss` is NaN or inf ([`NonFiniteModelError`]), or whose
    last loss diverged from `initial_loss` ([`check_not_diverged`]). [`~hfpref.trainers.base_trainer.BaseTrainer`]
    runs it at the end of every `train()`; [`check_finite_training`] runs it before checking the weights.
    """
    hint = (
        "Check the learning rate, loss scales and inputs (a NaN loss or an infinite setting such as bt_scale "
        "poisons every weight)."
    )
    entries = list(log_history or ())
    for entry in entries:
        for key in LOSS_KEYS:
            value = entry.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise NonFiniteModelError(
                    f"{what}: the logged {key} is {value} at step {entry.get('step', '?')}; not saving it. {hint}"
                )
    check_not_diverged(entries, initial_loss=initial_loss, what=what)


def check_finite_training(
    model: torch.nn.Module, log_history: Iterable[Mapping] | None = None, *, what: str = "the model"
) -> None:
    """
    Refuse a model whose weights or logged losses are NaN or inf, or whose training diverged.

    Call it after training and before `save_model`: it raises instead of letting the run save the checkpoint and
    exit 0, so scripts, the quickstart and CI see the failure. Every floating-point parameter and buffer is checked,
    every `loss`, `train_loss` and `eval_loss` in the trainer's `state.log_history`, and the last logged losses against
    the first ([`check_not_diverged`]: more than 100x above it is a diverged run).

    Args:
        model (`torch.nn.Module`):
            The trained model.
        log_history (`Iterable[Mapping]`, *optional*):
            `trainer.state.log_history`.
        what (`str`, *optional*, defaults to `"the model"`):
            How the error names the model, e.g. its output folder.

    Raises:
        [`NonFiniteModelError`]: naming the first non-finite tensors or the first logged step whose loss is not
            finite, and what usually causes it; [`DivergedTrainingError`] (a subclass) for a diverged run.

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
    check_training_losses(log_history, what=what)
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


TRAINER_STATE = "trainer_state.json"  # transformers writes it last into a checkpoint folder


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """
    Why the checkpoint `folder` cannot be resumed from, or `None` when it is complete.

    A kill during `Trainer._save_checkpoint` leaves a torn folder: transformers writes the weights, then the optimizer,
    scheduler and RNG states, and `trainer_state.json` last. The folder is torn when `trainer_state.json` is missing
    or unreadable, a `*.safetensors` file does not open (truncated or overwritten), or a `torch.save` file
    (`*.pt`, `*.pth`, `*.bin`, in the folder or below it, as DeepSpeed's `global_step*/`) is empty or not a whole zip
    archive (its directory sits at the end of the file, so a truncated one has none).

    Example:

    ```python
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> checkpoint_problem(folder)
    'no trainer_state.json (transformers writes it last: the save was cut off)'

    ```
    """
    folder = os.fspath(folder)
    state = os.path.join(folder, TRAINER_STATE)
    if not os.path.isfile(state):
        return f"no {TRAINER_STATE} (transformers writes it last: the save was cut off)"
    try:
        with open(state, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError) as error:
        return f"{state} is unreadable ({error})"
    bad = _unreadable_safetensors(folder)
    if bad:
        return f"unreadable safetensors file {bad[0]}"
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if not name.endswith((".pt", ".pth", ".bin")):
                continue
            path = os.path.join(root, name)
            if os.path.getsize(path) == 0 or not zipfile.is_zipfile(path):
                return f"{path} is empty or truncated (not a whole torch.save archive)"
    return None


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | bool | None):
    """
    The checkpoint `Trainer.train(resume_from_checkpoint=...)` should resume from, refusing or skipping torn ones
    ([`checkpoint_problem`]).

    - `True` (resume from the newest checkpoint of `output_dir`): the newest complete `checkpoint-<step>`; each newer
      torn one is skipped with a warning naming it and why. When every checkpoint is torn, an error names them all;
      when there is none, `True` is returned for transformers to report.
    - A path: refused, naming it and why, when it is a torn checkpoint (a path that was asked for is never swapped
      for another).
    - Anything else is returned unchanged.

    Raises:
        [`CorruptCheckpointError`]: naming the torn checkpoint(s).
    """
    if isinstance(resume_from_checkpoint, str):
        if os.path.isdir(resume_from_checkpoint):
            problem = checkpoint_problem(resume_from_checkpoint)
            if problem:
                raise CorruptCheckpointError(
                    f"cannot resume from {resume_from_checkpoint}: {problem}. Resume from an earlier checkpoint "
                    "(or resume_from_checkpoint: true, which takes the newest complete one)."
                )
        return resume_from_checkpoint
    if resume_from_checkpoint is not True or not os.path.isdir(output_dir):
        return resume_from_checkpoint
    steps = {}
    for name in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps[os.path.join(output_dir, name)] = int(match.group(1))
    torn = []
    for path in sorted(steps, key=steps.get, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            for skipped, why in torn:
                logger.warning("the checkpoint %s is torn (%s): resuming from %s instead", skipped, why, path)
            return path
        torn.append((path, problem))
    if torn:
        named = "; ".join(f"{path}: {why}" for path, why in torn)
        raise CorruptCheckpointError(f"every checkpoint in {output_dir} is torn, none to resume from ({named})")
    return True
