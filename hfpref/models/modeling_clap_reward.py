"""The CLAP reward model: an MLP over concatenated audio and text embeddings, r(a, c) in (0, 1)."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


logger = logging.getLogger(__name__)


class CLAPRewardConfig(PretrainedConfig):
    """
    Configuration of a [`CLAPRewardModel`].

    Args:
        embedding_dim (`int`, *optional*, defaults to `512`):
            Width of each input embedding (512 for `laion/clap-htsat-unfused`); the MLP reads
            `2 * embedding_dim` features, `[audio_embedding; text_embedding]`.
        hidden_sizes (`list[int]`, *optional*, defaults to `[512, 128]`):
            Hidden layer widths of the MLP (the RLHF captioning paper: 1024 -> 512 -> 128 -> 1).
        dropout (`float`, *optional*, defaults to `0.1`):
            Dropout after each hidden layer.
        reward_clamp (`list[float]`, *optional*, defaults to `[0.01, 0.99]`):
            Rewards are clamped to this range in training mode, as in the paper; `None` for no clamp.
        clap_checkpoint (`str`, *optional*):
            The CLAP checkpoint whose embeddings the model reads: a Hub id (e.g. `"laion/clap-htsat-unfused"`) or a
            local folder. [`~CLAPRewardConfig.save_pretrained`] writes a local folder as a path relative to the
            reward model's folder (`"../clap"`), so the pair can be moved or copied together; loading resolves it
            again (see [`~CLAPRewardConfig.resolve_clap_checkpoint`]).
        clap_fingerprint (`str`, *optional*):
            Fingerprint of that CLAP's weights and processor settings, as the embedding cache keys it.
        num_members (`int`, *optional*, defaults to `1`):
            Heads of an ensemble (Coste et al. 2023, https://huggingface.co/papers/2310.02743), each its own MLP
            (initialised apart, trained on its own bootstrap resample of the pairs by the reward trainer), in one
            artifact over the same embeddings.
        ensemble_lambda (`float`, *optional*, defaults to `0.0`):
            The ensemble's reward is `mean - ensemble_lambda * std` of the members' rewards (std over members,
            population form): 0 is the mean, > 0 the conservative, uncertainty-penalised reward. A RL run can set it
            on the loaded model's config.
    """

    model_type = "hfpref_clap_reward"

    def __init__(
        self,
        embedding_dim: int = 512,
        hidden_sizes: Sequence[int] = (512, 128),
        dropout: float = 0.1,
        reward_clamp: Sequence[float] | None = (0.01, 0.99),
        clap_checkpoint: str | None = None,
        clap_fingerprint: str | None = None,
        num_members: int = 1,
        ensemble_lambda: float = 0.0,
        **kwargs,
    ):
        if num_members < 1:
            raise ValueError(f"num_members={num_members} must be at least 1")
        if not (np.isfinite(ensemble_lambda) and ensemble_lambda >= 0):
            raise ValueError(f"ensemble_lambda={ensemble_lambda} must be a finite number >= 0")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim} must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        if reward_clamp is not None and not (0.0 <= reward_clamp[0] < reward_clamp[1] <= 1.0):
            raise ValueError(f"reward_clamp={list(reward_clamp)} must be [low, high] with 0 <= low < high <= 1")
        self.embedding_dim = embedding_dim
        self.hidden_sizes = list(hidden_sizes)
        self.dropout = dropout
        self.reward_clamp = list(reward_clamp) if reward_clamp is not None else None
        self.clap_checkpoint = clap_checkpoint
        self.clap_fingerprint = clap_fingerprint
        self.num_members = int(num_members)
        self.ensemble_lambda = float(ensemble_lambda)
        super().__init__(**kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """[`~transformers.PretrainedConfig.save_pretrained`], writing a local `clap_checkpoint` relative to `save_directory`."""
        stored = self.clap_checkpoint
        self.clap_checkpoint = portable_clap_reference(stored, save_directory)
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.clap_checkpoint = stored

    def resolve_clap_checkpoint(self, model_dir: str | os.PathLike | None = None) -> str | None:
        """
        The CLAP checkpoint as something `from_pretrained` can load: a Hub id or an absolute local path.

        Args:
            model_dir (`str` or `os.PathLike`, *optional*):
                The folder the reward model was loaded from; defaults to the config's `_name_or_path`.

        Returns:
            `str` or `None`: `None` when the config records no CLAP.

        Raises:
            `FileNotFoundError`: when `clap_checkpoint` is a path relative to the reward model's folder (`"./..."`,
                `"../..."`) and no CLAP folder is there, naming both folders.
        """
        reference = self.clap_checkpoint
        if reference is None or not _is_relative_reference(reference):
            return reference
        model_dir = model_dir or getattr(self, "_name_or_path", None)
        if model_dir and os.path.isdir(model_dir):
            path = os.path.normpath(os.path.join(model_dir, reference))
            if os.path.isdir(path):
                return path
            where = f"so the reward model in {model_dir} expects its CLAP in {path}, which does not exist"
        else:
            where = f"but the reward model was not loaded from a local folder ({model_dir or 'in memory'})"
        raise FileNotFoundError(
            f"clap_checkpoint={reference!r} is a path relative to the reward model's folder, {where}. Copy the CLAP "
            "folder there, or pass the CLAP explicitly (embedder= to score(), clap_model_name_or_path / --clap-model "
            "in recipes and hfpref eval)."
        )


def _is_relative_reference(reference: str) -> bool:
    # Hub ids never start with "." (https://huggingface.co/docs/hub/repositories-naming), so "./x" and "../x" are paths.
    return reference.startswith(("./", "../"))


def portable_clap_reference(reference: str | None, save_directory: str | os.PathLike) -> str | None:
    """
    The `clap_checkpoint` to write in a reward model saved to `save_directory`.

    A Hub id stays as is; an existing local folder becomes a path relative to `save_directory` (`"../clap"`), so the
    reward model does not record an absolute path of the machine it was trained on.

    Example:
    ```python
    >>> portable_clap_reference("laion/clap-htsat-unfused", "/tmp/rm")
    'laion/clap-htsat-unfused'

    ```
    """
    if reference is None or _is_relative_reference(reference) or not os.path.isdir(reference):
        return reference
    try:
        relative = os.path.relpath(os.path.abspath(reference), os.path.abspath(save_directory))
    except ValueError:  # another drive on Windows: no relative path exists
        return os.path.abspath(reference)
    relative = relative.replace(os.sep, "/")
    return relative if relative.startswith("../") else f"./{relative}"


@dataclass
class CLAPRewardOutput(ModelOutput):
    """
    Args:
        rewards (`torch.FloatTensor` of shape `(batch,)`): r(a, c) in (0, 1); for an ensemble, the members'
            `mean - ensemble_lambda * std`.
        logits (`torch.FloatTensor` of shape `(batch,)`): the pre-sigmoid scores (an ensemble's: the members' mean).
        member_rewards (`torch.FloatTensor` of shape `(batch, num_members)`): each member's reward (training clamps
            them as `rewards`).
    """

    rewards: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    member_rewards: torch.FloatTensor | None = None


def ensemble_reward(member_rewards: torch.Tensor, ensemble_lambda: float) -> torch.Tensor:
    """
    `mean - ensemble_lambda * std` over the last dimension (population std).

    Example:
    ```python
    >>> import torch
    >>> ensemble_reward(torch.tensor([[0.2, 0.4, 0.6]]), 1.0)  # mean 0.4, std sqrt(0.08 / 3) = 0.1633
    tensor([0.2367])

    ```
    """
    mean = member_rewards.mean(-1)
    if member_rewards.shape[-1] == 1 or ensemble_lambda == 0:
        return mean
    return mean - ensemble_lambda * member_rewards.std(-1, unbiased=False)


class CLAPRewardModel(PreTrainedModel):
    """
    Reward model of "Aligning Audio Captions with Human Preferences" (https://huggingface.co/papers/2509.14659,
    section 3.1), also the binary-feedback reward model of BATON (https://huggingface.co/papers/2402.00744): frozen CLAP embeddings of the audio and
    the caption, concatenated, through an MLP and a sigmoid, so r(a, c) is in (0, 1).

    It reads precomputed embeddings (cached once per clip and caption); [`~CLAPRewardModel.score`]
    runs the CLAP embedder and the head end to end.
    """

    config_class = CLAPRewardConfig
    base_model_prefix = "reward"
    main_input_name = "audio_embedding"

    def __init__(self, config: CLAPRewardConfig):
        super().__init__(config)

        def head() -> nn.Sequential:
            layers: list[nn.Module] = []
            width = 2 * config.embedding_dim
            for hidden in config.hidden_sizes:
                layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
                width = hidden
            layers.append(nn.Linear(width, 1))
            return nn.Sequential(*layers)

        # One head is `mlp` (the layout every single reward model was saved with); an ensemble's are `members`.
        if getattr(config, "num_members", 1) == 1:
            self.mlp = head()
        else:
            self.members = nn.ModuleList([head() for _ in range(config.num_members)])
        self.post_init()

    @property
    def heads(self) -> list[nn.Sequential]:
        """The MLP of each member (one for a single reward model)."""
        return list(self.members) if hasattr(self, "members") else [self.mlp]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[`~transformers.PreTrainedModel.from_pretrained`], restricted to safetensors: nothing is ever unpickled."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                "CLAPRewardModel loads safetensors checkpoints only; pickled weights are never unpickled."
            )
        kwargs["use_safetensors"] = True
        from ..data.loading import check_input_exists
        from ..utils.checks import naming_corrupt_checkpoint
        from ..utils.distributed import zero3_init_disabled

        check_input_exists(pretrained_model_name_or_path, "the reward model")

        # A small head, frozen wherever it scores: loaded whole even in a ZeRO-3 launch (a head that is trained
        # further is partitioned by the DeepSpeed engine when it is prepared).
        with naming_corrupt_checkpoint(pretrained_model_name_or_path), zero3_init_disabled():
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        reference = model.config.clap_checkpoint
        if reference is not None and _is_relative_reference(reference):
            try:
                model.config.clap_checkpoint = model.config.resolve_clap_checkpoint(str(pretrained_model_name_or_path))
            except FileNotFoundError as error:
                # The head still loads (it reads precomputed embeddings); whatever needs the CLAP raises this error.
                logger.warning("%s", error)
        return model

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=5**0.5)
            bound = 1 / module.in_features**0.5
            nn.init.uniform_(module.bias, -bound, bound)

    def _check_embeddings(self, name: str, embedding: torch.Tensor) -> None:
        if embedding.ndim != 2 or embedding.shape[-1] != self.config.embedding_dim:
            raise ValueError(
                f"{name} has shape {tuple(embedding.shape)}, but this reward model reads "
                f"(batch, {self.config.embedding_dim}) embeddings from {self.config.clap_checkpoint or 'its CLAP'}: "
                "embed with the same CLAP checkpoint it was trained on."
            )
        if not torch.isfinite(embedding).all():
            bad = (~torch.isfinite(embedding)).any(-1).nonzero().flatten().tolist()
            raise ValueError(f"{name} has NaN or inf values in rows {bad[:10]}.")

    def get_input_embeddings(self) -> None:
        """None: the head reads embeddings, it has no token embedding (FSDP2's wrapping asks for one)."""
        return None

    def get_output_embeddings(self) -> None:
        return None

    def forward(
        self, audio_embedding: torch.Tensor, text_embedding: torch.Tensor, return_dict: bool = True, **kwargs
    ) -> CLAPRewardOutput:
        """
        Args:
            audio_embedding (`torch.FloatTensor` of shape `(batch, embedding_dim)`): CLAP audio embeddings.
            text_embedding (`torch.FloatTensor` of shape `(batch, embedding_dim)`): CLAP text embeddings.
        """
        self._check_embeddings("audio_embedding", audio_embedding)
        self._check_embeddings("text_embedding", text_embedding)
        if audio_embedding.shape[0] != text_embedding.shape[0]:
            raise ValueError(
                f"audio_embedding has {audio_embedding.shape[0]} rows but text_embedding has {text_embedding.shape[0]}."
            )
        heads = self.heads
        dtype = heads[0][0].weight.dtype
        features = torch.cat([audio_embedding, text_embedding], dim=-1).to(dtype)
        member_logits = torch.cat([mlp(features) for mlp in heads], dim=-1)  # (batch, members)
        member_rewards = torch.sigmoid(member_logits)
        if self.training and self.config.reward_clamp is not None:
            member_rewards = member_rewards.clamp(*self.config.reward_clamp)
        rewards = ensemble_reward(member_rewards, getattr(self.config, "ensemble_lambda", 0.0))
        output = CLAPRewardOutput(rewards=rewards, logits=member_logits.mean(-1), member_rewards=member_rewards)
        return output if return_dict else output.to_tuple()

    @torch.inference_mode()
    def score(
        self,
        audio: Sequence[np.ndarray],
        captions: Sequence[str],
        embedder=None,
        *,
        sampling_rate: int | None = None,
    ) -> list[float]:
        """
        Reward of each (clip, caption) pair, end to end: CLAP embeddings, then the head.

        Args:
            audio (`Sequence[np.ndarray]`):
                Mono waveforms at `sampling_rate`, one per caption.
            captions (`Sequence[str]`):
                The captions to score.
            embedder ([`~hfpref.encoders.clap.ClapEmbedder`], *optional*):
                The CLAP embedder; by default `config.clap_checkpoint` is loaded. Its fingerprint
                must match `config.clap_fingerprint` when the model records one.
            sampling_rate (`int`, *optional*):
                Sampling rate of `audio` in Hz; defaults to the embedder's. Clips at another rate are resampled to the
                embedder's before CLAP sees them (pass a text-to-audio model's 16 kHz renders with
                `sampling_rate=16000`).

        Returns:
            `list[float]`: rewards in (0, 1).
        """
        from ..encoders.clap import ClapEmbedder

        if len(audio) != len(captions):
            raise ValueError(f"score: {len(audio)} clips but {len(captions)} captions.")
        if embedder is None:
            if self.config.clap_checkpoint is None:
                raise ValueError("score: the config names no clap_checkpoint; pass embedder=.")
            embedder = ClapEmbedder.from_pretrained(self.config.resolve_clap_checkpoint(), show_progress=False)
        check_clap_pairing(self, embedder)
        device = self.device
        rate = embedder.sampling_rate if sampling_rate is None else sampling_rate
        audio_embedding = torch.from_numpy(embedder.embed_audio(list(audio), sampling_rate=rate)).to(device)
        text_embedding = torch.from_numpy(embedder.embed_text(list(captions))).to(device)
        was_training = self.training
        self.eval()
        try:
            rewards = self(audio_embedding=audio_embedding, text_embedding=text_embedding).rewards
        finally:
            self.train(was_training)
        return rewards.float().cpu().tolist()


class ClapMismatchError(ValueError):
    """A reward model paired with a CLAP other than the one whose embeddings it was trained on."""


def check_clap_pairing(reward_model: CLAPRewardModel, embedder) -> None:
    """
    Refuse to pair a reward model with a CLAP other than the one it was trained on.

    A reward model reads CLAP embeddings; another CLAP (another checkpoint, fine-tuned weights, other preprocessing)
    gives vectors of the same width that mean something else, and the rewards come out as garbage without any error.
    Every path that pairs the two calls this: [`CLAPRewardModel.score`], the reward callables of
    [`~hfpref.rewards.functions`] (so RL recipes, the quickstart and the judges), and `hfpref eval --metrics reward`.

    Args:
        reward_model ([`CLAPRewardModel`]):
            The reward model; its config records `clap_fingerprint` and `clap_checkpoint`.
        embedder ([`~hfpref.encoders.clap.ClapEmbedder`]):
            The CLAP embedder about to feed it.

    Raises:
        [`ClapMismatchError`]: when the widths differ or the fingerprints differ, naming both fingerprints, the
            reward model's path, the CLAP it was trained on and the CLAP it was given. A reward model that records no
            fingerprint (saved by an older hfpref) is checked on width only, with a warning.
    """
    config = reward_model.config
    model_path = getattr(config, "_name_or_path", None) or "<in-memory reward model>"
    given = getattr(embedder, "model_name", None) or "<in-memory CLAP>"
    trained_on = config.clap_checkpoint or "an unrecorded CLAP checkpoint"
    if embedder.embedding_dim != config.embedding_dim:
        raise ClapMismatchError(
            f"the reward model {model_path} reads {config.embedding_dim}-d embeddings of {trained_on}, but the CLAP "
            f"{given} gives {embedder.embedding_dim}-d ones: use the CLAP the reward model was trained on."
        )
    if not config.clap_fingerprint:
        logger.warning(
            "The reward model %s records no CLAP fingerprint, so its pairing with the CLAP %s cannot be verified; "
            "make sure it is %s.",
            model_path,
            given,
            trained_on,
        )
        return
    if embedder.fingerprint != config.clap_fingerprint:
        raise ClapMismatchError(
            f"the reward model {model_path} was trained on the embeddings of the CLAP {trained_on} (fingerprint "
            f"{config.clap_fingerprint}), but it is paired with the CLAP {given} (fingerprint {embedder.fingerprint}). "
            "Its rewards would be meaningless: point clap_model_name_or_path (or --clap-model) at the CLAP it was "
            "trained on, or train a reward model on this one."
        )


AutoConfig.register(CLAPRewardConfig.model_type, CLAPRewardConfig)
AutoModel.register(CLAPRewardConfig, CLAPRewardModel)
