"""`hfpref audibility-data`: audible and non-audible sentences from an LLM behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import os

from .utils import positive_int


def cmd_audibility_data(args) -> int:
    from ..guidance.audibility_data import LABEL_NAMES, generate_audibility_examples, load_audibility_dataset

    api_key = os.environ.get(args.api_key_env)
    if args.api_key_env and not api_key and not args.no_api_key:
        raise SystemExit(
            f"hfpref audibility-data: ${args.api_key_env} is not set; export the endpoint's key there, name another "
            "variable with --api-key-env, or pass --no-api-key for an endpoint without authentication"
        )
    existing = load_audibility_dataset(args.existing) if args.existing else load_audibility_dataset()
    existing_sentences = list(existing["sentence"])
    report = generate_audibility_examples(
        args.base_url,
        args.model,
        args.per_class,
        api_key=None if args.no_api_key else api_key,
        examples_per_request=args.examples_per_request,
        max_requests=args.max_requests,
        temperature=args.temperature,
        existing=existing_sentences,
        seed=args.seed,
        timeout=args.timeout,
    )
    rows = [
        {"sentence": e["sentence"], "label": LABEL_NAMES[e["label"]], "source": args.model} for e in report.examples
    ]
    if args.include_existing:
        rows = [
            {"sentence": s, "label": LABEL_NAMES[y], "source": args.existing or "hfpref seed set"}
            for s, y in zip(existing_sentences, existing["label"])
        ] + rows
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    print(f"{report.summary()}; wrote {len(rows)} rows to {args.output}")
    for line in report.malformed_samples:
        print(f"malformed: {line[:200]}")
    counts = report.counts()
    if min(counts.values()) < args.per_class:
        print(f"short of the target of {args.per_class} per class after {report.requests} request(s): {counts}")
        return 1
    return 0


def add_audibility_data_parser(subparsers):
    """Register `hfpref audibility-data`: ask an LLM (OpenAI-compatible endpoint) for audibility examples."""
    p = subparsers.add_parser(
        "audibility-data",
        help="generate audible / non-audible sentences with an LLM behind an OpenAI-compatible endpoint",
        description="Ask an LLM for sentences describing audible and non-audible scenes (JSON lines), validate them, "
        "drop malformed lines and duplicates of the existing set (reported by count), and write a .jsonl with "
        "`sentence` and `label` columns for hfpref/scripts/audibility_classifier.py.",
    )
    p.add_argument("--base-url", required=True, help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    p.add_argument("--model", required=True, help="model name sent to the endpoint")
    p.add_argument("--per-class", type=positive_int, default=100, help="sentences wanted per class")
    p.add_argument(
        "--examples-per-request", type=positive_int, default=20, help="sentences asked for per class and request"
    )
    p.add_argument("--max-requests", type=positive_int, default=20)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--no-api-key", action="store_true", help="send no Authorization header")
    p.add_argument(
        "--existing", default=None, help="audibility data whose sentences count as duplicates (default: the seed set)"
    )
    p.add_argument("--include-existing", action="store_true", help="write the existing sentences too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="the .jsonl to write")
    p.set_defaults(func=cmd_audibility_data)
    return p
