import json

import pytest
import torch

from hfpref.metrics.audibility import AudibilityClassifier, audibility_accuracy
from hfpref.models.audibility_classifier import build_tiny_audibility_classifier


def test_audibility_accuracy_hand_computed():
    probabilities = {"a dog barks": 0.9, "a red car": 0.1, "rain falls": 0.51, "a tall tree": 0.5}
    classify = lambda captions: [probabilities[c] for c in captions]  # noqa: E731
    assert audibility_accuracy(list(probabilities), classify) == 0.5  # 0.5 is not above the threshold
    assert audibility_accuracy(list(probabilities), classify, threshold=0.05) == 1.0
    with pytest.raises(ValueError, match="returned 1 scores for 2 captions"):
        audibility_accuracy(["a", "b"], lambda c: [0.3])


def test_classifier_scores_in_one_batch_and_round_trips(tmp_path):
    model, tokenizer = build_tiny_audibility_classifier(["a dog barks", "the wall is green"], seed=0)
    classifier = AudibilityClassifier(model, tokenizer)
    sentences = ["a dog barks", "the wall is green", "a dog"]
    log_odds = classifier.audible_log_odds(sentences)
    with torch.no_grad():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(log_odds, logits[:, 1] - logits[:, 0])
    chunked = AudibilityClassifier(model, tokenizer, batch_size=2).audible_log_odds(sentences)
    torch.testing.assert_close(chunked, log_odds, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AudibilityClassifier.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded.audible_log_odds(sentences), log_odds)


def test_eval_cli_reports_audibility_accuracy(tmp_path, capsys):
    from hfpref.cli.main import main

    model, tokenizer = build_tiny_audibility_classifier(["a dog barks", "the wall is green"], seed=0)
    model.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    captions = ["a dog barks", "the wall is green", "rain"]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps({"caption": c, "references": [c]}) + "\n" for c in captions))
    code = main(
        [
            "eval",
            "--captions",
            str(path),
            "--metrics",
            "bleu_1",
            "--audibility-classifier",
            str(tmp_path / "clf"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = audibility_accuracy(captions, AudibilityClassifier.from_pretrained(str(tmp_path / "clf")))
    assert result["audibility_accuracy"] == pytest.approx(expected)
