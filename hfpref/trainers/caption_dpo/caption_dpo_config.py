import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import AudioConfigMixin


LOSS_TYPES = ["sigmoid", "ipo"]


@dataclass
class CaptionDPOConfig(CardConfigMixin, AudioConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`CaptionDPOTrainer`]: DPO of an audio captioner (an audio LLM such as Qwen2-Audio, or a
    seq2seq captioner) on (audio, chosen caption, rejected caption) rows. Only the parameters specific to it are
    listed; see [`~transformers.TrainingArguments`] for the rest.

    Parameters:
        beta (`float`, *optional*, defaults to `0.1`):
            DPO's `beta`: the temperature of the implicit reward `beta * (log pi(c | a) - log ref(c | a))`; the higher,
            the closer the policy stays to the reference. For `"ipo"`, the regularisation `tau` of IPO.
        loss_type (`str`, *optional*, defaults to `"sigmoid"`):
            `"sigmoid"`: DPO's loss `-log sigmoid(beta * margin)` (https://huggingface.co/papers/2305.18290, eq. 7);
            `"ipo"`: IPO's `(margin - 1 / (2 * beta))^2` (https://huggingface.co/papers/2310.12036, eq. 17), on
            log-ratios averaged over each caption's tokens as TRL's `DPOTrainer` does.
        chosen_column (`str`, *optional*, defaults to `"chosen"`): column of the preferred captions.
        rejected_column (`str`, *optional*, defaults to `"rejected"`): column of the dispreferred captions.
        max_caption_tokens (`int`, *optional*, defaults to `64`): captions are truncated to this many tokens (eos
            included).
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Turn off every dropout of the policy and the reference, as TRL's `disable_dropout`: with dropout on, a
            policy equal to its reference would show implicit rewards that are not 0.

    The audio is read from `audio_column` ([`~hfpref.trainers.base_config.AudioConfigMixin`]).
    """

    beta: float = field(default=0.1, metadata={"help": "DPO's beta (IPO's tau)."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"One of {LOSS_TYPES}."})
    chosen_column: str = field(default="chosen", metadata={"help": "Column of the preferred captions."})
    rejected_column: str = field(default="rejected", metadata={"help": "Column of the dispreferred captions."})
    max_caption_tokens: int = field(default=64, metadata={"help": "Longest caption, in tokens (eos included)."})
    disable_dropout: bool = field(default=True, metadata={"help": "Turn off dropout in the policy and reference."})

    learning_rate: float = field(default=1e-6, metadata={"help": "Initial learning rate (TRL's DPO default)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X update steps."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "The collator passes the caption columns through to the trainer."}
    )

    def __post_init__(self):
        from ...utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before any data work
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}")
        if not math.isfinite(self.beta) or self.beta <= 0:
            raise ValueError(f"beta={self.beta} must be a finite number > 0")
        if self.max_caption_tokens < 2:
            raise ValueError(f"max_caption_tokens={self.max_caption_tokens} must leave room for a token and eos")
        if self.chosen_column == self.rejected_column:
            raise ValueError(f"chosen_column and rejected_column are both {self.chosen_column!r}")
        super().__post_init__()
