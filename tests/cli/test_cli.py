import subprocess
import sys

from datasets import load_from_disk

from hfpref.cli.main import main


def test_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "hfpref.cli.main", "--help"], capture_output=True, text=True, check=True
    )
    commands = ["synth", "embed", "quickstart", "train", "eval", "agreement", "pairs", "tta-generate"]
    for command in [*commands, "audibility-data", "annotate"]:
        assert command in out.stdout


def test_synth_refuses_a_world_of_no_clips(tmp_path, capsys):
    import pytest

    for bad in ("0", "-3", "ten"):
        with pytest.raises(SystemExit) as raised:
            main(["synth", "--n-clips", bad, "--output-dir", str(tmp_path / "world")])
        assert raised.value.code == 2
        assert "--n-clips" in capsys.readouterr().err
    assert not (tmp_path / "world").exists()


def test_synth_then_embed(tmp_path, capsys):
    from hfpref.encoders import build_tiny_clap

    world_dir, clap_dir, out_dir = tmp_path / "world", tmp_path / "clap", tmp_path / "embedded"
    assert main(["synth", "--n-clips", "6", "--seed", "3", "--output-dir", str(world_dir)]) == 0
    world = load_from_disk(str(world_dir))
    assert len(world) == 6
    model, processor = build_tiny_clap(list(world["caption"]) * 3)
    model.save_pretrained(clap_dir)
    processor.save_pretrained(clap_dir)
    args = ["embed", "--dataset", str(world_dir), "--model", str(clap_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--output-dir", str(out_dir)]) == 0
    embedded = load_from_disk(str(out_dir))
    assert {"audio_embedding", "caption_embedding"} <= set(embedded.column_names)
    assert "Embedded 6 rows" in capsys.readouterr().out


def test_agreement_command_reproduces_fense_bleu4(fense_dir, capsys):
    import json

    assert main(["agreement", "--fense", str(fense_dir / "clotho_eval.json"), "--metric", "bleu_4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["bleu_4"]) == {"HC", "HI", "HM", "MM", "total"}
    assert round(result["bleu_4"]["total"], 1) == 60.5
