"""
One way to load a checkpoint: safetensors only, no remote code, and a clear error for a path that is not there.

`from_pretrained` in transformers and diffusers falls back to `pytorch_model.bin` / `diffusion_pytorch_model.bin`,
which torch reads with its unpickler, and a local path that does not exist is reported as a malformed Hub id
("Repo id must be in the form 'repo_name' or 'namespace/repo_name'"). [`load_pretrained`] checks the path first,
refuses a folder that holds only pickled weights (naming the folder), passes `use_safetensors=True` to every model
class, and refuses a request for remote code (`trust_remote_code` set) instead of accepting and ignoring it. [`check_pretrained_path`] is the
same check for loaders that are not `from_pretrained` (a SpeechTokenizer checkpoint, a reward model behind a factory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


SAFE_WEIGHTS_SUFFIXES = (".safetensors",)
PICKLED_WEIGHTS_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class UnsafeCheckpointError(ValueError):
    """A checkpoint that would have to be unpickled, or would run code it ships, to be loaded."""


def looks_local(name_or_path: str | os.PathLike) -> bool:
    """
    Whether `name_or_path` is meant as a local path rather than a Hub id (`name` or `owner/name`): it exists, is a
    `Path`, starts with `/`, `.`, `~` or a drive, or has more than one `/`.

    Example:
    ```python
    >>> looks_local("cvssp/audioldm-s-full-v2"), looks_local("./out/merged"), looks_local("/tmp/x"), looks_local("a/b/c")
    (False, True, True, True)

    ```
    """
    if isinstance(name_or_path, Path):
        return True
    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return True
    return text.startswith(("/", ".", "~", "\\")) or text.count("/") > 1 or "\\" in text or ":" in text[:3]


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Safetensors and pickled weight files in `folder` (not its subfolders)."""
    files = [p for p in folder.iterdir() if p.is_file()]
    safe = [p for p in files if p.name.endswith(SAFE_WEIGHTS_SUFFIXES)]
    pickled = [p for p in files if p.name.endswith(PICKLED_WEIGHTS_SUFFIXES) and not p.name.startswith("training_")]
    return safe, pickled


def remote_code_requested(*configs: Any) -> bool:
    """
    Whether any of `configs` (dataclasses such as TRL's `DPOConfig`, or dicts) asks for remote code: a truthy
    `trust_remote_code` attribute or key, or one inside its `model_init_kwargs`.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> remote_code_requested(SimpleNamespace(trust_remote_code=False, model_init_kwargs={"trust_remote_code": True}))
    True

    ```
    """
    for config in configs:
        get = config.get if isinstance(config, dict) else (lambda key, c=config: getattr(c, key, None))
        init_kwargs = get("model_init_kwargs")
        if get("trust_remote_code") or (isinstance(init_kwargs, dict) and init_kwargs.get("trust_remote_code")):
            return True
    return False


def refuse_remote_code(trust_remote_code: Any, name_or_path: str | os.PathLike | None = None) -> None:
    """
    Raise when remote code is requested: `trust_remote_code` is `True`, or a config (or a tuple of configs) that
    asks for it ([`remote_code_requested`]). hfpref never runs code shipped with a checkpoint, and a flag it would
    ignore is refused rather than accepted.

    Raises:
        [`UnsafeCheckpointError`]: naming the checkpoint.
    """
    if not isinstance(trust_remote_code, (bool, type(None))):
        configs = trust_remote_code if isinstance(trust_remote_code, tuple) else (trust_remote_code,)
        trust_remote_code = remote_code_requested(*configs)
    if trust_remote_code:
        where = f" for {os.fspath(name_or_path)!r}" if name_or_path is not None else ""
        raise UnsafeCheckpointError(
            f"trust_remote_code is refused{where}: hfpref never runs code shipped with a checkpoint. Use a model "
            "whose architecture is in transformers / diffusers, and leave trust_remote_code unset (False)."
        )


def check_pretrained_path(
    name_or_path: str | os.PathLike, *, subfolder: str | None = None, weights: bool = True, what: str = "model"
) -> Path | None:
    """
    Check a checkpoint location before loading it.

    A Hub id is left to `from_pretrained` (with `use_safetensors=True` it refuses pickled Hub weights itself). A local
    path must exist; when `weights` is set, a folder must hold `.safetensors` weights, and a folder whose weights
    are only pickled (`.bin`, `.pt`, `.ckpt`, ...) is refused. A pipeline folder (`model_index.json`) is checked
    component by component.

    Args:
        name_or_path (`str` or `os.PathLike`): a Hub id or a local folder / file.
        subfolder (`str`, *optional*): the subfolder `from_pretrained` will read.
        weights (`bool`, *optional*, defaults to `True`): whether the checkpoint must hold weights (`False` for a
            tokenizer or processor).
        what (`str`, *optional*, defaults to `"model"`): what is loaded, for the error messages.

    Returns:
        `Path` of the local folder or file, or `None` for a Hub id.

    Raises:
        `FileNotFoundError`: a local path that does not exist (named).
        [`UnsafeCheckpointError`]: a folder with pickled weights only (named).
    """
    if not looks_local(name_or_path):
        return None
    shown = os.path.join(os.fspath(name_or_path), subfolder) if subfolder else os.fspath(name_or_path)
    path = Path(os.path.expanduser(shown))
    if not path.exists():
        raise FileNotFoundError(f"{what}: the local path {shown!r} does not exist")
    if not weights:
        return path
    if path.is_file():
        if not path.name.endswith(SAFE_WEIGHTS_SUFFIXES):
            raise UnsafeCheckpointError(
                f"{what} weights {str(path)!r} are not safetensors; hfpref loads .safetensors only and never unpickles "
                f"{', '.join(PICKLED_WEIGHTS_SUFFIXES)} files"
            )
        return path
    folders = [path]
    if (path / "model_index.json").is_file():  # a diffusers pipeline: weights live in component folders
        folders = [p for p in sorted(path.iterdir()) if p.is_dir() and _weight_files(p) != ([], [])]
    for folder in folders:
        safe, pickled = _weight_files(folder)
        if pickled and not safe:
            raise UnsafeCheckpointError(
                f"{what} folder {str(folder)!r} holds only pickled weights ({', '.join(sorted(p.name for p in pickled))})"
                "; hfpref loads safetensors only and never unpickles a checkpoint. Convert it once where you trust "
                "it: model.save_pretrained(folder, safe_serialization=True)"
            )
        if not safe and folder == path:
            raise FileNotFoundError(f"{what} folder {str(folder)!r} holds no .safetensors weights")
    return path


def _is_model_class(cls: Any) -> bool:
    """Whether `cls.from_pretrained` loads weights (a model or a pipeline) rather than a tokenizer or processor."""
    names = {klass.__name__ for klass in getattr(cls, "__mro__", ())}
    return bool(names & {"PreTrainedModel", "_BaseAutoModelClass", "ModelMixin", "DiffusionPipeline"})


def load_pretrained(cls: Any, name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs) -> Any:
    """
    `cls.from_pretrained(name_or_path, **kwargs)`, safely: the local path must exist, a model's weights must be
    safetensors (`use_safetensors=True`; a folder holding only `.bin` / `.pt` weights is refused, naming it), and
    a request for remote code (`trust_remote_code` set) is refused.

    Args:
        cls: an Auto class (`AutoModelForCausalLM`, `AutoTokenizer`, ...), a concrete model or processor class, a
            diffusers model or pipeline class.
        name_or_path (`str` or `os.PathLike`): a Hub id or a local folder.
        trust_remote_code (`bool`, *optional*, defaults to `False`): refused when `True`.
        **kwargs: passed on to `from_pretrained` (`dtype`, `revision`, `subfolder`, ...); `use_safetensors=False` is
            refused.

    Returns:
        What `cls.from_pretrained` returns.

    Example:
    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> load_pretrained(AutoModelForCausalLM, "./no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: AutoModelForCausalLM: the local path './no/such/folder' does not exist

    ```
    """
    refuse_remote_code(trust_remote_code or kwargs.pop("trust_remote_code", False), name_or_path)
    is_model = _is_model_class(cls)
    if is_model and kwargs.get("use_safetensors") is False:
        raise UnsafeCheckpointError(f"use_safetensors=False is refused for {os.fspath(name_or_path)!r}")
    what = getattr(cls, "__name__", "checkpoint")
    check_pretrained_path(name_or_path, subfolder=kwargs.get("subfolder"), weights=is_model, what=what)
    if is_model:
        kwargs["use_safetensors"] = True
    return cls.from_pretrained(os.fspath(name_or_path), **kwargs)
