import re

import pytest
import torch

from hfpref.guidance.guidance_config import GuidanceConfig
from hfpref.guidance.guided_decoding import guided_captions, guided_generate
from hfpref.metrics.audibility import audibility_accuracy


def _prompts(world, setting="at"):
    tok = world.lm_tokenizer
    return torch.tensor(
        [[tok.bos_token_id, *tok(f"{setting} the {n}", add_special_tokens=False)["input_ids"]] for n in world.nouns]
    )


def _captions(world, out):
    texts = world.lm_tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
    return [f"at the {noun} {text.strip()}" for noun, text in zip(world.nouns, texts)]


def test_config_validation_names_valid_values():
    with pytest.raises(ValueError, match="top_k=0 must be >= 1"):
        GuidanceConfig(top_k=0)
    with pytest.raises(ValueError, match="lambda_ce=-1"):
        GuidanceConfig(lambda_ce=-1)
    assert GuidanceConfig().top_k == 512 and (GuidanceConfig().lambda_ce, GuidanceConfig().lambda_cls) == (0.2, 0.6)


def test_unguided_decoding_is_greedy_generate(word_world, one_thread):
    ids = _prompts(word_world)
    out = guided_generate(
        word_world.lm, word_world.lm_tokenizer, None, input_ids=ids, config=GuidanceConfig(max_new_tokens=4)
    )
    ref = word_world.lm.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4, pad_token_id=0, eos_token_id=2
    )
    width = out.sequences.shape[1]
    assert torch.equal(out.sequences, ref[:, ids.shape[1] : ids.shape[1] + width])


def test_learning_check_guidance_raises_audible_share_with_bounded_divergence(word_world, one_thread):
    """
    The LM says a silent word after "at the <noun>" (80% of its training words there are silent), so greedy
    decoding is never audible. With the paper's settings (n = 5, lambda_ce = 0.2, lambda_cls = 0.6, k = 512 >= vocab)
    guidance must make at least half of the 8 captions audible (4 of 8 rows flip; decoding is deterministic, so
    this is not sampling noise), while moving the next-token distribution no further from the unguided one than
    the LM's own switch of context ("in the <noun>", where 85% of words are audible) does.
    """
    lm, tok, classifier = word_world.lm, word_world.lm_tokenizer, word_world.classifier
    ids = _prompts(word_world)
    greedy = guided_generate(
        lm, tok, classifier, input_ids=ids, config=GuidanceConfig(num_optimization_steps=0, max_new_tokens=3)
    )
    guided = guided_generate(lm, tok, classifier, input_ids=ids, config=GuidanceConfig(max_new_tokens=3))
    greedy_share = audibility_accuracy(_captions(word_world, greedy), classifier)
    guided_share = audibility_accuracy(_captions(word_world, guided), classifier)
    assert greedy_share == 0.0
    assert guided_share >= greedy_share + 0.5, (_captions(word_world, guided), guided_share)

    # The word the captions hinge on is the first generated token; its guided distribution stays as close to the
    # unguided one as the "in" context's distribution is.
    with torch.no_grad():
        log_at = torch.log_softmax(lm(ids).logits[:, -1].float(), -1)
        log_in = torch.log_softmax(lm(_prompts(word_world, "in")).logits[:, -1].float(), -1)
    context_switch_kl = (log_in.exp() * (log_in - log_at)).sum(-1)
    assert guided.kl_to_unguided[:, 0].mean() <= context_switch_kl.mean()
    assert torch.isfinite(guided.ce_to_unguided).all()
    assert (guided.classifier_loss_after[:, 0] < guided.classifier_loss_before[:, 0]).all()
    # Still well-formed sentences of the LM's language: "<word> ." then eos.
    vocabulary = "|".join(word_world.audible_words + word_world.silent_words)
    for caption in _captions(word_world, guided):
        assert re.fullmatch(rf"at the \w+ ({vocabulary}) ?\.", caption), caption

    # lambda_ce is the brake: weighting it 10x keeps the distribution closer to the unguided one.
    braked = guided_generate(
        lm, tok, classifier, input_ids=ids, config=GuidanceConfig(max_new_tokens=1, lambda_ce=2.0)
    )
    assert braked.kl_to_unguided[:, 0].mean() < guided.kl_to_unguided[:, 0].mean()


def test_weights_never_change_and_get_no_grad(word_world, one_thread):
    lm = word_world.lm
    lm.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    lm.train()
    guided_generate(
        lm,
        word_world.lm_tokenizer,
        word_world.classifier,
        input_ids=_prompts(word_world),
        config=GuidanceConfig(max_new_tokens=2),
    )
    assert lm.training  # mode restored
    lm.eval()
    after = lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in lm.parameters())


def test_batched_rows_decode_as_they_would_alone(word_world, one_thread):
    """Each row's perturbation follows its own gradient: a batch decodes like its rows one at a time."""
    ids = _prompts(word_world)[:3]
    config = GuidanceConfig(max_new_tokens=3)
    batched = guided_generate(
        word_world.lm, word_world.lm_tokenizer, word_world.classifier, input_ids=ids, config=config
    )
    for row in range(3):
        alone = guided_generate(
            word_world.lm, word_world.lm_tokenizer, word_world.classifier, input_ids=ids[row : row + 1], config=config
        )
        width = alone.sequences.shape[1]
        assert torch.equal(batched.sequences[row, :width], alone.sequences[0])


def test_left_padded_prompts(word_world, one_thread):
    tok = word_world.lm_tokenizer
    short = [tok.bos_token_id, *tok("at the dog", add_special_tokens=False)["input_ids"]]
    long = [tok.bos_token_id, *tok("at the dog sparkles . at the car", add_special_tokens=False)["input_ids"]]
    width = len(long)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(short)) + short, long])
    mask = (torch.arange(width)[None] >= torch.tensor([[width - len(short)], [0]])).long()
    config = GuidanceConfig(max_new_tokens=2, top_k=8)
    batched = guided_generate(
        word_world.lm, tok, word_world.classifier, input_ids=ids, attention_mask=mask, config=config
    )
    alone = guided_generate(word_world.lm, tok, word_world.classifier, input_ids=torch.tensor([short]), config=config)
    assert torch.equal(batched.sequences[0, : alone.sequences.shape[1]], alone.sequences[0])


@pytest.fixture(scope="module")
def tiny_captioner():
    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.models.captioning import build_tiny_whisper_captioner

    world = make_world(8, seed=3, clip_seconds=1.0)
    texts = [c for refs in world["references"] for c in refs]
    model, processor = build_tiny_whisper_captioner(texts, clip_seconds=1.0, seed=0)
    return model, processor, world


class _WordClassifier:
    """Audible log-odds +4 for texts whose last word is in `words`, -4 otherwise (a stand-in for a trained model)."""

    def __init__(self, words):
        self.words = set(words)

    def audible_log_odds(self, texts):
        return torch.tensor([4.0 if t.split()[-1:] and t.split()[-1] in self.words else -4.0 for t in texts])


def test_encoder_decoder_captioner_guidance(tiny_captioner, one_thread):
    from hfpref.models.captioning import decode, encode_audio

    model, processor, world = tiny_captioner
    from hfpref.data.audio import decode_audio

    arrays = [decode_audio(a, processor.feature_extractor.sampling_rate) for a in world["audio"][:2]]
    inputs = processor.feature_extractor(
        arrays, sampling_rate=processor.feature_extractor.sampling_rate, return_tensors="pt"
    )
    with torch.no_grad():
        encoded = encode_audio(model, inputs)
    # Unguided, it is exactly the captioner's greedy decode.
    plain = guided_generate(
        model, processor.tokenizer, None, encoder_outputs=encoded, config=GuidanceConfig(max_new_tokens=6)
    )
    assert torch.equal(plain.sequences, decode(model, encoded, do_sample=False, max_new_tokens=6).completion_ids)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    classifier = _WordClassifier(["dog", "barks", "rain", "bird"])
    guided = guided_generate(
        model,
        processor.tokenizer,
        classifier,
        encoder_outputs=encoded,
        config=GuidanceConfig(max_new_tokens=6, top_k=64),
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    steps = (~guided.finished[:, 1:]) & (guided.classifier_loss_before[:, 1:] > 0)
    assert steps.any()  # the first step's self-attention cache is empty; later steps are guided
    assert (guided.classifier_loss_after[:, 1:][steps] < guided.classifier_loss_before[:, 1:][steps]).all()
    assert (guided.kl_to_unguided[:, 1:][steps] > 0).all()
    captions = guided_captions(model, processor, arrays, classifier, config=GuidanceConfig(max_new_tokens=6, top_k=64))
    assert captions == [
        t.strip() for t in processor.tokenizer.batch_decode(guided.sequences, skip_special_tokens=True)
    ]
