"""A saved captioner works in `transformers.pipeline("automatic-speech-recognition")`, in a fresh process."""

import json
import os
import subprocess
import sys

import yaml
from trl import TrlParser

from hfpref.models.captioning import build_tiny_whisper_captioner
from hfpref.scripts import caption_sft
from hfpref.scripts.utils import CaptionerArguments, CaptionScriptArguments
from hfpref.trainers.caption_sft.caption_sft_config import CaptionSFTConfig


def test_tiny_captioner_tokenizer_keeps_its_ids_and_decodes_like_before():
    texts = ["a dog barks while a car passes by", "rain falls on a tin roof", "a siren wails, then a bell rings"]
    model, processor = build_tiny_whisper_captioner(texts, clip_seconds=1.0)
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == "WhisperTokenizer" and hasattr(tokenizer, "_decode_asr")
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert model.config.vocab_size == len(tokenizer) - 3  # the pipeline's three lookup tokens sit past the model
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") == len(tokenizer) - 1
    ids = tokenizer(texts[2], add_special_tokens=False)["input_ids"]
    assert max(ids) < model.config.vocab_size and tokenizer.decode(ids) == texts[2]


SCRIPT = """
import sys
import numpy as np
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

path, clip = sys.argv[1], np.load(sys.argv[2])
asr = pipeline("automatic-speech-recognition", model=path, device="cpu")
text = asr({"raw": clip, "sampling_rate": 16000}, generate_kwargs={"num_beams": 1, "max_new_tokens": 12})["text"]
model, processor = AutoModelForSpeechSeq2Seq.from_pretrained(path), AutoProcessor.from_pretrained(path)
features = processor(clip, sampling_rate=16000, return_tensors="pt").input_features
direct = processor.batch_decode(model.generate(features, num_beams=1, max_new_tokens=12), skip_special_tokens=True)[0]
print(type(asr.tokenizer).__name__)
print(repr(text))
print(repr(direct))
"""


def test_saved_sft_captioner_runs_in_the_asr_pipeline(tmp_path):
    import numpy as np

    from hfpref.data.audio import decode_audio
    from hfpref.data.synthetic.audio_world import make_world

    out = tmp_path / "sft"
    config = {
        "synthetic_clips": 16,
        "tiny_captioner": True,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "output_dir": str(out),
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(config))
    types = (CaptionScriptArguments, CaptionSFTConfig, CaptionerArguments)
    caption_sft.main(*TrlParser(types).parse_args_and_config(["--config", str(tmp_path / "sft.yaml")]))
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"].startswith("WhisperTokenizer")

    clip = decode_audio(make_world(1, seed=5, clip_seconds=1.0)[0]["audio"], 16000)
    np.save(tmp_path / "clip.npy", clip)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(tmp_path / "clip.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer_class, text, direct = result.stdout.strip().splitlines()[-3:]
    assert tokenizer_class == "WhisperTokenizer"
    assert text not in ("", "''") and text == direct  # the pipeline decodes exactly what generate + batch_decode give
