import json
import shutil

import pytest

from hfpref.cli.main import main


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")


@pytest.fixture
def small_fense(fense_dir, tmp_path):
    entries = json.loads((fense_dir / "clotho_eval.json").read_text())[:12]
    path = tmp_path / "clotho_eval.json"
    path.write_text(json.dumps(entries))
    return path


def test_agreement_json_is_one_object_on_stdout(small_fense, capsys):
    assert (
        main(
            [
                "agreement",
                "--fense",
                str(small_fense),
                "--metric",
                "bleu_1",
                "rouge_l",
                "--tokenizer",
                "simple",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    result = json.loads(out)
    assert out.count("\n") == 1 and set(result) == {"bleu_1", "rouge_l"}
    for rates in result.values():
        assert set(rates) == {"HC", "HI", "HM", "MM", "total"}
        assert 0.0 <= rates["total"] <= 100.0


@needs_java
def test_agreement_table(small_fense, capsys):
    assert main(["agreement", "--fense", str(small_fense), "--metric", "cider_d"]) == 0
    out = capsys.readouterr().out
    assert "HC" in out and "total" in out and "cider_d" in out


def test_eval_jsonl_json_and_table(tmp_path, capsys):
    rows = [
        {"caption": "a dog barks", "references": ["a dog barks loudly", "a dog is barking"]},
        {"caption": "rain falls", "references": ["heavy rain falls", "rain falls on a roof"]},
    ]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--captions", str(path), "--metrics", "bleu_1", "rouge_l", "cider_d", "clap_sim"]
    assert main([*args, "--tokenizer", "simple", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bleu_1"] == pytest.approx(0.6703, abs=1e-4) and set(result["skipped"]) == {"clap_sim"}
    assert {"rouge_l", "cider_d"} <= set(result)
    sentences = tmp_path / "sentences.jsonl"
    assert main([*args, "--tokenizer", "simple", "--sentence-scores", str(sentences)]) == 0
    table = capsys.readouterr().out
    assert "bleu_1" in table and "clap_sim  skipped" in table
    lines = [json.loads(line) for line in sentences.read_text().splitlines()]
    assert [line["caption"] for line in lines] == ["a dog barks", "rain falls"] and "cider_d" in lines[0]


def test_eval_csv_with_json_and_split_reference_columns(tmp_path, capsys):
    path = tmp_path / "captions.csv"
    path.write_text('caption,references,ref_a,ref_b\na dog barks,"[""a dog barks""]",a dog barks,a puppy barks\n')
    assert main(["eval", "--captions", str(path), "--metrics", "bleu_1", "--tokenizer", "simple", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bleu_1"] == pytest.approx(1.0)
    argv = ["eval", "--captions", str(path), "--references-column", "ref_a", "ref_b", "--metrics", "bleu_1"]
    assert main([*argv, "--tokenizer", "simple", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bleu_1"] == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="no column"):
        main(["eval", "--captions", str(path), "--references-column", "refs", "--json"])


def test_agreement_accepts_repeated_metric_options(small_fense, capsys):
    args = ["agreement", "--fense", str(small_fense), "--tokenizer", "simple", "--json"]
    assert main([*args, "--metric", "bleu_1", "--metric", "rouge_l", "bleu_1"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"bleu_1", "rouge_l"}


def test_eval_reward_refuses_a_reward_model_of_another_clap(tmp_path, tiny_clap_dir, capsys):
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import ClapModel, ClapProcessor

    from hfpref.encoders.clap import ClapEmbedder
    from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel

    sf.write(tmp_path / "clip.wav", 0.3 * np.sin(np.arange(16000) / 5), 16000)
    path = tmp_path / "captions.jsonl"
    path.write_text(json.dumps({"caption": "a tone", "references": ["a steady tone"], "audio": "clip.wav"}) + "\n")
    # The reward model was trained on a fine-tuned copy of the tiny CLAP: same width, other weights.
    other = ClapModel.from_pretrained(tiny_clap_dir)
    with torch.no_grad():
        other.text_projection.linear2.weight.mul_(-1)
    other.save_pretrained(tmp_path / "tuned-clap")
    ClapProcessor.from_pretrained(tiny_clap_dir).save_pretrained(tmp_path / "tuned-clap")
    tuned = ClapEmbedder.from_pretrained(str(tmp_path / "tuned-clap"), show_progress=False)
    config = CLAPRewardConfig(
        embedding_dim=tuned.embedding_dim,
        hidden_sizes=[8],
        clap_checkpoint=str(tmp_path / "tuned-clap"),
        clap_fingerprint=tuned.fingerprint,
    )
    CLAPRewardModel(config).save_pretrained(tmp_path / "rm")

    args = ["eval", "--captions", str(path), "--audio-dir", str(tmp_path), "--metrics", "reward", "--json"]
    args += ["--reward-model", str(tmp_path / "rm")]
    with pytest.raises(SystemExit) as error:
        main([*args, "--clap-model", str(tiny_clap_dir)])
    message = str(error.value)
    assert tuned.fingerprint in message and str(tiny_clap_dir) in message and str(tmp_path / "rm") in message
    # Without --clap-model the reward model's own CLAP is used, and the reward is scored.
    assert main(args) == 0
    assert 0.0 < json.loads(capsys.readouterr().out)["reward"] < 1.0


def test_repeated_metric_options_accumulate_without_data():
    from hfpref.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["agreement", "--fense", "f.json", "--metric", "bleu_4", "--metric", "cider_d", "meteor"])
    assert args.metric == ["bleu_4", "cider_d", "meteor"]
    args = parser.parse_args(["eval", "--captions", "c.jsonl", "--metrics", "bleu_1", "--metrics", "rouge_l"])
    assert args.metrics == ["bleu_1", "rouge_l"]
    assert parser.parse_args(["eval", "--captions", "c.jsonl"]).metrics is None


def test_eval_names_the_row_of_a_missing_caption(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"caption": "a dog", "references": ["a dog"]}\n{"caption": null, "references": ["a cat"]}\n')
    with pytest.raises(SystemExit, match=r"captions.jsonl row 1, column 'caption': the caption is None, not text"):
        main(["eval", "--captions", str(path), "--metrics", "bleu_1", "--tokenizer", "simple"])
