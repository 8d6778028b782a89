"""
Trains caption_sft and audibility_classifier for one SGD step and evaluates them, in every process of an
`accelerate launch`, from the models and data that tests/trainers/test_loss_scaling.py saved under `<root>`; process 0
writes `<root>/<method>/result.json` (logged loss, eval_loss, world size) and `<root>/<method>/weights.safetensors`.
Used by tests/trainers/test_loss_scaling.py; not a test module itself.

    accelerate launch --config_file recipes/accelerate_configs/multi_cpu.yaml tests/trainers/loss_scaling_runner.py <root>
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist


def train_and_evaluate(trainer, out: Path) -> None:
    from safetensors.torch import save_file

    trainer.train()
    metrics = trainer.evaluate()
    if trainer.args.process_index == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(out / "weights.safetensors"))
        result = {
            "loss": next(e["loss"] for e in trainer.state.log_history if "loss" in e),
            "eval_loss": metrics["eval_loss"],
            "world_size": trainer.args.world_size,
        }
        (out / "result.json").write_text(json.dumps(result))


def main(root: Path):
    from datasets import load_from_disk
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from hfpref.models.captioning import CaptionCollator
    from hfpref.trainers.audibility_classifier import AudibilityClassifierConfig, AudibilityClassifierTrainer
    from hfpref.trainers.caption_sft import CaptionSFTConfig, CaptionSFTTrainer

    common = json.loads((root / "args.json").read_text())

    out = root / "caption_sft"
    model = WhisperForConditionalGeneration.from_pretrained(out / "model")
    processor = WhisperProcessor.from_pretrained(out / "model")
    data = load_from_disk(str(out / "data"))
    collator = CaptionCollator(processor.feature_extractor, processor.tokenizer)
    args = CaptionSFTConfig(output_dir=str(out / "run"), **common)
    trainer = CaptionSFTTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=data,
        eval_dataset=data,
        processing_class=processor,
    )
    train_and_evaluate(trainer, out)

    out = root / "audibility_classifier"
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    data = load_from_disk(str(out / "data"))
    args = AudibilityClassifierConfig(output_dir=str(out / "run"), **common)
    trainer = AudibilityClassifierTrainer(
        model, args, processing_class=tokenizer, train_dataset=data, eval_dataset=data
    )
    train_and_evaluate(trainer, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Tear the gloo group down before the interpreter exits: left to exit, a rank once aborted ("terminate called
    # without an active exception") after all its work had passed.
    if dist.is_initialized():
        dist.destroy_process_group()
