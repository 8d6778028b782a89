import numpy as np
import pytest
from scipy import linalg

from hfpref.metrics.tokenization import MetricUnavailableError
from hfpref.metrics.tta import check_frechet_subsets, clap_score, evaluate_tta, frechet_distance


class MeanEmbedder:
    """A fixed 2-d embedder: audio -> (mean, std) of the samples; text -> (1, 0) for 'loud', (0, 1) otherwise."""

    sampling_rate = 16000

    def __init__(self):
        self.rates = []  # the sampling rate declared with every clip

    def embed_audio(self, clips, *, sampling_rate):
        self.rates += [sampling_rate] * len(clips)
        return np.array([[np.mean(c), np.std(c)] for c in clips], dtype=np.float32)

    def embed_text(self, texts):
        return np.array([[1.0, 0.0] if "loud" in t else [0.0, 1.0] for t in texts], dtype=np.float32)


class ConstantReward:
    def __init__(self):
        self.rates = []

    def score(self, audio, captions, embedder=None, *, sampling_rate=None):
        self.rates += [sampling_rate] * len(audio)
        return [0.25 if "loud" in c else 0.75 for c in captions]


def test_frechet_distance_matches_the_formula_on_random_sets():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(1.0, 2.0, size=(60, 3))
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    by_hand = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(linalg.sqrtm(s_a @ s_b)))
    assert frechet_distance(a, b) == pytest.approx(by_hand, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="one width"):
        frechet_distance(a, b[:, :2])


def test_clap_score_is_the_cosine():
    clips = [np.full(4, 3.0), np.array([1.0, -1.0, 1.0, -1.0])]  # embeddings (3, 0) and (0, 1)
    assert clap_score(clips, ["loud", "quiet"], MeanEmbedder(), sampling_rate=16000) == pytest.approx([1.0, 1.0])
    assert clap_score(clips, ["quiet", "loud"], MeanEmbedder(), sampling_rate=16000) == pytest.approx([0.0, 0.0])


def test_evaluate_reports_every_subset_and_names_what_is_missing():
    rng = np.random.default_rng(1)
    clips = [rng.normal(size=100).astype(np.float32) for _ in range(6)]
    prompts = ["loud a", "b", "loud c", "d", "e", "f"]
    tasks = ["integrity", "integrity", "temporal", "temporal", "temporal", "integrity"]
    result = evaluate_tta(
        clips,
        prompts,
        sampling_rate=16000,
        tasks=tasks,
        reference_audio=clips[::-1],
        embedder=MeanEmbedder(),
        reward_model=ConstantReward(),
    )
    assert result["all"]["n"] == 6 and result["integrity"]["n"] == 3 and result["temporal"]["n"] == 3
    assert result["integrity"]["reward_score"] == pytest.approx((0.25 + 0.75 + 0.75) / 3)
    assert result["temporal"]["reward_score"] == pytest.approx((0.25 + 0.75 + 0.75) / 3)
    scores = clap_score(clips, prompts, MeanEmbedder(), sampling_rate=16000)
    assert result["all"]["clap_score"] == pytest.approx(np.mean(scores))
    assert result["all"]["frechet_distance"] == pytest.approx(0.0, abs=1e-6)  # the same set, reordered
    assert result["skipped"] == {}

    only_clap = evaluate_tta(clips, prompts, sampling_rate=16000, embedder=MeanEmbedder())
    assert set(only_clap["all"]) == {"n", "clap_score"}
    assert set(only_clap["skipped"]) == {"frechet_distance", "reward_score"}
    with pytest.raises(MetricUnavailableError, match="reward_score needs a `reward_model`"):
        evaluate_tta(clips, prompts, sampling_rate=16000, embedder=MeanEmbedder(), metrics=["reward_score"])
    with pytest.raises(MetricUnavailableError, match="clap_score needs a CLAP `embedder`"):
        evaluate_tta(clips, prompts, sampling_rate=16000, metrics=["clap_score"])
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_tta(clips, prompts, sampling_rate=16000, embedder=MeanEmbedder(), metrics=["fad"])


def test_every_clip_is_handed_over_with_its_own_sampling_rate():
    """Generated clips go to every embedder and the reward model with their rate, reference clips with theirs."""
    rng = np.random.default_rng(2)
    clips = [rng.normal(size=160).astype(np.float32) for _ in range(4)]
    reference = [rng.normal(size=480).astype(np.float32) for _ in range(3)]
    embedder, fd_embedder, reward = MeanEmbedder(), MeanEmbedder(), ConstantReward()
    evaluate_tta(
        clips,
        ["loud", "b", "c", "d"],
        sampling_rate=16000,
        reference_audio=reference,
        reference_sampling_rate=48000,
        embedder=embedder,
        fd_embedder=fd_embedder,
        reward_model=reward,
    )
    assert embedder.rates == [16000] * 4 and reward.rates == [16000] * 4
    assert fd_embedder.rates == [16000] * 4 + [48000] * 3
    # Without a reference rate, the reference clips are taken to be at the generated clips' rate.
    same = MeanEmbedder()
    evaluate_tta(clips, ["a", "b", "c", "d"], sampling_rate=22050, reference_audio=reference, embedder=same)
    assert same.rates == [22050] * (4 + 4 + 3)  # CLAP score, then the Frechet distance's two sets
    with pytest.raises(TypeError, match="sampling_rate"):
        evaluate_tta(clips, ["a", "b", "c", "d"], embedder=MeanEmbedder())


def test_frechet_distance_with_a_one_clip_subset_is_refused_before_any_embedding():
    clips = [np.full(8, float(i)) for i in range(5)]
    tasks = ["integrity", "integrity", "integrity", "integrity", "temporal"]
    embedder = MeanEmbedder()
    with pytest.raises(ValueError, match=r"at least 2 generated clips per subset, but subset 'temporal' has 1 "):
        evaluate_tta(clips, ["a"] * 5, sampling_rate=16000, tasks=tasks, reference_audio=clips, embedder=embedder)
    assert embedder.rates == []  # refused before anything was embedded
    with pytest.raises(ValueError, match=r"at least 2 reference clips, but 'reference_audio' has 1"):
        evaluate_tta(clips, ["a"] * 5, sampling_rate=16000, reference_audio=clips[:1], embedder=embedder)
    with pytest.raises(ValueError, match=r"reference_audio has no set for \['temporal'\]"):
        evaluate_tta(
            clips,
            ["a"] * 5,
            sampling_rate=16000,
            tasks=tasks,
            reference_audio={"all": clips, "integrity": clips},
            embedder=embedder,
        )
    # Exactly 2 per subset is enough; without a reference there is no Frechet distance and no constraint.
    check_frechet_subsets(["integrity", "integrity", "temporal", "temporal"], 4, 2)
    result = evaluate_tta(clips, ["a"] * 5, sampling_rate=16000, tasks=tasks, embedder=embedder)
    assert result["temporal"]["n"] == 1 and "frechet_distance" in result["skipped"]
