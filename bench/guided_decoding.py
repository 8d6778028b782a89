"""
Audibility-guided decoding against plain greedy decoding on the GPT-2-small architecture (random weights, 124M),
batch 1, with a DistilBERT-architecture classifier (random weights, 66M) scoring the 512 candidate continuations
of every step in one batched forward pass; n = 5 cache-optimization steps (the defaults of `GuidanceConfig`).
Both tokenizers are word-level over the same 50,257 made-up words, so a candidate continuation is as many
classifier tokens as LM tokens (as with real captions, about one word-piece per GPT-2 token).

    python bench/guided_decoding.py [--guided-tokens 4] [--greedy-tokens 32] [--top-k 512] [--steps 5]

Last line: `RATIO guided_decoding_overhead=<guided ms per token / greedy ms per token>`.
"""

import argparse
import random
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


def ms_per_token(lm, tokenizer, classifier, prompt, config: GuidanceConfig) -> tuple[float, int]:
    start = time.perf_counter()
    out = guided_generate(lm, tokenizer, classifier, input_ids=prompt, config=config)
    seconds = time.perf_counter() - start
    tokens = int((~out.finished).sum())
    return 1000 * seconds / tokens, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guided-tokens", type=int, default=4)
    parser.add_argument("--greedy-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="cache-optimization steps per token (n)")
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
        f"top-k {args.top_k}, n = {args.steps}, {torch.get_num_threads()} CPU thread(s)"
    )

    # Warm up both paths once, then measure each in the same run.
    ms_per_token(lm, lm_tokenizer, None, prompt, GuidanceConfig(max_new_tokens=2))
    ms_per_token(lm, lm_tokenizer, classifier, prompt, GuidanceConfig(max_new_tokens=2, top_k=args.top_k))
    greedy, greedy_n = ms_per_token(
        lm, lm_tokenizer, None, prompt, GuidanceConfig(max_new_tokens=args.greedy_tokens, num_optimization_steps=0)
    )
    print(f"greedy: {greedy:.1f} ms/token over {greedy_n} tokens")

    candidates = [f"{' '.join(words[: args.prompt_tokens])} {w}" for w in words[: args.top_k]]
    start = time.perf_counter()
    classifier.audible_log_odds(candidates)
    scoring = 1000 * (time.perf_counter() - start)
    print(f"one classifier pass over {args.top_k} candidate continuations (once per guided token): {scoring:.1f} ms")
    guided, guided_n = ms_per_token(
        lm,
        lm_tokenizer,
        classifier,
        prompt,
        GuidanceConfig(max_new_tokens=args.guided_tokens, top_k=args.top_k, num_optimization_steps=args.steps),
    )
    print(f"guided: {guided:.1f} ms/token over {guided_n} tokens")
    print(f"RATIO guided_decoding_overhead={guided / greedy:.1f}")


if __name__ == "__main__":
    main()
