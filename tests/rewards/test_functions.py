import numpy as np
import pytest
import torch

from hfpref.data.audio import decode_audio
from hfpref.data.completions import completion_text
from hfpref.data.synthetic.audio_world import make_world
from hfpref.encoders.clap import ClapEmbedder
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.rewards.functions import (
    REWARD_FUNCTIONS,
    expected_caption_length,
    get_clap_similarity_reward,
    get_reward_func,
    get_reward_model_reward,
    length_penalty,
    with_length_penalty,
    with_repetition_penalty,
)


@pytest.fixture(scope="module")
def world():
    return make_world(4, seed=5, clip_seconds=1.0)


@pytest.fixture(scope="module")
def embedder(tiny_clap_dir):
    return ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)


@pytest.fixture(scope="module")
def reward_model(embedder):
    torch.manual_seed(0)
    return CLAPRewardModel(
        CLAPRewardConfig(
            embedding_dim=embedder.embedding_dim, hidden_sizes=[16], clap_fingerprint=embedder.fingerprint
        )
    )


def test_length_penalty_only_above_expected_length():
    assert length_penalty(0.9, length=10, expected_length=10) == 0.9
    assert length_penalty(0.9, length=4, expected_length=10) == 0.9
    assert length_penalty(0.9, length=20, expected_length=10, alpha=0.4) == pytest.approx(0.9 - 0.4 * 10 / 10)
    assert length_penalty(0.9, length=13, expected_length=10, alpha=1.0) == pytest.approx(0.9 - 0.3)
    with pytest.raises(ValueError, match="expected_length"):
        length_penalty(0.9, 3, expected_length=0)


def test_shaping_wrappers_compose_and_keep_names():
    def base(completions, **kwargs):
        return [1.0] * len(completions)

    shaped = with_repetition_penalty(with_length_penalty(base, expected_length=3, alpha=0.5), beta=1.0)
    rewards = shaped(["a dog barks", "a dog a dog a dog"], audio=None)
    assert rewards[0] == 1.0
    assert rewards[1] == pytest.approx(1.0 - 0.5 * 3 / 3 - 4 / 6)
    assert shaped.__name__ == "base_length_penalty_repetition_penalty"


def test_expected_caption_length(world):
    lengths = [len(r.split()) for refs in world["references"] for r in refs]
    assert expected_caption_length(world["references"]) == pytest.approx(np.mean(lengths))


def test_completion_text_standard_and_conversational():
    assert completion_text("a dog barks") == "a dog barks"
    assert completion_text([{"role": "assistant", "content": "rain falls"}]) == "rain falls"
    with pytest.raises(ValueError, match="neither text"):
        completion_text(3)


def test_reward_model_reward_from_audio_or_cached_embeddings(world, embedder, reward_model):
    reward = get_reward_model_reward(reward_model, embedder)
    audio = [decode_audio(v, embedder.sampling_rate) for v in world["audio"]]
    captions = list(world["caption"])
    from_audio = reward(captions, audio=list(world["audio"]))
    vectors = embedder.embed_audio(audio, sampling_rate=embedder.sampling_rate)
    from_cache = reward(captions, audio_embedding=list(vectors))
    assert np.allclose(from_audio, from_cache, atol=1e-6)
    assert all(0.0 < r < 1.0 for r in from_audio)
    assert from_audio == pytest.approx(reward_model.score(audio, captions, embedder=embedder), abs=1e-6)
    assert reward.__name__ == "reward_model_reward"
    with pytest.raises(ValueError, match="neither"):
        reward(captions)


@pytest.fixture(scope="module")
def other_embedder(tiny_clap_dir, tmp_path_factory):
    """The same tiny CLAP architecture with other weights, saved elsewhere: same width, other embeddings."""
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(tiny_clap_dir)
    with torch.no_grad():
        model.text_projection.linear2.weight.mul_(-1)
    path = tmp_path_factory.mktemp("other-clap")
    model.save_pretrained(path)
    ClapProcessor.from_pretrained(tiny_clap_dir).save_pretrained(path)
    return ClapEmbedder.from_pretrained(str(path), show_progress=False)


def test_every_pairing_refuses_another_clap(tmp_path, tiny_clap_dir, embedder, other_embedder, reward_model, caplog):
    from hfpref.rewards import ClapMismatchError, check_clap_pairing
    from hfpref.rewards.functions import build_reward_funcs

    assert (
        other_embedder.embedding_dim == embedder.embedding_dim and other_embedder.fingerprint != embedder.fingerprint
    )
    reward_model.config.clap_checkpoint = str(tiny_clap_dir)
    reward_model.save_pretrained(tmp_path / "rm")
    saved = CLAPRewardModel.from_pretrained(tmp_path / "rm")
    clip = [np.zeros(1600, np.float32)]

    def assert_names_both(error):
        message = str(error.value)
        for part in (
            embedder.fingerprint,
            other_embedder.fingerprint,
            str(tmp_path / "rm"),
            other_embedder.model_name,
        ):
            assert part in message, part

    with pytest.raises(ClapMismatchError) as error:  # score()
        saved.score(clip, ["a bell rings"], embedder=other_embedder)
    assert_names_both(error)
    with pytest.raises(ClapMismatchError) as error:  # the reward callable (RL recipes, quickstart, judges)
        get_reward_model_reward(saved, other_embedder)
    assert_names_both(error)
    with pytest.raises(ClapMismatchError) as error:  # the recipes' registry
        build_reward_funcs(
            ["reward_model"],
            reward_model_name_or_path=str(tmp_path / "rm"),
            clap_model_name_or_path=other_embedder.model_name,
        )
    assert_names_both(error)
    check_clap_pairing(saved, embedder)  # the right CLAP passes

    narrow = CLAPRewardModel(CLAPRewardConfig(embedding_dim=embedder.embedding_dim + 1, hidden_sizes=[4]))
    with pytest.raises(ClapMismatchError, match="reads 33-d embeddings"):
        check_clap_pairing(narrow, embedder)
    unrecorded = CLAPRewardModel(CLAPRewardConfig(embedding_dim=embedder.embedding_dim, hidden_sizes=[4]))
    with caplog.at_level("WARNING", logger="hfpref.models.modeling_clap_reward"):
        check_clap_pairing(unrecorded, embedder)
    assert "records no CLAP fingerprint" in caplog.text


def test_clap_similarity_is_cosine(world, embedder):
    reward = get_clap_similarity_reward(embedder)
    audio = [decode_audio(v, embedder.sampling_rate) for v in world["audio"]]
    captions = list(world["caption"])
    a, t = embedder.embed_audio(audio, sampling_rate=embedder.sampling_rate), embedder.embed_text(captions)
    cosine = (a * t).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(t, axis=-1)
    assert reward(captions, audio=audio) == pytest.approx(cosine.tolist(), abs=1e-5)


def test_registry_lists_known_names():
    assert set(REWARD_FUNCTIONS) >= {"reward_model", "clap_similarity"}
    with pytest.raises(ValueError, match=r"unknown reward 'cider_x'; known rewards: \["):
        get_reward_func("cider_x")


def test_build_reward_funcs_takes_extra_named_rewards_and_wraps_the_first():
    from hfpref.rewards.functions import build_reward_funcs

    def constant():
        return lambda completions, **kwargs: [1.0] * len(completions)

    funcs, embedder = build_reward_funcs(
        ["mine"],
        extra={"mine": constant},
        length_penalty_alpha=0.4,
        expected_length=2.0,
    )
    assert embedder is None
    # "a b" has the expected length: no penalty; "a b c d" is 2 words longer and is penalised
    rewards = funcs[0](["a b", "a b c d"])
    assert rewards[0] == 1.0
    assert rewards[1] == length_penalty(1.0, 4, 2.0, alpha=0.4) < 1.0
    with pytest.raises(ValueError, match=r"unknown reward 'nope'; known rewards: \[.*'mine'"):
        build_reward_funcs(["nope"], extra={"mine": constant})
