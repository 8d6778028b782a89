from dataclasses import dataclass

from trl import DPOConfig

from ...hub.cards import CardConfigMixin
from ..base_config import HfprefConfigMixin


# AlignCap (https://huggingface.co/papers/2410.19134), section 5.3: about 1k steps at lr 5e-7; about 50k pairs was the
# point of diminishing returns.
PAPER_DPO = {"learning_rate": 5e-7, "max_steps": 1000, "beta": 0.1}
PRESETS: dict[str, dict] = {"paper": PAPER_DPO}


@dataclass
class AlignCapDPOConfig(CardConfigMixin, HfprefConfigMixin, DPOConfig):
    r"""
    Configuration of AlignCap's PO-regularization ([`~hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer.AlignCapDPOTrainer`]):
    TRL's [`~trl.DPOConfig`] with the paper's schedule as a preset and its numbers checked before any data work. It
    adds only the card's `license` ([`~hfpref.hub.cards.CardConfigMixin`]): the speech-token settings (SpeechTokenizer checkpoint, audio column, instruction) shape the data and
    stay with the script's data arguments ([`~hfpref.scripts.utils.AlignCapScriptArguments`]), shared with the KD
    stage that must tokenize speech the same way; the pairs carry the token ids DPO trains on.

    Presets: `AlignCapDPOConfig.from_preset("paper", output_dir=...)` sets `learning_rate=5e-7`, `max_steps=1000`,
    `beta=0.1` ([`PAPER_DPO`]); `recipes/aligncap_dpo/config_dpo.yaml` writes the same numbers out.

    Example:
    ```python
    >>> args = AlignCapDPOConfig.from_preset("paper", output_dir="out", bf16=False, report_to="none")
    >>> args.learning_rate, args.max_steps, args.beta, args.loss_type
    (5e-07, 1000, 0.1, ['sigmoid'])

    ```
    """

    presets = PRESETS

    def __post_init__(self):
        from ...utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before the pairs are built
        if isinstance(self.beta, bool) or not self.beta > 0:
            raise ValueError(f"beta={self.beta!r} must be a positive number (the paper: 0.1)")
        super().__post_init__()
