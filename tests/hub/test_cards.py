from importlib.resources import files

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard

from hfpref.data import preference
from hfpref.data.preference import split_by_clip
from hfpref.hub import (
    METHODS,
    TEMPLATES,
    render_dataset_card,
    render_model_card,
    render_reward_model_card,
    template_path,
)
from hfpref.hub.datasets import push_preference_dataset


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, np.zeros(800, dtype="float32"), 16000)
    wav = path.read_bytes()
    clips = [f"clip-{i}" for i in range(10) for _ in range(2)]
    return Dataset.from_dict(
        {
            "audio": [{"bytes": wav, "path": None} for _ in clips],
            "chosen": [f"a dog barks near {c}" for c in clips],
            "rejected": [f"a cat meows near {c}" for c in clips],
            "margin": [2.0] * len(clips),
            "category": ["HC", "MM"] * 10,
            "clip_id": clips,
        }
    ).cast_column("audio", Audio(decode=False))


def test_installed_package_reads_its_templates():
    for name in TEMPLATES:
        text = files("hfpref.hub_cards").joinpath(f"{name}.md").read_text()
        assert text.startswith("---\n{{ card_data }}\n---")
        assert template_path(name).read_text() == text
    assert template_path("model_card.md") == template_path("model_card")
    with pytest.raises(ValueError, match="known templates are"):
        template_path("space_card")


def test_dataset_card_renders_counts_schema_and_front_matter(pairs):
    splits = split_by_clip(pairs, test_size=0.2, seed=0)
    card = render_dataset_card(
        splits,
        repo_id="someone/dog-prefs",
        kind="pairwise",
        license="mit",
        description="Toy pairs.",
        source="Made up for a test.",
        paper_title="Can Audio Captions Be Evaluated with Image Caption Metrics?",
        paper_id="2110.04684",
        method="Pairs with a vote sum of 0 were dropped",
        tags=["audio-captioning"],
    )
    assert isinstance(card, DatasetCard)
    assert card.data.license == "mit" and card.data.pretty_name == "dog-prefs"
    assert {"hfpref", "preference", "pairwise", "audio", "audio-captioning"} <= set(card.data.tags)
    assert card.data.size_categories == ["n<1K"]
    text = str(card)
    assert DatasetCard(text).data.to_dict() == card.data.to_dict()  # the front matter parses back
    assert 'load_dataset("someone/dog-prefs", split="train")' in text
    assert 'kind="pairwise"' in text and "require_audio" not in text
    assert "| `audio` | Audio |" in text and "| `margin` | float64 |" in text
    assert (
        "| train | 16 | 8 | 8 |" in text and "| test | 4 | 2 | 2 |" in text and "| **total** | 20 | 10 | 10 |" in text
    )
    assert "over 10 clips" in text
    assert "https://huggingface.co/papers/2110.04684" in text and "## Limitations" in text
    assert "{{" not in text and "{%" not in text


def test_dataset_card_for_text_only_pairs_and_single_split(pairs):
    card = render_dataset_card(pairs.remove_columns(["audio", "category"]), repo_id="me/x", kind="pairwise")
    text = str(card)
    assert "require_audio=False" in text and "audio itself is not included" in text
    assert "| train | 20 |" in text and "**total**" not in text
    assert "license" not in card.data.to_dict() and "audio" not in card.data.tags
    with pytest.raises(ValueError, match="valid kinds"):
        render_dataset_card(pairs, repo_id="me/x", kind="ranked")


MODEL_CARD_METHODS = sorted(set(METHODS) - {"reward_model"})  # the reward model has its own card
VARIANTS = [(method, variant) for method in sorted(METHODS) for variant in sorted(METHODS[method].variants)]


@pytest.mark.parametrize("method", MODEL_CARD_METHODS)
def test_model_card_renders_for_every_method(method):
    card = render_model_card(
        repo_id="me/captioner",
        method=method,
        task="audio-captioning",
        base_model="openai/whisper-tiny",
        datasets=["me/dog-prefs", "./local.json"],
        reward_model="me/clap-reward",
        training_args={"learning_rate": 1e-5, "num_train_epochs": 100, "unused": None},
        metrics={"reward": 0.71234},
        license="apache-2.0",
    )
    assert isinstance(card, ModelCard)
    data = ModelCard(str(card)).data
    assert data.base_model == "openai/whisper-tiny" and data.datasets == ["me/dog-prefs"]
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert {"hfpref", method.replace("_", "-"), "audio-captioning"} <= set(data.tags)
    text = str(card)
    assert 'AutoModelForSpeechSeq2Seq.from_pretrained("me/captioner")' in text
    assert f"https://huggingface.co/papers/{METHODS[method].paper_id}" in text
    assert "| `learning_rate` | 1e-05 |" in text and "unused" not in text and "| reward | 0.7123 |" in text
    assert "`local.json`" in text and "./local.json" not in text and "{{" not in text
    model_index = data.to_dict()["model-index"]
    assert model_index[0]["name"] == "captioner"
    result = model_index[0]["results"][0]
    assert result["dataset"] == {"name": "me/dog-prefs", "type": "me/dog-prefs"}
    assert result["metrics"] == [{"type": "reward", "value": 0.7123, "name": "reward"}]


@pytest.mark.parametrize("method, variant", [(m, v) for m, v in VARIANTS if m != "reward_model"])
def test_model_card_shows_the_variant(method, variant):
    card = render_model_card(repo_id="me/captioner", method=method, variant=variant)
    shown, text = METHODS[method].variants[variant], str(card)
    assert {"hfpref", method.replace("_", "-"), variant} <= set(card.data.tags)
    assert shown.name in text and f"https://huggingface.co/papers/{shown.paper_id}" in text and shown.summary in text


def test_model_card_tasks_and_errors():
    card = render_model_card(repo_id="me/tta", method="reward_weighted_diffusion", task="text-to-audio")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-audio"
    assert 'AudioLDMPipeline.from_pretrained("me/tta")' in str(card)
    assert render_model_card(repo_id="me/tta", method="reward_weighted_diffusion").data.library_name == "diffusers"
    card = render_model_card(
        repo_id="me/sec", method="aligncap_dpo", task="speech-emotion-captioning", usage="print(1)"
    )
    assert card.data.library_name == "peft" and "```python\nprint(1)\n```" in str(card)
    with pytest.raises(ValueError, match="known methods"):
        render_model_card(repo_id="me/x", method="ppo2")
    with pytest.raises(ValueError, match="known tasks"):
        render_model_card(repo_id="me/x", method="caption_rl", variant="scst", task="asr")
    with pytest.raises(ValueError, match=r"known variants are \['ppo', 'rloo', 'scst'\]"):
        render_model_card(repo_id="me/x", method="caption_rl", variant="grpo")
    with pytest.raises(ValueError, match="render_reward_model_card"):
        render_model_card(repo_id="me/x", method="reward_model")


@pytest.mark.parametrize("loss_type, paper", [("bt", "2509.14659"), ("bce", "2402.00744"), ("mse", "2402.00744")])
def test_reward_model_card(loss_type, paper):
    card = render_reward_model_card(
        repo_id="me/clap-reward",
        clap_checkpoint="laion/clap-htsat-unfused",
        loss_type=loss_type,
        datasets="me/dog-prefs",
        training_args={"bt_scale": 10.0, "l2_coef": 0.1, "num_train_epochs": 70},
        metrics={"agreement/clotho": 0.75},
    )
    data = ModelCard(str(card)).data
    assert data.base_model == "laion/clap-htsat-unfused" and data.datasets == ["me/dog-prefs"]
    assert {"hfpref", "reward-model", f"loss-{loss_type}"} <= set(data.tags)
    text = str(card)
    assert 'CLAPRewardModel.from_pretrained("me/clap-reward")' in text and "reward_model.score(" in text
    assert f"https://huggingface.co/papers/{paper}" in text and "| agreement/clotho | 0.75 |" in text
    assert METHODS["reward_model"].variants[loss_type].paper_id == paper
    assert ("scale s = 10 and lambda = 0.1" in text) == (loss_type == "bt")
    assert data.eval_results[0].metric_value == 0.75 and data.eval_results[0].metric_name == "agreement/clotho"
    with pytest.raises(ValueError, match="is not one of"):
        render_reward_model_card(repo_id="me/r", clap_checkpoint="c", loss_type="hinge")


def test_local_paths_never_become_hub_links_or_base_model(tmp_path):
    from hfpref.hub.cards import is_hub_id, validate_card

    local_sft = tmp_path / "runs" / "sft"
    local_sft.mkdir(parents=True)
    card = render_model_card(
        repo_id="runs/rl",
        method="caption_rl",
        variant="scst",
        base_model=str(local_sft),
        reward_model=str(tmp_path / "runs" / "reward"),
        datasets=str(tmp_path / "pairs.jsonl"),
        metrics={"eval_reward": 0.5, "eval_runtime": 3.0, "epoch": 2.0},
    )
    text = str(card)
    assert "base_model" not in card.data.to_dict() and "datasets" not in card.data.to_dict()
    assert "huggingface.co//" not in text and str(tmp_path) not in text
    assert "the local checkpoint `sft`" in text and "`reward` (a local checkpoint)" in text
    results = ModelCard(text).data.eval_results
    assert [(r.metric_type, r.dataset_name, r.dataset_type) for r in results] == [
        ("reward", "pairs.jsonl", "pairs-jsonl")
    ]
    reward_card = render_reward_model_card(repo_id="me/r", clap_checkpoint="../clap", metrics={"eval_accuracy": 0.8})
    assert "base_model" not in reward_card.data.to_dict() and "the local CLAP checkpoint `../clap`" in str(reward_card)
    assert not is_hub_id(str(local_sft)) and not is_hub_id("../clap") and is_hub_id("laion/clap-htsat-unfused")

    broken = ModelCard(text.replace("library_name:", "base_model: /home/me/sft\nlibrary_name:"))
    with pytest.raises(ValueError, match="base_model entry '/home/me/sft' is not a Hub repository id"):
        validate_card(broken)
    with pytest.raises(ValueError, match="does not point at a Hub repository"):
        validate_card(ModelCard(text + "\n[x](https://huggingface.co//tmp/x)\n"))
    with pytest.raises(ValueError, match="does not parse with huggingface_hub"):
        validate_card(text.replace("value: 0.5", "valu: 0.5"))
    assert validate_card(text) == text


def test_dataset_card_describes_every_column(pairs):
    with pytest.raises(ValueError, match=r"columns \['novelty'\] undescribed"):
        render_dataset_card(pairs.add_column("novelty", [1.0] * len(pairs)), repo_id="me/x", kind="pairwise")
    card = render_dataset_card(
        pairs.add_column("novelty", [1.0] * len(pairs)),
        repo_id="me/x",
        kind="pairwise",
        column_descriptions={"novelty": "how new the pair is"},
    )
    assert "| `novelty` | float64 | how new the pair is |" in str(card)


def test_push_preference_dataset_validates_then_pushes_data_and_card(pairs, monkeypatch):
    calls = []

    def fake_dataset_push(self, repo_id, **kwargs):
        calls.append(("data", type(self).__name__, repo_id, kwargs))

    def fake_card_load(repo_id_or_path, repo_type=None, token=None, **kwargs):
        calls.append(("load", repo_id_or_path, repo_type, token))
        return DatasetCard(
            "---\n"
            + DatasetCardData(configs=[{"config_name": "default", "data_files": "data/*"}]).to_yaml()
            + "\n---\n"
        )

    def fake_card_push(self, repo_id, **kwargs):
        calls.append(("card", repo_id, kwargs, str(self)))

    monkeypatch.setattr(Dataset, "push_to_hub", fake_dataset_push)
    monkeypatch.setattr(DatasetDict, "push_to_hub", fake_dataset_push)
    monkeypatch.setattr(DatasetCard, "load", fake_card_load)
    monkeypatch.setattr(DatasetCard, "push_to_hub", fake_card_push)

    splits = split_by_clip(pairs)
    card = push_preference_dataset(
        splits, "me/dog-prefs", kind="pairwise", private=True, token="hf_x", license="mit", pretty_name="Dog prefs"
    )
    assert [call[0] for call in calls] == ["data", "load", "card"]
    assert calls[0][1:] == ("DatasetDict", "me/dog-prefs", {"private": True, "token": "hf_x"})
    assert calls[1][1:] == ("me/dog-prefs", "dataset", "hf_x")
    assert calls[2][1] == "me/dog-prefs" and calls[2][2] == {"repo_type": "dataset", "token": "hf_x"}
    pushed = DatasetCard(calls[2][3])
    assert pushed.data.pretty_name == "Dog prefs" and pushed.data.license == "mit"
    assert pushed.data.configs == [{"config_name": "default", "data_files": "data/*"}]  # kept from push_to_hub
    assert "| `chosen` | string |" in calls[2][3] and card.data.pretty_name == "Dog prefs"

    calls.clear()
    push_preference_dataset(pairs, "me/one-split", kind="pairwise")
    assert calls[0][1] == "Dataset" and calls[0][3] == {"private": False, "token": None}

    calls.clear()
    with pytest.raises(ValueError, match="'label'"):
        push_preference_dataset(pairs, "me/bad", kind="pointwise")
    assert calls == []  # nothing reaches the network when validation fails
    assert preference.validate_dataset is not None


def test_sbert_sim_says_which_model_next_to_the_value():
    card = render_model_card(
        repo_id="me/c", method="caption_rl", variant="scst", metrics={"eval_sbert_sim": 0.61, "eval_bleu_4": 0.2}
    )
    text = str(card)
    assert (
        "| eval_sbert_sim (Sentence-BERT all-MiniLM-L6-v2 by default; aac-metrics/FENSE use paraphrase-TinyBERT"
        in text
    )
    names = {r.metric_type: r.metric_name for r in ModelCard(text).data.eval_results}
    assert "paraphrase-TinyBERT-L6-v2" in names["sbert_sim"] and names["bleu_4"] == "bleu_4"


def _readme_with_license(folder, license):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\nlicense: {license}\n---\n# A model\n")
    return str(folder)


def test_license_defaults_to_the_base_model_card_local_or_cached(tmp_path, monkeypatch):
    import huggingface_hub

    base = _readme_with_license(tmp_path / "base", "apache-2.0")
    card = render_model_card(repo_id="me/sft", method="caption_sft", base_model=base)
    assert ModelCard(str(card)).data.license == "apache-2.0"
    assert "## License\n\n`apache-2.0`, the license of the base model (`base`) as its card states it." in str(card)
    # --license wins over the base model's.
    card = render_model_card(repo_id="me/sft", method="caption_sft", base_model=base, license="mit")
    assert card.data.license == "mit" and "Released under `mit`." in str(card)
    # A Hub base model: its card from the local Hub cache only (no network), for a model repository.
    cached = _readme_with_license(tmp_path / "cache", "cc-by-4.0")
    asked = []

    def from_cache(repo_id, filename, repo_type=None):
        asked.append((repo_id, filename, repo_type))
        return str(tmp_path / "cache" / "README.md") if repo_id == "laion/clap-htsat-unfused" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", from_cache)
    reward = render_reward_model_card(repo_id="me/r", clap_checkpoint="laion/clap-htsat-unfused")
    assert ModelCard(str(reward)).data.license == "cc-by-4.0" and cached
    assert asked == [("laion/clap-htsat-unfused", "README.md", "model")]
    # Unknown: no license in the front matter, and the card says why.
    card = render_model_card(repo_id="me/sft", method="caption_sft", base_model="openai/whisper-tiny")
    assert "license" not in card.data.to_dict()
    assert "No license was given (`--license`), and none could be read from the card of the base model" in str(card)
    card = render_model_card(repo_id="me/tiny", method="caption_sft")
    assert "license" not in card.data.to_dict() and "there is no published base model" in str(card)


def test_dataset_card_license_is_the_one_its_source_datasets_agree_on(pairs, tmp_path):
    first = _readme_with_license(tmp_path / "a", "cc-by-4.0")
    second = _readme_with_license(tmp_path / "b", "cc-by-4.0")
    card = render_dataset_card(pairs, repo_id="me/x", kind="pairwise", source_datasets=[first, second])
    assert DatasetCard(str(card)).data.license == "cc-by-4.0" and "## License" in str(card)
    _readme_with_license(tmp_path / "b", "mit")
    card = render_dataset_card(pairs, repo_id="me/x", kind="pairwise", source_datasets=[first, second])
    assert "license" not in card.data.to_dict() and "naming different ones" in str(card)
    card = render_dataset_card(pairs, repo_id="me/x", kind="pairwise", license="mit", source_datasets=[first])
    assert card.data.license == "mit"


def test_named_eval_sets_put_each_metric_under_its_own_data():
    # The features recipe trains on AudioCaps-Eval and evaluates on the named set `clotho`: its metrics are Clotho's.
    card = render_reward_model_card(
        repo_id="me/r",
        clap_checkpoint=None,
        embedding_dim=8,
        datasets="data/fense-features/audiocaps_eval",
        metrics={"eval_clotho_accuracy": 0.7, "eval_clotho_loss": 0.5, "epoch": 3.0},
        eval_dataset={"clotho": "data/fense-features/clotho_eval"},
    )
    results = ModelCard(str(card)).data.eval_results
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in results] == [
        ("clotho_eval", "accuracy", 0.7),
        ("clotho_eval", "loss", 0.5),
    ]
    with pytest.raises(ValueError, match="belongs to none of the named evaluation sets"):
        render_reward_model_card(
            repo_id="me/r", clap_checkpoint=None, metrics={"eval_accuracy": 0.7}, eval_dataset={"clotho": "c"}
        )


def test_reward_model_card_without_a_recorded_clap_runs_its_snippet(tmp_path):
    # Trained on precomputed features (embeddings_from: null): score() cannot embed, the snippet applies the head.
    from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel

    CLAPRewardModel(CLAPRewardConfig(embedding_dim=8, hidden_sizes=[4], clap_checkpoint=None)).save_pretrained(
        tmp_path / "r"
    )
    card = render_reward_model_card(repo_id="me/r", clap_checkpoint="unknown", embedding_dim=8)
    text = str(card)
    assert "unknown" not in text and ".score(" not in text and "base_model" not in card.data.to_dict()
    snippet = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    printed = []
    exec(snippet.replace('"me/r"', repr(str(tmp_path / "r"))), {"print": printed.append})
    assert printed[0].shape == (1,) and 0 < float(printed[0][0]) < 1
