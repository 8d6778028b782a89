import math

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, EvalPrediction

from ..base_trainer import BaseTrainer
from .audibility_classifier_config import AudibilityClassifierConfig


def step_decay_lambda(steps_per_epoch: int, every_epochs: int, factor: float):
    """
    Learning-rate multiplier of a step schedule: `factor ** (epoch // every_epochs)`, from the optimizer step.

    Example:

    ```python
    >>> schedule = step_decay_lambda(steps_per_epoch=5, every_epochs=10, factor=0.1)
    >>> [round(schedule(s), 6) for s in (0, 49, 50, 99, 100)]
    [1.0, 1.0, 0.1, 0.1, 0.01]

    ```
    """
    return lambda step: factor ** ((step // steps_per_epoch) // every_epochs)


def accuracy_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Held-out accuracy, and the share of sentences predicted audible, from the classifier's logits."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(-1)
    labels = np.asarray(prediction.label_ids)
    return {"accuracy": float((predicted == labels).mean()), "predicted_audible": float(predicted.mean())}


class AudibilityClassifierTrainer(BaseTrainer):
    """
    Fine-tunes a 2-label `AutoModelForSequenceClassification` on tokenized (sentence, label) data, thin on
    [`~transformers.Trainer`]: it adds the paper's step schedule (`lr_decay_every_epochs`) and held-out accuracy, and
    takes the cross-entropy mean over the global batch as its loss
    ([`~hfpref.trainers.base_trainer.BaseTrainer._token_mean_cross_entropy`]: the classifier's own loss ignores
    transformers' `num_items_in_batch`, which multiplied it by the accumulation steps and processes).
    """

    _name = "audibility_classifier"
    _tag_names = ["hfpref", "audibility", "audio-captioning", "text-classification"]
    _card_metric = "eval_accuracy"

    def __init__(self, model, args: AudibilityClassifierConfig, *, processing_class, **kwargs):
        config = getattr(model, "config", None)
        problem = getattr(config, "problem_type", None)
        if getattr(config, "num_labels", 2) < 2 or problem not in (None, "single_label_classification"):
            raise ValueError(
                f"the audibility classifier is trained by cross-entropy over its labels; this model has num_labels="
                f"{config.num_labels} and problem_type={problem!r} (expected >= 2 and 'single_label_classification')"
            )
        kwargs.setdefault("data_collator", DataCollatorWithPadding(processing_class))
        kwargs.setdefault("compute_metrics", accuracy_metrics)
        super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.compute_loss_func is not None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._token_mean_cross_entropy(model, inputs, return_outputs, num_items_in_batch)

    def _steps_per_epoch(self) -> int:
        args = self.args
        rows = len(self.train_dataset)
        per_step = args.per_device_train_batch_size * max(args.world_size, 1)
        batches = rows // per_step if args.dataloader_drop_last else math.ceil(rows / per_step)
        return max(1, math.ceil(batches / args.gradient_accumulation_steps))

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.args.lr_decay_every_epochs is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        schedule = step_decay_lambda(
            self._steps_per_epoch(), self.args.lr_decay_every_epochs, self.args.lr_decay_factor
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _card_training_args(self) -> dict:
        decay = self.args.lr_decay_every_epochs
        return {
            "learning_rate": self.args.learning_rate,
            "batch_size": self.args.per_device_train_batch_size,
            "epochs": self.args.num_train_epochs,
            "lr_decay_every_epochs": decay,
            "lr_decay_factor": self.args.lr_decay_factor if decay else None,
        }


def tokenize_audibility(dataset: Dataset, tokenizer, max_length: int) -> Dataset:
    """Tokenized `input_ids`/`attention_mask` and `labels` of an audibility dataset (see `load_audibility_dataset`)."""

    def encode(batch):
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch["label"]}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)
