import logging
import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from transformers import EvalPrediction

from ...hub.cards import render_reward_model_card
from ...models.modeling_clap_reward import CLAPRewardModel, ensemble_reward, portable_clap_reference
from ...rewards.losses import ForwardL2Penalty, binary_feedback_loss, bradley_terry_loss
from ...utils.checks import check_finite_training
from ..base_trainer import BaseTrainer
from .reward_model_config import RewardModelConfig


logger = logging.getLogger(__name__)

PAIRWISE_COLUMNS = ["audio_embedding", "chosen_embedding", "rejected_embedding"]
POINTWISE_COLUMNS = ["audio_embedding", "text_embedding", "label"]
ROW_INDEX = "row_index"


def _embedding_arrays(dataset: Dataset, columns: list[str], embedding_dim: int, name: str) -> dict[str, np.ndarray]:
    """
    The columns the head reads, as float32 arrays read column-wise from Arrow (no per-row conversion); refuses data
    the head cannot read, naming the dataset, column and row.
    """
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty.")
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {dataset.column_names}.")
    table = dataset.select_columns(columns).with_format("arrow")[0 : len(dataset)]
    arrays = {}
    for column in columns:
        values = table.column(column).combine_chunks()
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{name} column {column!r} row {row} is missing (null).")
        if column in ("label", "margin"):
            if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
                raise ValueError(f"{name} column {column!r} holds lists; it must hold one number per row.")
            values = values.to_numpy(zero_copy_only=False)
            if column == "label":
                bad = np.flatnonzero((values != 0) & (values != 1))
                if bad.size:
                    raise ValueError(
                        f"{name} column 'label' row {bad[0]} is {values[bad[0]].item()!r}; labels must be 0 or 1."
                    )
            else:
                bad = np.flatnonzero(~np.isfinite(values.astype(np.float64)))
                if bad.size:
                    raise ValueError(
                        f"{name} column 'margin' row {bad[0]} is {values[bad[0]].item()!r}, not a finite number."
                    )
            arrays[column] = values.astype(np.float32)
            continue
        values = _matrix(values, name, column)
        if values.shape[1] != embedding_dim:
            raise ValueError(
                f"{name} column {column!r} has width {values.shape[1]}, but the reward model reads "
                f"{embedding_dim}-d embeddings: embed with the CLAP the model was configured for."
            )
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} column {column!r} has NaN or inf values in rows {bad[:10].tolist()}.")
        arrays[column] = values
    return arrays


def _matrix(values: pa.Array, name: str, column: str) -> np.ndarray:
    """A list column as a (rows, width) float32 array: fixed-length lists (what add_embeddings writes) or lists of
    one common length (precomputed features of a user's dataset)."""
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
    elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        lengths = np.diff(values.offsets.to_numpy())
        bad = np.flatnonzero(lengths != lengths[0])
        if bad.size:
            raise ValueError(
                f"{name} column {column!r} is not a (rows, width) array of embeddings: row {bad[0]} has "
                f"{lengths[bad[0]]} values, row 0 has {lengths[0]}."
            )
        width = int(lengths[0])
    else:
        raise ValueError(f"{name} column {column!r} is not a (rows, width) array of embeddings ({values.type}).")
    flat = values.flatten()
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)) or flat.null_count:
        raise ValueError(f"{name} column {column!r} is not a (rows, width) array of numbers ({values.type}).")
    # A copy: Arrow's buffers are read-only, and torch wants writable memory.
    return np.array(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(values), width)


class EmbeddingTable(torch.utils.data.Dataset):
    """
    A validated embedding dataset held as tensors, so a batch is one indexing operation per column rather than a
    row-by-row read and collation. `__getitems__` gives the DataLoader whole batches.

    Args:
        dataset (`datasets.Dataset`): The embeddings (and labels, margins, categories).
        columns (`list[str]`): The columns the head reads.
        embedding_dim (`int`): The width the model reads.
        name (`str`): Named in errors.
        category_column (`str`, *optional*): Kept as an array for per-category accuracy.
    """

    def __init__(
        self, dataset: Dataset, columns: list[str], embedding_dim: int, name: str, category_column: str | None = None
    ):
        arrays = _embedding_arrays(dataset, columns, embedding_dim, name)
        self.tensors = {column: torch.from_numpy(array) for column, array in arrays.items()}
        self.tensors[ROW_INDEX] = torch.arange(len(dataset))
        self.categories = (
            np.asarray(dataset[category_column], dtype=object)
            if category_column and category_column in dataset.column_names
            else None
        )
        self.name = name

    def __len__(self) -> int:
        return len(self.tensors[ROW_INDEX])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {column: tensor[index] for column, tensor in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        return {column: tensor[index] for column, tensor in self.tensors.items()}


def _collate_embeddings(features: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if isinstance(features, dict):  # a whole batch from EmbeddingTable.__getitems__
        return features
    return {column: torch.stack([f[column] for f in features]) for column in features[0]}


class RewardModelTrainer(BaseTrainer):
    """
    Trains a [`~hfpref.rewards.CLAPRewardModel`] on cached CLAP embeddings, thin on [`~transformers.Trainer`].

    Pairwise preferences (`loss_type="bt"`): the siamese Bradley-Terry objective of Hegde et al.,
    "Aligning Audio Captions with Human Preferences", `-log sigmoid(s * (r(a, c_w) - r(a, c_l))) + lambda ||theta||^2`.
    Binary feedback (`loss_type="bce"`/`"mse"`): BATON's reward model. The trainer does not care which
    encoder made the vectors, only that their width matches the model.

    Evaluation reports pairwise accuracy (a tie counts as wrong) and per-category accuracy, or BCE and
    accuracy for binary feedback, and saves a histogram of predicted rewards in `output_dir`.

    Args:
        model ([`~hfpref.rewards.CLAPRewardModel`] or `str`):
            The reward head, or a path/Hub id to load it from.
        args ([`RewardModelConfig`]):
            Training configuration.
        train_dataset (`datasets.Dataset`):
            Pairwise: `audio_embedding`, `chosen_embedding`, `rejected_embedding` (and `margin` with
            `use_margin`); pointwise: `audio_embedding`, `text_embedding`, `label`.
        eval_dataset (`datasets.Dataset` or `dict[str, Dataset]`, *optional*):
            Same columns; a `category` column gets per-category accuracy.
    """

    _name = "reward_model"
    _tag_names = ["hfpref", "reward-model"]
    _card_metric = "eval_accuracy"

    def __init__(
        self,
        model: CLAPRewardModel | str,
        args: RewardModelConfig,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        callbacks: list | None = None,
        optimizers=(None, None),
        compute_metrics: Callable | None = None,
    ):
        if isinstance(model, str):
            model = CLAPRewardModel.from_pretrained(model)
        if not isinstance(args, RewardModelConfig):
            raise TypeError(f"args must be a RewardModelConfig, got {type(args).__name__}")
        self.columns = list(PAIRWISE_COLUMNS if args.pairwise else POINTWISE_COLUMNS)
        if args.pairwise and args.use_margin:
            self.columns.append("margin")
        self._embedding_dim = model.config.embedding_dim
        self._category_column = args.category_column
        self._prepared: dict[str, EmbeddingTable] = {}
        train_dataset = self._prepare(train_dataset, "train_dataset") if train_dataset is not None else None
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare(v, f"eval_dataset[{k!r}]") for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare(eval_dataset, "eval_dataset")
        self._metric_dataset: EmbeddingTable | None = None
        # An ensemble's bootstrap: row i counts w[i, k] ~ Poisson(1) times in member k's loss, fixed for the run.
        self._members = getattr(model.config, "num_members", 1)
        self._bootstrap = None
        if self._members > 1 and args.ensemble_bootstrap and train_dataset is not None:
            draws = np.random.default_rng([args.seed, 2310_02743]).poisson(1.0, (len(train_dataset), self._members))
            self._bootstrap = torch.from_numpy(draws).float()
        # ||theta||^2 read during the forward pass, where DDP, ZeRO-3 and FSDP2 all hold the head's weights whole.
        self._l2 = ForwardL2Penalty(model) if args.l2_coef > 0 else None
        super().__init__(
            model=model,
            args=args,
            data_collator=_collate_embeddings,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            callbacks=callbacks,
            optimizers=optimizers,
            compute_metrics=compute_metrics or self._reward_metrics,
        )

    def _prepare(self, dataset: Dataset | EmbeddingTable, name: str) -> EmbeddingTable:
        """Validate and load `dataset` into tensors once; a dataset evaluated again is not prepared again."""
        if isinstance(dataset, EmbeddingTable):
            return dataset
        key = getattr(dataset, "_fingerprint", None)
        if key is not None and key in self._prepared:
            return self._prepared[key]
        table = EmbeddingTable(dataset, self.columns, self._embedding_dim, name, self._category_column)
        if key is not None:
            self._prepared[key] = table
        return table

    def _rewards(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each member's rewards: `(batch, 2, members)` (chosen, rejected) for pairs, `(batch, members)` for labels."""
        audio = inputs["audio_embedding"]
        if self.args.pairwise:
            # Siamese: chosen and rejected captions share one forward pass.
            text = torch.cat([inputs["chosen_embedding"], inputs["rejected_embedding"]])
            rewards = model(audio_embedding=torch.cat([audio, audio]), text_embedding=text).member_rewards
            return torch.stack(rewards.chunk(2), dim=1)  # (batch, 2, members): chosen, rejected
        return model(audio_embedding=audio, text_embedding=inputs["text_embedding"]).member_rewards

    def _loss(self, model, rewards: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum over members of each member's loss (its bootstrap-weighted mean over the batch's rows)."""
        if self.args.pairwise:
            margin = inputs.get("margin") if self.args.use_margin else None
            losses = [
                bradley_terry_loss(
                    rewards[:, 0, k], rewards[:, 1, k], scale=self.args.bt_scale, margin=margin, reduction="none"
                )
                for k in range(rewards.shape[-1])
            ]
        else:
            losses = [
                binary_feedback_loss(rewards[:, k], inputs["label"], loss_type=self.args.loss_type, reduction="none")
                for k in range(rewards.shape[-1])
            ]
        losses = torch.stack(losses, dim=-1)  # (batch, members)
        if self._bootstrap is not None and model.training:
            weights = self._bootstrap[inputs[ROW_INDEX].cpu()].to(losses)
            loss = ((weights * losses).sum(0) / weights.sum(0).clamp(min=1.0)).sum()
        else:
            loss = losses.mean(0).sum()
        if self.args.l2_coef > 0:
            penalty = self._l2.pop(reduction=self.args.l2_reduction)
            if penalty is None:
                raise RuntimeError("the L2 penalty found no forward pass of the reward model since the last step")
            # The mean over an ensemble's weights is 1/members of each member's mean: the sum of the members'.
            loss = loss + self.args.l2_coef * penalty * (rewards.shape[-1] if self.args.l2_reduction == "mean" else 1)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        members = self._rewards(model, inputs)
        loss = self._loss(model, members, inputs)
        if not return_outputs:
            return loss
        rewards = ensemble_reward(members, getattr(self.model.config, "ensemble_lambda", 0.0))
        return loss, {"rewards": rewards, "member_rewards": members}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            rewards = self._rewards(model, inputs)
            loss = self._loss(model, rewards, inputs).detach()
        if prediction_loss_only:
            return loss, None, None
        # Labels carry the row index, so metrics can look up each row's category and label.
        return loss, rewards.detach(), inputs[ROW_INDEX]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        target = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(target, str):
            target = self.eval_dataset[target]
        elif isinstance(target, Dataset) and eval_dataset is not None:
            target = self._prepare(target, "eval_dataset")
            eval_dataset = target
        if isinstance(target, EmbeddingTable):
            self._metric_dataset = target
            self._metric_prefix = metric_key_prefix
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def _reward_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        members = np.asarray(prediction.predictions, dtype=np.float64)  # (rows, [2,] members)
        rows = np.asarray(prediction.label_ids).astype(int)
        dataset = self._metric_dataset
        metrics: dict[str, float] = {}
        lam = getattr(self.model.config, "ensemble_lambda", 0.0)
        rewards = ensemble_reward(torch.from_numpy(members), lam).numpy()
        member_correct = []  # each member's own accuracy beside the ensemble's (overall and per category)
        if members.shape[-1] > 1:
            for k in range(members.shape[-1]):
                mine = members[..., k]
                if self.args.pairwise:
                    member_correct.append(mine[:, 0] > mine[:, 1])
                else:
                    labels = dataset.tensors["label"].numpy()[rows]
                    member_correct.append((mine > 0.5) == (labels == 1))
                metrics[f"accuracy_member_{k}"] = float(member_correct[k].mean())
        if self.args.pairwise:
            correct = rewards[:, 0] > rewards[:, 1]  # a tie counts as wrong
            metrics["accuracy"] = float(correct.mean())
            metrics["reward_chosen"] = float(rewards[:, 0].mean())
            metrics["reward_rejected"] = float(rewards[:, 1].mean())
            metrics["reward_margin"] = float((rewards[:, 0] - rewards[:, 1]).mean())
            groups, scored = correct, (rewards[:, 0], rewards[:, 1])
            labels_names = ("chosen", "rejected")
        else:
            labels = dataset.tensors["label"].numpy()[rows]
            clipped = rewards.clip(1e-7, 1 - 1e-7)
            metrics["bce"] = float(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).mean())
            metrics["mse"] = float(((rewards - labels) ** 2).mean())
            groups = (rewards > 0.5) == (labels == 1)
            metrics["accuracy"] = float(groups.mean())
            metrics["reward_positive"] = float(rewards[labels == 1].mean()) if (labels == 1).any() else float("nan")
            metrics["reward_negative"] = float(rewards[labels == 0].mean()) if (labels == 0).any() else float("nan")
            scored = (rewards[labels == 1], rewards[labels == 0])
            labels_names = ("label 1", "label 0")
        if dataset is not None and dataset.categories is not None:
            categories = dataset.categories[rows]
            for value in sorted(set(categories.tolist()), key=str):
                metrics[f"accuracy_{value}"] = float(groups[categories == value].mean())
                for k, correct_k in enumerate(member_correct):
                    metrics[f"accuracy_{value}_member_{k}"] = float(correct_k[categories == value].mean())
        if self.args.reward_histogram and self.is_world_process_zero():
            self._save_histogram(scored, labels_names)
        return metrics

    def _save_histogram(self, scored: tuple[np.ndarray, np.ndarray], names: tuple[str, str]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(self.args.output_dir, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        bins = np.linspace(0, 1, 41)
        for values, name in zip(scored, names):
            ax.hist(values, bins=bins, alpha=0.6, label=f"{name} (n={len(values)})")
        ax.set_xlabel("predicted reward")
        ax.set_ylabel("count")
        ax.set_title(f"Rewards at step {self.state.global_step}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(
            os.path.join(self.args.output_dir, f"{getattr(self, '_metric_prefix', 'eval')}_reward_histogram.png")
        )
        plt.close(fig)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """[`~transformers.Trainer.save_model`], refusing weights or logged losses that are NaN or inf."""
        check_finite_training(
            self.model, self.state.log_history, what=f"the model for {output_dir or self.args.output_dir}"
        )
        super().save_model(output_dir, _internal_call)

    def _card_training_args(self) -> dict:
        return {
            "loss_type": self.args.loss_type,
            "bt_scale": self.args.bt_scale,
            "l2_coef": self.args.l2_coef,
            "l2_reduction": self.args.l2_reduction,
            "num_train_epochs": self.args.num_train_epochs,
            "per_device_train_batch_size": self.args.per_device_train_batch_size,
            "learning_rate": self.args.learning_rate,
        }

    def _render_card(self, *, base_model=None, reward_model=None, **fields):
        """The reward-model card (`hub_cards/reward_model_card.md`): the CLAP it reads stands in for a base model."""
        config = self.model.config
        return render_reward_model_card(
            clap_checkpoint=portable_clap_reference(config.clap_checkpoint, self.args.output_dir) or "unknown",
            loss_type=self.args.loss_type,
            embedding_dim=config.embedding_dim,
            **fields,
        )
