"""Judges: clue overlap (offline default), the CLAP reward model, and an LLM behind a local OpenAI-style server."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hfpref.encoders.clap import ClapEmbedder
from hfpref.judges.base import ClueOverlapJudge, JudgeError, RewardModelJudge
from hfpref.judges.llm import OpenAIJudge
from hfpref.judges.pairs import pairs_from_scores
from hfpref.judges.registry import JUDGES, get_judge
from hfpref.models.modeling_clap_reward import CLAPRewardConfig, CLAPRewardModel
from hfpref.rewards.functions import get_reward_model_reward


_spec = importlib.util.spec_from_file_location("chat_server", Path(__file__).with_name("chat_server.py"))
_chat_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_chat_server)
FakeChatServer = _chat_server.FakeChatServer
REFERENCES = ["A woman talks quickly and loudly in a high-pitched voice, sounding angry."]


def test_clue_overlap_judge_ranks_by_clue_f1_and_counts_failures():
    judge = ClueOverlapJudge()
    right = "A woman speaks fast and loud with a high voice; she sounds angry."
    half = "A woman speaks fast, sounding sad."  # one reference clue of four, one wrong clue
    wrong = "A man speaks slowly and softly in a low voice, sounding sad."
    scores = judge.score([right, half, wrong], references=REFERENCES)
    assert scores[0] == 1.0 and scores[2] == 0.0 and 0.0 < scores[1] < 1.0
    # recall ignores the wrong clue "sad": fast is 1 of the 4 reference clues
    assert ClueOverlapJudge("recall").score([half], references=REFERENCES) == [0.25]
    assert judge.stats["scored_clips"] == 1

    with pytest.raises(JudgeError, match="needs the clip's reference captions"):
        judge.score([right])
    with pytest.raises(JudgeError, match="references name no emotional clue"):
        judge.score([right], references=["A person says something."])
    assert judge.stats["missing_references"] == 1 and judge.stats["references_without_clues"] == 1
    with pytest.raises(ValueError, match=r"mode='bleu' is not one of \['f1', 'recall'\]"):
        ClueOverlapJudge("bleu")


def test_registry_rejects_unknown_and_incomplete_judges():
    assert JUDGES == ("clue_overlap", "reward_model", "llm")
    with pytest.raises(ValueError, match=r"judge='gpt' is not one of \['clue_overlap', 'reward_model', 'llm'\]"):
        get_judge("gpt")
    with pytest.raises(ValueError, match="needs reward_model_name_or_path"):
        get_judge("reward_model")
    with pytest.raises(ValueError, match="needs llm_base_url and llm_model"):
        get_judge("llm", llm_base_url="http://localhost:1/v1")


def test_pairs_from_scores_keeps_the_best_against_strictly_lower():
    assert pairs_from_scores(["a", "b", "c"], [0.5, 0.5, 0.1]) == [("a", "c", 0.5, 0.1)]
    assert pairs_from_scores(["a", "b"], [0.3, 0.3]) == []


@pytest.fixture(scope="module")
def reward_model_dir(tiny_clap_dir, tmp_path_factory):
    """A random CLAP reward model recording the tiny CLAP it scores with."""
    embedder = ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)
    torch.manual_seed(0)
    config = CLAPRewardConfig(
        embedding_dim=embedder.embedding_dim,
        hidden_sizes=[16],
        clap_checkpoint=str(tiny_clap_dir),
        clap_fingerprint=embedder.fingerprint,
    )
    path = tmp_path_factory.mktemp("clap-rm")
    CLAPRewardModel(config).save_pretrained(path)
    return path


def test_reward_model_judge_scores_audio_with_the_clap_reward_model(reward_model_dir, tiny_clap_dir, one_thread):
    judge = get_judge("reward_model", reward_model_name_or_path=str(reward_model_dir))
    assert isinstance(judge, RewardModelJudge)
    t = np.arange(16000) / 16000
    audio = {"array": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "sampling_rate": 16000}
    candidates = ["a dog barks", "rain falls on a roof", "a man speaks"]
    scores = judge.score(candidates, audio=audio)

    # the same numbers straight from the model: CLAP embeddings of the clip and the captions, through the head
    embedder = ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)
    expected = get_reward_model_reward(CLAPRewardModel.from_pretrained(str(reward_model_dir)), embedder)(
        candidates, audio=[audio] * 3
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert len(set(scores)) == 3 and judge.stats["scored_clips"] == 1

    with pytest.raises(JudgeError, match="judges audio: pass the clip's audio"):
        judge.score(candidates, references=REFERENCES)
    assert judge.stats["missing_audio"] == 1


@pytest.fixture
def chat_server():
    with FakeChatServer() as server:
        yield server


def test_llm_judge_scores_through_an_openai_compatible_endpoint(chat_server):
    judge = get_judge("llm", llm_base_url=chat_server.base_url, llm_model="judge-7b", llm_api_key="sk-test")
    assert judge.score(["a sad woman, score 7", "fenced, score 3"], references=REFERENCES) == [7.0, 3.0]
    request = chat_server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["model"] == "judge-7b" and request["temperature"] == 0
    prompt = request["messages"][0]["content"]
    assert f"- {REFERENCES[0]}" in prompt and "Candidate caption:\na sad woman, score 7\n" in prompt
    assert judge.stats["requests"] == 2 and judge.stats["scored_clips"] == 1


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("prose", r"expected \{\"score\": 1\.\.10\} for 'prose', the LLM answered 'I would rate"),
        ("eleven", r"expected \{\"score\": 1\.\.10\} for 'eleven', the LLM answered '\{\"score\": 11\}'"),
        ("nochoices", r"not a chat-completions response for 'nochoices'"),
    ],
)
def test_llm_judge_malformed_answers_raise_and_are_counted(chat_server, candidate, message):
    judge = OpenAIJudge(chat_server.base_url, "judge-7b")
    with pytest.raises(JudgeError, match=message):
        judge.score(["fine, score 5", candidate], references=REFERENCES)
    assert judge.stats["malformed_answers"] == 1 and judge.stats["scored_clips"] == 0


def test_llm_judge_timeouts_and_http_errors_are_clear_and_counted(chat_server):
    judge = OpenAIJudge(chat_server.base_url, "judge-7b", timeout=0.2)
    with pytest.raises(JudgeError, match=r"/v1/chat/completions did not answer within 0\.2 s"):
        judge.score(["slow, score 5"], references=REFERENCES)
    with pytest.raises(JudgeError, match=r"answered HTTP 500: b'internal error'"):
        judge.score(["boom"], references=REFERENCES)
    with pytest.raises(
        JudgeError, match=r"connection to http://127\.0\.0\.1:\d+/v1/chat/completions failed: .*closed"
    ):
        judge.score(["hangup"], references=REFERENCES)
    assert judge.stats["timeouts"] == 1 and judge.stats["http_errors"] == 2 and judge.stats["scored_clips"] == 0
    closed = OpenAIJudge("http://127.0.0.1:9/v1", "judge-7b", timeout=2)  # port 9 (discard): nothing listens
    with pytest.raises(JudgeError, match="cannot reach http://127.0.0.1:9/v1/chat/completions"):
        closed.score(["score 5"], references=REFERENCES)
    assert closed.stats["http_errors"] == 1
    with pytest.raises(JudgeError, match="needs the clip's reference captions"):
        judge.score(["score 5"])


def test_llm_judge_checks_its_arguments():
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIJudge("localhost:8000", "m")
    with pytest.raises(ValueError, match=r"must contain \{references\} and \{candidate\}"):
        OpenAIJudge("http://x/v1", "m", prompt="rate {candidate}")
    with pytest.raises(ValueError, match="timeout=0 must be > 0"):
        OpenAIJudge("http://x/v1", "m", timeout=0)
