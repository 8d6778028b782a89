"""
`hfpref loop`: rounds of preference learning in one command. Each round generates candidate captions for fresh clips
with the current captioner, collects preferences from a judge (the synthetic world's oracle, a reward model, people in
the annotation app, or an LLM), retrains the reward model on every round's pairs, runs RL from the previous round's
captioner with its KL term to round 0's, and evaluates against the previous round and round 0.
"""

from .config import DEFAULT_LOOP_OUTPUT_DIR, LOOP_JUDGES, LoopConfig
from .pipeline import render_loop_markdown, round_dir, run_loop


__all__ = ["DEFAULT_LOOP_OUTPUT_DIR", "LOOP_JUDGES", "LoopConfig", "render_loop_markdown", "round_dir", "run_loop"]
