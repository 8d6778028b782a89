"""Hub cards (model, reward model, dataset) rendered from the templates in `hfpref.hub_cards`, and dataset pushes."""

from .cards import (
    METHODS,
    TEMPLATES,
    CardConfigMixin,
    render_dataset_card,
    render_model_card,
    render_reward_model_card,
    template_path,
)
from .datasets import push_preference_dataset


__all__ = [
    "METHODS",
    "CardConfigMixin",
    "TEMPLATES",
    "push_preference_dataset",
    "render_dataset_card",
    "render_model_card",
    "render_reward_model_card",
    "template_path",
]
