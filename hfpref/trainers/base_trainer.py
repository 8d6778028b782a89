"""
What every hfpref trainer shares, as TRL's `trl/trainer/base_trainer.py`: the method's name, paper and Hub tags, and
one `create_model_card` that renders the card through [`hfpref.hub.cards`] and writes `README.md` to `output_dir`.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import ModelCard
from transformers import Trainer

from ..hub.cards import METHODS, render_model_card


class BaseTrainer(Trainer):
    r"""
    Base of hfpref's trainers. A method's trainer puts it first among its bases, so that its `create_model_card`
    replaces the one of the trainer class it extends: `class CaptionRLTrainer(BaseTrainer)` on
    [`~transformers.Trainer`], `class CaptionSFTTrainer(BaseTrainer, Seq2SeqTrainer)`, or
    `class AlignCapDPOTrainer(BaseTrainer, DPOTrainer)` on TRL's `DPOTrainer` (whose `_save_checkpoint` then writes
    hfpref's card too).

    Class attributes:
        _name (`str`):
            The method: its `hfpref/trainers/<method>/` folder and its key in [`~hfpref.hub.cards.METHODS`], which
            holds the paper, objective, task and card defaults.
        _tag_names (`list[str]`):
            Tags every card of the method carries (the method's own tag and `hfpref` are always added).
        _card_metric (`str`, *optional*):
            A logged key, e.g. `"eval_reward"`: when `create_model_card` gets no `metrics`, the last logged entry that
            has it fills the card's results.

    Hooks a method's trainer overrides when the defaults do not fit: [`_card_variant`] (the loss variant the card
    shows), [`_card_training_args`] (the hyperparameter table), [`_render_card`] (a card of another template).
    """

    _name: str = ""
    _tag_names: list[str] = ["hfpref"]
    _card_metric: str | None = None

    @property
    def _paper(self) -> dict[str, str]:
        """Title and arXiv id of the paper the method (its variant, for a loss variant) comes from."""
        info = METHODS[self._name].variant(self._card_variant())
        return {"title": info.paper_title, "id": info.paper_id}

    def _card_variant(self) -> str | None:
        """The method's variant the card shows (a key of `METHODS[self._name].variants`), or `None`."""
        return None

    def _card_training_args(self) -> dict[str, Any]:
        """The hyperparameters the card lists (`None` values are left out)."""
        args = self.args
        length = {"max_steps": args.max_steps} if args.max_steps > 0 else {"num_train_epochs": args.num_train_epochs}
        return {
            **length,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "learning_rate": args.learning_rate,
        }

    def _card_base_model(self) -> str | None:
        """The checkpoint training started from, as the model's config records it (`None` for a model built here)."""
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        return name if isinstance(name, str) and name else None

    def _render_card(self, **fields) -> ModelCard:
        """Render the card from `fields` (the arguments of [`~hfpref.hub.cards.render_model_card`])."""
        return render_model_card(method=self._name, variant=self._card_variant(), **fields)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | Sequence[str] | None = None,
        tags: str | Sequence[str] | None = None,
        *,
        base_model: str | None = None,
        reward_model: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        dataset: str | Sequence[str] | None = None,
        finetuned_from: str | None = None,
        license: str | None = None,
        language: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        r"""
        Write the model card (the template, paper and defaults of the method in [`~hfpref.hub.cards.METHODS`]) to
        `output_dir/README.md`, on the main process only. [`~transformers.Trainer.push_to_hub`] calls it with its
        own keyword arguments.

        Args:
            model_name (`str`, *optional*):
                Repository name when `hub_model_id` is not set; defaults to the name of `output_dir`.
            dataset_name (`str` or `Sequence[str]`, *optional*):
                Training data; Hub ids go into the front matter and are linked. `dataset` is the same argument under
                the name `transformers` gives it.
            tags (`str` or `Sequence[str]`, *optional*):
                Extra tags, after the method's `_tag_names`.
            base_model (`str`, *optional*):
                The checkpoint training started from; defaults to the one the model's config records. `finetuned_from`
                is the same argument under the name `transformers` gives it.
            reward_model (`str`, *optional*):
                The reward model optimized against, if any.
            metrics (`Mapping[str, Any]`, *optional*):
                Results, numeric ones rounded to 4 decimals (and listed in the `model-index`); defaults to the last
                logged entry that has `_card_metric`.
            license (`str`, *optional*), language (`str` or `list[str]`, *optional*):
                Hub license id and language of the card's front matter.
            kwargs:
                Other arguments of `transformers`' `create_model_card` (`tasks`, `dataset_tags`, ...), unused.
        """
        if not self.is_world_process_zero():
            return
        repo_id = self.args.hub_model_id or model_name or os.path.basename(os.path.abspath(self.args.output_dir))
        if metrics is None and self._card_metric is not None:
            metrics = next((e for e in reversed(self.state.log_history) if self._card_metric in e), None)
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        optional = {"license": license, "language": language}
        card = self._render_card(
            repo_id=repo_id,
            base_model=base_model or finetuned_from or self._card_base_model(),
            datasets=dataset_name or dataset,
            reward_model=reward_model,
            training_args=self._card_training_args(),
            metrics={k: round(float(v), 4) for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
            tags=list(dict.fromkeys([*self._tag_names, *tags])),
            **{name: value for name, value in optional.items() if value is not None},
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))
