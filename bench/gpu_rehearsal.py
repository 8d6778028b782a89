"""GPU rehearsal: every hfpref recipe for a few steps on random-weight models of the real sizes, under DeepSpeed ZeRO-3
and FSDP2 on every visible GPU, in bf16.

The models are built from the real configs of the checkpoints the recipes name, written out below (no Hub access):

- `laion/clap-htsat-unfused` (`ClapModel`, 153M): the reward model's frozen CLAP, the contrastive recipe's model,
  the text tower of AudioLDM;
- `openai/whisper-base` (`WhisperForConditionalGeneration` and its generation config, 73M): the SFT / RL captioner;
- `Qwen/Qwen2.5-0.5B` (`Qwen2ForCausalLM`, 494M) with LoRA (r = 8): the GRPO captioner and the AlignCap student;
- `cvssp/audioldm-s-full-v2` (UNet, VAE, HiFi-GAN vocoder, CLAP text encoder): the BATON pipeline;
- `fnlp/SpeechTokenizer` (`hfpref.encoders.speech_tokens.SPEECH_TOKENIZER_CONFIG`): AlignCap's and GRPO's speech tokens;
- `distilbert-base-uncased`: the audibility classifier.

Tokenizers are trained on the synthetic worlds' captions; those of the models that generate (Whisper, Qwen) are padded
to the real vocabulary with the real special tokens at their real ids, so the real generation configs hold. The random
weights, tokenizers and processors are saved under `--output-dir` (`models/`, reused by a later run when unchanged),
one YAML per recipe under `configs/` (synthetic data: the worlds the recipes synthesize themselves; DPO gets pairs
built here, as a random-weight student's own candidates would all tie under the judge), and each recipe x engine is
launched as

    python -m accelerate.commands.launch --config_file recipes/accelerate_configs/zero3.yaml \
        --num_processes <GPUs> bench/gpu_rehearsal.py --rehearsal-run <method> <run dir> \
        --config configs/<method>.yaml --max_steps 5 --bf16 true --output_dir <run dir>/output

where `bench/gpu_rehearsal.py --rehearsal-run <method> <run dir>` runs `recipes/<method>.py`'s `main` as the recipe
does, with a callback that times each optimizer step and reads every process's peak GPU memory, written to
`<run dir>/rank<k>.json` (put `recipes/<method>.py` in its place to run the recipe bare). FSDP2 runs
`recipes/accelerate_configs/fsdp.yaml` with `--fsdp_state_dict_type FULL_STATE_DICT`, so the saved weights are whole.
The models are built on the CPU, so that this process holds no GPU memory while the runs measure theirs.

    python bench/gpu_rehearsal.py                                  # all 9 recipes x (zero3, fsdp2)
    python bench/gpu_rehearsal.py --recipes caption_rl --engines zero3 --steps 10
    python bench/gpu_rehearsal.py --dry-run                        # build configs, print the commands (CPU is enough)

The table gives, per recipe x engine: mean seconds per optimizer step after the first (warm-up) step, samples per
second (the trainer's global batch of rows per step: completions for GRPO), the peak GPU memory of the training phase
and of the whole run (max over processes, `torch.cuda.max_memory_allocated`), and `ok` or `failed` with the error's
last line. A run is `ok` when every process finished, the engine was the one asked for (no silent fallback to DDP),
and the saved weights are whole: `*.safetensors` without empty tensors (a ZeRO-3 partition saved as it is leaves empty
ones, a sharded FSDP state dict no such file).
The last line is `RATIO gpu_rehearsal_ok=<recipes ok under every engine>/<recipes>`; `results.md` and `results.json`
in `--output-dir` hold the same.

Without a GPU it prints `skipped: no GPU` and what it would run, and exits 0 without a RATIO line: nothing was
measured, and a 0/9 would read as nine failures. `--dry-run` builds the configs, tokenizers and processors (the
models on the meta device, to count their parameters; no weights are written), writes the YAMLs, checks each one
parses with its recipe's parser, and prints the commands.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import NamedTuple

from hfpref.cli.train import TRAINING_METHODS


ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate_configs"
RECIPES = tuple(TRAINING_METHODS)
# engine -> (accelerate config, extra launch flags, the distributed type the trainer must end up with)
ENGINES = {
    "zero3": ("zero3.yaml", [], "DEEPSPEED"),
    "fsdp2": ("fsdp.yaml", ["--fsdp_state_dict_type", "FULL_STATE_DICT"], "FSDP"),
    "zero2": ("zero2.yaml", [], "DEEPSPEED"),
    "ddp": ("ddp.yaml", [], None),
}
DEFAULT_ENGINES = ("zero3", "fsdp2")
GIB = 2**30

# Bump when a builder below changes what it writes, so that models saved by an earlier run are rebuilt.
BUILD_VERSION = 1

# laion/clap-htsat-unfused, config.json (HTSAT-tiny audio tower, RoBERTa-base text tower, 512-d embeddings).
CLAP_HTSAT_UNFUSED = {
    "architectures": ["ClapModel"],
    "projection_dim": 512,
    "projection_hidden_act": "relu",
    "logit_scale_init_value": 14.285714285714285,
    "initializer_factor": 1.0,
    "text_config": {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "projection_dim": 512,
        "projection_hidden_act": "relu",
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
    "audio_config": {
        "window_size": 8,
        "num_mel_bins": 64,
        "spec_size": 256,
        "hidden_act": "gelu",
        "patch_size": 4,
        "patch_stride": [4, 4],
        "num_classes": 527,
        "hidden_size": 768,
        "projection_dim": 512,
        "depths": [2, 2, 6, 2],
        "num_attention_heads": [4, 8, 16, 32],
        "enable_fusion": False,
        "hidden_dropout_prob": 0.1,
        "fusion_type": None,
        "patch_embed_input_channels": 1,
        "flatten_patch_embeds": True,
        "patch_embeds_hidden_size": 96,
        "enable_patch_layer_norm": True,
        "drop_path_rate": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "qkv_bias": True,
        "mlp_ratio": 4.0,
        "aff_block_r": 4,
        "num_hidden_layers": 4,
        "projection_hidden_act": "relu",
        "layer_norm_eps": 1e-5,
        "initializer_factor": 1.0,
    },
}
# laion/clap-htsat-unfused, preprocessor_config.json: 48 kHz, 10 s windows, 64 mel bins at a 10 ms hop. The released
# file says truncation "fusion"; hfpref's load_clap switches a non-fusion model to "rand_trunc", as on the real one.
CLAP_FEATURE_EXTRACTOR = {
    "feature_size": 64,
    "sampling_rate": 48000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "padding_value": 0.0,
    "return_attention_mask": False,
    "frequency_min": 50,
    "frequency_max": 14000,
    "top_db": None,
    "truncation": "fusion",
    "padding": "repeatpad",
}
CLAP_TOKENIZER_MAX_LENGTH = 512

# openai/whisper-base, config.json.
WHISPER_SUPPRESS_TOKENS = [
    1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359, 503, 522, 542, 873,
    893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246, 3253, 3268, 3536, 3846, 3961, 4183, 4667, 6585, 6647,
    7273, 9061, 9383, 10428, 10929, 11938, 12033, 12331, 12562, 13793, 14157, 14635, 15265, 15618, 16553, 16604,
    18362, 18956, 20075, 21675, 22520, 26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470, 36865, 42863, 47425,
    49870, 50254, 50258, 50358, 50359, 50360, 50361, 50362,
]  # fmt: skip
WHISPER_BASE = {
    "architectures": ["WhisperForConditionalGeneration"],
    "vocab_size": 51865,
    "num_mel_bins": 80,
    "d_model": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "encoder_layerdrop": 0.0,
    "decoder_layerdrop": 0.0,
    "activation_function": "gelu",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "scale_embedding": False,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "max_length": 448,
    "use_cache": True,
    "is_encoder_decoder": True,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
    "begin_suppress_tokens": [220, 50257],
    "suppress_tokens": WHISPER_SUPPRESS_TOKENS,
    "forced_decoder_ids": [[1, 50259], [2, 50359], [3, 50363]],
}
# The 99 languages of the multilingual Whisper v1/v2 tokenizer, in token order from <|en|> = 50259.
WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml "
    "cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am "
    "yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
).split()
# openai/whisper-base, generation_config.json (language detection, then <|transcribe|>; no timestamps).
WHISPER_BASE_GENERATION = {
    "alignment_heads": [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]],
    "begin_suppress_tokens": [220, 50257],
    "bos_token_id": 50257,
    "decoder_start_token_id": 50258,
    "eos_token_id": 50257,
    "forced_decoder_ids": [[1, None], [2, 50359]],
    "is_multilingual": True,
    "lang_to_id": {f"<|{code}|>": 50259 + i for i, code in enumerate(WHISPER_LANGUAGES)},
    "max_initial_timestamp_index": 50,
    "max_length": 448,
    "no_timestamps_token_id": 50363,
    "pad_token_id": 50257,
    "prev_sot_token_id": 50361,
    "return_timestamps": False,
    "suppress_tokens": WHISPER_SUPPRESS_TOKENS,
    "task_to_id": {"transcribe": 50359, "translate": 50358},
}
# openai/whisper-base, preprocessor_config.json: 30 s windows of 80 mel bins at 16 kHz.
WHISPER_FEATURE_EXTRACTOR = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
    "padding_value": 0.0,
    "return_attention_mask": False,
}
# The Whisper tokenizer's ids after the 50,257 byte-level BPE tokens: <|endoftext|>, <|startoftranscript|>, the
# languages, the task and control tokens, then 1,501 timestamps <|0.00|> ... <|30.00|>: 51,865 in all.
WHISPER_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    *(f"<|{code}|>" for code in WHISPER_LANGUAGES),
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
    *(f"<|{i * 0.02:.2f}|>" for i in range(1501)),
]
WHISPER_BPE_TOKENS = 50257

# Qwen/Qwen2.5-0.5B, config.json (tied embeddings; the 151,936-row table has room beyond the tokenizer's 151,665).
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "use_cache": True,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
# Qwen/Qwen2.5-0.5B, generation_config.json.
QWEN25_05B_GENERATION = {"bos_token_id": 151643, "eos_token_id": 151643, "do_sample": False, "max_new_tokens": 2048}
# The Qwen2.5 tokenizer's special tokens, ids 151643 ... 151664 after its 151,643 byte-level BPE tokens.
QWEN25_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN25_BPE_TOKENS = 151643

# cvssp/audioldm-s-full-v2: unet/config.json, vae/config.json, vocoder/config.json and scheduler/scheduler_config.json
# as diffusers' scripts/convert_original_audioldm_to_diffusers.py writes them (image size 512: 128 latent frames =
# 5.12 s; the text embedding enters as a concatenated class embedding; self-attention blocks at 3 resolutions). The
# text encoder is `ClapTextModelWithProjection` with laion/clap-htsat-unfused's text config, and its tokenizer.
AUDIOLDM_UNET = {
    "sample_size": 128,
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [128, 256, 384, 640],
    "layers_per_block": 2,
    "cross_attention_dim": [128, 256, 384, 640],
    "class_embed_type": "simple_projection",
    "projection_class_embeddings_input_dim": 512,
    "class_embeddings_concat": True,
}
# `scaling_factor` is learnt per checkpoint (scale_by_std); a random VAE has none worth copying, so it stays at 1.
AUDIOLDM_VAE = {
    "sample_size": 512,
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [128, 256, 512],
    "latent_channels": 8,
    "layers_per_block": 2,
    "scaling_factor": 1.0,
}
AUDIOLDM_VOCODER = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "normalize_before": False,
}
AUDIOLDM_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# distilbert-base-uncased, config.json (its [PAD] is id 0, as in the tokenizer trained here).
DISTILBERT_BASE_UNCASED = {
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
    "activation": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "qa_dropout": 0.1,
    "seq_classif_dropout": 0.2,
    "sinusoidal_pos_embds": False,
    "initializer_range": 0.02,
    "pad_token_id": 0,
}

SPEECH_INSTRUCTION = "Describe the speaker's emotion."
SOUND_INSTRUCTION = "Describe the sound."


class ModelBuilder:
    """
    Builds the random-weight models into `<output_dir>/models/<name>` (and the DPO pairs into `data/`), once: a folder
    whose `rehearsal-build.json` records the same spec, the same builds of what it was made from, and weights when they
    are needed, is reused. With `weights=False` the models are made on the meta device, to count their parameters,
    and only configs, tokenizers and processors are written.
    """

    def __init__(self, output_dir: Path, *, weights: bool, device: str = "cpu"):
        self.output_dir = output_dir
        self.weights = weights
        self.device = device
        self.summary: dict[str, dict] = {}
        self._built: dict[str, str] = {}  # name -> build id, for what this run has built or checked
        self._corpus = None

    def path(self, name: str) -> Path:
        return self.output_dir / ARTIFACTS[name].folder / name

    def corpus(self) -> list[str]:
        """The texts every tokenizer is trained on: the audio and speech worlds' captions, prompts, instructions."""
        if self._corpus is None:
            import numpy as np

            from hfpref.data.synthetic.audio_world import EVENT_KINDS, caption_for
            from hfpref.data.synthetic.speech_world import make_speech_world
            from hfpref.prompts.emotion_clues import teacher_prompt

            rng = np.random.default_rng(0)  # captions of the audio world without rendering its audio
            self._corpus = [
                caption_for(rng.choice(EVENT_KINDS, size=rng.integers(1, 4), replace=False).tolist(), rng)
                for _ in range(320)
            ]
            speech = make_speech_world(24, 0, backend="procedural", clip_seconds=0.5)
            self._corpus += [r for refs in speech["references"] for r in refs]
            self._corpus += [teacher_prompt(c, SPEECH_INSTRUCTION) for c in speech["caption"]]
            self._corpus += [SPEECH_INSTRUCTION, SOUND_INSTRUCTION]
        return self._corpus

    def _stamp(self, name: str) -> str:
        """What a saved copy must record to be reused: the spec, and the builds of what it was made from."""
        spec = ARTIFACTS[name].spec
        needs = {dependency: self._built[dependency] for dependency in spec.get("needs", ())}
        blob = json.dumps({"version": BUILD_VERSION, "spec": spec, "needs": needs}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _reuse(self, name: str) -> bool:
        stamp = self.path(name) / "rehearsal-build.json"
        if not stamp.is_file():
            return False
        built = json.loads(stamp.read_text())
        if built["stamp"] != self._stamp(name) or (self.weights and not built["weights"]):
            return False
        self.summary[name], self._built[name] = built["summary"], built["build_id"]
        return True

    def _record(self, name: str, parameters: int | None) -> None:
        artifact = ARTIFACTS[name]
        summary = {
            "source": artifact.source,
            "parameters": parameters,
            "path": str(self.path(name)),
            "weights": self.weights,
        }
        build_id = uuid.uuid4().hex  # a rebuilt CLAP gets new weights: the reward model fingerprinted to it follows
        stamp = {"stamp": self._stamp(name), "build_id": build_id, "weights": self.weights, "summary": summary}
        (self.path(name) / "rehearsal-build.json").write_text(json.dumps(stamp, indent=2))
        self.summary[name], self._built[name] = summary, build_id

    def _fresh(self, name: str) -> Path:
        path = self.path(name)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def _instantiate(self, build):
        """`build()` on the meta device (dry run) or the build device, seeded; returns the model and its size."""
        import torch

        with torch.random.fork_rng(devices=[]), torch.device(self.device if self.weights else "meta"):
            torch.manual_seed(0)
            model = build()
        return model, sum(p.numel() for p in model.parameters())

    def build(self, name: str) -> Path:
        """The folder of artifact `name` (one of `ARTIFACTS`), built first when needed."""
        if name in self._built:
            return self.path(name)
        for dependency in ARTIFACTS[name].spec.get("needs", ()):
            self.build(dependency)
        if not self._reuse(name):
            parameters = getattr(self, ARTIFACTS[name].method)(self._fresh(name))
            self._record(name, parameters)
        return self.path(name)

    def clap(self, path: Path) -> int:
        from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

        from hfpref.encoders.clap import train_clap_tokenizer

        tokenizer = train_clap_tokenizer(self.corpus(), vocab_size=1000, model_max_length=CLAP_TOKENIZER_MAX_LENGTH)
        processor = ClapProcessor(
            feature_extractor=ClapFeatureExtractor(**CLAP_FEATURE_EXTRACTOR), tokenizer=tokenizer
        )
        config = ClapConfig(**CLAP_HTSAT_UNFUSED)
        model, parameters = self._instantiate(lambda: ClapModel(config))
        processor.save_pretrained(path)
        if self.weights:
            model.save_pretrained(path)
        else:
            config.save_pretrained(path)
        return parameters

    def reward_model(self, path: Path) -> int:
        """A `CLAPRewardModel` head (the paper's 1024 -> 512 -> 128 -> 1) on the CLAP above, fingerprinted to it."""
        from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel

        clap = self.path("clap")
        fingerprint = None
        if self.weights:
            from hfpref.encoders.clap import ClapEmbedder

            fingerprint = ClapEmbedder.from_pretrained(str(clap), show_progress=False).fingerprint
        config = CLAPRewardConfig(
            embedding_dim=CLAP_HTSAT_UNFUSED["projection_dim"],
            hidden_sizes=[512, 128],
            clap_checkpoint=str(clap),
            clap_fingerprint=fingerprint,
        )
        model, parameters = self._instantiate(lambda: CLAPRewardModel(config))
        if self.weights:
            model.save_pretrained(path)
        else:
            config.save_pretrained(path)
        return parameters

    def whisper(self, path: Path) -> int:
        from transformers import (
            GenerationConfig,
            WhisperConfig,
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
            WhisperProcessor,
            WhisperTokenizer,
        )

        vocab, merges = padded_bpe(self.corpus(), WHISPER_BPE_TOKENS)
        tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")
        tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIAL_TOKENS[1:]})
        check_special_ids(tokenizer, WHISPER_SPECIAL_TOKENS, WHISPER_BPE_TOKENS, WHISPER_BASE["vocab_size"])
        processor = WhisperProcessor(
            feature_extractor=WhisperFeatureExtractor(**WHISPER_FEATURE_EXTRACTOR), tokenizer=tokenizer
        )
        config = WhisperConfig(**WHISPER_BASE)
        generation_config = GenerationConfig(**WHISPER_BASE_GENERATION)
        model, parameters = self._instantiate(lambda: WhisperForConditionalGeneration(config))
        processor.save_pretrained(path)
        if self.weights:
            model.generation_config = generation_config
            model.save_pretrained(path)
        else:
            config.save_pretrained(path)
            generation_config.save_pretrained(path)
        return parameters

    def qwen(self, path: Path) -> int:
        """The base LLM: what GRPO and AlignCap KD start from (they add the speech tokens themselves)."""
        from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

        tokenizer = qwen_tokenizer(self.corpus())
        config = Qwen2Config(**QWEN25_05B)
        model, parameters = self._instantiate(lambda: Qwen2ForCausalLM(config))
        generation_config = GenerationConfig(**QWEN25_05B_GENERATION)
        tokenizer.save_pretrained(path)
        if self.weights:
            import torch

            model.generation_config = generation_config
            model.to(torch.bfloat16).save_pretrained(path)  # the released checkpoint is stored in bfloat16
        else:
            config.save_pretrained(path)
            generation_config.save_pretrained(path)
        return parameters

    def qwen_speech(self, path: Path) -> int:
        """
        The LLM with SpeechTokenizer's 1,024 speech tokens added (embeddings resized by hfpref's `add_speech_tokens`):
        what AlignCap KD leaves in `<output_dir>/merged` and DPO starts from.
        """
        from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

        from hfpref.encoders.speech_tokens import SPEECH_TOKENIZER_CONFIG, add_speech_tokens

        base = self.path("qwen")
        tokenizer = AutoTokenizer.from_pretrained(base)
        codebook = SPEECH_TOKENIZER_CONFIG["codebook_size"]
        if self.weights:
            import torch

            model = Qwen2ForCausalLM.from_pretrained(base, dtype=torch.float32, device_map=self.device)
            add_speech_tokens(tokenizer, model, codebook)
            model.to(torch.bfloat16).save_pretrained(path)
            parameters = sum(p.numel() for p in model.parameters())
        else:
            add_speech_tokens(tokenizer, None, codebook)
            config = Qwen2Config(**{**QWEN25_05B, "vocab_size": len(tokenizer)})
            _, parameters = self._instantiate(lambda: Qwen2ForCausalLM(config))
            config.save_pretrained(path)
            GenerationConfig(**QWEN25_05B_GENERATION).save_pretrained(path)
        tokenizer.save_pretrained(path)
        return parameters

    def speech_tokenizer(self, path: Path) -> int:
        """SpeechTokenizer with the released architecture, random weights and random (initialised) codebooks."""
        from hfpref.encoders.speech_tokens import (
            CONFIG_NAME,
            SPEECH_TOKENIZER_CONFIG,
            build_speech_tokenizer,
            randomize_codebooks,
            save_speech_tokenizer,
        )

        if not self.weights:
            (path / CONFIG_NAME).write_text(json.dumps(SPEECH_TOKENIZER_CONFIG, indent=2))
            _, parameters = self._instantiate(lambda: build_speech_tokenizer(SPEECH_TOKENIZER_CONFIG))
            return parameters
        model = randomize_codebooks(build_speech_tokenizer(SPEECH_TOKENIZER_CONFIG, seed=0), seed=0)
        save_speech_tokenizer(model, path)
        return sum(p.numel() for p in model.parameters())

    def audioldm(self, path: Path) -> int:
        """The AudioLDM pipeline; the parameter count is the UNet's, the part BATON trains."""
        from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

        from hfpref.encoders.clap import train_clap_tokenizer

        tokenizer = train_clap_tokenizer(self.corpus(), vocab_size=1000, model_max_length=CLAP_TOKENIZER_MAX_LENGTH)
        text_config = ClapTextConfig(**CLAP_HTSAT_UNFUSED["text_config"])
        vocoder_config = SpeechT5HifiGanConfig(**AUDIOLDM_VOCODER)
        unet, parameters = self._instantiate(lambda: UNet2DConditionModel(**AUDIOLDM_UNET))
        vae, _ = self._instantiate(lambda: AutoencoderKL(**AUDIOLDM_VAE))
        vocoder, _ = self._instantiate(lambda: SpeechT5HifiGan(vocoder_config))
        text_encoder, _ = self._instantiate(lambda: ClapTextModelWithProjection(text_config))
        scheduler = DDIMScheduler(**AUDIOLDM_SCHEDULER)
        if self.weights:
            pipeline = AudioLDMPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                vocoder=vocoder,
            )
            pipeline.save_pretrained(path)
        else:
            unet.save_config(path / "unet")
            vae.save_config(path / "vae")
            scheduler.save_config(path / "scheduler")
            vocoder_config.save_pretrained(path / "vocoder")
            text_config.save_pretrained(path / "text_encoder")
            tokenizer.save_pretrained(path / "tokenizer")
        return parameters

    def distilbert(self, path: Path) -> int:
        """DistilBERT with a 2-label head and a WordPiece tokenizer trained on the audibility seed set."""
        from transformers import DistilBertConfig, DistilBertForSequenceClassification

        from hfpref.guidance.audibility_data import load_audibility_dataset
        from hfpref.models.audibility_classifier import build_tiny_audibility_classifier

        _, tokenizer = build_tiny_audibility_classifier(load_audibility_dataset(None)["sentence"])
        tokenizer.model_max_length = DISTILBERT_BASE_UNCASED["max_position_embeddings"]
        if tokenizer.pad_token_id != DISTILBERT_BASE_UNCASED["pad_token_id"]:
            raise RuntimeError(f"the trained tokenizer pads with id {tokenizer.pad_token_id}, DistilBERT with 0")
        labels = {"num_labels": 2, "id2label": {0: "non_audible", 1: "audible"}}
        config = DistilBertConfig(**DISTILBERT_BASE_UNCASED, **labels, label2id={"non_audible": 0, "audible": 1})
        model, parameters = self._instantiate(lambda: DistilBertForSequenceClassification(config))
        tokenizer.save_pretrained(path)
        if self.weights:
            model.save_pretrained(path)
        else:
            config.save_pretrained(path)
        return parameters

    def aligncap_pairs(self, path: Path) -> None:
        """
        DPO pairs in the format `hfpref pairs` writes (texts and the token ids of the speech LLM's tokenizer): speech
        world prompts of random codes at SpeechTokenizer's 50 per second (2 s), the clip's caption chosen over another
        clip's. A random-weight student's own beam candidates would all tie under the clue judge and give no pairs.
        """
        import numpy as np
        from datasets import Dataset
        from transformers import AutoTokenizer

        from hfpref.data.synthetic.speech_world import make_speech_world
        from hfpref.encoders.audio_tokens import render_speech_tokens
        from hfpref.encoders.speech_tokens import SPEECH_TOKENIZER_CONFIG

        tokenizer = AutoTokenizer.from_pretrained(self.path("qwen_speech"))
        captions = list(make_speech_world(32, 1, backend="procedural", clip_seconds=0.5)["caption"])
        rng = np.random.default_rng(0)
        codebook = SPEECH_TOKENIZER_CONFIG["codebook_size"]
        rows = {k: [] for k in ("prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids")}
        for i, caption in enumerate(captions):
            other = next(c for c in captions[i + 1 :] + captions[:i] if c != caption)
            prompt = f"{render_speech_tokens(rng.integers(codebook, size=100))} {SPEECH_INSTRUCTION}"
            for key, text in (("prompt", prompt), ("chosen", caption), ("rejected", other)):
                rows[key].append(text)
            rows["prompt_ids"].append(tokenizer(prompt)["input_ids"])
            for key, text in (("chosen_ids", caption), ("rejected_ids", other)):
                rows[key].append(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        Dataset.from_dict(rows).save_to_disk(str(path))


class Artifact(NamedTuple):
    spec: dict  # what decides whether a saved copy is reused
    source: str  # the checkpoint whose config it follows
    method: str  # the ModelBuilder method that writes it
    folder: str = "models"


ARTIFACTS = {
    "clap": Artifact(
        {"config": CLAP_HTSAT_UNFUSED, "features": CLAP_FEATURE_EXTRACTOR}, "laion/clap-htsat-unfused", "clap"
    ),
    "reward_model": Artifact(
        {"needs": ["clap"], "hidden_sizes": [512, 128]}, "CLAPRewardModel on laion/clap-htsat-unfused", "reward_model"
    ),
    "whisper": Artifact(
        {"config": WHISPER_BASE, "generation": WHISPER_BASE_GENERATION, "features": WHISPER_FEATURE_EXTRACTOR},
        "openai/whisper-base",
        "whisper",
    ),
    "qwen": Artifact({"config": QWEN25_05B, "specials": QWEN25_SPECIAL_TOKENS}, "Qwen/Qwen2.5-0.5B", "qwen"),
    "qwen_speech": Artifact(
        {"needs": ["qwen"], "config": QWEN25_05B, "speech_tokens": 1024},
        "Qwen/Qwen2.5-0.5B + 1,024 speech tokens",
        "qwen_speech",
    ),
    "speech_tokenizer": Artifact(
        {"config": "speechtokenizer_hubert_avg"}, "fnlp/SpeechTokenizer (hubert_avg)", "speech_tokenizer"
    ),
    "audioldm": Artifact(
        {
            "unet": AUDIOLDM_UNET,
            "vae": AUDIOLDM_VAE,
            "vocoder": AUDIOLDM_VOCODER,
            "text": CLAP_HTSAT_UNFUSED["text_config"],
        },
        "cvssp/audioldm-s-full-v2 (its UNet, which BATON trains)",
        "audioldm",
    ),
    "distilbert": Artifact({"config": DISTILBERT_BASE_UNCASED}, "distilbert-base-uncased", "distilbert"),
    "aligncap_pairs": Artifact(
        {"needs": ["qwen_speech"], "pairs": 32}, "speech world, 32 pairs", "aligncap_pairs", folder="data"
    ),
}


def padded_bpe(texts: list[str], n_tokens: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """
    A byte-level BPE trained on `texts`, its vocabulary padded to `n_tokens` with filler tokens (`Ġw000612`, decoded
    " w000612") that no merge produces: text tokenizes as the trained BPE does, and every id a random model emits up to
    the real vocabulary decodes to a word.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    vocab = dict(state["vocab"])
    for i in range(len(vocab), n_tokens):
        vocab[f"Ġw{i:06d}"] = i
    return vocab, merges


def check_special_ids(tokenizer, specials: list[str], first_id: int, size: int) -> None:
    """Refuse a tokenizer whose special tokens are not at the released ids or whose size is not the model's."""
    ids = tokenizer.convert_tokens_to_ids(specials)
    if ids != list(range(first_id, first_id + len(specials))) or len(tokenizer) != size:
        raise RuntimeError(f"special tokens at {ids[:3]}..., {len(tokenizer)} tokens; expected {first_id}..., {size}")


def qwen_tokenizer(texts: list[str]):
    """A `Qwen2Tokenizer` laid out as Qwen2.5's: 151,643 BPE tokens (trained on `texts`, padded), then its specials."""
    from transformers import Qwen2Tokenizer

    vocab, merges = padded_bpe(texts, QWEN25_BPE_TOKENS)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)  # <|endoftext|>: eos and pad, no bos, as Qwen2.5's
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN25_SPECIAL_TOKENS[1:]})
    check_special_ids(
        tokenizer, QWEN25_SPECIAL_TOKENS, QWEN25_BPE_TOKENS, QWEN25_BPE_TOKENS + len(QWEN25_SPECIAL_TOKENS)
    )
    return tokenizer


COMMON = {
    "report_to": "none",
    "save_strategy": "no",
    "eval_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
    "seed": 0,
}


def recipe_config(method: str, builder) -> dict:
    """
    The YAML of one recipe: the real-size models built by `builder` (a `ModelBuilder`, or `PlannedPaths`), the
    synthetic data the recipe makes itself, the papers' loss settings, small batches; `max_steps`, `bf16` and
    `output_dir` come from the command line. Only the models of `method` are built.
    """

    def path(name: str) -> str:
        return str(builder.build(name))

    captions = {"synthetic_clips": 64, "test_size": 0.125, "synthetic_seed": 0}
    speech_world = {"speech_world_backend": "procedural", "speech_world_seconds": 2.0}
    lora = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
    # AlignCap's student: a bf16 LoRA on the speech world's SpeechTokenizer tokens
    speech_student = {"dtype": "bfloat16", **lora, "speech_tokenizer_path": path("speech_tokenizer"), **speech_world}
    if method == "reward_model":
        config = {
            "synthetic_clips": 64,
            "synthetic_negatives": True,
            "clap_model_name_or_path": path("clap"),
            "loss_type": "bt",
            "bt_scale": 10.0,
            "l2_coef": 0.1,
            "l2_reduction": "mean",
            "hidden_sizes": [512, 128],
            "per_device_train_batch_size": 16,
            "learning_rate": 1.0e-3,
        }
    elif method == "clap_contrastive":
        config = {
            "synthetic_clips": 64,
            "synthetic_eval_clips": 16,
            "synthetic_clip_seconds": 4.0,
            "model_name_or_path": path("clap"),
            "references_column": "references",
            "retrieval_group_column": "events",
            "loss_type": "symmetric",
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1.0e-5,
        }
    elif method == "caption_sft":
        config = {
            **captions,
            "model_name_or_path": path("whisper"),
            "max_caption_tokens": 48,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1.0e-5,
        }
    elif method == "caption_rl":
        config = {
            **captions,
            "model_name_or_path": path("whisper"),
            "reward_funcs": ["reward_model"],
            "reward_model_name_or_path": path("reward_model"),
            "length_penalty_alpha": 0.4,
            "loss_type": "scst",
            "num_samples": 1,
            "max_new_tokens": 32,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1.0e-5,
        }
    elif method == "caption_grpo":
        config = {
            **captions,
            "synthetic_clips": 32,  # each process tokenizes every clip's speech on its CPU before training
            "model_name_or_path": path("qwen"),
            "dtype": "bfloat16",
            "use_peft": True,
            **lora,
            "reward_funcs": ["reward_model"],
            "reward_model_name_or_path": path("reward_model"),
            "length_penalty_alpha": 0.4,
            "speech_tokens": "speechtokenizer",
            "speech_tokenizer_path": path("speech_tokenizer"),
            "instruction": SOUND_INSTRUCTION,
            "num_generations": 4,
            "max_completion_length": 32,
            "beta": 0.04,  # a KL reference: the adapter-disabled policy
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "learning_rate": 1.0e-5,
        }
    elif method == "aligncap_kd":
        config = {
            "model_name_or_path": path("qwen"),
            **speech_student,  # KD always trains a LoRA student
            "speech_world_clips": 24,
            "speech_world_test_clips": 8,
            "instruction": SPEECH_INSTRUCTION,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "learning_rate": 1.0e-5,
        }
    elif method == "aligncap_dpo":
        config = {
            "model_name_or_path": path("qwen_speech"),
            **speech_student,
            "speech_world_clips": 12,
            "speech_world_test_clips": 4,
            "pairs_dataset": path("aligncap_pairs"),
            "judge": "clue_overlap",
            "beta": 0.1,
            "loss_type": ["sigmoid"],
            "per_device_train_batch_size": 4,
            "learning_rate": 5.0e-7,
        }
    elif method == "reward_weighted_diffusion":
        config = {
            "synthetic_clips": 16,
            "synthetic_clip_seconds": 2.56,
            "reward_model_name_or_path": path("reward_model"),
            "pipeline_name_or_path": path("audioldm"),
            "n_prompts": 4,
            "clips_per_prompt": 2,
            "eval_prompts": 4,  # 2 integrity + 2 temporal clips: a Frechet distance needs 2 per set
            "eval_clips_per_prompt": 1,
            "num_inference_steps": 5,
            "guidance_scale": 2.5,
            "audio_length_in_s": 2.56,
            "beta": 0.5,
            "per_device_train_batch_size": 4,
            "learning_rate": 1.0e-5,
        }
    elif method == "audibility_classifier":
        config = {
            "model_name_or_path": path("distilbert"),
            "max_length": 64,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 32,
            "learning_rate": 3.0e-4,
        }
    else:
        raise ValueError(f"unknown recipe {method!r}; the recipes are {list(RECIPES)}")
    return {**config, **COMMON}


def write_configs(methods: list[str], builder: ModelBuilder, output_dir: Path) -> dict[str, Path]:
    import yaml

    configs = output_dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    paths = {}
    for method in methods:
        paths[method] = configs / f"{method}.yaml"
        header = f"# {method}: written by bench/gpu_rehearsal.py; real-size random-weight models, synthetic data.\n"
        paths[method].write_text(header + yaml.safe_dump(recipe_config(method, builder), sort_keys=False))
    return paths


def recipe_arguments(config: Path, steps: int, output_dir: Path, bf16: bool = True) -> list[str]:
    flags = {"--config": config, "--max_steps": steps, "--bf16": str(bf16).lower(), "--output_dir": output_dir}
    return [str(item) for flag in flags.items() for item in flag]


def launch_command(
    method: str, engine: str, config: Path, run_dir: Path, steps: int, processes: int | str, port: int | None = None
) -> list[str]:
    accelerate_config, flags, _ = ENGINES[engine]
    port_flags = ["--main_process_port", str(port)] if port is not None else []
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ACCELERATE_CONFIGS / accelerate_config), "--num_processes", str(processes), *port_flags,
        *flags, str(Path(__file__).resolve()), "--rehearsal-run", method, str(run_dir),
        *recipe_arguments(config, steps, run_dir / "output"),
    ]  # fmt: skip


def load_recipe(method: str):
    """`recipes/<method>.py` as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{method}_recipe", ROOT / "recipes" / f"{method}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_parses(method: str, config: Path, steps: int, output_dir: Path) -> None:
    """Parse a YAML with its recipe's parser (unknown keys are fatal there); bf16 only where a GPU can take it."""
    import torch

    argv = recipe_arguments(config, steps, output_dir, bf16=torch.cuda.is_available())
    load_recipe(method).make_parser().parse_args_and_config(argv)


def rehearsal_run(method: str, run_dir: Path, argv: list[str]) -> None:
    """
    Run `recipes/<method>.py`'s `main` on `argv` in this process, timing every optimizer step of the trainer, and
    write `run_dir/rank<k>.json`: status (with the error's last line), step times, global batch, peak GPU memory,
    the engine the trainer ran under.
    """
    import logging

    import torch
    from transformers import Trainer, TrainerCallback

    logging.basicConfig(level=logging.INFO)
    run_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()

    def synchronized_time() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def peak() -> int | None:
        return torch.cuda.max_memory_allocated() if cuda else None

    report: dict = {"rank": int(os.environ.get("RANK", "0")), "method": method, "step_seconds": []}

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            report["peak_before_train_bytes"] = peak()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.last = synchronized_time()

        def on_step_end(self, args, state, control, **kwargs):
            now = synchronized_time()
            report["step_seconds"].append(now - self.last)
            self.last = now

        def on_train_end(self, args, state, control, **kwargs):
            report["peak_train_bytes"] = peak()

    train = Trainer.train

    def timed_train(self, *args, **kwargs):
        self.add_callback(StepTimer())
        report["global_batch"] = (
            self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        )
        report["world_size"] = self.args.world_size
        state = self.accelerator.state
        report["distributed_type"] = str(getattr(state.distributed_type, "value", state.distributed_type))
        if getattr(state, "deepspeed_plugin", None) is not None:
            report["zero_stage"] = state.deepspeed_plugin.zero_stage
        if getattr(state, "fsdp_plugin", None) is not None:
            report["fsdp_version"] = getattr(state.fsdp_plugin, "fsdp_version", None)
        return train(self, *args, **kwargs)

    Trainer.train = timed_train
    try:
        module = load_recipe(method)
        module.main(*module.make_parser().parse_args_and_config(argv))
        report["status"] = "ok"
    except BaseException as error:
        report["status"] = "failed"
        report["error"] = traceback.format_exception_only(type(error), error)[-1].strip()
        report["failed_at"] = time.time()  # the first process to fail names the cause; the others time out after it
        raise
    finally:
        if cuda:
            report["device"] = torch.cuda.get_device_name()
        report["peak_run_bytes"] = max(
            (v for v in (report.get("peak_before_train_bytes"), peak()) if v is not None), default=None
        )
        (run_dir / f"rank{report['rank']}.json").write_text(json.dumps(report, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
    """Run a launch in its own process group (killed whole on timeout); returns its exit code (None: timed out)."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = None
    return code, time.perf_counter() - start


def last_error_line(log: Path) -> str:
    """The last exception line of a launch log (the launcher's own ChildFailedError summary skipped), else its end."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    launcher = ("ChildFailedError", "CalledProcessError", "subprocess.CalledProcessError")
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if (head.endswith(("Error", "Exception")) or head in ("KeyboardInterrupt", "SystemExit")) and not any(
            name in head for name in launcher
        ):
            return line
    return lines[-1] if lines else "(empty log)"


def saved_weights_problem(output_dir: Path) -> str | None:
    """What is wrong with the weights `save_model` left (none, or empty tensors), or `None` when they are whole."""
    from safetensors import safe_open

    files = sorted(output_dir.glob("*.safetensors"))
    if not files:
        return f"no *.safetensors saved in {output_dir.name}/"
    empty = total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                total += 1
                empty += 0 in handle.get_slice(key).get_shape()
    return f"saved weights incomplete: {empty} of {total} tensors empty" if empty else None


def collect(
    method: str, engine: str, run_dir: Path, code: int | None, seconds: float, processes: int, timeout: float
) -> dict:
    """One table row from a finished launch: its rank reports, exit code, log and saved weights."""
    ranks = [json.loads(p.read_text()) for p in sorted(run_dir.glob("rank*.json"))]
    row = {"recipe": method, "engine": engine, "wall_seconds": round(seconds, 1), "ranks": ranks}
    failed = [r for r in ranks if r.get("status") != "ok"]
    expected = ENGINES[engine][2]
    if code is None:
        row["error"] = f"timed out after {timeout:.0f} s"
    elif failed:
        first = min(failed, key=lambda r: r.get("failed_at", float("inf")))
        row["error"] = first.get("error") or last_error_line(run_dir / "launch.log")
    elif code != 0 or len(ranks) != processes:
        row["error"] = last_error_line(run_dir / "launch.log") + f" (exit {code}, {len(ranks)}/{processes} reports)"
    elif expected and ranks[0].get("distributed_type") != expected:
        row["error"] = f"ran as {ranks[0].get('distributed_type')}, not {expected}"
    elif engine == "zero3" and ranks[0].get("zero_stage") != 3:
        row["error"] = f"ran ZeRO stage {ranks[0].get('zero_stage')}, not 3"
    else:
        row["error"] = saved_weights_problem(run_dir / "output")
    row["status"] = "failed" if row["error"] else "ok"
    steps = [r["step_seconds"] for r in ranks if r.get("step_seconds")]
    if steps:
        timed = steps[0][1:] or steps[0]  # the first step warms up (kernels, allocator, DeepSpeed/FSDP buffers)
        row["seconds_per_step"] = sum(timed) / len(timed)
        row["steps"] = len(steps[0])
        if ranks[0].get("global_batch"):
            row["samples_per_second"] = ranks[0]["global_batch"] / row["seconds_per_step"]
    for key in ("peak_train_bytes", "peak_run_bytes"):
        values = [r[key] for r in ranks if r.get(key) is not None]
        if values:
            row[key.replace("_bytes", "_gib")] = max(values) / GIB
    return row


def markdown_table(rows: list[dict], device: str, processes: int) -> str:
    def number(row, key, digits):
        return f"{row[key]:.{digits}f}" if key in row else "-"

    lines = [
        f"{processes} x {device}, bf16; s/step: mean after the first step; peak: max over processes.",
        "",
        "| recipe | engine | result | s/step | samples/s | peak GiB (train) | peak GiB (run) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        note = (row.get("error") or "").replace("|", "/")
        note = note if len(note) <= 160 else note[:157] + "..."
        samples = number(row, "samples_per_second", 1 if row.get("samples_per_second", 0) >= 10 else 2)
        lines.append(
            f"| {row['recipe']} | {row['engine']} | {row['status']} | {number(row, 'seconds_per_step', 3)} | "
            f"{samples} | {number(row, 'peak_train_gib', 2)} | {number(row, 'peak_run_gib', 2)} | {note} |"
        )
    return "\n".join(lines)


class PlannedPaths:
    """Stands in for a `ModelBuilder` in `recipe_config`: records the artifacts a recipe names, builds nothing."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.names: list[str] = []

    def build(self, name: str) -> Path:
        for dependency in ARTIFACTS[name].spec.get("needs", ()):
            self.build(dependency)
        self.names.append(name)
        return self.output_dir / ARTIFACTS[name].folder / name


def print_plan(methods, engines, output_dir: Path, steps: int, processes: int | str, summary: dict | None = None):
    """What would run: the models each recipe loads (with their sizes once built) and its launch per engine."""
    for method in methods:
        config = output_dir / "configs" / f"{method}.yaml"
        print(f"\n== {method}: recipes/{method}.py --config {config}")
        planned = PlannedPaths(output_dir)
        recipe_config(method, planned)
        for name in dict.fromkeys(planned.names):
            built = (summary or {}).get(name)
            size = f", {built['parameters'] / 1e6:.1f}M parameters" if built and built["parameters"] else ""
            print(f"   {name}: {ARTIFACTS[name].source}{size} -> {planned.build(name)}")
        for engine in engines:
            run_dir = output_dir / "runs" / f"{method}-{engine}"
            command = launch_command(method, engine, config, run_dir, steps, processes)
            print(f"   [{engine}] {shlex.join(command)}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), metavar="RECIPE")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(DEFAULT_ENGINES))
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "hfpref-gpu-rehearsal",
        help="models, configs, runs and results (models are reused by a later run when unchanged)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per launch before it is killed")
    parser.add_argument(
        "--dry-run", action="store_true", help="build the configs and print the commands; launch nothing"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be >= 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rehearsal-run"]:
        rehearsal_run(argv[1], Path(argv[2]), argv[3:])
        return
    args = parse_args(argv)
    methods = [m for m in RECIPES if m in args.recipes]
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.dry_run:
        print("gpu_rehearsal: skipped: no GPU (torch.cuda.is_available() is False); it needs at least one CUDA GPU.")
        print(f"On a GPU machine it would build the models under {args.output_dir}/models and run, per recipe:")
        print_plan(methods, args.engines, args.output_dir, args.steps, "N")
        print("(N: the number of GPUs, torch.cuda.device_count())")
        print("\n(--dry-run builds the configs and checks them on this machine.)")
        return

    output_dir = args.output_dir.resolve()
    start = time.perf_counter()
    builder = ModelBuilder(output_dir, weights=not args.dry_run)  # on the CPU: see the module docstring
    configs = write_configs(methods, builder, output_dir)
    print(f"models and configs ready in {time.perf_counter() - start:.0f} s under {output_dir}")
    if args.dry_run:
        for method in methods:
            check_parses(method, configs[method], args.steps, output_dir / "runs" / f"{method}-parse")
        bf16 = "" if gpus else " (with --bf16 false: this machine has no GPU)"
        print(f"dry run: {len(methods)} config(s) parse with their recipe's parser{bf16}; nothing launched")
        print_plan(methods, args.engines, output_dir, args.steps, gpus or "N", builder.summary)
        if not gpus:
            print("(N: the number of GPUs, torch.cuda.device_count())")
        return

    rows = []
    for method in methods:
        for engine in args.engines:
            run_dir = output_dir / "runs" / f"{method}-{engine}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            command = launch_command(method, engine, configs[method], run_dir, args.steps, gpus, free_port())
            code, seconds = launch(command, run_dir / "launch.log", args.timeout)
            row = collect(method, engine, run_dir, code, seconds, gpus, args.timeout)
            rows.append(row)
            print(f"{method} x {engine}: {row['status']} in {seconds:.0f} s {row.get('error') or ''}".rstrip())

    devices = [r["device"] for row in rows for r in row["ranks"] if r.get("device")]
    table = markdown_table(rows, devices[0] if devices else "GPU", gpus)
    ok = [m for m in methods if all(r["status"] == "ok" for r in rows if r["recipe"] == m)]
    (output_dir / "results.md").write_text(table + "\n")
    (output_dir / "results.json").write_text(json.dumps({"rows": rows, "ok": ok, "models": builder.summary}, indent=2))
    print()
    print(table)
    print(f"\nlogs: {output_dir}/runs/<recipe>-<engine>/launch.log")
    print(f"RATIO gpu_rehearsal_ok={len(ok)}/{len(methods)}")


if __name__ == "__main__":
    main()
