"""Model, reward-model and dataset cards, rendered from the Jinja templates shipped in `hfpref.hub_cards`.

The cards follow TRL's: YAML front matter built with `huggingface_hub` card data (license, tags including `hfpref`,
`base_model` and `datasets` where known), then what the repository holds, a quick-start snippet, how it was trained or
built (with a link to the paper), and its limitations.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from datasets import Audio, ClassLabel, Dataset, DatasetDict, Value
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData, RepoCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .._version import __version__
from ..data.schemas import COLUMN_DESCRIPTIONS, SCHEMAS


TEMPLATES = ("dataset_card", "model_card", "reward_model_card")


@dataclass
class CardConfigMixin:
    r"""
    The model-card field of a method's config (`--license`), a mixin in front of its arguments class, like
    [`~hfpref.trainers.base_config.AudioConfigMixin`]: `class Config(CardConfigMixin, TrainingArguments)`.

    Parameters:
        license (`str`, *optional*):
            Hub license id of the card's front matter (e.g. `"apache-2.0"`). By default the license of the base
            model's card when that card is local or in the Hub cache ([`resolve_license`]); when none is found the
            front matter has no license and the card's License section says so.
    """

    license: str | None = field(
        default=None,
        metadata={
            "help": "Hub license id of the model card (e.g. apache-2.0); default: the base model's card license when "
            "that card is local or cached, else none (the card says so)."
        },
    )


@dataclass(frozen=True)
class MethodInfo:
    r"""
    A training method as cards cite it: one per `hfpref/trainers/<method>/` folder, keyed by that name in
    [`METHODS`].

    Args:
        name (`str`):
            Human-readable name, e.g. `"self-critical sequence training (SCST)"`.
        paper_title (`str`):
            Title of the paper the method (as hfpref implements it) comes from.
        paper_id (`str`):
            Its arXiv id, linked as `https://huggingface.co/papers/<paper_id>`.
        summary (`str`, *optional*, defaults to `""`):
            One or two sentences with the objective (for a reward-model loss, its formula).
        task (`str`, *optional*):
            The [`TASKS`] entry whose quick-start snippet and Hub metadata the card uses by default.
        description (`str`, *optional*):
            Default opening paragraph of the card.
        limitations (`str`, *optional*):
            Default limitations section of the card.
        variants (`Mapping[str, MethodInfo]`, *optional*):
            The method's loss variants (e.g. `"scst"`, `"rloo"`, `"ppo"` of `caption_rl`), each with its own name,
            paper and summary; a card of a variant shows the variant's.
    """

    name: str
    paper_title: str
    paper_id: str
    summary: str = ""
    task: str | None = None
    description: str | None = None
    limitations: str | None = None
    variants: Mapping[str, MethodInfo] = field(default_factory=dict)

    @property
    def paper_url(self) -> str:
        return f"https://huggingface.co/papers/{self.paper_id}"

    def variant(self, name: str | None) -> MethodInfo:
        r"""
        The variant `name` (its name, paper and summary), or the method itself when `name` is `None`.

        Example:
        ```python
        >>> METHODS["caption_rl"].variant("rloo").paper_id, METHODS["caption_rl"].variant(None).paper_id
        ('2402.14740', '2509.14659')

        ```
        """
        if name is None:
            return self
        if name not in self.variants:
            raise ValueError(f"Unknown variant {name!r}; known variants are {sorted(self.variants)}.")
        return self.variants[name]


RLHF_CAPTIONING = ("Aligning Audio Captions with Human Preferences", "2509.14659")
ALIGNCAP = ("AlignCap: Aligning Speech Emotion Captioning to Human Preferences", "2410.19134")
BATON = ("BATON: Aligning Text-to-Audio Model with Human Preference Feedback", "2402.00744")
FENSE = ("Can Audio Captions Be Evaluated with Image Caption Metrics?", "2110.04684")
CLASSIFIER_GUIDED_CAPTIONING = ("Classifier-Guided Captioning Across Modalities", "2501.03183")

_RLOO = MethodInfo(
    "REINFORCE leave-one-out (RLOO)",
    "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
    "2402.14740",
    summary="k captions are sampled per clip; each one's baseline is the mean reward of the other k - 1.",
)

METHODS: dict[str, MethodInfo] = {
    "reward_model": MethodInfo(
        "a CLAP reward model: an MLP on frozen CLAP audio and text embeddings, fitted to human judgments",
        *RLHF_CAPTIONING,
        summary=(
            "Pairwise preferences train it with a Bradley-Terry loss (RLHF captioning paper), binary labels with "
            "binary cross-entropy or squared error (BATON)."
        ),
        variants={
            "bt": MethodInfo(
                "Bradley-Terry loss with a scaled reward difference and L2 regularization",
                *RLHF_CAPTIONING,
                summary="L = -log sigmoid(s * (r(a, c_w) - r(a, c_l))) + lambda * ||theta||^2",
            ),
            "bce": MethodInfo(
                "binary cross-entropy on 0/1 human labels",
                *BATON,
                summary="L = -[y * log r(a, c) + (1 - y) * log(1 - r(a, c))]",
            ),
            "mse": MethodInfo("mean squared error on 0/1 human labels", *BATON, summary="L = (r(a, c) - y)^2"),
        },
    ),
    "clap_contrastive": MethodInfo(
        "contrastive audio-text training (CLAP)",
        "Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and Keyword-to-Caption Augmentation",
        "2211.06687",
        summary=(
            "A symmetric cross-entropy over the audio-text similarity matrix of a batch pulls each clip's embedding "
            "towards its caption's and away from the other captions'."
        ),
        task="audio-text-retrieval",
        description=(
            "A CLAP (audio and text encoders with a shared embedding space) whose embeddings hfpref's reward models "
            "read."
        ),
        limitations=(
            "The embeddings reflect the clips and captions it was trained on; a reward model trained on them is only "
            "valid with this exact checkpoint (hfpref checks the fingerprint)."
        ),
    ),
    "caption_sft": MethodInfo(
        "supervised fine-tuning on (audio, caption) pairs, the baseline captioner of RLHF",
        *RLHF_CAPTIONING,
        summary="Cross-entropy on reference captions; the baseline that RL with a reward model then aligns.",
        task="audio-captioning",
    ),
    "caption_rl": MethodInfo(
        "RL fine-tuning against a reward model (SCST, RLOO or a PPO-style clipped objective)",
        *RLHF_CAPTIONING,
        summary="Sampled captions are rewarded by a CLAP reward model, with a length penalty against reward hacking.",
        task="audio-captioning",
        variants={
            "scst": MethodInfo(
                "self-critical sequence training (SCST) with a CLAP reward model",
                *RLHF_CAPTIONING,
                summary=(
                    "Per clip, a sampled caption c_s is rewarded relative to the greedy caption c_g: "
                    "`L = -(R(a, c_s) - R(a, c_g)) * sum_t log p(c_s,t | c_s,<t, a)`, with a length penalty against "
                    "reward hacking."
                ),
            ),
            "rloo": _RLOO,
            "ppo": MethodInfo(
                "a PPO-style clipped policy gradient",
                "Proximal Policy Optimization Algorithms",
                "1707.06347",
                summary=(
                    "Several clipped-ratio updates per batch, with an optional KL penalty to the frozen reference model."
                ),
            ),
        },
    ),
    "caption_grpo": MethodInfo(
        "TRL's GRPO or RLOO on a decoder-only captioner that reads the audio as speech tokens",
        "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
        "2402.03300",
        variants={
            "grpo": MethodInfo(
                "Group Relative Policy Optimization (GRPO)",
                "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
                "2402.03300",
            ),
            "rloo": _RLOO,
        },
    ),
    "aligncap_kd": MethodInfo(
        "knowledge-distillation regularization (AlignCap)",
        *ALIGNCAP,
        summary=(
            "The LLM given text (acoustic prompt and caption prefix) teaches the same LLM with a LoRA adapter given "
            "speech tokens, over response positions only."
        ),
        task="speech-emotion-captioning",
    ),
    "aligncap_dpo": MethodInfo(
        "AlignCap's preference-optimization regularization: Direct Preference Optimization (DPO) through a LoRA adapter",
        *ALIGNCAP,
        summary=(
            "Speech-text alignment by distilling the text-conditioned LLM into the speech-conditioned one, then "
            "[DPO](https://huggingface.co/papers/2305.18290) on judged caption pairs, both through a LoRA adapter "
            "(the reference is the policy with its adapter disabled)."
        ),
        task="speech-emotion-captioning",
    ),
    "reward_weighted_diffusion": MethodInfo(
        "reward-weighted diffusion fine-tuning (BATON)",
        *BATON,
        summary=(
            "`E_data[r(c, x) * ||eps - eps_theta(x_t, c, t)||^2] + beta * E_pretrain[||eps - eps_theta(x_t, c, t)||^2]`, "
            "where r is the binary reward model's score of the (prompt, audio) pair."
        ),
        task="text-to-audio",
    ),
    "audibility_classifier": MethodInfo(
        "supervised fine-tuning of a sequence classifier on audible / non-audible sentences",
        *CLASSIFIER_GUIDED_CAPTIONING,
        summary=(
            "Cross-entropy on the two labels; the paper's schedule is AdamW, batch 64, lr 3e-4, 40 epochs, lr x0.1 "
            "every 10 epochs."
        ),
        task="audibility-classification",
        description=(
            "A binary text classifier that says whether a sentence describes something audible (label 1) or not "
            "(label 0). It guides the decoding of audio captioners towards audible captions and scores their "
            "audibility accuracy."
        ),
        limitations=(
            "Audibility is judged from text alone: the classifier knows nothing of the audio, and it inherits the "
            "choices of whoever wrote its training sentences (for the LLM-generated sets, the LLM's). It was trained "
            "on short English sentences; long or non-English captions are out of its distribution."
        ),
    ),
    "caption_dpo": MethodInfo(
        "Direct Preference Optimization (DPO) of an audio captioner on judged caption pairs",
        "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "2305.18290",
        summary=(
            "The captioner (an audio LLM reading the audio features, or a seq2seq captioner) raises the log-likelihood "
            "ratio to a frozen reference of the preferred caption of a clip over the dispreferred one, AlignCap's "
            "preference step on the audio itself; the reference is the adapter-disabled base under LoRA."
        ),
        task="audio-captioning",
        variants={
            "sigmoid": MethodInfo(
                "Direct Preference Optimization (DPO)",
                "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
                "2305.18290",
                summary=(
                    "`L = -log sigmoid(beta * [(log pi(c_w | a) - log ref(c_w | a)) - (log pi(c_l | a) - "
                    "log ref(c_l | a))])`, caption log-probabilities summed over the caption's tokens and eos."
                ),
            ),
            "ipo": MethodInfo(
                "Identity Preference Optimization (IPO)",
                "A General Theoretical Paradigm to Understand Learning from Human Preferences",
                "2310.12036",
                summary=(
                    "`L = (h - 1 / (2 * beta))^2`, h the difference of the chosen and rejected captions' log-ratios "
                    "to the reference, averaged over their tokens."
                ),
            ),
        },
    ),
}


@dataclass(frozen=True)
class TaskInfo:
    r"""
    A task as cards describe it.

    Args:
        name (`str`): Human-readable name, e.g. `"audio captioning"`.
        library_name (`str`): The library that loads the model (`transformers`, `peft`, `diffusers`).
        usage (`str`): Quick-start snippet; `{repo_id}` is filled in.
        pipeline_tag (`str`, *optional*): Hub pipeline tag.
        task_type (`str`): Hub task id of the `model-index` results.
    """

    name: str
    library_name: str
    usage: str
    pipeline_tag: str | None = None
    task_type: str = "audio-text-to-text"


# The quick start of an audio-LLM captioner (Qwen2-Audio): the caption answers one chat turn holding the clip and the
# instruction it was trained with; `adapter` loads a LoRA adapter onto its base first.
AUDIO_LLM_CAPTIONER_USAGE = """import soundfile as sf
from transformers import AutoProcessor, {model_class}
{peft_import}
processor = AutoProcessor.from_pretrained("{repo_id}")
{load_model}
audio, sampling_rate = sf.read("clip.wav")  # mono, resampled to processor.feature_extractor.sampling_rate if needed
messages = [{{"role": "user", "content": [{{"type": "audio"}}, {{"type": "text", "text": {instruction!r}}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=prompt, audio=[audio], sampling_rate=sampling_rate, return_tensors="pt")
output_ids = model.generate(**inputs, max_new_tokens=30, do_sample=False)
print(processor.batch_decode(output_ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0])"""


def audio_llm_captioner_usage(repo_id: str, model_class: str, instruction: str, base_model: str | None = None) -> str:
    """
    The card quick start of an audio-LLM captioner saved at `repo_id`: the whole model, or (`base_model` given) a
    LoRA adapter loaded onto that base and merged.
    """
    if base_model is None:
        peft_import, load_model = "", f'model = {model_class}.from_pretrained("{repo_id}")\n'
    else:
        peft_import = "from peft import PeftModel\n"
        load_model = (
            f'base = {model_class}.from_pretrained("{base_model}")\n'
            f'model = PeftModel.from_pretrained(base, "{repo_id}").merge_and_unload()  # the LoRA adapter, merged\n'
        )
    return AUDIO_LLM_CAPTIONER_USAGE.format(
        repo_id=repo_id,
        model_class=model_class,
        peft_import=peft_import,
        load_model=load_model,
        instruction=instruction,
    )


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
print(processor.batch_decode(caption_ids, skip_special_tokens=True)[0])

# or through the pipeline, which decodes the file itself (its default max_new_tokens=256 can exceed the decoder's
# max_target_positions, so give the caption length):
from transformers import pipeline

captioner = pipeline("automatic-speech-recognition", model="{repo_id}")
print(captioner("clip.wav", generate_kwargs={{"max_new_tokens": 30}})["text"])""",
        task_type="automatic-speech-recognition",
    ),
    "speech-emotion-captioning": TaskInfo(
        "speech emotion captioning",
        "peft",
        """from hfpref.encoders.speech_tokens import load_speech_adapter

# The base model resized to the tokenizer's speech tokens, their base rows (added_token_rows.safetensors), the adapter
model, tokenizer = load_speech_adapter("{repo_id}")

# The prompt is the speech as SpeechTokenizer RVQ-1 codes (<st_0> ... tokens), then the instruction.
prompt = "<st_12><st_507><st_33> Describe the emotion of the speaker."
inputs = tokenizer(prompt, return_tensors="pt")
output_ids = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(output_ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))""",
        task_type="text-generation",
    ),
    "text-to-audio": TaskInfo(
        "text-to-audio",
        "diffusers",
        """from diffusers import AudioLDMPipeline

pipe = AudioLDMPipeline.from_pretrained("{repo_id}")
audio = pipe("A dog barks while a car passes by", num_inference_steps=100, audio_length_in_s=10.0).audios[0]""",
        pipeline_tag="text-to-audio",
        task_type="text-to-audio",
    ),
    "audio-text-retrieval": TaskInfo(
        "audio-text embedding (CLAP)",
        "transformers",
        """import soundfile as sf
import torch
from transformers import AutoProcessor, ClapModel

model = ClapModel.from_pretrained("{repo_id}")
processor = AutoProcessor.from_pretrained("{repo_id}")

audio, sampling_rate = sf.read("clip.wav")  # mono, at processor.feature_extractor.sampling_rate
captions = ["A dog barks while a car passes by", "Rain falls on a tin roof"]
inputs = processor(text=captions, audio=[audio], sampling_rate=sampling_rate, return_tensors="pt", padding=True)
with torch.no_grad():
    print(model(**inputs).logits_per_audio.softmax(-1))  # which caption fits the clip""",
        pipeline_tag="zero-shot-audio-classification",
        task_type="zero-shot-audio-classification",
    ),
    "audibility-classification": TaskInfo(
        "audibility classification",
        "transformers",
        """from hfpref.metrics.audibility import AudibilityClassifier, audibility_accuracy

classifier = AudibilityClassifier.from_pretrained("{repo_id}")
print(classifier(["A dog barks while a car passes by", "The wall is painted green"]))  # P(audible)
# Guide a captioner: hfpref.guidance.guided_captions(captioner, processor, audio, classifier)""",
        pipeline_tag="text-classification",
        task_type="text-classification",
    ),
}

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
_HUB_LINK = re.compile(r"https://huggingface\.co/(?!papers/)(?:datasets/)?([^)\s>\]]*)")
# Trainer log keys that describe the run, not the model.
_NOT_RESULTS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step")


def is_hub_id(name: str | None) -> bool:
    """
    Whether `name` is a Hub repository id (`"user/name"`) rather than a local path.

    Example:
    ```python
    >>> is_hub_id("laion/clap-htsat-unfused"), is_hub_id("/tmp/runs/clap"), is_hub_id("../clap")
    (True, False, False)

    ```
    """
    if not name or not _HUB_ID.match(name) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _display_name(name: str) -> str:
    # A local path is shown by its folder name: the absolute path of the training machine means nothing on the Hub.
    return name if is_hub_id(name) else os.path.basename(os.path.normpath(name)) or name


def card_license(name: str | None, repo_type: str = "model") -> str | None:
    r"""
    The `license` of the card (`README.md` front matter) of a model or dataset, read without the network: a local
    folder's, or a Hub repository's from the local Hub cache. `None` when there is no card to read or it names none.

    Args:
        name (`str`, *optional*): a local folder or a Hub repository id.
        repo_type (`str`, *optional*, defaults to `"model"`): `"model"` or `"dataset"`, for a Hub id.

    Example:
    ```python
    >>> card_license(None), card_license("/no/such/folder")
    (None, None)

    ```
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    if not name:
        return None
    readme = None
    if os.path.isdir(name):
        readme = os.path.join(name, "README.md")
    elif is_hub_id(name):
        cached = try_to_load_from_cache(name, "README.md", repo_type=repo_type)
        readme = cached if isinstance(cached, str) else None
    if readme is None or not os.path.isfile(readme):
        return None
    license = (metadata_load(readme) or {}).get("license")
    return license if isinstance(license, str) and license else None


def resolve_license(license: str | None, sources: Sequence[str | None], what: str, repo_type: str = "model"):
    r"""
    The license of a card and the note its License section shows: `license` when given; else the license that the
    cards of all `sources` (base model, CLAP, source datasets) agree on, when local or cached; else none, with a note.

    Args:
        license (`str`, *optional*): the license asked for (`--license`).
        sources (`Sequence[str]`): what the artifact was built from; `None` entries are skipped.
        what (`str`): what `sources` are, for the note (e.g. `"base model"`).
        repo_type (`str`, *optional*, defaults to `"model"`): the Hub type of `sources`.

    Returns:
        `tuple[str | None, str]`: the license id (or `None`) and the note.
    """
    if license:
        return license, f"Released under `{license}`."
    sources = [source for source in sources if source]
    found = {source: card_license(source, repo_type) for source in sources}
    licenses = set(found.values())
    if sources and len(licenses) == 1 and None not in licenses:
        (license,) = licenses
        names = ", ".join(f"`{_display_name(source)}`" for source in sources)
        return license, f"`{license}`, the license of the {what} ({names}) as its card states it."
    if not sources:
        return None, (
            f"No license was given (`--license`), and there is no published {what} whose license would apply: the "
            "front matter names none. Check the licenses of the training data before reusing this."
        )
    names = ", ".join(f"`{_display_name(source)}`" for source in sources)
    return None, (
        f"No license was given (`--license`), and none could be read from the card of the {what} ({names}: not "
        "local or cached, naming no license, or naming different ones), so the front matter names none. Check the "
        f"licenses of the {what} and of the training data before reusing this."
    )


def eval_results(
    metrics: Mapping[str, Any] | None,
    *,
    task_type: str,
    task_name: str,
    dataset: str | Mapping[str, str] | None,
) -> list[EvalResult] | None:
    r"""
    The `model-index` results of a card: one [`~huggingface_hub.EvalResult`] per numeric metric.

    Args:
        metrics (`Mapping[str, Any]`):
            Trainer metrics; the `eval_` prefix is dropped and run statistics (runtime, samples per second, epoch)
            are left out.
        task_type (`str`), task_name (`str`):
            Hub task id and its display name.
        dataset (`str` or `Mapping[str, str]`, *optional*):
            The evaluation data: a Hub id, or a local name (shown as is, its type a slug of it). Named evaluation sets
            (the trainer's `eval_<name>_<metric>` keys) are a mapping `{name: data}`: each metric goes under the data
            of its set, its name without the set's prefix; a metric of no named set is refused.

    Returns:
        `list[EvalResult]` or `None` when there is no numeric metric.

    Example:
    ```python
    >>> [(r.dataset_name, r.metric_type) for r in eval_results(
    ...     {"eval_clotho_accuracy": 0.7}, task_type="t", task_name="t", dataset={"clotho": "data/fense/clotho_eval"})]
    [('clotho_eval', 'accuracy')]

    ```
    """
    named = dict(dataset) if isinstance(dataset, Mapping) else {}
    results = []
    for name, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            continue
        metric = name.removeprefix("eval_")
        if metric.endswith(_NOT_RESULTS):
            continue
        data = dataset
        if named:
            set_name = next((n for n in sorted(named, key=len, reverse=True) if metric.startswith(f"{n}_")), None)
            if set_name is None:
                raise ValueError(
                    f"metric {name!r} belongs to none of the named evaluation sets {sorted(named)}: name its set "
                    "(eval_<name>_<metric>)"
                )
            data, metric = named[set_name], metric.removeprefix(f"{set_name}_")
        data = data or "held-out split"
        data_type = data if is_hub_id(data) else re.sub(r"[^a-z0-9]+", "-", _display_name(data).lower()).strip("-")
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=data_type or "local",
                dataset_name=_display_name(data),
                metric_type=metric.replace("/", "_"),
                metric_name=_metric_label(metric),
                metric_value=round(float(value), 4),
            )
        )
    return results or None


def validate_card(card: RepoCard | str, card_class: type[RepoCard] = ModelCard) -> RepoCard | str:
    r"""
    Check a card's metadata the way `huggingface_hub` reads it, offline.

    The front matter is parsed back with `huggingface_hub` (which validates the `model-index` results), every
    `base_model` and `datasets` entry must be a valid Hub repository id ([`~huggingface_hub.utils.validate_repo_id`]),
    and every `https://huggingface.co/...` link must point at one. (`RepoCard.validate` asks the Hub itself and needs
    the network; `push_to_hub` calls it.)

    Args:
        card (`huggingface_hub.RepoCard` or `str`): The card, or its text (a `README.md`).
        card_class (`type`, *optional*, defaults to `huggingface_hub.ModelCard`):
            The card class that parses a text (`DatasetCard` for a dataset card).

    Returns:
        The card, unchanged.

    Raises:
        `ValueError`: naming every problem.
    """
    problems = []
    try:
        parsed = (card_class if isinstance(card, str) else type(card))(str(card), ignore_metadata_errors=False)
    except ValueError as error:
        raise ValueError(f"the card's metadata does not parse with huggingface_hub: {error}") from error
    data = parsed.data.to_dict()
    for key in ("base_model", "datasets"):
        for value in _as_list(data.get(key)):
            if not is_hub_id(value):
                problems.append(f"{key} entry {value!r} is not a Hub repository id")
    for target in _HUB_LINK.findall(str(card)):
        if not is_hub_id(target.removesuffix("/")):
            problems.append(f"the link https://huggingface.co/{target} does not point at a Hub repository")
    if problems:
        raise ValueError("invalid card: " + "; ".join(problems))
    return card


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
        "hfpref_version": __version__,
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
    links = [
        f"[{d}](https://huggingface.co/datasets/{d})" if is_hub_id(d) else f"`{_display_name(d)}`" for d in datasets
    ]
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


def _metric_label(name: str) -> str:
    """A metric's name with what it means where hfpref's differs from the ecosystem's (e.g. `sbert_sim`)."""
    from ..metrics.captioning import METRIC_NOTES

    base = name.removeprefix("eval_").split("/")[-1]
    note = METRIC_NOTES.get(base) or next((n for k, n in METRIC_NOTES.items() if base.endswith(f"_{k}")), None)
    return f"{name} ({note})" if note else name


def _rows(mapping: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), _format_value(v)) for k, v in (mapping or {}).items() if v is not None]


def _metric_rows(mapping: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(_metric_label(name), value) for name, value in _rows(mapping)]


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
            Hub license id, e.g. `"mit"`; defaults to the license the cards of `source_datasets` agree on when they are
            local or cached ([`resolve_license`]), else omitted, and the card's License section says so.
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
    undescribed = [name for name in first.column_names if not descriptions.get(name)]
    if undescribed:
        raise ValueError(
            f"the dataset card of {repo_id} would leave columns {undescribed} undescribed: pass "
            "column_descriptions={column: description} for them."
        )
    columns = [
        {"name": name, "dtype": _feature_type(feature), "description": descriptions[name]}
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

    license, license_note = resolve_license(license, list(source_datasets or []), "source datasets", "dataset")
    card_data = DatasetCardData(
        license=license,
        language=language,
        pretty_name=pretty_name or repo_id.split("/")[-1],
        tags=_tags(["hfpref", "preference", kind.replace("_", "-")], ["audio"] if audio_column else [], tags or []),
        task_categories=list(task_categories) if task_categories else _DEFAULT_TASK_CATEGORIES[kind],
        size_categories=[_size_category(total_rows)],
        source_datasets=list(source_datasets) if source_datasets else None,
    )
    card = DatasetCard.from_template(
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
        license_note=license_note,
        hfpref_version=_package_version("hfpref"),
        datasets_version=_package_version("datasets"),
    )
    return validate_card(card)


def render_model_card(
    *,
    repo_id: str,
    method: str,
    variant: str | None = None,
    task: str | None = None,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    reward_model: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    eval_dataset: str | Mapping[str, str] | None = None,
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
    Render the card of a model trained by hfpref (captioner, speech-emotion captioner, text-to-audio model, CLAP,
    audibility classifier); reward models have their own card, [`render_reward_model_card`].

    Args:
        repo_id (`str`):
            Hub model repository, `"user/name"`, used in the quick-start snippet.
        method (`str`):
            Training method, a key of [`METHODS`] (the name of its `hfpref/trainers/<method>/` folder, e.g.
            `"caption_rl"`); the card names it and links its paper.
        variant (`str`, *optional*):
            The method's loss variant (`"scst"`, `"rloo"` or `"ppo"` for `caption_rl`; `"grpo"` or `"rloo"` for
            `caption_grpo`): the card then names the variant, links its paper and shows its objective.
        task (`str`, *optional*):
            A key of [`TASKS`] (`"audio-captioning"`, `"speech-emotion-captioning"`, `"text-to-audio"`,
            `"audio-text-retrieval"`, `"audibility-classification"`); picks the default snippet and `library_name`.
            Defaults to the method's task, else `"audio-captioning"`.
        base_model (`str`, *optional*):
            The model that was fine-tuned: a Hub id goes into the front matter (`base_model`) and is linked; a local
            path is named by its folder only.
        datasets (`str` or `Sequence[str]`, *optional*):
            Training datasets; Hub ids go into the front matter and are linked. The first one names the data of the
            `model-index` results.
        reward_model (`str`, *optional*):
            The reward model optimized against, if any (a Hub id is linked).
        model_name (`str`, *optional*):
            Title; defaults to the repository name.
        description (`str`, *optional*):
            Opening paragraph; defaults to the method's.
        training_args (`Mapping[str, Any]`, *optional*):
            Hyperparameters to list (name -> value); `None` values are skipped.
        metrics (`Mapping[str, Any]`, *optional*):
            Results to list (name -> value); numeric ones also go into the `model-index` block.
        eval_dataset (`str` or `Mapping[str, str]`, *optional*):
            The data the metrics were measured on; defaults to the first of `datasets`. Named evaluation sets are
            `{name: data}`, their metrics `eval_<name>_<metric>` (see [`eval_results`]).
        usage (`str`, *optional*):
            Python quick-start snippet replacing the task's default.
        license (`str`, *optional*):
            Hub license id; defaults to the license of the card of the model it was built from (base model, or for a
            reward model its CLAP) when that card is local or cached ([`resolve_license`]), else omitted, and the
            card's License section says so.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`):
            Language of the generated text.
        tags (`Sequence[str]`, *optional*):
            Extra tags; `hfpref`, the method, its variant and the task are always added.
        library_name (`str`, *optional*), pipeline_tag (`str`, *optional*):
            Override the task's defaults.
        limitations (`str`, *optional*):
            Limitations section; defaults to the method's, else to a note about reward hacking and data bias.
        citation (`str`, *optional*):
            BibTeX entry.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown training method {method!r}; known methods are {sorted(METHODS)}.")
    if method == "reward_model":
        raise ValueError("A reward model's card is rendered by render_reward_model_card, not render_model_card.")
    method_info = METHODS[method]
    shown = method_info.variant(variant)
    task = task or method_info.task or "audio-captioning"
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; known tasks are {sorted(TASKS)}.")
    task_info = TASKS[task]
    dataset_list = _as_list(datasets)
    license, license_note = resolve_license(license, [base_model], "base model")
    card_data = ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[d for d in dataset_list if is_hub_id(d)] or None,
        eval_results=eval_results(
            metrics,
            task_type=task_info.task_type,
            task_name=task_info.name,
            dataset=eval_dataset or next(iter(dataset_list), None),
        ),
        library_name=library_name or task_info.library_name,
        license=license,
        language=language,
        model_name=model_name or repo_id.split("/")[-1],
        pipeline_tag=pipeline_tag or task_info.pipeline_tag,
        tags=_tags(["hfpref", method.replace("_", "-")], [variant] if variant else [], [task], tags or []),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card")),
        model_name=card_data.model_name,  # model-index takes it out of the front matter
        repo_id=repo_id,
        description=description or method_info.description,
        task_name=task_info.name,
        task_article="an" if task_info.name[0] in "aeiou" else "a",
        dataset_links=_dataset_links(dataset_list),
        base_model_name=_display_name(base_model) if base_model else None,
        base_model_on_hub=is_hub_id(base_model),
        reward_model=_display_name(reward_model) if reward_model else None,
        reward_model_on_hub=is_hub_id(reward_model),
        method_name=shown.name,
        method_summary=shown.summary,
        paper_title=shown.paper_title,
        paper_url=shown.paper_url,
        usage=(usage or task_info.usage.format(repo_id=repo_id)).strip(),
        training_args=_rows(training_args),
        metrics=_metric_rows(metrics),
        limitations=limitations or method_info.limitations or _DEFAULT_MODEL_LIMITATIONS,
        license_note=license_note,
        citation=citation,
        **library_versions(),
    )
    return validate_card(card)


def render_reward_model_card(
    *,
    repo_id: str,
    clap_checkpoint: str | None,
    loss_type: str = "bt",
    embedding_dim: int = 512,
    datasets: str | Sequence[str] | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    eval_dataset: str | Mapping[str, str] | None = None,
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
        clap_checkpoint (`str`, *optional*):
            The CLAP checkpoint whose frozen embeddings the model reads: a Hub id is recorded as `base_model` and
            linked; a local folder is named as the reward model's config records it (e.g. `"../clap"`). `None` (or
            `"unknown"`) for a model trained on precomputed features of an unrecorded encoder: the quick start then
            applies the head to embeddings instead of calling `score()`.
        loss_type (`str`, *optional*, defaults to `"bt"`):
            `"bt"` (Bradley-Terry on pairs, RLHF captioning paper), `"bce"` or `"mse"` (binary labels, BATON): the
            variants of `METHODS["reward_model"]`, whose name, formula and paper the card shows.
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
            Results to list, e.g. agreement with held-out human preferences; numeric ones also go into the
            `model-index` block.
        eval_dataset (`str` or `Mapping[str, str]`, *optional*):
            The data the metrics were measured on; defaults to the first of `datasets`. Named evaluation sets are
            `{name: data}`, their metrics `eval_<name>_<metric>` (see [`eval_results`]).
        model_class (`str`, *optional*, defaults to `"CLAPRewardModel"`), model_module (`str`, *optional*, defaults to `"hfpref.rewards"`):
            Where the quick-start snippet imports the model class from; the class needs a `score(audio, captions)`
            method.
        usage (`str`, *optional*):
            Python quick-start snippet replacing the default.
        license (`str`, *optional*):
            Hub license id; defaults to the license of the card of the model it was built from (base model, or for a
            reward model its CLAP) when that card is local or cached ([`resolve_license`]), else omitted, and the
            card's License section says so.
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
    losses = METHODS["reward_model"].variants
    if loss_type not in losses:
        raise ValueError(f"loss_type={loss_type!r} is not one of {list(losses)}.")
    loss = losses[loss_type]
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
    clap_known = clap_checkpoint not in (None, "", "unknown")
    license, license_note = resolve_license(license, [clap_checkpoint if clap_known else None], "CLAP it reads")
    if clap_known:
        default_usage = f"""import soundfile as sf
from {model_module} import {model_class}

reward_model = {model_class}.from_pretrained("{repo_id}")
audio, sampling_rate = sf.read("clip.wav")  # mono, at the CLAP's sampling rate (48 kHz for LAION CLAP)
# score() embeds audio and captions with the CLAP it records, {clap_checkpoint}, then applies the reward head.
print(reward_model.score([audio, audio], ["A dog barks while a car passes by", "Rain falls on a tin roof"],
                         sampling_rate=sampling_rate))"""
    else:
        default_usage = f"""import torch
from {model_module} import {model_class}

reward_model = {model_class}.from_pretrained("{repo_id}")
# It was trained on precomputed features and records no CLAP, so score() cannot embed audio itself: give the head the
# {embedding_dim}-d audio and text embeddings of the encoder that made its training features.
audio_embedding = torch.randn(1, {embedding_dim})  # the clip's embedding, from that encoder
text_embedding = torch.randn(1, {embedding_dim})  # the caption's embedding, from that encoder
with torch.no_grad():
    print(reward_model(audio_embedding=audio_embedding, text_embedding=text_embedding).rewards)"""
    card_data = ModelCardData(
        base_model=clap_checkpoint if clap_known and is_hub_id(clap_checkpoint) else None,
        datasets=[d for d in dataset_list if is_hub_id(d)] or None,
        eval_results=eval_results(
            metrics,
            task_type="audio-classification",
            task_name="audio-caption preference reward",
            dataset=eval_dataset or next(iter(dataset_list), None),
        ),
        library_name="transformers",
        license=license,
        language=language,
        model_name=model_name or repo_id.split("/")[-1],
        tags=_tags(["hfpref", "reward-model", "clap", "audio", f"loss-{loss_type}"], tags or []),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path("reward_model_card")),
        model_name=card_data.model_name,
        repo_id=repo_id,
        description=description,
        clap_checkpoint=clap_checkpoint if clap_known else None,
        clap_on_hub=clap_known and is_hub_id(clap_checkpoint),
        embedding_dim=embedding_dim,
        dataset_links=_dataset_links(dataset_list),
        loss_name=loss.name[0].upper() + loss.name[1:],
        loss_formula=loss.summary,
        loss_note=loss_note,
        paper_title=loss.paper_title,
        paper_url=loss.paper_url,
        usage=(usage or default_usage).strip(),
        training_args=_rows(args),
        metrics=_metric_rows(metrics),
        limitations=limitations or _DEFAULT_REWARD_LIMITATIONS,
        license_note=license_note,
        citation=citation,
        **library_versions(),
    )
    return validate_card(card)
