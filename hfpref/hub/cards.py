"""Model, reward-model and dataset cards, rendered from the Jinja templates shipped in `hfpref.hub_cards`.

The cards follow TRL's: YAML front matter built with `huggingface_hub` card data (license, tags including `hfpref`,
`base_model` and `datasets` where known), then what the repository holds, a quick-start snippet, how it was trained or
built (with a link to the paper), and its limitations.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from datasets import Audio, ClassLabel, Dataset, DatasetDict, Value
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from .. import __version__ as hfpref_version
from ..data.schemas import COLUMN_DESCRIPTIONS, SCHEMAS


TEMPLATES = ("dataset_card", "model_card", "reward_model_card")


@dataclass(frozen=True)
class MethodInfo:
    r"""
    A training method as cards cite it.

    Args:
        name (`str`):
            Human-readable name, e.g. `"self-critical sequence training (SCST)"`.
        paper_title (`str`):
            Title of the paper the method (as hfpref implements it) comes from.
        paper_id (`str`):
            Its arXiv id, linked as `https://huggingface.co/papers/<paper_id>`.
        summary (`str`, *optional*, defaults to `""`):
            One or two sentences with the objective.
    """

    name: str
    paper_title: str
    paper_id: str
    summary: str = ""

    @property
    def paper_url(self) -> str:
        return f"https://huggingface.co/papers/{self.paper_id}"


RLHF_CAPTIONING = ("Aligning Audio Captions with Human Preferences", "2509.14659")
ALIGNCAP = ("AlignCap: Aligning Speech Emotion Captioning to Human Preferences", "2410.19134")
BATON = ("BATON: Aligning Text-to-Audio Model with Human Preference Feedback", "2402.00744")
FENSE = ("Can Audio Captions Be Evaluated with Image Caption Metrics?", "2110.04684")

METHODS: dict[str, MethodInfo] = {
    "sft": MethodInfo(
        "supervised fine-tuning on (audio, caption) pairs, the baseline captioner of RLHF",
        *RLHF_CAPTIONING,
        summary="Cross-entropy on reference captions; the baseline that RL with a reward model then aligns.",
    ),
    "scst": MethodInfo(
        "self-critical sequence training (SCST) with a CLAP reward model",
        *RLHF_CAPTIONING,
        summary=(
            "Per clip, a sampled caption c_s is rewarded relative to the greedy caption c_g: "
            "`L = -(R(a, c_s) - R(a, c_g)) * sum_t log p(c_s,t | c_s,<t, a)`, with a length penalty against reward "
            "hacking."
        ),
    ),
    "rloo": MethodInfo(
        "REINFORCE leave-one-out (RLOO)",
        "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
        "2402.14740",
        summary="k captions are sampled per clip; each one's baseline is the mean reward of the other k - 1.",
    ),
    "ppo": MethodInfo(
        "a PPO-style clipped policy gradient",
        "Proximal Policy Optimization Algorithms",
        "1707.06347",
        summary="Several clipped-ratio updates per batch, with an optional KL penalty to the frozen reference model.",
    ),
    "grpo": MethodInfo(
        "Group Relative Policy Optimization (GRPO)",
        "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
        "2402.03300",
    ),
    "dpo": MethodInfo(
        "Direct Preference Optimization (DPO)",
        "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "2305.18290",
    ),
    "kd": MethodInfo(
        "knowledge-distillation regularization (AlignCap)",
        *ALIGNCAP,
        summary=(
            "The LLM given text (acoustic prompt and caption prefix) teaches the same LLM with a LoRA adapter given "
            "speech tokens, over response positions only."
        ),
    ),
    "aligncap": MethodInfo(
        "AlignCap: knowledge-distillation and preference-optimization (DPO) regularization",
        *ALIGNCAP,
        summary=(
            "Speech-text alignment by distilling the text-conditioned LLM into the speech-conditioned one, then "
            "DPO on judged caption pairs, both through a LoRA adapter."
        ),
    ),
    "reward_weighted": MethodInfo(
        "reward-weighted diffusion fine-tuning (BATON)",
        *BATON,
        summary=(
            "`E_data[r(c, x) * ||eps - eps_theta(x_t, c, t)||^2] + beta * E_pretrain[||eps - eps_theta(x_t, c, t)||^2]`, "
            "where r is the binary reward model's score of the (prompt, audio) pair."
        ),
    ),
}


@dataclass(frozen=True)
class TaskInfo:
    name: str
    library_name: str
    usage: str
    pipeline_tag: str | None = None


TASKS: dict[str, TaskInfo] = {
    "audio-captioning": TaskInfo(
        "audio captioning",
        "transformers",
        """import soundfile as sf
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo_id}")
model = AutoModelForSpeechSeq2Seq.from_pretrained("{repo_id}")

audio, sampling_rate = sf.read("clip.wav")  # mono, at processor.feature_extractor.sampling_rate
inputs = processor(audio, sampling_rate=sampling_rate, return_tensors="pt")
caption_ids = model.generate(**inputs, max_new_tokens=30)
print(processor.batch_decode(caption_ids, skip_special_tokens=True)[0])""",
    ),
    "speech-emotion-captioning": TaskInfo(
        "speech emotion captioning",
        "peft",
        """from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")

# The prompt is the speech as SpeechTokenizer RVQ-1 codes (<st_0> ... tokens), then the instruction.
prompt = "<st_12><st_507><st_33> Describe the emotion of the speaker."
inputs = tokenizer(prompt, return_tensors="pt")
output_ids = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(output_ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))""",
    ),
    "text-to-audio": TaskInfo(
        "text-to-audio",
        "diffusers",
        """from diffusers import AudioLDMPipeline

pipe = AudioLDMPipeline.from_pretrained("{repo_id}")
audio = pipe("A dog barks while a car passes by", num_inference_steps=100, audio_length_in_s=10.0).audios[0]""",
        pipeline_tag="text-to-audio",
    ),
}

REWARD_LOSSES: dict[str, dict[str, str]] = {
    "bt": {
        "name": "Bradley-Terry loss with a scaled reward difference and L2 regularization",
        "formula": "L = -log sigmoid(s * (r(a, c_w) - r(a, c_l))) + lambda * ||theta||^2",
        "paper": "rlhf_captioning",
    },
    "bce": {
        "name": "binary cross-entropy on 0/1 human labels",
        "formula": "L = -[y * log r(a, c) + (1 - y) * log(1 - r(a, c))]",
        "paper": "baton",
    },
    "mse": {
        "name": "mean squared error on 0/1 human labels",
        "formula": "L = (r(a, c) - y)^2",
        "paper": "baton",
    },
}
_PAPERS = {"rlhf_captioning": RLHF_CAPTIONING, "baton": BATON}

_DEFAULT_TASK_CATEGORIES = {
    "pairwise": ["audio-text-to-text"],
    "pointwise": ["text-to-audio"],
    "speech_caption": ["audio-text-to-text"],
    "dpo": ["text-generation"],
}

_DEFAULT_DATASET_LIMITATIONS = {
    "pairwise": (
        "Each preference reflects a few annotators' judgments of English captions and inherits their disagreements; "
        "`margin` says how strong the majority was. Pairs of the same clip are correlated, so split by clip "
        "(`hfpref.data.preference.split_by_clip`), never by pair."
    ),
    "pointwise": (
        "Labels are single binary judgments of whether audio matches its text; they say nothing about audio quality "
        "beyond that, and items the annotators skipped were removed."
    ),
    "speech_caption": (
        "Emotion captions are subjective and in English; the speakers, languages and recording conditions covered are "
        "those of the source corpus."
    ),
    "dpo": "Chosen and rejected completions were ranked by a judge (human or automatic) whose biases they inherit.",
}

_DEFAULT_MODEL_LIMITATIONS = (
    "The model was optimized against a learned reward, so it can exploit the reward's blind spots (reward hacking), "
    "e.g. by lengthening or repeating phrases; check samples, not only the reward. It inherits the biases of its base "
    "model and of the human preference data, which cover English captions of the source corpora only."
)

_DEFAULT_REWARD_LIMITATIONS = (
    "The reward only sees frozen CLAP embeddings, so it cannot judge what CLAP does not encode (fine temporal order, "
    "counting, speech content). It was fitted to a small set of human judgments and is easy to over-optimize: a policy "
    "trained against it can find captions it scores high that humans do not prefer."
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def template_path(name: str) -> Path:
    r"""
    Path of an installed card template.

    Args:
        name (`str`):
            `"dataset_card"`, `"model_card"` or `"reward_model_card"` (with or without `.md`).

    Returns:
        `pathlib.Path` to the template inside the installed `hfpref.hub_cards` package.
    """
    stem = name.removesuffix(".md")
    if stem not in TEMPLATES:
        raise ValueError(f"Unknown card template {name!r}; known templates are {list(TEMPLATES)}.")
    return Path(str(resources.files("hfpref.hub_cards").joinpath(f"{stem}.md")))


def _package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    """The versions a card's "Framework versions" section lists: hfpref, transformers, torch, datasets, trl, peft."""
    return {
        "hfpref_version": hfpref_version,
        "transformers_version": _package_version("transformers"),
        "pytorch_version": _package_version("torch"),
        "datasets_version": _package_version("datasets"),
        "trl_version": _package_version("trl"),
        "peft_version": _package_version("peft"),
    }


def _feature_type(feature: Any) -> str:
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, Audio):
        return "Audio"
    if isinstance(feature, ClassLabel):
        return f"ClassLabel({', '.join(feature.names)})"
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return f"list[{_feature_type(inner)}]"
    if isinstance(feature, dict):
        return "struct"
    return type(feature).__name__


def _size_category(n_rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n_rows < bound:
            return label
    return "1M<n<10M" if n_rows < 10_000_000 else "n>10M"


def _dataset_links(datasets: Sequence[str]) -> str:
    links = [f"[{d}](https://huggingface.co/datasets/{d})" if _HUB_ID.match(d) else f"`{d}`" for d in datasets]
    if len(links) <= 1:
        return "".join(links)
    return ", ".join(links[:-1]) + " and " + links[-1]


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(mapping: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), _format_value(v)) for k, v in (mapping or {}).items() if v is not None]


def _tags(*groups: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(tag for group in groups for tag in group))


def render_dataset_card(
    ds_or_dict: Dataset | DatasetDict,
    *,
    repo_id: str,
    kind: str,
    pretty_name: str | None = None,
    description: str | None = None,
    source: str | None = None,
    method: str | None = None,
    paper_title: str | None = None,
    paper_id: str | None = None,
    citation: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = "en",
    tags: Sequence[str] | None = None,
    task_categories: Sequence[str] | None = None,
    source_datasets: Sequence[str] | None = None,
    column_descriptions: Mapping[str, str] | None = None,
    limitations: str | None = None,
    split_note: str | None = None,
) -> DatasetCard:
    r"""
    Render the dataset card of a preference dataset from `hub_cards/dataset_card.md`.

    Args:
        ds_or_dict (`datasets.Dataset` or `datasets.DatasetDict`):
            The dataset; a `Dataset` is described as a single `"train"` split.
        repo_id (`str`):
            Hub dataset repository, `"user/name"`, used in the quick-start snippet.
        kind (`str`):
            Preference kind (`"pairwise"`, `"pointwise"`, `"speech_caption"`, `"dpo"`).
        pretty_name (`str`, *optional*):
            Title; defaults to the repository name.
        description (`str`, *optional*):
            Opening paragraph saying what the data is.
        source (`str`, *optional*):
            How the data was collected or derived (Markdown).
        method (`str`, *optional*):
            How the pairs were built, e.g. `"Pairs whose 4 votes sum to 0 were dropped"`.
        paper_title (`str`, *optional*), paper_id (`str`, *optional*):
            Paper the data or method comes from; `paper_id` is an arXiv id, linked on huggingface.co/papers.
        citation (`str`, *optional*):
            BibTeX entry.
        license (`str`, *optional*):
            Hub license id, e.g. `"mit"`; omitted from the front matter when unknown.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`):
            Language of the text.
        tags (`Sequence[str]`, *optional*):
            Extra tags; `hfpref`, `preference` and the kind are always added, `audio` when there is audio.
        task_categories (`Sequence[str]`, *optional*):
            Hub task categories; a default per kind is used when not given.
        source_datasets (`Sequence[str]`, *optional*):
            Datasets this one was derived from.
        column_descriptions (`Mapping[str, str]`, *optional*):
            Descriptions of columns, overriding [`~data.schemas.COLUMN_DESCRIPTIONS`].
        limitations (`str`, *optional*):
            Limitations section; a default per kind is used when not given.
        split_note (`str`, *optional*):
            A sentence shown under the split table (e.g. how the split was made).

    Returns:
        `huggingface_hub.DatasetCard`.
    """
    if kind not in SCHEMAS:
        raise ValueError(f"Unknown preference dataset kind {kind!r}; valid kinds are {sorted(SCHEMAS)}.")
    schema = SCHEMAS[kind]
    splits = ds_or_dict if isinstance(ds_or_dict, DatasetDict) else DatasetDict({"train": ds_or_dict})
    if len(splits) == 0:
        raise ValueError("Cannot render a dataset card for a DatasetDict without splits.")
    first = next(iter(splits.values()))
    descriptions = {**COLUMN_DESCRIPTIONS, **(column_descriptions or {})}
    columns = [
        {"name": name, "dtype": _feature_type(feature), "description": descriptions.get(name, "")}
        for name, feature in first.features.items()
    ]
    audio_columns = [name for name, feature in first.features.items() if isinstance(feature, Audio)]
    if schema.audio_column in first.column_names:
        audio_column = schema.audio_column
    else:
        audio_column = audio_columns[0] if audio_columns else None
    audio_missing = schema.audio_column is not None and audio_column is None

    has_categories = "category" in first.column_names
    split_rows, categories, clips = [], Counter(), set()
    for name, part in splits.items():
        counts = Counter(part.select_columns(["category"])["category"]) if has_categories else Counter()
        categories.update(counts)
        split_rows.append({"name": name, "rows": len(part), "categories": counts})
        if "clip_id" in part.column_names:
            clips.update(part.select_columns(["clip_id"])["clip_id"])
    total_rows = sum(split["rows"] for split in split_rows)
    if len(splits) > 1:
        split_rows.append({"name": "**total**", "rows": total_rows, "categories": categories})
    for split in split_rows:
        split["rows"] = f"{split['rows']:,}"
        split["categories"] = {category: f"{count:,}" for category, count in split["categories"].items()}

    card_data = DatasetCardData(
        license=license,
        language=language,
        pretty_name=pretty_name or repo_id.split("/")[-1],
        tags=_tags(["hfpref", "preference", kind.replace("_", "-")], ["audio"] if audio_column else [], tags or []),
        task_categories=list(task_categories) if task_categories else _DEFAULT_TASK_CATEGORIES[kind],
        size_categories=[_size_category(total_rows)],
        source_datasets=list(source_datasets) if source_datasets else None,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card")),
        repo_id=repo_id,
        kind=kind,
        kind_description=schema.description,
        description=description,
        columns=columns,
        splits=split_rows,
        categories=sorted(categories),
        n_splits=len(splits),
        total_rows=f"{total_rows:,}",
        n_clips=f"{len(clips):,}" if clips else None,
        first_split=next(iter(splits)),
        audio_column=audio_column,
        audio_missing=audio_missing,
        has_upstream_ids="audio_id" in first.column_names and "raw_name" in first.column_names,
        source=source,
        method_name=method,
        paper_title=paper_title or paper_id,
        paper_url=f"https://huggingface.co/papers/{paper_id}" if paper_id else None,
        citation=citation,
        limitations=limitations or _DEFAULT_DATASET_LIMITATIONS[kind],
        split_note=split_note,
        hfpref_version=hfpref_version,
        datasets_version=_package_version("datasets"),
    )


def render_model_card(
    *,
    repo_id: str,
    method: str,
    task: str = "audio-captioning",
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    reward_model: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    usage: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = "en",
    tags: Sequence[str] | None = None,
    library_name: str | None = None,
    pipeline_tag: str | None = None,
    limitations: str | None = None,
    citation: str | None = None,
) -> ModelCard:
    r"""
    Render the card of a preference-aligned model (captioner, speech-emotion captioner, text-to-audio model).

    Args:
        repo_id (`str`):
            Hub model repository, `"user/name"`, used in the quick-start snippet.
        method (`str`):
            Training method, one of `"scst"`, `"rloo"`, `"ppo"`, `"grpo"`, `"dpo"`, `"kd"`, `"aligncap"`,
            `"reward_weighted"`; the card names it and links its paper.
        task (`str`, *optional*, defaults to `"audio-captioning"`):
            `"audio-captioning"`, `"speech-emotion-captioning"` or `"text-to-audio"`; picks the default snippet and
            `library_name`.
        base_model (`str`, *optional*):
            Hub id of the model that was fine-tuned.
        datasets (`str` or `Sequence[str]`, *optional*):
            Training datasets; Hub ids go into the front matter and are linked.
        reward_model (`str`, *optional*):
            Hub id of the reward model optimized against, if any.
        model_name (`str`, *optional*):
            Title; defaults to the repository name.
        description (`str`, *optional*):
            Opening paragraph.
        training_args (`Mapping[str, Any]`, *optional*):
            Hyperparameters to list (name -> value); `None` values are skipped.
        metrics (`Mapping[str, Any]`, *optional*):
            Results to list (name -> value).
        usage (`str`, *optional*):
            Python quick-start snippet replacing the task's default.
        license (`str`, *optional*):
            Hub license id; omitted when unknown.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`):
            Language of the generated text.
        tags (`Sequence[str]`, *optional*):
            Extra tags; `hfpref`, the method and the task are always added.
        library_name (`str`, *optional*), pipeline_tag (`str`, *optional*):
            Override the task's defaults.
        limitations (`str`, *optional*):
            Limitations section; a default about reward hacking and data bias is used when not given.
        citation (`str`, *optional*):
            BibTeX entry.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown training method {method!r}; known methods are {sorted(METHODS)}.")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; known tasks are {sorted(TASKS)}.")
    method_info, task_info = METHODS[method], TASKS[task]
    dataset_list = _as_list(datasets)
    card_data = ModelCardData(
        base_model=base_model,
        datasets=[d for d in dataset_list if _HUB_ID.match(d)] or None,
        library_name=library_name or task_info.library_name,
        license=license,
        language=language,
        model_name=model_name or repo_id.split("/")[-1],
        pipeline_tag=pipeline_tag or task_info.pipeline_tag,
        tags=_tags(["hfpref", method.replace("_", "-"), task], tags or []),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card")),
        repo_id=repo_id,
        description=description,
        task_name=task_info.name,
        task_article="an" if task_info.name[0] in "aeiou" else "a",
        dataset_links=_dataset_links(dataset_list),
        reward_model=reward_model,
        method_name=method_info.name,
        method_summary=method_info.summary,
        paper_title=method_info.paper_title,
        paper_url=method_info.paper_url,
        usage=(usage or task_info.usage.format(repo_id=repo_id)).strip(),
        training_args=_rows(training_args),
        metrics=_rows(metrics),
        limitations=limitations or _DEFAULT_MODEL_LIMITATIONS,
        citation=citation,
        **library_versions(),
    )


def render_reward_model_card(
    *,
    repo_id: str,
    clap_checkpoint: str,
    loss_type: str = "bt",
    embedding_dim: int = 512,
    datasets: str | Sequence[str] | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_class: str = "CLAPRewardModel",
    model_module: str = "hfpref.rewards",
    usage: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = "en",
    tags: Sequence[str] | None = None,
    limitations: str | None = None,
    citation: str | None = None,
) -> ModelCard:
    r"""
    Render the card of a CLAP reward model (pairwise Bradley-Terry or BATON-style binary).

    Args:
        repo_id (`str`):
            Hub model repository, `"user/name"`.
        clap_checkpoint (`str`):
            The CLAP checkpoint whose frozen embeddings the model reads; recorded as `base_model`.
        loss_type (`str`, *optional*, defaults to `"bt"`):
            `"bt"` (Bradley-Terry on pairs, RLHF captioning paper), `"bce"` or `"mse"` (binary labels, BATON).
        embedding_dim (`int`, *optional*, defaults to `512`):
            Width of each CLAP embedding (audio and text are concatenated).
        datasets (`str` or `Sequence[str]`, *optional*):
            Training datasets; Hub ids go into the front matter and are linked.
        model_name (`str`, *optional*):
            Title; defaults to the repository name.
        description (`str`, *optional*):
            Opening paragraph.
        training_args (`Mapping[str, Any]`, *optional*):
            Hyperparameters to list, e.g. `{"bt_scale": 10.0, "l2_coef": 0.1, "num_train_epochs": 70}`; `bt_scale` and
            `l2_coef` (the names of `RewardModelConfig`) also fill in the loss description.
        metrics (`Mapping[str, Any]`, *optional*):
            Results to list, e.g. agreement with held-out human preferences.
        model_class (`str`, *optional*, defaults to `"CLAPRewardModel"`), model_module (`str`, *optional*, defaults to `"hfpref.rewards"`):
            Where the quick-start snippet imports the model class from; the class needs a `score(audio, captions)`
            method.
        usage (`str`, *optional*):
            Python quick-start snippet replacing the default.
        license (`str`, *optional*):
            Hub license id; omitted when unknown.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`):
            Language of the captions.
        tags (`Sequence[str]`, *optional*):
            Extra tags; `hfpref`, `reward-model`, `clap` and the loss are always added.
        limitations (`str`, *optional*):
            Limitations section; a default is used when not given.
        citation (`str`, *optional*):
            BibTeX entry.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    if loss_type not in REWARD_LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {list(REWARD_LOSSES)}.")
    loss = REWARD_LOSSES[loss_type]
    paper_title, paper_id = _PAPERS[loss["paper"]]
    args = dict(training_args or {})
    if loss_type == "bt":
        loss_note = (
            f"with scale s = {_format_value(args.get('bt_scale', 10))} and "
            f"lambda = {_format_value(args.get('l2_coef', 0.1))}. "
            "r is a sigmoid output, clamped to [0.01, 0.99] during training. The paper's value of s was lost; "
            "hfpref defaults to 10."
        )
    else:
        loss_note = "where y is the human label (1 = the audio matches the text)."
    dataset_list = _as_list(datasets)
    default_usage = f"""import soundfile as sf
from {model_module} import {model_class}

reward_model = {model_class}.from_pretrained("{repo_id}")
audio, sampling_rate = sf.read("clip.wav")  # mono, at the CLAP's sampling rate (48 kHz for LAION CLAP)
# score() embeds audio and captions with {clap_checkpoint}, then applies the reward head.
print(reward_model.score([audio, audio], ["A dog barks while a car passes by", "Rain falls on a tin roof"]))"""
    card_data = ModelCardData(
        base_model=clap_checkpoint,
        datasets=[d for d in dataset_list if _HUB_ID.match(d)] or None,
        library_name="transformers",
        license=license,
        language=language,
        model_name=model_name or repo_id.split("/")[-1],
        tags=_tags(["hfpref", "reward-model", "clap", "audio", f"loss-{loss_type}"], tags or []),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("reward_model_card")),
        repo_id=repo_id,
        description=description,
        clap_checkpoint=clap_checkpoint,
        embedding_dim=embedding_dim,
        dataset_links=_dataset_links(dataset_list),
        loss_name=loss["name"][0].upper() + loss["name"][1:],
        loss_formula=loss["formula"],
        loss_note=loss_note,
        paper_title=paper_title,
        paper_url=f"https://huggingface.co/papers/{paper_id}",
        usage=(usage or default_usage).strip(),
        training_args=_rows(args),
        metrics=_rows(metrics),
        limitations=limitations or _DEFAULT_REWARD_LIMITATIONS,
        citation=citation,
        **library_versions(),
    )
