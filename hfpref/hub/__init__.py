"""Hub cards (model, reward model, dataset) rendered from the templates in `hfpref.hub_cards`."""

from hfpref.hub.cards import (
    METHODS,
    TEMPLATES,
    render_dataset_card,
    render_model_card,
    render_reward_model_card,
    template_path,
)


__all__ = [
    "METHODS",
    "TEMPLATES",
    "render_dataset_card",
    "render_model_card",
    "render_reward_model_card",
    "template_path",
]
