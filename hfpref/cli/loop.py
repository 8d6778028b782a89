"""`hfpref loop`: rounds of generate, judge, reward model, RL and evaluation on the synthetic world."""

from __future__ import annotations


# Flags that map one-to-one onto a LoopConfig field (flag name with dashes -> field name with underscores).
_FIELDS = (
    "output_dir", "rounds", "judge", "size", "seed", "captioner", "pool_clips", "judge_reward_model", "llm_base_url",
    "llm_model", "llm_api_key", "llm_timeout", "annotate_answers_per_item", "annotate_deadline_minutes",
    "annotate_host", "annotate_port", "hub_dataset_id",
)  # fmt: skip


# `hfpref.loop.LOOP_JUDGES`, spelled out so that building the command line imports no pipeline.
JUDGES = ["oracle", "reward_model", "annotate", "llm"]


def add_loop_parser(subparsers):
    """Register `hfpref loop`."""
    p = subparsers.add_parser(
        "loop",
        help="rounds of preference learning: generate captions, collect preferences, train the reward model, RL, "
        "evaluate",
        description="Round 0 is the quickstart's world, CLAP, SFT captioner, preference pairs and reward model; each "
        "further round captions fresh clips with the current captioner, has the judge pick, retrains the reward model "
        "on every round's pairs, runs RL from the previous round's captioner (KL to round 0's) and evaluates it "
        "against the previous round and round 0. Every round has its own folder; finished stages are reused, so an "
        "interrupted loop resumes. Flags override the --config file.",
    )
    p.add_argument("--config", help="a YAML file of loop settings (recipes/loop/config_oracle.yaml)")
    p.add_argument("--output-dir", help="where round-<k>/ and the report go (default: outputs/loop)")
    p.add_argument("--rounds", type=int, help="rounds after round 0 (default: 2)")
    p.add_argument("--judge", choices=JUDGES, help="who picks between the two captions (default: oracle)")
    p.add_argument("--size", choices=["small", "medium", "tiny"], help="the quickstart size of every stage")
    p.add_argument("--seed", type=int, help="seed of the world, the pools and every stage (default: 0)")
    p.add_argument("--captioner", choices=["whisper", "audio-llm"], help="the captioner of round 0 (default: whisper)")
    p.add_argument(
        "--pool-clips", type=int, help="fresh clips judged per round (default: the size's preference clips)"
    )
    p.add_argument(
        "--control",
        action="store_true",
        default=None,
        help="also run the last round again without new pairs (round-<k>-control/)",
    )
    p.add_argument("--force", action="store_true", default=None, help="re-run every stage, even finished ones")
    p.add_argument(
        "--reward-warm-start",
        action="store_true",
        default=None,
        help="each round's reward models continue from the previous round's instead of new heads",
    )
    p.add_argument("--judge-reward-model", help="the reward_model judge (default: the previous round's reward model)")
    p.add_argument("--llm-base-url", help="the llm judge's OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--llm-model", help="the llm judge's model name")
    p.add_argument("--llm-api-key", help="the llm judge's API key")
    p.add_argument("--llm-timeout", type=float, help="seconds per llm judge request (default: 30)")
    p.add_argument("--annotate-answers-per-item", type=int, help="annotate: answers to wait for per item (default: 1)")
    p.add_argument("--annotate-deadline-minutes", type=float, help="annotate: stop waiting this long after the start")
    p.add_argument("--annotate-host", help="annotate: address the app binds (default: 127.0.0.1)")
    p.add_argument("--annotate-port", type=int, help="annotate: the app's port (default: 7860; 0 picks a free one)")
    p.add_argument(
        "--annotate-allowed-host", action="append", default=None, metavar="NAME", help="annotate: see hfpref annotate"
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="push the preference dataset to this Hub dataset each round")
    p.add_argument("--hub-private", action="store_true", default=None, help="with --push-to-hub: a private dataset")
    p.set_defaults(func=cmd_loop)
    return p


def cmd_loop(args) -> int:
    from ..loop import LoopConfig, run_loop

    overrides = {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}
    for flag in ("control", "force", "hub_private", "reward_warm_start"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.annotate_allowed_host:
        overrides["annotate_allowed_hosts"] = args.annotate_allowed_host
    if args.push_to_hub:
        overrides.update(push_to_hub=True, hub_dataset_id=args.push_to_hub)
    config = LoopConfig.from_yaml(args.config, **overrides) if args.config else LoopConfig(**overrides)
    run_loop(config)
    return 0
