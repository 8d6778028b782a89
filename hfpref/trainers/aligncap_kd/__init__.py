"""AlignCap knowledge distillation: align an LLM's response to speech tokens with its response to the caption."""

from .aligncap_kd_config import AlignCapKDConfig
from .aligncap_kd_trainer import AlignCapKDTrainer


__all__ = ["AlignCapKDConfig", "AlignCapKDTrainer"]
