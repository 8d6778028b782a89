"""
Audibility-guided decoding against plain greedy decoding on the GPT-2-small architecture (random weights, 124M),
batch 1, with a DistilBERT-architecture classifier (random weights, 66M): the default fast mode (the LM's top 8
candidates scored, 2 cache-optimization steps) and the paper's reference mode (512 candidates scored in one batched
classifier pass, n = 5). Both tokenizers are word-level over the same 50,257 made-up words, so a candidate
continuation is as many classifier tokens as LM tokens (as with real captions, about one word-piece per GPT-2 token).

    python bench/guided_decoding.py [--fast-tokens 8] [--greedy-tokens 16] [--rounds 3] [--guided-tokens 4]

Greedy and fast decoding alternate for `--rounds` rounds, so that load on a shared machine falls on both. Last line:
`RATIO guided_decoding_overhead=<median over rounds of fast guided ms per token / greedy ms per token>`.
"""

import argparse
import dataclasses
import random
import statistics
import string
import time

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from hfpref.guidance.guidance_config import GuidanceConfig
from hfpref.guidance.guided_decoding import guided_generate
from hfpref.metrics.audibility import AudibilityClassifier


def word_tokenizer(words: list[str], *, classifier: bool) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if classifier else ["<|endoftext|>"]
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if classifier else specials[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if classifier:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def timed(lm, tokenizer, classifier, prompt, config: GuidanceConfig) -> tuple[float, int, torch.Tensor]:
    start = time.perf_counter()
    out = guided_generate(lm, tokenizer, classifier, input_ids=prompt, config=config)
    seconds = time.perf_counter() - start
    tokens = int((~out.finished).sum())
    return 1000 * seconds / tokens, tokens, out.sequences[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guided-tokens", type=int, default=4, help="tokens decoded in the reference mode")
    parser.add_argument("--fast-tokens", type=int, default=8, help="tokens decoded in the fast mode, per round")
    parser.add_argument("--greedy-tokens", type=int, default=16, help="tokens decoded greedily, per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved greedy/fast rounds (medians reported)")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=512, help="reference mode's candidates")
    parser.add_argument("--steps", type=int, default=5, help="reference mode's cache-optimization steps per token (n)")
    parser.add_argument("--fast-top-k", type=int, default=GuidanceConfig.fast_top_k)
    parser.add_argument("--fast-steps", type=int, default=GuidanceConfig.fast_num_optimization_steps)
    parser.add_argument("--classifier-layers", type=int, default=6, help="6 is DistilBERT; fewer is a cheaper guide")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = random.Random(0)
    words = list(
        dict.fromkeys("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60000))
    )
    words = words[: 50257 - 1]
    lm_tokenizer = word_tokenizer(words, classifier=False)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(lm_tokenizer), eos_token_id=0, bos_token_id=0)).eval()
    cls_tokenizer = word_tokenizer(words, classifier=True)
    classifier_model = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=len(cls_tokenizer), n_layers=args.classifier_layers, num_labels=2, pad_token_id=0)
    ).eval()
    classifier = AudibilityClassifier(classifier_model, cls_tokenizer)
    prompt = torch.randint(1, len(lm_tokenizer), (1, args.prompt_tokens))
    print(
        f"LM: GPT-2 small architecture ({sum(p.numel() for p in lm.parameters()) / 1e6:.0f}M, random), classifier: "
        f"DistilBERT, {args.classifier_layers} layers ({sum(p.numel() for p in classifier_model.parameters()) / 1e6:.0f}M, random), batch 1, "
        f"{torch.get_num_threads()} CPU thread(s)"
    )
    greedy_config = GuidanceConfig(num_optimization_steps=0)
    reference = GuidanceConfig(mode="reference", top_k=args.top_k, num_optimization_steps=args.steps)
    fast = GuidanceConfig(
        num_optimization_steps=args.steps, fast_top_k=args.fast_top_k, fast_num_optimization_steps=args.fast_steps
    )
    print(
        f"reference mode: top-k {reference.top_k}, n = {reference.num_optimization_steps}; fast mode: top-k "
        f"{fast.fast_top_k}, n = {fast.fast_num_optimization_steps} (step {fast.optimization_step_size:.2f})"
    )

    # Warm up every path once; then greedy and fast decoding alternate, round after round, so that load on the shared
    # machine falls on both sides of the ratio alike (the ratio is the median of the per-round ratios).
    for config in (greedy_config, fast, reference):
        timed(lm, lm_tokenizer, classifier, prompt, dataclasses.replace(config, max_new_tokens=2, top_k=8))
    greedy_ms, fast_ms = [], []
    for _ in range(args.rounds):
        greedy_ms.append(
            timed(
                lm, lm_tokenizer, None, prompt, dataclasses.replace(greedy_config, max_new_tokens=args.greedy_tokens)
            )[0]
        )
        fast_ms.append(
            timed(lm, lm_tokenizer, classifier, prompt, dataclasses.replace(fast, max_new_tokens=args.fast_tokens))[0]
        )
    greedy = statistics.median(greedy_ms)
    print(f"greedy: {greedy:.1f} ms/token (median of {args.rounds} rounds of {args.greedy_tokens} tokens)")
    print(
        f"fast guided: {statistics.median(fast_ms):.1f} ms/token (median of {args.rounds} rounds of {args.fast_tokens} tokens)"
    )

    reference_ms, _, reference_ids = timed(
        lm, lm_tokenizer, classifier, prompt, dataclasses.replace(reference, max_new_tokens=args.guided_tokens)
    )
    greedy_now = timed(
        lm, lm_tokenizer, None, prompt, dataclasses.replace(greedy_config, max_new_tokens=args.greedy_tokens)
    )[0]
    print(
        f"reference guided: {reference_ms:.1f} ms/token over {args.guided_tokens} tokens (greedy right after: {greedy_now:.1f})"
    )
    print(f"RATIO guided_decoding_reference_overhead={reference_ms / statistics.median([greedy, greedy_now]):.1f}")

    # Agreement on this bench's prompt (random weights: a sanity check; the held-out agreement of trained models is
    # tests/guidance/test_fast_guidance.py's).
    _, _, fast_ids = timed(
        lm, lm_tokenizer, classifier, prompt, dataclasses.replace(fast, max_new_tokens=args.guided_tokens)
    )
    _, _, greedy_ids = timed(
        lm, lm_tokenizer, None, prompt, dataclasses.replace(greedy_config, max_new_tokens=args.guided_tokens)
    )
    texts = lm_tokenizer.batch_decode(
        [prompt[0].tolist() + ids.tolist() for ids in (reference_ids, fast_ids, greedy_ids)], skip_special_tokens=True
    )
    audible = [p > 0.5 for p in classifier(texts)]
    for name, ids, decision in zip(("fast", "greedy"), (fast_ids, greedy_ids), audible[1:]):
        same = sum(int(a == b) for a, b in zip(ids.tolist(), reference_ids.tolist()))
        print(
            f"{name} vs reference: {same}/{len(reference_ids)} tokens identical, audibility decision "
            f"{'the same' if decision == audible[0] else 'different'} (reference: {'audible' if audible[0] else 'not audible'})"
        )
    ratios = [f / g for f, g in zip(fast_ms, greedy_ms)]
    print(f"fast guided / greedy per round: {', '.join(f'{r:.1f}' for r in ratios)}")
    print(f"RATIO guided_decoding_overhead={statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
