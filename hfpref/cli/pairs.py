"""`hfpref pairs`: build DPO preference pairs from a captioner's beam-search candidates and a judge."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..judges.registry import JUDGES, get_judge
from .utils import positive_int


def add_pairs_parser(subparsers) -> argparse.ArgumentParser:
    """Register `hfpref pairs`."""
    p = subparsers.add_parser(
        "pairs",
        help="judge a speech-emotion captioner's beam-search candidates and write (prompt, chosen, rejected) pairs",
        description="For each clip: beam-search candidates from --model, scored by --judge; the best is chosen, the "
        "others (or the worst) rejected. Writes a save_to_disk dataset and stats.json to --output-dir.",
    )
    p.add_argument("--model", required=True, help="causal LM with speech tokens (e.g. <kd output>/merged)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="saved dataset / data file / Hub name with audio (or prompt) and references")
    source.add_argument(
        "--speech-world", type=positive_int, metavar="N", help="synthesize N speech-world clips instead"
    )
    p.add_argument("--speech-world-backend", choices=["auto", "espeak", "procedural"], default="auto")
    p.add_argument("--speech-world-seconds", type=float, default=2.0, help="clip length of --speech-world")
    p.add_argument("--split", default=None, help="split of --dataset")
    p.add_argument("--speech-tokenizer", default=None, help="SpeechTokenizer checkpoint (dir or config JSON)")
    p.add_argument("--speech-tokenizer-weights", default=None)
    p.add_argument("--instruction", default="Describe the speaker's emotion.")
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--references-column", default="references")
    p.add_argument(
        "--caption-column", default="caption", help="single reference per clip when there is no --references-column"
    )
    p.add_argument("--judge", choices=JUDGES, default="clue_overlap")
    p.add_argument("--clue-mode", choices=["f1", "recall"], default="f1")
    p.add_argument("--reward-model", default=None, help="saved CLAPRewardModel (--judge reward_model)")
    p.add_argument("--clap-model", default=None, help="its CLAP (default: the one it records)")
    p.add_argument("--llm-base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--llm-model", default=None)
    p.add_argument("--llm-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--llm-timeout", type=float, default=30.0)
    p.add_argument("--num-beams", type=positive_int, default=4)
    p.add_argument("--num-candidates", type=positive_int, default=None)
    p.add_argument("--max-new-tokens", type=positive_int, default=48)
    p.add_argument("--rejected", choices=["all", "worst"], default="all")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="on a judge error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_pairs)
    return p


def cmd_pairs(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..data.loading import load_any_dataset
    from ..data.synthetic.speech_world import make_speech_world
    from ..encoders.audio_tokens import audio_token_prompts
    from ..encoders.speech_tokens import SpeechTokenEncoder
    from ..judges.pairs import build_preference_pairs
    from ..utils.safe_loading import check_pretrained_path, load_pretrained

    # Every checkpoint is checked before the (slow) data preparation, so a bad path fails at once.
    check_pretrained_path(args.model, what="--model")

    judge = get_judge(
        args.judge,
        clue_mode=args.clue_mode,
        reward_model_name_or_path=args.reward_model,
        clap_model_name_or_path=args.clap_model,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        llm_api_key=os.environ.get(args.llm_api_key_env),
        llm_timeout=args.llm_timeout,
    )
    if args.speech_world is not None:
        dataset = make_speech_world(
            args.speech_world, args.seed, backend=args.speech_world_backend, clip_seconds=args.speech_world_seconds
        )
    else:
        dataset = load_any_dataset(args.dataset, split=args.split or "train")
    if args.references_column not in dataset.column_names and args.caption_column in dataset.column_names:
        dataset = dataset.add_column(args.references_column, [[c] for c in dataset[args.caption_column]])
    if "prompt" not in dataset.column_names:
        if args.speech_tokenizer is None:
            raise SystemExit(
                "the dataset has no `prompt` column: give --speech-tokenizer to write speech-token prompts"
            )
        encoder = SpeechTokenEncoder.from_pretrained(args.speech_tokenizer, args.speech_tokenizer_weights)
        dataset = audio_token_prompts(dataset, encoder, audio_column=args.audio_column, instruction=args.instruction)
    model = load_pretrained(AutoModelForCausalLM, args.model)
    tokenizer = load_pretrained(AutoTokenizer, args.model)
    pairs, stats = build_preference_pairs(
        model,
        tokenizer,
        dataset,
        judge,
        references_column=args.references_column if args.references_column in dataset.column_names else None,
        audio_column=args.audio_column if args.audio_column in dataset.column_names else None,
        rejected=args.rejected,
        on_error=args.on_error,
        num_beams=args.num_beams,
        num_candidates=args.num_candidates,
        max_new_tokens=args.max_new_tokens,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    if len(pairs) == 0:
        raise SystemExit(
            f"no preference pairs from {stats['clips']} clips (stats in {out / 'stats.json'}): every clip's candidates "
            "tied, were fewer than two, or the judge failed; try more beams or another judge"
        )
    pairs.save_to_disk(str(out))
    return 0
