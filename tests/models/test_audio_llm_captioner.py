"""
Audio-LLM captioners (Qwen2-Audio) through hfpref's caption functions and trainers, on random-weight models built from
Qwen2-Audio-7B-Instruct's config cut to tiny widths ([`build_tiny_qwen2_audio_captioner`]: token ids, audio token,
chat template, generation config and feature extractor as shipped) with a byte-level tokenizer trained here.
"""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

from hfpref.data.synthetic.audio_world import make_world
from hfpref.models.audio_llm import (
    QWEN2_AUDIO_CONFIG,
    QWEN2_AUDIO_FEATURE_EXTRACTOR,
    QWEN2_AUDIO_SPECIAL_TOKENS,
    AudioLLMCaptionCollator,
    build_tiny_qwen2_audio_captioner,
    language_model_lora_targets,
    position_ids_of,
)
from hfpref.models.captioning import (
    caption_collator,
    decode,
    encode_audio,
    generate_captions,
    processed_log_probs,
    rollout_logits,
)
from hfpref.trainers.caption_rl import CaptionRLConfig, CaptionRLTrainer
from hfpref.trainers.caption_sft import CaptionSFTConfig, CaptionSFTTrainer


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny models decoded token by token."""


@pytest.fixture(scope="module")
def world():
    return make_world(16, seed=3, clip_seconds=2.0)


@pytest.fixture(scope="module")
def shipped(world):
    """The tiny model with the checkpoint's ids, 30 s window and generation config."""
    return build_tiny_qwen2_audio_captioner(list(world["caption"]), seed=0)


@pytest.fixture
def scratch(world):
    """A from-scratch tiny captioner (compact vocabulary, 2 s window), as the quickstart trains."""
    return build_tiny_qwen2_audio_captioner(list(world["caption"]), seed=0, shipped_ids=False, clip_seconds=2)


def clips(*seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, int(16000 * s)).astype("float32") for s in seconds]


def test_the_tiny_model_keeps_the_checkpoints_config(shipped):
    model, processor = shipped
    config, text = model.config, model.config.text_config
    assert config.architectures == ["Qwen2AudioForConditionalGeneration"]
    assert config.audio_token_id == QWEN2_AUDIO_CONFIG["audio_token_index"] == 151646
    assert text.vocab_size == 156032 and text.rope_parameters["rope_theta"] == 10000 and text.rms_norm_eps == 1e-5
    assert config.audio_config.num_mel_bins == 128 and config.audio_config.max_source_positions == 1500
    extractor = processor.feature_extractor
    for name, value in QWEN2_AUDIO_FEATURE_EXTRACTOR.items():
        assert getattr(extractor, name) == value, name
    assert extractor.nb_max_frames == 3000
    tokenizer = processor.tokenizer
    for token, i in QWEN2_AUDIO_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == i
    # A trained vocabulary, not only the special tokens (what a slow tokenizer class loaded by name would give).
    assert len(tokenizer.get_vocab()) > 300 and tokenizer.eos_token_id == 151645
    gen = model.generation_config
    assert gen.eos_token_id == [151643, 151645] and gen.pad_token_id == 151643 and gen.repetition_penalty == 1.1
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Describe."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nDescribe.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_padded_prompts_merge_audio_as_the_model_does(shipped):
    """Clips of 1 s and 3 s: left-padded prompts with 25 and 75 audio tokens; the embeddings hfpref builds once per
    batch give the logits of the model's own forward on input ids and features."""
    model, processor = shipped
    batch = AudioLLMCaptionCollator(processor, caption_column=None).prompts(clips(1.0, 3.0))
    assert (batch["input_ids"] == 151646).sum(-1).tolist() == [25, 75]
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]  # left padding
    with torch.no_grad():
        prompt = encode_audio(model.eval(), batch)
        positions = position_ids_of(batch["attention_mask"])
        own = model(**batch, position_ids=positions).logits
        ours = model(
            inputs_embeds=prompt.inputs_embeds, attention_mask=batch["attention_mask"], position_ids=positions
        )
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.logits[real], own[real])
    # The control: features of the other clip change them (the audio is really read).
    swapped = {**batch, "input_features": batch["input_features"].flip(0)}
    with torch.no_grad():
        other = model(**swapped, position_ids=positions).logits
    assert not torch.allclose(other[0, -1], own[0, -1])


def test_rollout_log_probs_equal_generate_and_a_forward_recomputation(shipped):
    """
    The log-probs the RL trainers use (teacher-forced on the prompt embeddings, temperature and the sampler's support:
    the checkpoint's top-p 0.5) equal (a) what `generate` sampled under and (b) the model's forward on the sampled
    token ids with the audio features, at the positions `generate` gives a left-padded batch.
    """
    model, processor = shipped
    model.eval()
    model.generation_config.repetition_penalty = 1.0  # rescales logits: RL refuses it (see the test below)
    try:
        batch = AudioLLMCaptionCollator(processor, caption_column=None).prompts(clips(1.0, 2.5, seed=1))
        prompt = encode_audio(model, batch)
        torch.manual_seed(0)
        rollout = decode(model, prompt, do_sample=True, num_return_sequences=3, max_new_tokens=6, temperature=0.7)
        assert rollout.sequences.shape[0] == 6 and rollout.support is not None  # top-p masked tokens
        with torch.no_grad():
            logits = rollout_logits(model, prompt, rollout)
        log_probs, mask = processed_log_probs(logits, rollout, eos_ids=[151643, 151645])
        torch.testing.assert_close(log_probs * mask, rollout.sampling_log_probs * mask, atol=1e-4, rtol=1e-4)
        rows = rollout.sequences
        full_mask = torch.cat([batch["attention_mask"].repeat_interleave(3, 0), torch.ones_like(rows[:, 1:])], 1)
        full_mask = full_mask[:, : rows.shape[1]]
        features = {k: batch[k].repeat_interleave(3, 0) for k in ("input_features", "feature_attention_mask")}
        with torch.no_grad():
            forward = model(
                input_ids=rows, attention_mask=full_mask, position_ids=position_ids_of(full_mask), **features
            ).logits
        recomputed, _ = processed_log_probs(
            forward[:, rollout.prompt_length - 1 : -1].float(), rollout, eos_ids=[151643, 151645]
        )
        torch.testing.assert_close(log_probs, recomputed, atol=1e-4, rtol=1e-4)
    finally:
        model.generation_config.repetition_penalty = 1.1


def test_rl_refuses_the_checkpoints_repetition_penalty(shipped, world, tmp_path):
    model, processor = shipped
    args = CaptionRLConfig(output_dir=str(tmp_path), max_steps=1, report_to="none", save_strategy="no")
    with pytest.raises(ValueError, match="repetition_penalty=1.1"):
        CaptionRLTrainer(
            model, lambda completions, **_: [0.0] * len(completions), args, world, processing_class=processor
        )


def _rl_args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        num_samples=4,
        max_new_tokens=6,
        seed=0,
    )
    return CaptionRLConfig(**{**defaults, **overrides})


def test_the_audio_encoder_runs_once_per_batch(scratch, world, tmp_path):
    """K = 4 samples, the greedy baseline and the log-prob pass of a step all start from one encoder pass."""
    model, processor = scratch
    calls = []
    model.model.audio_tower.register_forward_hook(lambda *_: calls.append(1))
    trainer = CaptionRLTrainer(
        model,
        lambda completions, **_: [float(len(c)) for c in completions],
        _rl_args(tmp_path, loss_type="scst", kl_coef=0.0),
        train_dataset=world,
        processing_class=processor,
    )
    trainer.train()
    assert len(calls) == 2  # 2 steps


def test_sft_trains_only_the_caption_and_eos(scratch, world, tmp_path):
    """The SFT loss is the mean cross-entropy of the caption tokens and eos after the prompt, checked by hand."""
    model, processor = scratch
    collator = caption_collator(model, processor, caption_column="caption", max_caption_tokens=16)
    batch = collator([world[0], world[1]])
    tokenizer = processor.tokenizer
    for row, caption in enumerate(world["caption"][:2]):
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        expected = tokenizer(caption, add_special_tokens=False)["input_ids"][:15] + [tokenizer.eos_token_id]
        assert labelled == expected
    args = CaptionSFTConfig(output_dir=str(tmp_path), report_to="none", max_steps=1)
    trainer = CaptionSFTTrainer(model=model, args=args, data_collator=collator, processing_class=processor)
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        loss = trainer.compute_loss(model, inputs)
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    by_hand, count = 0.0, 0
    for row in range(2):
        for t in range(1, inputs["labels"].shape[1]):
            target = int(inputs["labels"][row, t])
            if target != -100:
                by_hand -= torch.log_softmax(logits[row, t - 1], -1)[target].item()
                count += 1
    assert loss.item() == pytest.approx(by_hand / count, rel=1e-5)


def test_lora_trains_the_llm_only_and_its_reference_is_the_base(scratch, world, tmp_path):
    from peft import LoraConfig

    model, processor = scratch
    tower = {n: p.detach().clone() for n, p in model.model.audio_tower.named_parameters()}
    projector = {n: p.detach().clone() for n, p in model.model.multi_modal_projector.named_parameters()}
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=language_model_lora_targets(model))
    trainer = CaptionRLTrainer(
        model,
        lambda completions, **_: [float(len(c)) for c in completions],
        _rl_args(tmp_path, loss_type="rloo", kl_coef=0.1, learning_rate=1e-2),
        train_dataset=world,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    trainer.train()
    kls = [e["kl"] for e in trainer.state.log_history if "kl" in e]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0  # the adapter-disabled base is the reference
    base = trainer.model.get_base_model()
    assert all(torch.equal(p, tower[n]) for n, p in base.model.audio_tower.named_parameters())
    assert all(torch.equal(p, projector[n]) for n, p in base.model.multi_modal_projector.named_parameters())


def test_saved_captioner_loads_with_its_class_and_auto_processor(scratch, world, tmp_path):
    model, processor = scratch
    audio = world["audio"][:3]
    before = generate_captions(model, processor, audio, max_new_tokens=8)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path)
    assert generate_captions(loaded, AutoProcessor.from_pretrained(tmp_path), audio, max_new_tokens=8) == before


def test_gradient_checkpointing_gives_the_same_gradient(scratch, world, tmp_path):
    model, processor = scratch
    batch = caption_collator(model, processor, caption_column="caption")([world[i] for i in range(3)])
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    args = CaptionSFTConfig(output_dir=str(tmp_path), report_to="none", max_steps=1)
    trainer = CaptionSFTTrainer(model=model, args=args, data_collator=None, processing_class=processor)
    grads = []
    for checkpointing in (False, True):
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad()
        trainer.compute_loss(model, inputs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.model.language_model.gradient_checkpointing
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4)


def learning_run(seed: int, condition: str, *, sft_steps: int = 100, rl_steps: int = 40) -> tuple[float, float]:
    """
    SFT a from-scratch tiny Qwen2-Audio captioner on a 48-clip synthetic world, then RLOO (4 samples per clip) with
    the world's oracle reward (audio-conditioned: it scores a caption against the clip's own events). The control,
    `condition="shuffled"`, hands the trainer the same rewards permuted across the batch's captions: the reward no
    longer belongs to the caption. The true reward of the sampled captions is logged either way (a second reward
    function with weight 0). Returns `(first, last)`: its mean over the first and the last 10 steps.
    """
    from hfpref.judges.oracle import get_oracle_reward

    world = make_world(48, seed=seed, clip_seconds=2.0)
    texts = list(world["caption"]) + [r for refs in world["references"] for r in refs]
    model, processor = build_tiny_qwen2_audio_captioner(texts, seed=seed, shipped_ids=False, clip_seconds=2)
    collator = caption_collator(model, processor, caption_column="caption")
    sft = CaptionSFTConfig(
        output_dir=f"/tmp/hfpref-alm-learn-{seed}",
        max_steps=sft_steps,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=seed,
    )
    CaptionSFTTrainer(model=model, args=sft, data_collator=collator, train_dataset=world).train()
    oracle, rng = get_oracle_reward(), np.random.default_rng(seed)

    def reward(completions, **columns):
        values = oracle(completions, **columns)
        return [values[i] for i in rng.permutation(len(values))] if condition == "shuffled" else values

    def true(completions, **columns):
        return oracle(completions, **columns)

    args = CaptionRLConfig(
        output_dir=f"/tmp/hfpref-alm-learn-{seed}",
        max_steps=rl_steps,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        loss_type="rloo",
        num_samples=4,
        kl_coef=0.0,
        max_new_tokens=20,
        reward_weights=[1.0, 0.0],
        seed=seed,
    )
    trainer = CaptionRLTrainer(model, [reward, true], args, train_dataset=world, processing_class=processor)
    trainer.train()
    logged = [e["rewards/true"] for e in trainer.state.log_history if "rewards/true" in e]
    return float(np.mean(logged[:10])), float(np.mean(logged[-10:]))


# The bar: the true reward of the sampled captions rises by 0.1 or more from the first 10 steps to the last 10
# (16 clips x 4 samples per step). Seeds 0, 1, 2: with the oracle reward it rises 0.104 -> 0.314, 0.218 -> 0.405,
# 0.126 -> 0.359 (+0.21 +- 0.02); with the rewards shuffled across captions it falls, 0.086 -> 0.056, 0.111 -> 0.071,
# 0.074 -> 0.001 (-0.05 +- 0.02: the policy drifts into captions the oracle scores 0). The logged mean's step-to-step
# spread is ~0.03, so 0.1 is beyond noise and half the smallest effect.
@pytest.mark.parametrize("condition", ["oracle", "shuffled"], ids=["reward", "shuffled-reward-control"])
def test_rl_raises_the_audio_conditioned_reward_and_a_shuffled_reward_does_not(condition):
    first, last = learning_run(0, condition)
    assert (last - first >= 0.1) == (condition == "oracle"), (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_learning_claim_holds_on_other_seeds(seed):
    for condition in ("oracle", "shuffled"):
        first, last = learning_run(seed, condition)
        assert (last - first >= 0.1) == (condition == "oracle"), (seed, condition, first, last)


def test_prompt_only_tokens_are_never_sampled(shipped):
    """`prepare_captioner` suppresses `<|AUDIO|>`, its delimiters and `<|im_start|>` (never eos), and sampling
    with a policy biased towards the audio token draws none of them (unsuppressed, 73 % of its tokens are
    `<|AUDIO|>`)."""
    from hfpref.models.captioning import prepare_captioner

    model, processor = shipped
    before = list(model.generation_config.suppress_tokens or [])
    try:
        prepare_captioner(model, processor.tokenizer)
        assert set(model.generation_config.suppress_tokens) == {151646, 151647, 151648, 151644}
        model.generation_config.repetition_penalty = 1.0
        with torch.no_grad():
            model.lm_head.weight[151646] += 5 * model.lm_head.weight[151646].sign()  # the audio token favoured
            batch = AudioLLMCaptionCollator(processor, caption_column=None).prompts(clips(1.0))
            torch.manual_seed(0)
            rollout = decode(model.eval(), encode_audio(model, batch), do_sample=True, num_return_sequences=8,
                             max_new_tokens=6)  # fmt: skip
            model.lm_head.weight[151646] -= 5 * model.lm_head.weight[151646].sign()
        assert not torch.isin(rollout.completion_ids, torch.tensor([151644, 151646, 151647, 151648])).any()
    finally:
        model.generation_config.suppress_tokens = before or None
        model.generation_config.repetition_penalty = 1.1


def test_only_audio_llms_are_taken_for_one(shipped):
    """CLAP also has audio and text configs and no encoder-decoder flag: no audio token in its text, not an audio LLM."""
    from hfpref.encoders.clap import build_tiny_clap
    from hfpref.models.audio_llm import is_audio_llm
    from hfpref.models.captioning import build_tiny_whisper_captioner

    clap, _ = build_tiny_clap(["a dog barks", "rain falls"] * 8, seed=0)
    whisper, _ = build_tiny_whisper_captioner(["a dog barks", "rain falls"] * 8)
    assert is_audio_llm(shipped[0]) and not is_audio_llm(clap) and not is_audio_llm(whisper)
