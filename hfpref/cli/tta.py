"""`hfpref tta-generate`: render clips per prompt with a text-to-audio pipeline and write a feedback skeleton."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .utils import positive_int


logger = logging.getLogger(__name__)


def read_prompts(path: str | Path) -> list:
    """
    Prompts from a `.txt` file (one per line), a `.json` list, or a `.jsonl` file; JSON rows may be strings or
    objects with `prompt` and optionally `labels`, `order`, `task` (as written by the prompt builder).
    """
    from ..prompts.tta_prompts import TTAPrompt

    path = Path(path)
    if path.suffix.lower() == ".txt":
        rows = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix.lower() == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"{path}: prompts must be a .txt, .json or .jsonl file, got {path.suffix!r}")
    prompts = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            prompts.append(row)
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):
            labels = tuple(row.get("labels") or ())
            prompts.append(
                TTAPrompt(
                    prompt=row["prompt"],
                    labels=labels,
                    order=tuple(row.get("order") or labels),
                    task=row.get("task", ""),
                    conjunctions=tuple(row.get("conjunctions") or ()),
                )
            )
        else:
            raise ValueError(f"{path}: row {i} is neither a string nor an object with a 'prompt' string")
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def cmd_tta_generate(args) -> int:
    from ..data.tta_feedback import write_feedback_skeleton
    from ..models.tta_pipeline import generate_audio, load_tta_pipeline, sampling_rate_of

    prompts = read_prompts(args.prompts)
    pipeline = load_tta_pipeline(args.pipeline, device=args.device)
    texts = [p if isinstance(p, str) else p.prompt for p in prompts]
    audio = generate_audio(
        pipeline,
        texts,
        num_waveforms_per_prompt=args.n_per_prompt,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        audio_length_in_s=args.audio_length_in_s,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    path = write_feedback_skeleton(prompts, audio, args.output_dir, sampling_rate=sampling_rate_of(pipeline))
    print(f"Rendered {args.n_per_prompt} clips for each of {len(prompts)} prompts with {args.pipeline}")
    print(f"Feedback skeleton for annotation (label 0/1/skip): {path}")
    return 0


def add_tta_generate_parser(subparsers):
    """Register `hfpref tta-generate`."""
    p = subparsers.add_parser(
        "tta-generate",
        help="render N clips per prompt with a text-to-audio pipeline and write a binary-feedback skeleton (BATON)",
    )
    p.add_argument("prompts", help="prompts file: .txt (one per line), .json list or .jsonl")
    p.add_argument("--pipeline", default="cvssp/audioldm-s-full-v2", help="AudioLDM pipeline: Hub id or folder")
    p.add_argument("--output-dir", required=True, help="where audio/ and feedback.csv are written")
    p.add_argument("--n-per-prompt", type=positive_int, default=5, help="clips per prompt (the paper: 5)")
    p.add_argument("--num-inference-steps", type=positive_int, default=50)
    p.add_argument("--guidance-scale", type=float, default=2.5)
    p.add_argument("--audio-length-in-s", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per pipeline call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_tta_generate)
    return p
