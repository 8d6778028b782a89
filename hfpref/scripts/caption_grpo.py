"""
GRPO fine-tuning of a decoder-only audio captioner whose audio arrives as speech tokens in the LLM's vocabulary
(https://huggingface.co/papers/2402.03300, as AlignCap feeds speech to an LLM: https://huggingface.co/papers/2410.19134),
with TRL's `GRPOTrainer` and hfpref rewards (a CLAP reward model, CLAP score, CIDEr-D, or the synthetic world's oracle).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_grpo.py \
    --config recipes/caption_grpo/config_synthetic.yaml
"""

import logging
import os

from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig

from hfpref.encoders.audio_tokens import add_audio_tokens, audio_token_prompts
from hfpref.encoders.dataset import add_embeddings
from hfpref.encoders.speech_tokens import build_tiny_speech_llm, speech_lora_config
from hfpref.hub.cards import render_model_card
from hfpref.judges.oracle import get_oracle_reward
from hfpref.rewards.functions import (
    build_reward_funcs,
)
from hfpref.scripts.utils import (
    CaptionGRPOScriptArguments,
    HfprefParser,
    expected_length_for,
    load_caption_splits,
    resolve_reward_model,
    save_tiny_llm,
)
from hfpref.trainers.caption_grpo.caption_grpo_config import CaptionGRPOConfig
from hfpref.trainers.caption_grpo.caption_grpo_trainer import CaptionGRPOTrainer
from hfpref.trainers.caption_grpo.caption_grpo_utils import audio_tokenizer_for
from hfpref.utils.checks import check_finite_training
from hfpref.utils.distributed import peft_before_trl
from hfpref.utils.safe_loading import load_pretrained, refuse_remote_code


logger = logging.getLogger(__name__)

ORACLE = "oracle"


def caption_reward_funcs(
    script_args: CaptionGRPOScriptArguments, train, output_dir: str, *, reward_model_name_or_path: str | None = None
):
    """
    The rewards named in `script_args.reward_funcs`, in order: `"oracle"` (the synthetic world's judge, which lives
    above the rewards' registry) or a name of `REWARD_FUNCTIONS`; the length and repetition penalties wrap the first.
    The reward model is `reward_model_name_or_path` when given (a tiny one the script built), else the script's.

    Returns:
        `tuple[list[Callable], ClapEmbedder | None]`, as [`~hfpref.rewards.functions.build_reward_funcs`].
    """
    names = list(script_args.reward_funcs)
    if ORACLE in names and "events" not in train.column_names:
        raise ValueError(
            f"the 'oracle' reward reads each clip's true events from an `events` column (the synthetic world's); "
            f"the data has {train.column_names}"
        )
    return build_reward_funcs(
        names,
        reward_model_name_or_path=reward_model_name_or_path or script_args.reward_model_name_or_path,
        clap_model_name_or_path=script_args.clap_model_name_or_path,
        embedding_cache_dir=script_args.embedding_cache_dir or os.path.join(output_dir, "embedding-cache"),
        length_penalty_alpha=script_args.length_penalty_alpha,
        expected_length=expected_length_for(script_args, train),
        repetition_penalty=script_args.reward_repetition_penalty,
        references_corpus=train["references"] if "references" in train.column_names else None,
        extra={ORACLE: get_oracle_reward},
    )


def usage_snippet(repo_id: str, args: CaptionGRPOConfig, n_codes: int) -> str:
    """The card's quick start: speech tokens of a clip, rendered as the prompt the captioner was trained on."""
    if args.speech_tokens == "frame_band":
        source = "from hfpref.trainers.caption_grpo import frame_band_tokens"
        codes = (
            f"frame_band_tokens(waveform, {args.sampling_rate}, n_bands={n_codes}, "
            f"frames_per_second={args.frames_per_second})"
        )
    else:
        source = "from hfpref.encoders.speech_tokens import SpeechTokenEncoder"
        codes = f"SpeechTokenEncoder.from_pretrained({args.speech_tokenizer_path!r})(waveform, {args.sampling_rate})"
    instruction = f" + {' ' + args.instruction!r}" if args.instruction else ""
    return f"""
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfpref.data.audio import decode_audio
from hfpref.encoders.audio_tokens import render_speech_tokens
{source}

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}")

waveform = decode_audio("clip.wav", {args.sampling_rate})  # mono, at the rate the speech tokens were made at
codes = {codes}
inputs = tokenizer(render_speech_tokens(codes){instruction}, return_tensors="pt")
caption_ids = model.generate(**inputs, max_new_tokens=30)
print(tokenizer.decode(caption_ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
"""


def main(script_args: CaptionGRPOScriptArguments, training_args: CaptionGRPOConfig, model_args: ModelConfig):
    set_seed(training_args.seed)
    refuse_remote_code((training_args, model_args), model_args.model_name_or_path)
    if bool(model_args.model_name_or_path) == script_args.tiny_llm:
        raise ValueError(
            "give exactly one model: model_name_or_path (a causal LM and its tokenizer) or tiny_llm: true"
        )
    generations = training_args.num_generations_eval or training_args.num_generations
    if training_args.per_device_eval_batch_size * training_args.world_size % generations:
        # TRL checks this only with eval_strategy set; the script evaluates on the test split after training anyway.
        raise ValueError(
            f"per_device_eval_batch_size={training_args.per_device_eval_batch_size} times "
            f"{training_args.world_size} process(es) must be a multiple of the {generations} generations per clip"
        )
    # Without peft, TRL reloads the KL reference from the policy's name: a model built in memory has none, and a
    # checkpoint without the speech tokens would come back without them.
    needs_reference = training_args.beta != 0 and not model_args.use_peft
    if needs_reference and script_args.tiny_llm:
        raise ValueError(
            f"beta={training_args.beta} needs a KL reference, which TRL reloads by name, and tiny_llm builds the model "
            "in memory: set beta: 0, or use_peft: true (the reference is then the adapter-disabled policy)"
        )
    tokenize_audio, n_codes = audio_tokenizer_for(training_args)
    tokenizer = None
    if not script_args.tiny_llm:
        tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, revision=model_args.model_revision)
        vocabulary = len(tokenizer)
        add_audio_tokens(tokenizer, None, n_codes)
        if needs_reference and len(tokenizer) > vocabulary:
            raise ValueError(
                f"{model_args.model_name_or_path} has no speech tokens and beta={training_args.beta}: TRL would reload "
                "the KL reference from there without them. Save the captioner with its speech tokens first "
                "(hfpref.encoders.audio_tokens.add_audio_tokens, then save_pretrained), set use_peft: true (the "
                "reference is then the adapter-disabled policy), or set beta: 0"
            )

    splits = load_caption_splits(script_args)
    splits = type(splits)(
        {
            name: audio_token_prompts(
                split,
                tokenize_audio,
                audio_column=training_args.audio_column,
                instruction=training_args.instruction,
                sampling_rate=training_args.sampling_rate,
            )
            for name, split in splits.items()
        }
    )
    train = splits["train"]
    captions = list(train[script_args.caption_column])
    references = [r for refs in train["references"] for r in refs] if "references" in train.column_names else []
    reward_model = resolve_reward_model(script_args, training_args, captions + references)
    reward_funcs, embedder = caption_reward_funcs(
        script_args, train, training_args.output_dir, reward_model_name_or_path=reward_model
    )
    if embedder is not None:  # CLAP is frozen: embed each clip once, rewards read `audio_embedding`
        splits = type(splits)({k: add_embeddings(v, embedder, text_columns=[]) for k, v in splits.items()})

    if script_args.tiny_llm:
        texts = captions + [training_args.instruction] + references
        model, tokenizer = build_tiny_speech_llm(texts, n_codes, seed=training_args.seed)
    else:
        model = load_pretrained(
            AutoModelForCausalLM, model_args.model_name_or_path, revision=model_args.model_revision,
            dtype=model_args.dtype,
        )  # fmt: skip
    speech_ids = add_audio_tokens(tokenizer, model, n_codes)  # grows the embedding table when it lacks the tokens
    peft_config = None
    if model_args.use_peft:
        if script_args.tiny_llm:  # the adapter's base must load from a folder
            save_tiny_llm(model, tokenizer, training_args)
        peft_config = speech_lora_config(
            speech_ids,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules or ("q_proj", "k_proj", "v_proj", "o_proj"),
        )
    model, peft_config = peft_before_trl(model, peft_config)
    trainer = CaptionGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["test"],
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    check_finite_training(trainer.model, trainer.state.log_history, what=training_args.output_dir)
    trainer.save_model(training_args.output_dir)

    dataset = script_args.dataset_name or f"synthetic world ({script_args.synthetic_clips} clips)"
    # The Hub id, else the folder's name (as the other recipes' cards): never the training machine's local path.
    repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    card = render_model_card(
        repo_id=repo_id,
        method="caption_grpo",
        variant="grpo",
        base_model=model_args.model_name_or_path,  # None for a tiny LLM
        datasets=dataset,
        reward_model=reward_model,
        training_args={
            "rewards": ", ".join(script_args.reward_funcs),
            "speech_tokens": f"{training_args.speech_tokens} ({n_codes} codes)",
            "instruction": training_args.instruction,
            "num_generations": training_args.num_generations,
            "beta": training_args.beta,
            "scale_rewards": training_args.scale_rewards,
            "learning_rate": training_args.learning_rate,
            "max_steps": training_args.max_steps if training_args.max_steps > 0 else None,
            "lora_r": model_args.lora_r if model_args.use_peft else None,
        },
        metrics={
            k: round(float(v), 4)
            for k, v in metrics.items()
            if k in ("eval_reward", "eval_reward_std", "eval_completions/mean_length")
            or (k.startswith("eval_rewards/") and k.endswith("/mean"))
        },
        description=(
            f"A decoder-only audio captioner: the audio reaches the causal LM as {n_codes} speech tokens "
            f"(`{training_args.speech_tokens}`, `<st_0>` ... `<st_{n_codes - 1}>` in its vocabulary) followed by the "
            "instruction, and the caption is the LM's continuation."
        ),
        usage=usage_snippet(repo_id, training_args, n_codes),
        license=training_args.license,
    )
    if trainer.is_world_process_zero():
        card.save(os.path.join(training_args.output_dir, "README.md"))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset)  # TRL writes its own README.md over ours, so ours follows it
        if trainer.is_world_process_zero():
            card.save(os.path.join(training_args.output_dir, "README.md"))
            card.push_to_hub(trainer.hub_model_id)
    return trainer, metrics


def make_parser() -> HfprefParser:
    return HfprefParser((CaptionGRPOScriptArguments, CaptionGRPOConfig, ModelConfig), method="caption_grpo")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
