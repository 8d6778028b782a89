from dataclasses import dataclass, field

from trl import GRPOConfig

from ...hub.cards import CardConfigMixin
from ..base_config import AudioConfigMixin


SPEECH_TOKEN_SOURCES = ["frame_band", "speechtokenizer"]


@dataclass
class CaptionGRPOConfig(CardConfigMixin, AudioConfigMixin, GRPOConfig):
    r"""
    Configuration of caption GRPO: TRL's `GRPOTrainer` on a decoder-only captioner whose audio arrives as speech
    tokens ([`~hfpref.trainers.caption_grpo.caption_grpo_utils`]), rewarded by hfpref rewards. Only the parameters
    audio needs are listed; see [`~trl.GRPOConfig`] for the rest (`num_generations`, `max_completion_length`, `beta`,
    `scale_rewards`, `loss_type`, `temperature`, ...), which keep TRL's defaults.

    One config serves GRPO and RLOO's baseline. TRL's `RLOOConfig` is a different dataclass (it lacks 25 of
    `GRPOConfig`'s fields and adds two), so a second config would need a second parser, script and recipe for the same
    data. With `scale_rewards: none`, GRPO's advantage `r_i - mean(r)` is RLOO's leave-one-out advantage
    `r_i - mean_{j != i}(r_j)` ([Ahmadian et al., 2024](https://huggingface.co/papers/2402.14740)) times
    `(k - 1) / k`, `k = num_generations`: the same baseline up to a constant. TRL's `RLOOTrainer` still differs in
    the rest (a per-sequence importance ratio and mean, the KL penalty subtracted from the reward); to train with it,
    hand it the same dataset ([`~hfpref.encoders.audio_tokens.audio_token_prompts`]) and rewards with a
    `trl.RLOOConfig` (`tests/trainers/test_caption_grpo.py` trains both).

    Parameters:
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Rate, in Hz, the audio is decoded at before it is turned into speech tokens (SpeechTokenizer resamples to
            its own 16 kHz).
        speech_tokens (`str`, *optional*, defaults to `"frame_band"`):
            Where the speech tokens come from: `"frame_band"` ([`~hfpref.trainers.caption_grpo.frame_band_tokens`], a
            deterministic stand-in needing no weights, for offline runs) or `"speechtokenizer"` (SpeechTokenizer's RVQ-1
            codes, as AlignCap; needs `speech_tokenizer_path`).
        n_codes (`int`, *optional*):
            Size of the speech-token vocabulary: the number of bands with `"frame_band"` (default `16`); with
            `"speechtokenizer"` the checkpoint's codebook size (default), which a given value must match.
        frames_per_second (`int`, *optional*, defaults to `10`):
            Speech tokens per second of audio with `"frame_band"` (SpeechTokenizer gives 50).
        speech_tokenizer_path (`str`, *optional*):
            A SpeechTokenizer checkpoint (directory with `config.json` + weights, or the config JSON), for
            `speech_tokens="speechtokenizer"`.
        speech_tokenizer_weights (`str`, *optional*):
            Its weights file, when not beside the config.
        instruction (`str`, *optional*, defaults to `"Describe the sound."`):
            Text after the speech tokens in every prompt; `""` for speech tokens alone.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Turn off dropout in the policy and the reference (TRL's default is `False`). Completions are sampled
            without dropout; with it on in the loss pass the log-probabilities, the importance ratio and the KL would
            be those of a randomly thinned network. [`CaptionGRPOTrainer`] also zeroes the dropout probabilities that
            transformers models keep as plain floats (Llama's `attention_dropout`), which TRL's switch misses.

    The audio is read from `audio_column` ([`~hfpref.trainers.base_config.AudioConfigMixin`]); it stays beside the
    `prompt` column, so rewards read it too.
    """

    sampling_rate: int = field(default=16000, metadata={"help": "Rate the audio is decoded at, in Hz."})
    speech_tokens: str = field(default="frame_band", metadata={"help": f"One of {SPEECH_TOKEN_SOURCES}."})
    n_codes: int | None = field(default=None, metadata={"help": "Speech-token vocabulary size."})
    frames_per_second: int = field(default=10, metadata={"help": "Speech tokens per second (frame_band)."})
    speech_tokenizer_path: str | None = field(default=None, metadata={"help": "SpeechTokenizer checkpoint."})
    speech_tokenizer_weights: str | None = field(default=None, metadata={"help": "SpeechTokenizer weights file."})
    instruction: str = field(default="Describe the sound.", metadata={"help": "Text after the speech tokens."})
    disable_dropout: bool = field(
        default=True, metadata={"help": "Turn off dropout in the policy and the reference (TRL's default: False)."}
    )

    def __post_init__(self):
        from ...utils.checks import check_training_arguments

        check_training_arguments(self)  # a bad YAML stops here, before any data or reward work
        if self.speech_tokens not in SPEECH_TOKEN_SOURCES:
            raise ValueError(f"speech_tokens={self.speech_tokens!r} is not one of {SPEECH_TOKEN_SOURCES}")
        if self.speech_tokens == "speechtokenizer" and not self.speech_tokenizer_path:
            raise ValueError(
                "speech_tokens='speechtokenizer' needs speech_tokenizer_path (a SpeechTokenizer checkpoint); "
                "speech_tokens='frame_band' needs none"
            )
        if self.speech_tokens == "frame_band":
            if self.speech_tokenizer_path or self.speech_tokenizer_weights:
                raise ValueError(
                    "speech_tokenizer_path and speech_tokenizer_weights are only read with "
                    "speech_tokens='speechtokenizer'; remove them or set speech_tokens: speechtokenizer"
                )
            self.n_codes = 16 if self.n_codes is None else self.n_codes
        if self.n_codes is not None and self.n_codes < 1:
            raise ValueError(f"n_codes={self.n_codes} must be a positive number of speech tokens")
        if self.sampling_rate <= 0 or self.frames_per_second <= 0:
            raise ValueError(
                f"sampling_rate={self.sampling_rate} and frames_per_second={self.frames_per_second} must be positive"
            )
        if not self.audio_column:
            raise ValueError("audio_column must name the dataset's audio column, got an empty string")
        super().__post_init__()
