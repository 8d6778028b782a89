"""
The fast guidance mode against the paper's procedure (the reference mode): what it computes exactly as the reference
does, what it costs, and how often its captions get the reference's audibility decision on held-out prompts.
"""

import random

import pytest
import torch

from hfpref.guidance.guidance_config import GuidanceConfig
from hfpref.guidance.guided_decoding import guided_generate


def _ids(world, texts):
    tok = world.lm_tokenizer
    return torch.tensor([[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts])


def held_out_prompts(world, extra: int, seed: int = 1) -> list[list[str]]:
    """
    Prompts the guidance is checked on, in batches of equal length: every "<setting> the <noun>" clause, then `extra`
    two-clause prompts "<setting> the <noun> <silent word> . <setting> the <noun>" (none of the LM's training
    sentences has a second clause).
    """
    rng = random.Random(seed)
    clauses = [f"{s} the {n}" for s in ("at", "in") for n in world.nouns]
    longer = [
        f"{rng.choice(['at', 'in'])} the {rng.choice(world.nouns)} {rng.choice(world.silent_words)} . "
        f"{rng.choice(clauses)}"
        for _ in range(extra)
    ]
    return [clauses, longer] if extra else [clauses]


def audible_decisions(world, batches, config) -> list[bool]:
    """The classifier's decision (P(audible) > 0.5) on each prompt followed by its decoded caption."""
    tok, texts = world.lm_tokenizer, []
    for prompts in batches:
        out = guided_generate(world.lm, tok, world.classifier, input_ids=_ids(world, prompts), config=config)
        captions = tok.batch_decode(out.sequences, skip_special_tokens=True)
        texts += [f"{p} {c.strip()}" for p, c in zip(prompts, captions)]
    return [p > 0.5 for p in world.classifier(texts)]


def agreement(a: list[bool], b: list[bool]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def test_fast_mode_with_the_reference_settings_computes_the_reference(word_world, one_thread):
    """
    The fast mode's only departures are its settings (fewer candidates, fewer and longer steps): with the reference's
    candidates and steps it decodes the same tokens with the same losses, so reusing the unguided forward as the
    first step's forward is exact.
    """
    ids = _ids(word_world, [f"at the {n}" for n in word_world.nouns])
    args = (word_world.lm, word_world.lm_tokenizer, word_world.classifier)
    reference = guided_generate(
        *args, input_ids=ids, config=GuidanceConfig(mode="reference", top_k=8, max_new_tokens=3)
    )
    fast = guided_generate(
        *args, input_ids=ids, config=GuidanceConfig(fast_top_k=8, fast_num_optimization_steps=5, max_new_tokens=3)
    )
    assert torch.equal(fast.sequences, reference.sequences)
    for name in ("kl_to_unguided", "ce_to_unguided", "classifier_loss_before", "classifier_loss_after"):
        torch.testing.assert_close(getattr(fast, name), getattr(reference, name), rtol=1e-4, atol=1e-5)
    assert (reference.classifier_loss_after[:, 0] < reference.classifier_loss_before[:, 0]).all()  # it did guide


class _CountingClassifier:
    def __init__(self, classifier):
        self.classifier, self.texts = classifier, 0

    def audible_log_odds(self, texts):
        self.texts += len(texts)
        return self.classifier.audible_log_odds(texts)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_cost_per_guided_token_in_forwards_and_classified_candidates(word_world, one_thread, mode):
    """
    Per guided token the reference runs `n + 2` LM forwards (unguided, n steps, the pick) and classifies `top_k`
    candidates per row; the fast mode runs `fast_n + 1` (the unguided forward is the first step's) and classifies
    `fast_top_k`. Greedy decoding runs one forward per token.
    """
    config = GuidanceConfig(mode=mode, top_k=20, fast_top_k=6, fast_num_optimization_steps=2, max_new_tokens=1)
    calls = []
    hook = word_world.lm.register_forward_hook(lambda *_: calls.append(1))
    classifier = _CountingClassifier(word_world.classifier)
    try:
        guided_generate(
            word_world.lm,
            word_world.lm_tokenizer,
            classifier,
            input_ids=_ids(word_world, ["at the dog"] * 2),
            config=config,
        )
    finally:
        hook.remove()
    forwards = len(calls) - 1  # the prompt's cache
    assert (forwards, classifier.texts) == ((5 + 2, 2 * 20) if mode == "reference" else (2 + 1, 2 * 6))


def test_fast_mode_makes_the_reference_audibility_decisions_on_held_out_prompts(word_world, one_thread):
    """
    On 48 held-out prompts (the 16 one-clause prompts and 32 two-clause ones), the captions of the default fast mode
    get the same audibility decision as the reference mode's in at least 95% of cases (measured: 48 of 48, 47 of
    them audible). Controls that fail the bar: greedy decoding, the captions guidance is meant to change, agrees with
    the reference in 41 of 48 (85%), and a fast mode of one step instead of two in 45 of 48 (94%). Decoding is
    deterministic, so these counts carry no sampling noise.
    """
    batches = held_out_prompts(word_world, extra=32)
    reference = audible_decisions(word_world, batches, GuidanceConfig(mode="reference", max_new_tokens=3))
    fast = audible_decisions(word_world, batches, GuidanceConfig(max_new_tokens=3))
    greedy = audible_decisions(word_world, batches, GuidanceConfig(num_optimization_steps=0, max_new_tokens=3))
    assert agreement(fast, reference) >= 0.95, (fast, reference)
    assert agreement(greedy, reference) < 0.95, (greedy, reference)  # the control fails the bar
    assert sum(fast) >= sum(reference) - 1 and sum(fast) > sum(greedy)
