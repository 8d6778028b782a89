"""The audibility classifier that guides captioners towards audible captions."""

from .audibility_classifier_config import AudibilityClassifierConfig
from .audibility_classifier_trainer import AudibilityClassifierTrainer


__all__ = ["AudibilityClassifierConfig", "AudibilityClassifierTrainer"]
