from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...hub.cards import CardConfigMixin
from ..base_config import HfprefConfigMixin


DEFAULT_INSTRUCTION = "Describe the speaker's emotion."


@dataclass
class AlignCapKDConfig(CardConfigMixin, HfprefConfigMixin, TrainingArguments):
    r"""
    Configuration of the [`~hfpref.trainers.aligncap_kd.aligncap_kd_trainer.AlignCapKDTrainer`]: AlignCap's KD-regularization
    ([Liang et al., 2024](https://huggingface.co/papers/2410.19134), section 3.1, eq. 5). Only the parameters specific
    to it are listed; see [`~transformers.TrainingArguments`] for the rest. The paper trained with AdamW, lr 1e-5,
    batch 16 and 400 warm-up steps (`recipes/aligncap_kd/config_kd.yaml`).

    Parameters:
        license (`str`, *optional*):
            Hub license id of the model card; by default the base model's card license when that card is local or
            cached, else none (see [`~hfpref.hub.cards.CardConfigMixin`]).
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of both distributions; the distillation term is multiplied by `temperature**2` so its
            gradient keeps its scale (Hinton et al., 2015). At 1.0 the loss is exactly eq. 5.
        kd_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the distillation term. With `kd_weight=0` and `ce_weight > 0` the teacher is not used at all:
            plain cross-entropy on the caption, the no-teacher control of the KD evidence.
        ce_weight (`float`, *optional*, defaults to `0.0`):
            Weight of an extra cross-entropy term of the student on the caption tokens; 0 is pure distillation.
        speech_prompt_column (`str`, *optional*, defaults to `"prompt"`):
            The student's input: speech tokens + instruction.
        text_prompt_column (`str`, *optional*, defaults to `"text_prompt"`):
            The teacher's input: acoustic prompt + caption + instruction.
        response_column (`str`, *optional*, defaults to `"caption"`):
            The response both distributions are taken on.
        max_prompt_length (`int`, *optional*, defaults to `512`):
            Longest prompt, in tokens; longer prompts are refused with an error naming the row (cutting speech
            tokens would silently drop audio).
        max_response_length (`int`, *optional*, defaults to `64`):
            Longest response, in tokens (EOS included); longer responses are cut.
    """

    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of teacher and student."})
    kd_weight: float = field(default=1.0, metadata={"help": "Weight of the distillation term."})
    ce_weight: float = field(default=0.0, metadata={"help": "Weight of the student's cross-entropy on the caption."})
    speech_prompt_column: str = field(default="prompt", metadata={"help": "Student prompt: speech tokens."})
    text_prompt_column: str = field(default="text_prompt", metadata={"help": "Teacher prompt: text."})
    response_column: str = field(default="caption", metadata={"help": "Response column."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longest prompt, in tokens."})
    max_response_length: int = field(default=64, metadata={"help": "Longest response, in tokens."})

    learning_rate: float = field(default=1e-5, metadata={"help": "AlignCap: 1e-5."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X update steps."})
    optim: str = field(default="adamw_torch", metadata={"help": "The optimizer to use."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator picks its columns."})

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.ce_weight < 0 or self.kd_weight < 0:
            raise ValueError(f"kd_weight={self.kd_weight} and ce_weight={self.ce_weight} must be >= 0")
        if self.kd_weight == 0 and self.ce_weight == 0:
            raise ValueError("kd_weight=0 and ce_weight=0 leave nothing to train on")
        if self.max_prompt_length < 1 or self.max_response_length < 2:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length} must be >= 1 and max_response_length="
                f"{self.max_response_length} >= 2 (a token and EOS)"
            )
        columns = [self.speech_prompt_column, self.text_prompt_column, self.response_column]
        if len(set(columns)) != 3:
            raise ValueError(
                f"speech_prompt_column, text_prompt_column and response_column must differ, got {columns}"
            )
        super().__post_init__()
