"""`hfpref eval` and `hfpref agreement`: captioning metrics on a captions file, and their agreement with FENSE."""

from __future__ import annotations

import json
import logging
import math
import os

from ..metrics.captioning import CAPTION_METRICS, TEXT_METRICS
from ..metrics.tokenization import TOKENIZERS


logger = logging.getLogger(__name__)

AGREEMENT_METRICS = TEXT_METRICS


def _reference_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return [str(v) for v in parsed if v]
        return [value] if text else []
    return [str(v) for v in value if v]


def _audio_value(value, audio_dir: str | None):
    if audio_dir is None or value is None:
        return value
    if isinstance(value, str):
        return value if os.path.isabs(value) else os.path.join(audio_dir, value)
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        path = value["path"]
        return {**value, "path": path if os.path.isabs(path) else os.path.join(audio_dir, path)}
    return value


def _format_value(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def cmd_eval(args) -> int:
    from ..data.loading import load_any_dataset
    from ..metrics.captioning import evaluate_captions, evaluate_sentences

    ds = load_any_dataset(args.captions, split="train")
    missing = [c for c in [args.caption_column, *args.references_column] if c not in ds.column_names]
    if missing:
        raise SystemExit(f"hfpref eval: {args.captions} has no column(s) {missing}; its columns are {ds.column_names}")
    candidates = list(ds[args.caption_column])
    for row, caption in enumerate(candidates):
        if not isinstance(caption, str):
            raise SystemExit(
                f"hfpref eval: {args.captions} row {row}, column {args.caption_column!r}: the caption is "
                f"{caption!r}, not text; fill it in or remove the row (an empty string scores as an empty caption)."
            )
    references = [[] for _ in candidates]
    for column in args.references_column:
        for refs, value in zip(references, ds[column]):
            refs.extend(_reference_list(value))

    metrics = args.metrics
    wants_audio = any(m in ("clap_sim", "reward") for m in metrics or [])
    audio = None
    if args.audio_column in ds.column_names and (wants_audio or args.clap_model):
        audio = [_audio_value(value, args.audio_dir) for value in ds[args.audio_column]]
    embedder, reward_func, reward_model = None, None, None
    clap_model = args.clap_model
    if args.reward_model:
        from ..rewards import CLAPRewardModel

        reward_model = CLAPRewardModel.from_pretrained(args.reward_model)
        clap_model = clap_model or reward_model.config.clap_checkpoint
        if clap_model is None:
            raise SystemExit(
                f"hfpref eval: the reward model {args.reward_model} records no CLAP checkpoint; name the one it was "
                "trained on with --clap-model"
            )
    if clap_model:
        from ..encoders.clap import ClapEmbedder

        embedder = ClapEmbedder.from_pretrained(clap_model, cache_dir=args.cache_dir, show_progress=False)
    if reward_model is not None:
        from ..rewards import ClapMismatchError, get_reward_model_reward

        try:
            reward_func = get_reward_model_reward(reward_model, embedder)
        except ClapMismatchError as error:
            raise SystemExit(f"hfpref eval: {error}") from error
    if metrics is None:
        metrics = [*TEXT_METRICS, *(["clap_sim"] if embedder is not None else [])]
        metrics += ["reward"] if reward_func is not None else []

    kwargs = dict(
        audio=audio,
        embedder=embedder,
        reward_func=reward_func,
        sbert_model=args.sbert_model,
        tokenizer=args.tokenizer,
    )
    result = evaluate_captions(candidates, references, metrics, **kwargs)
    if args.sentence_scores:
        sentences = evaluate_sentences(candidates, references, [m for m in metrics if m in result], **kwargs)
        with open(args.sentence_scores, "w", encoding="utf-8") as handle:
            for i, caption in enumerate(candidates):
                row = {"caption": caption, **{m: sentences[m][i] for m in sentences if m != "skipped"}}
                handle.write(json.dumps(row) + "\n")
    if args.audibility_classifier:
        from ..metrics.audibility import AudibilityClassifier, audibility_accuracy

        classifier = AudibilityClassifier.from_pretrained(args.audibility_classifier, batch_size=64)
        result["audibility_accuracy"] = audibility_accuracy(candidates, classifier)
        metrics = [*metrics, "audibility_accuracy"]
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(candidates)} captions from {args.captions}")
    width = max(len(m) for m in metrics)
    for metric in metrics:
        if metric in result["skipped"]:
            print(f"{metric:<{width}}  skipped: {result['skipped'][metric]}")
        else:
            print(f"{metric:<{width}}  {_format_value(result[metric])}")
    return 0


def cmd_agreement(args) -> int:
    from ..data.fense import load_fense
    from ..metrics.agreement import pairwise_agreement
    from ..metrics.tokenization import MetricUnavailableError

    ds = load_fense(args.fense, drop_ties=False)
    results, skipped = {}, {}
    for metric in dict.fromkeys(args.metric):
        try:
            results[metric] = pairwise_agreement(ds, metric, tokenizer=args.tokenizer, sbert_model=args.sbert_model)
        except MetricUnavailableError as error:
            logger.warning("Skipping metric %r: %s", metric, error)
            skipped[metric] = str(error)
    if args.json:
        print(json.dumps({**results, **({"skipped": skipped} if skipped else {})}))
        return 0 if results else 1
    n = sum(v != 0 for v in ds["vote_sum"])
    print(f"Agreement with human judgments (%), {n} human-majority pairs of {args.fense}")
    print(f"{'metric':<12}" + "".join(f"{c:>8}" for c in ("HC", "HI", "HM", "MM", "total")))
    for metric, rates in results.items():
        print(f"{metric:<12}" + "".join(f"{rates[c]:>8.1f}" for c in ("HC", "HI", "HM", "MM", "total")))
    for metric, reason in skipped.items():
        print(f"{metric:<12}  skipped: {reason}")
    return 0 if results else 1


def add_eval_parser(subparsers):
    """Register `hfpref eval`: score a captions file (jsonl/json/csv/parquet) with captioning metrics."""
    p = subparsers.add_parser(
        "eval",
        help="score captions against references (BLEU, METEOR, ROUGE-L, CIDEr-D, SBERT, CLAP, reward)",
        description="Corpus-level captioning metrics for a file with a caption column and a references column "
        "(a list, a JSON list in CSV, or several single-reference columns).",
    )
    p.add_argument("--captions", required=True, help="a .jsonl/.json/.csv/.parquet file or a saved dataset")
    p.add_argument("--caption-column", default="caption")
    p.add_argument(
        "--references-column",
        nargs="+",
        default=["references"],
        help="column(s) holding the references: one list column, or several single-caption columns",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        action="extend",
        choices=CAPTION_METRICS,
        default=None,
        help="default: all text metrics (--metrics a b, or --metrics a --metrics b)",
    )
    p.add_argument("--audio-column", default="audio", help="audio paths, for clap_sim and reward")
    p.add_argument("--audio-dir", default=None, help="folder that relative audio paths are relative to")
    p.add_argument(
        "--clap-model",
        default=None,
        help="CLAP checkpoint for clap_sim and reward (local dir or Hub name; default for reward: the reward "
        "model's own CLAP)",
    )
    p.add_argument(
        "--reward-model", default=None, help="a saved CLAPRewardModel, for the reward metric (its CLAP is checked)"
    )
    p.add_argument(
        "--audibility-classifier", default=None, help="a saved audibility classifier, for audibility_accuracy"
    )
    p.add_argument("--cache-dir", default=None, help="CLAP embedding cache dir")
    p.add_argument("--sbert-model", default=None, help="sentence-transformers model (default: packaged MiniLM)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="ptb")
    p.add_argument("--sentence-scores", default=None, help="also write per-caption scores to this .jsonl")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_eval)
    return p


def add_agreement_parser(subparsers):
    """Register `hfpref agreement`: agreement of metrics with the FENSE human pairwise judgments."""
    p = subparsers.add_parser(
        "agreement",
        help="agreement (%%) of caption metrics with FENSE human pairwise judgments",
        description="FENSE protocol: human-majority pairs only, a metric tie counts as a disagreement.",
    )
    p.add_argument("--fense", required=True, help="audiocaps_eval.json or clotho_eval.json (FENSE)")
    p.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        required=True,
        choices=AGREEMENT_METRICS,
        help="metrics to score: --metric bleu_4 cider_d, or --metric bleu_4 --metric cider_d",
    )
    p.add_argument("--sbert-model", default=None, help="sentence-transformers model (default: packaged MiniLM)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="ptb")
    p.add_argument("--json", action="store_true", help='print {"<metric>": {"HC", "HI", "HM", "MM", "total"}}')
    p.set_defaults(func=cmd_agreement)
    return p
