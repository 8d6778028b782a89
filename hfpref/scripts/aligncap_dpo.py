"""
AlignCap PO-regularization: DPO with LoRA (reference = adapter disabled) on judged pairs of the KD student's
beam-search captions (https://huggingface.co/papers/2410.19134, section 3.2).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/aligncap_dpo.py \
    --config recipes/aligncap_dpo/config_dpo.yaml
"""

import json
import logging
import os

from transformers import set_seed
from trl import ModelConfig

from hfpref.data.loading import load_any_dataset
from hfpref.data.synthetic.speech_world import speech_emotion_splits
from hfpref.encoders.audio_tokens import audio_token_prompts
from hfpref.encoders.speech_tokens import (
    add_speech_tokens,
    build_tiny_speech_llm,
    save_speech_tokenizer,
    speech_encoder_for,
    speech_token_ids,
)
from hfpref.judges.pairs import build_preference_pairs
from hfpref.judges.registry import get_judge
from hfpref.prompts.emotion_clues import teacher_prompt
from hfpref.scripts.aligncap_kd import (
    aligncap_lora_config,
    check_aligncap_model_args,
    load_aligncap_llm,
    set_attn_implementation,
)
from hfpref.scripts.utils import (
    AlignCapDPOScriptArguments,
    HfprefParser,
    resolve_reward_model,
    save_on_main_process,
    save_tiny_llm,
    write_card_and_push,
)
from hfpref.trainers.aligncap_dpo.aligncap_dpo_config import AlignCapDPOConfig
from hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer import aligncap_dpo_trainer, greedy_captions, judge_preference
from hfpref.utils.safe_loading import check_pretrained_path, refuse_remote_code


logger = logging.getLogger(__name__)


def main(
    script_args: AlignCapDPOScriptArguments,
    training_args: AlignCapDPOConfig,
    model_args: ModelConfig,
):
    set_seed(training_args.seed)
    refuse_remote_code((training_args, model_args), model_args.model_name_or_path)
    if bool(model_args.model_name_or_path) == script_args.tiny_llm:
        raise ValueError(
            "give exactly one model: model_name_or_path (the KD student and its tokenizer) or tiny_llm: true"
        )
    check_aligncap_model_args(model_args, tiny_llm=script_args.tiny_llm)
    if not script_args.tiny_llm:
        check_pretrained_path(model_args.model_name_or_path, what="model_name_or_path")
        if script_args.speech_tokenizer_path is None:
            raise ValueError("speech_tokenizer_path must be the SpeechTokenizer the model was trained with")
    splits = speech_emotion_splits(script_args, training_args.seed)
    # A tiny LLM is random, so any codebook serves: without speech_tokenizer_path one is fitted here, as KD does.
    encoder = speech_encoder_for(script_args, splits["train"], seed=training_args.seed)
    if script_args.speech_tokenizer_path is None:
        speech_dir = os.path.join(training_args.output_dir, "speech_tokenizer")
        save_on_main_process(
            training_args, lambda: save_speech_tokenizer(encoder.model, speech_dir), what="speech tokenizer"
        )
    splits = {
        name: audio_token_prompts(
            split, encoder, audio_column=script_args.audio_column, instruction=script_args.instruction
        )
        for name, split in splits.items()
    }
    if script_args.tiny_llm:
        texts = [c for refs in splits["train"]["references"] for c in refs]
        texts += [teacher_prompt(c, script_args.instruction) for c in splits["train"][script_args.caption_column]]
        model, tokenizer = build_tiny_speech_llm(texts, encoder.codebook_size, seed=training_args.seed)
        set_attn_implementation(model, model_args)
        add_speech_tokens(tokenizer, model, encoder.codebook_size)
        save_tiny_llm(model, tokenizer, training_args)  # the adapter's base must load from a folder
    else:
        model, tokenizer = load_aligncap_llm(model_args)
    references = [c for refs in splits["train"]["references"] for c in refs]
    reward_model = resolve_reward_model(script_args, training_args, references)
    judge = get_judge(
        script_args.judge,
        reward_model_name_or_path=reward_model,
        llm_base_url=script_args.llm_base_url,
        llm_model=script_args.llm_model,
        llm_api_key=os.environ.get("OPENAI_API_KEY"),
    )
    if script_args.pairs_dataset is not None:
        pairs, stats = load_any_dataset(script_args.pairs_dataset, split="train"), {}
    else:
        pairs, stats = build_preference_pairs(
            model,
            tokenizer,
            splits["train"],
            judge,
            rejected=script_args.rejected,
            num_beams=script_args.num_beams,
            max_new_tokens=script_args.max_new_tokens,
        )
        logger.info("preference pairs: %s", stats)
    start_captions = greedy_captions(model, tokenizer, splits["test"]["prompt"], script_args.max_new_tokens)
    peft_config = aligncap_lora_config(speech_token_ids(tokenizer), model_args)
    trainer = aligncap_dpo_trainer(model, tokenizer, pairs, training_args, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    policy_captions = greedy_captions(trainer.model, tokenizer, splits["test"]["prompt"], script_args.max_new_tokens)
    preference = judge_preference(
        policy_captions, start_captions, judge, references=splits["test"]["references"], audio=splits["test"]["audio"]
    )
    logger.info("judge on held-out clips, policy vs starting model: %s", preference)
    os.makedirs(training_args.output_dir, exist_ok=True)
    with open(os.path.join(training_args.output_dir, "po_results.json"), "w") as handle:
        json.dump({"pairs": stats, "heldout_preference": preference}, handle, indent=2)
    trainer.save_model(training_args.output_dir)
    # The card's results (and model-index): the judge's verdict on held-out clips, policy against the starting model.
    write_card_and_push(
        trainer,
        training_args,
        dataset_name=script_args.dataset_name or "speech world",
        metrics={f"heldout_{name}": value for name, value in preference.items()},
        license=training_args.license,
    )
    return trainer, preference


def make_parser() -> HfprefParser:
    parser = HfprefParser((AlignCapDPOScriptArguments, AlignCapDPOConfig, ModelConfig), method="aligncap_dpo")
    parser.set_defaults(use_peft=True)  # AlignCap trains a LoRA adapter; `use_peft: false` is refused
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
