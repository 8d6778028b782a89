"""A decoder-only captioner whose audio arrives as speech tokens trains with TRL's GRPOTrainer and RLOOTrainer."""

import functools
import math

import numpy as np
import pytest
import torch
from datasets import Audio, Dataset
from peft import LoraConfig, PeftModel
from tokenizers import Tokenizer, processors
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer

from hfpref.data.audio import decode_audio
from hfpref.data.synthetic.audio_world import make_caption_variants, make_world
from hfpref.encoders.clap import train_clap_tokenizer
from hfpref.judges.oracle import get_oracle_reward, oracle_score
from hfpref.rewards.functions import with_length_penalty
from hfpref.trainers.caption_grpo import CaptionGRPOConfig, CaptionGRPOTrainer
from hfpref.trainers.caption_grpo.caption_grpo_utils import (
    add_audio_tokens,
    audio_token_prompts,
    audio_tokenizer_for,
    frame_band_tokens,
    render_speech_tokens,
    speech_token,
)


N_CODES = 16
SAMPLING_RATE = 16000
INSTRUCTION = "Describe the sound."
TRAINERS = {"grpo": (GRPOTrainer, GRPOConfig), "rloo": (RLOOTrainer, RLOOConfig)}


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here decodes token by token with tiny models."""


@pytest.fixture(scope="module")
def world():
    return make_world(16, seed=0, clip_seconds=1.0)


def llama_style_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts` that, like Llama's, prepends `<s>` and appends nothing to a prompt."""
    backend = Tokenizer.from_str(train_clap_tokenizer(texts, vocab_size=400).backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory, world):
    """A random 2-layer Llama with the speech tokens in its vocabulary, saved with its tokenizer."""
    tokenizer = llama_style_tokenizer([c for refs in world["references"] for c in refs] + [INSTRUCTION])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    add_audio_tokens(tokenizer, model, N_CODES)
    path = tmp_path_factory.mktemp("tiny-llama-captioner")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(captioner_dir):
    return AutoTokenizer.from_pretrained(captioner_dir)


@pytest.fixture(scope="module")
def audio_ids(tokenizer):
    return tokenizer.convert_tokens_to_ids([speech_token(code) for code in range(N_CODES)])


@pytest.fixture(scope="module")
def train_dataset(world):
    return audio_token_prompts(world, frame_band_tokens, instruction=INSTRUCTION, sampling_rate=SAMPLING_RATE)


def recording(reward):
    """Wraps a reward so that it keeps the keyword arguments of every call in `.calls`."""
    calls = []

    @functools.wraps(reward)
    def wrapped(completions, **kwargs):
        calls.append({"completions": completions, **kwargs})
        return reward(completions, **kwargs)

    wrapped.calls = calls
    return wrapped


def penalised_oracle():
    # L_exp = 2 words rather than the references' mean (~5): the random policy writes 2-3 words in 12 tokens, so
    # this makes the penalty bite and the rewards of a group differ, which is what GRPO/RLOO learn from.
    return with_length_penalty(get_oracle_reward(), expected_length=2, alpha=1.0)


# Arguments every trainer here runs with: CPU, fp32, no checkpoints, a log line per step.
CPU_ARGS = dict(
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,  # TRL turns it on by default; it only slows a 2-layer model down
    disable_tqdm=True,
    logging_steps=1,
    seed=0,
)


def _config(name, tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        max_steps=3,
        learning_rate=1e-2,
        beta=0.0,  # RLOO's default (0.05) loads a reference model by name; see test_grpo_with_kl_to_the_saved_reference
        **CPU_ARGS,
    )
    return TRAINERS[name][1](**{**defaults, **kw})


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}


def _speech_token_ids_seen(reward, tokenizer, audio_ids):
    """The speech-token ids of the prompts trained on: the rows of the embedding table that got gradients."""
    ids = {i for call in reward.calls for prompt in call["prompts"] for i in tokenizer(prompt)["input_ids"]}
    return sorted(ids & set(audio_ids))


def _all_rows(model):
    """Every row of the input embedding table as the model sees it (through peft's wrappers, if any)."""
    return model.get_input_embeddings()(torch.arange(model.config.vocab_size)).detach()


def test_speech_tokens_are_single_vocabulary_entries(tokenizer, audio_ids, captioner_dir):
    model = LlamaForCausalLM.from_pretrained(captioner_dir)
    assert audio_ids == list(range(len(tokenizer) - N_CODES, len(tokenizer)))
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.get_output_embeddings().out_features == len(tokenizer)
    ids = tokenizer(render_speech_tokens([3, 12, 12]) + " " + INSTRUCTION)["input_ids"]
    assert ids[:4] == [tokenizer.bos_token_id, audio_ids[3], audio_ids[12], audio_ids[12]]
    assert ids[-1] != tokenizer.eos_token_id  # a prompt must not end the sequence before the caption
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<st_3><st_12><st_12> Describe the sound."


def test_add_audio_tokens_is_idempotent_and_new_rows_train(world):
    tokenizer = llama_style_tokenizer(world["caption"])
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    n = len(tokenizer)
    ids = add_audio_tokens(tokenizer, model, 8)
    assert ids == list(range(n, n + 8)) and len(tokenizer) == n + 8
    assert add_audio_tokens(tokenizer, model, 8) == ids and len(tokenizer) == n + 8
    embeddings = model.get_input_embeddings()
    assert embeddings.num_embeddings == n + 8 and embeddings.weight.requires_grad
    assert torch.isfinite(embeddings.weight[ids]).all()
    model(input_ids=torch.tensor([ids])).logits.sum().backward()
    assert (embeddings.weight.grad[ids].abs().sum(-1) > 0).all()
    assert add_audio_tokens(tokenizer, None, 10)[-2:] == [n + 8, n + 9]  # tokenizer only
    with pytest.raises(ValueError, match="n_codes"):
        add_audio_tokens(tokenizer, None, 0)


def test_frame_band_tokens_finds_the_band_of_a_tone():
    edges = np.geomspace(40.0, SAMPLING_RATE / 2, N_CODES + 1)
    t = np.arange(int(0.35 * SAMPLING_RATE)) / SAMPLING_RATE
    for freq in [60.0, 440.0, 1000.0, 2500.0, 6000.0]:
        codes = frame_band_tokens(np.sin(2 * np.pi * freq * t), SAMPLING_RATE)
        assert codes.dtype == np.int64 and len(codes) == 4  # ceil(0.35 s * 10 frames/s)
        assert (codes[:3] == np.searchsorted(edges, freq) - 1).all(), freq
    noise = np.random.default_rng(0).standard_normal(SAMPLING_RATE)
    np.testing.assert_array_equal(frame_band_tokens(noise, SAMPLING_RATE), frame_band_tokens(noise, SAMPLING_RATE))
    assert frame_band_tokens(noise, SAMPLING_RATE, n_bands=4, frames_per_second=50).max() < 4
    with pytest.raises(ValueError, match="1-D"):
        frame_band_tokens(np.zeros((2, 100)), SAMPLING_RATE)
    with pytest.raises(ValueError, match="min_frequency"):
        frame_band_tokens(noise, 8000, min_frequency=5000)


def test_audio_tokenizer_for_reads_the_config(tmp_path):
    from hfpref.encoders.speech_tokens import build_speech_tokenizer, randomize_codebooks, save_speech_tokenizer

    tokenize_audio, n_codes = audio_tokenizer_for(CaptionGRPOConfig(output_dir=str(tmp_path), n_codes=8, **CPU_ARGS))
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLING_RATE) / SAMPLING_RATE)
    assert n_codes == 8
    np.testing.assert_array_equal(tokenize_audio(tone, SAMPLING_RATE), frame_band_tokens(tone, SAMPLING_RATE, 8))

    path = save_speech_tokenizer(randomize_codebooks(build_speech_tokenizer(seed=0)), tmp_path / "speech_tokenizer")
    args = CaptionGRPOConfig(
        output_dir=str(tmp_path), speech_tokens="speechtokenizer", speech_tokenizer_path=str(path), **CPU_ARGS
    )
    tokenize_audio, n_codes = audio_tokenizer_for(args)
    codes = tokenize_audio(tone, SAMPLING_RATE)
    assert n_codes == 64 and len(codes) == 50 and codes.max() < 64  # the tiny SpeechTokenizer: 64 codes, 50 per second
    args.n_codes = 1024
    with pytest.raises(ValueError, match="n_codes=1024 but the SpeechTokenizer .* has 64 codes"):
        audio_tokenizer_for(args)


def test_audio_token_prompts_keep_every_column(world, train_dataset):
    assert train_dataset.column_names == world.column_names + ["prompt"]
    assert train_dataset.features["audio"] == Audio(decode=False, sampling_rate=SAMPLING_RATE)
    row = train_dataset[0]
    codes = frame_band_tokens(decode_audio(row["audio"], SAMPLING_RATE), SAMPLING_RATE)
    assert len(codes) == 10  # 1 s clips, 10 frames per second
    assert row["prompt"] == render_speech_tokens(codes) + " " + INSTRUCTION
    assert len({p for p in train_dataset["prompt"]}) == len(world)  # the clips sound different
    with pytest.raises(ValueError, match="already has a `prompt`"):
        audio_token_prompts(train_dataset, frame_band_tokens)
    with pytest.raises(ValueError, match="audio_column='speech'"):
        audio_token_prompts(world, frame_band_tokens, audio_column="speech")


def test_oracle_reward_needs_one_event_list_per_completion():
    with pytest.raises(ValueError, match="1 `events` rows for 2 completions"):
        get_oracle_reward()(["a bell rings", "a dog barks"], events=[["bell"]])


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_trl_trainer_runs_with_hfpref_rewards(
    name, tmp_path, captioner_dir, tokenizer, audio_ids, train_dataset, world
):
    model = LlamaForCausalLM.from_pretrained(captioner_dir)
    oracle = recording(get_oracle_reward())
    shaped = penalised_oracle()
    trainer_cls = TRAINERS[name][0]
    trainer = trainer_cls(
        model=model,
        reward_funcs=[oracle, shaped],
        args=_config(name, tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    before = _snapshot(trainer.model)
    rows_before = _all_rows(trainer.model)
    trainer.train()

    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 3
    for key in ["loss", "reward", "rewards/oracle_reward/mean", "rewards/oracle_reward_length_penalty/mean"]:
        assert all(math.isfinite(e[key]) for e in logged), key
    assert _changed(trainer.model, before) == set(before)  # every parameter tensor, audio-token rows included
    moved = (_all_rows(trainer.model) - rows_before).abs().sum(-1) > 0
    assert moved[_speech_token_ids_seen(oracle, tokenizer, audio_ids)].all()

    # Every extra column reached the reward, row-aligned with the prompt each completion answered.
    assert len(oracle.calls) == 3
    call = oracle.calls[0]
    assert {"audio", "events", "references", "clip_id", "prompts", "completion_ids"} <= set(call)
    assert len(call["completions"]) == len(call["audio"]) == len(call["events"]) == 8
    by_clip = {row["clip_id"]: row for row in world}
    for audio, events, clip_id, prompt in zip(call["audio"], call["events"], call["clip_id"], call["prompts"]):
        assert events == by_clip[clip_id]["events"]
        codes = frame_band_tokens(decode_audio(audio, SAMPLING_RATE), SAMPLING_RATE)
        assert prompt == render_speech_tokens(codes) + " " + INSTRUCTION


def test_grpo_with_kl_to_the_saved_reference(tmp_path, captioner_dir, train_dataset):
    # beta > 0 makes TRL load the reference by name, so the policy is given as the saved directory; TRL loads the
    # tokenizer from there too. An in-memory model built from a config has no name, and the reload fails.
    trainer = GRPOTrainer(
        model=captioner_dir,
        reward_funcs=penalised_oracle(),
        args=_config("grpo", tmp_path, beta=0.1),
        train_dataset=train_dataset,
    )
    reference = LlamaForCausalLM.from_pretrained(captioner_dir)
    trainer.train()
    kl = [e["kl"] for e in trainer.state.log_history if "kl" in e]
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert all(math.isfinite(k) for k in kl) and kl[-1] > 0
    frozen = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in reference.named_parameters())
    assert not all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("how", ["trainable_token_indices", "modules_to_save"])
def test_lora_trains_the_audio_token_rows(how, tmp_path, captioner_dir, tokenizer, audio_ids, train_dataset):
    if how == "trainable_token_indices":  # only the speech-token rows train, as a small delta saved with the adapter
        extra = {"trainable_token_indices": {"embed_tokens": audio_ids}}
    else:  # the whole embedding table trains and is saved with the adapter
        extra = {"modules_to_save": ["embed_tokens"]}
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], **extra)
    reward = recording(penalised_oracle())
    trainer = GRPOTrainer(
        model=captioner_dir,
        reward_funcs=reward,
        # With LoRA the reference is the model with the adapter disabled, which also disables the token delta.
        args=_config("grpo", tmp_path, beta=0.1),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    model = trainer.model
    assert isinstance(model, PeftModel) and trainer.ref_model is None
    before = _snapshot(model)
    embedding_names = [n for n in before if "embed_tokens" in n]
    assert len(embedding_names) == 1
    assert all("lora_" in n for n in before if n not in embedding_names)
    rows_before = _all_rows(model)
    trainer.train()

    assert _changed(model, before) == set(before)
    moved = (_all_rows(model) - rows_before).abs().sum(-1) > 0
    in_prompts = _speech_token_ids_seen(reward, tokenizer, audio_ids)
    assert moved[in_prompts].all()
    if how == "trainable_token_indices":
        assert not moved[: min(audio_ids)].any()  # the text vocabulary is untouched
    with model.disable_adapter():
        torch.testing.assert_close(_all_rows(model), rows_before, rtol=0, atol=0)
    assert all(math.isfinite(e["kl"]) for e in trainer.state.log_history if "kl" in e)

    trainer.save_model(str(tmp_path / "adapter"))
    reloaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(captioner_dir), str(tmp_path / "adapter"))
    torch.testing.assert_close(_all_rows(reloaded)[in_prompts], _all_rows(model)[in_prompts])


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_length_penalty_alone_raises_the_mean_reward(name, tmp_path, captioner_dir, tokenizer, train_dataset):
    reward = recording(penalised_oracle())
    trainer = TRAINERS[name][0](
        model=LlamaForCausalLM.from_pretrained(captioner_dir),
        reward_funcs=reward,
        args=_config(name, tmp_path, max_steps=40, learning_rate=2e-2),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == 40
    # The random policy's 12-token completions hold about 3 words, so the length penalty (L_exp = 2) gives a mean
    # reward near -0.5; it learns to avoid word-starting tokens and the mean reaches about 0 by the last steps
    # (seeds 0-2, both trainers: -0.40..-0.53 over the first five steps, -0.03..0.00 over the last five). A
    # five-step mean of an 8-completion batch has a standard deviation near 0.05, so +0.2 is about 4 of them.
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.2
    words = [np.mean([len(c.split()) for c in call["completions"]]) for call in reward.calls]
    assert np.mean(words[-5:]) < np.mean(words[:5])


def greedy_oracle_score(model, tokenizer, clips) -> float:
    """Mean oracle score of the greedy captions of `clips`."""
    model.eval()
    inputs = tokenizer(list(clips["prompt"]), return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    captions = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train()
    return float(np.mean([oracle_score(c, e) for c, e in zip(captions, clips["events"])]))


def test_grpo_with_the_oracle_reward_improves_a_warm_started_captioner(
    tmp_path, captioner_dir, tokenizer, train_dataset
):
    # Warm start: supervised fine-tuning on noisy captions of 8 clips, the true one and its degraded variants
    # (hallucinated, omitted, swapped or substituted events), so the captioner samples good and bad captions alike.
    # The oracle reward, which reads each clip's true events from the `events` column, then has to tell them apart.
    clips = train_dataset.select(range(8))
    rng = np.random.default_rng(0)
    noisy = [
        {"prompt": prompt, "completion": " " + caption}
        for prompt, events in zip(clips["prompt"], clips["events"])
        for _ in range(3)
        for caption in make_caption_variants(events, rng).values()
    ]
    model = LlamaForCausalLM.from_pretrained(captioner_dir)
    sft_args = SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=150, per_device_train_batch_size=16, learning_rate=5e-3, **CPU_ARGS
    )
    SFTTrainer(model=model, args=sft_args, train_dataset=Dataset.from_list(noisy), processing_class=tokenizer).train()
    greedy_before = greedy_oracle_score(model, tokenizer, clips)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=get_oracle_reward(),
        args=_config(
            "grpo",
            tmp_path,
            per_device_train_batch_size=16,
            num_generations=8,
            max_completion_length=24,
            temperature=0.7,
            max_steps=80,
            learning_rate=1e-3,
        ),
        train_dataset=clips,
        processing_class=tokenizer,
    )
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    greedy_after = greedy_oracle_score(trainer.model, tokenizer, clips)
    # Five seeds of this recipe: the sampled reward rises from 0.52..0.69 over the first ten steps to 0.67..0.83 over
    # the last ten, by +0.137..+0.152; half the smallest rise leaves room for other hardware's numerics. The greedy
    # captions' score moved by +0.00..+0.14 (seed 0: 0.825 -> 0.827), so it is only checked not to collapse.
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.07
    assert greedy_after > greedy_before - 0.05


@pytest.mark.parametrize("disable", [True, False], ids=["default", "dropout-kept-control"])
def test_caption_grpo_scores_without_dropout_by_default(disable, tmp_path, captioner_dir, tokenizer, train_dataset):
    """
    TRL's `GRPOConfig.disable_dropout` defaults to False, and its switch zeroes only `nn.Dropout` modules, not the
    float `attention_dropout` Llama applies functionally. hfpref's config turns it on and its trainer zeroes those
    too: a captioner with attention dropout 0.5 then gives the same log-probabilities in train mode (the loss pass)
    twice and as in eval mode (the sampler); the control keeps dropout, and two train-mode passes differ.
    """
    model = LlamaForCausalLM.from_pretrained(captioner_dir, attention_dropout=0.5)
    kw = {} if disable else {"disable_dropout": False}
    args = CaptionGRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, beta=0.0, **kw, **CPU_ARGS
    )
    assert args.disable_dropout is disable
    trainer = CaptionGRPOTrainer(
        model=model,
        reward_funcs=penalised_oracle(),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    ids = tokenizer(train_dataset[0]["prompt"], return_tensors="pt")["input_ids"]
    trainer.model.eval()
    with torch.no_grad():
        sampler = torch.log_softmax(trainer.model(ids).logits, -1)
        trainer.model.train()
        torch.manual_seed(0)
        first = torch.log_softmax(trainer.model(ids).logits, -1)
        second = torch.log_softmax(trainer.model(ids).logits, -1)
    if disable:
        torch.testing.assert_close(first, sampler, rtol=0, atol=1e-6)
        torch.testing.assert_close(second, sampler, rtol=0, atol=1e-6)
    else:
        assert (first - second).abs().max() > 1e-3


def test_grpo_train_resumes_past_a_torn_checkpoint_and_refuses_a_diverged_log(tmp_path, monkeypatch):
    """CaptionGRPOTrainer.train checks as BaseTrainer.train does: TRL's train gets the newest complete checkpoint."""
    from safetensors.torch import save_file

    from hfpref.trainers.caption_grpo.caption_grpo_trainer import CaptionGRPOTrainer
    from hfpref.utils.checks import DivergedTrainingError

    complete, torn = tmp_path / "checkpoint-2", tmp_path / "checkpoint-4"
    for checkpoint in (complete, torn):
        checkpoint.mkdir()
        save_file({"w": torch.zeros(64)}, str(checkpoint / "model.safetensors"))
        (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    weights = torn / "model.safetensors"  # cut in half, as a kill leaves it
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    seen = []
    monkeypatch.setattr(
        GRPOTrainer, "train", lambda self, resume_from_checkpoint=None, **kw: seen.append(resume_from_checkpoint)
    )
    trainer = CaptionGRPOTrainer.__new__(CaptionGRPOTrainer)
    trainer.args = type("Args", (), {"output_dir": str(tmp_path)})()
    trainer.state = type("State", (), {"log_history": [{"loss": 0.5, "step": 1}, {"loss": 0.4, "step": 2}]})()
    trainer.train(resume_from_checkpoint=True)
    assert seen == [str(complete)]  # not the torn checkpoint-4
    trainer.state.log_history.append({"loss": 1e4, "step": 3})
    with pytest.raises(DivergedTrainingError):
        trainer.train()
