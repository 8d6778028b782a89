import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, EvalPrediction, Trainer

from hfpref.trainers.audibility_classifier.audibility_classifier_config import AudibilityClassifierConfig


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


class AudibilityClassifierTrainer(Trainer):
    """
    Fine-tunes a 2-label `AutoModelForSequenceClassification` on tokenized (sentence, label) data, thin on
    [`~transformers.Trainer`]: it adds the paper's step schedule (`lr_decay_every_epochs`) and held-out accuracy.
    """

    def __init__(self, model, args: AudibilityClassifierConfig, *, processing_class, **kwargs):
        kwargs.setdefault("data_collator", DataCollatorWithPadding(processing_class))
        kwargs.setdefault("compute_metrics", accuracy_metrics)
        super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)

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


def tokenize_audibility(dataset: Dataset, tokenizer, max_length: int) -> Dataset:
    """Tokenized `input_ids`/`attention_mask` and `labels` of an audibility dataset (see `load_audibility_dataset`)."""

    def encode(batch):
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch["label"]}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def render_audibility_classifier_card(
    *,
    repo_id: str,
    base_model: str | None,
    datasets: str,
    training_args: Mapping[str, Any],
    metrics: Mapping[str, Any],
):
    """The classifier's model card, rendered from `hub_cards/model_card.md`."""
    from huggingface_hub import ModelCard, ModelCardData

    from hfpref.hub.cards import _rows, library_versions, template_path

    usage = f"""from hfpref.metrics.audibility import AudibilityClassifier, audibility_accuracy

classifier = AudibilityClassifier.from_pretrained("{repo_id}")
print(classifier(["A dog barks while a car passes by", "The wall is painted green"]))  # P(audible)
# Guide a captioner: hfpref.guidance.guided_captions(captioner, processor, audio, classifier)"""
    card_data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        language="en",
        model_name=repo_id.split("/")[-1],
        pipeline_tag="text-classification",
        tags=["hfpref", "audibility", "audio-captioning", "text-classification"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card")),
        repo_id=repo_id,
        description=(
            "A binary text classifier that says whether a sentence describes something audible (label 1) or not "
            "(label 0). It guides the decoding of audio captioners towards audible captions and scores their "
            "audibility accuracy."
        ),
        task_name="audibility classification",
        task_article="an",
        dataset_links=f"`{datasets}`",
        method_name="supervised fine-tuning of a sequence classifier on audible / non-audible sentences",
        method_summary=(
            "Cross-entropy on the two labels; the paper's schedule is AdamW, batch 64, lr 3e-4, 40 epochs, lr x0.1 "
            "every 10 epochs."
        ),
        paper_title="Classifier-Guided Captioning Across Modalities",
        paper_url="https://huggingface.co/papers/2501.03183",
        usage=usage,
        training_args=_rows(training_args),
        metrics=_rows(metrics),
        limitations=(
            "Audibility is judged from text alone: the classifier knows nothing of the audio, and it inherits the "
            "choices of whoever wrote its training sentences (for the LLM-generated sets, the LLM's). It was trained "
            "on short English sentences; long or non-English captions are out of its distribution."
        ),
        **library_versions(),
    )
