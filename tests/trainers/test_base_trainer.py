"""Every method's trainer and config stand on the shared bases: one name, one paper, one card writer, one preset API."""

import importlib
import re

import pytest

from hfpref.hub.cards import METHODS
from hfpref.trainers.base_config import AudioConfigMixin, HfprefConfigMixin
from hfpref.trainers.base_trainer import BaseTrainer


TRAINERS = {
    "reward_model": "RewardModelTrainer",
    "clap_contrastive": "ClapContrastiveTrainer",
    "caption_sft": "CaptionSFTTrainer",
    "caption_rl": "CaptionRLTrainer",
    "aligncap_kd": "AlignCapKDTrainer",
    "reward_weighted_diffusion": "RewardWeightedDiffusionTrainer",
    "audibility_classifier": "AudibilityClassifierTrainer",
}
CONFIGS = {
    "reward_model": ("RewardModelConfig", False),
    "clap_contrastive": ("ClapContrastiveConfig", True),
    "caption_sft": ("CaptionSFTConfig", True),
    "caption_rl": ("CaptionRLConfig", True),
    "aligncap_kd": ("AlignCapKDConfig", False),
    "reward_weighted_diffusion": ("RewardWeightedDiffusionConfig", True),
    "audibility_classifier": ("AudibilityClassifierConfig", False),
}


@pytest.mark.parametrize("method", sorted(TRAINERS))
def test_trainer_is_named_after_its_method(method):
    module = importlib.import_module(f"hfpref.trainers.{method}.{method}_trainer")
    trainer = getattr(module, TRAINERS[method])
    assert issubclass(trainer, BaseTrainer) and trainer._name == method and method in METHODS
    assert "create_model_card" not in vars(trainer)  # one card writer, BaseTrainer's
    assert "hfpref" in trainer._tag_names


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_config_uses_the_shared_base(method, tmp_path):
    name, reads_audio = CONFIGS[method]
    config = getattr(importlib.import_module(f"hfpref.trainers.{method}.{method}_config"), name)
    assert issubclass(config, HfprefConfigMixin) and issubclass(config, AudioConfigMixin) == reads_audio
    assert "presets" not in {f.name for f in config.__dataclass_fields__.values()}
    if reads_audio:
        assert config(output_dir=str(tmp_path), report_to="none").audio_column == "audio"
    with pytest.raises(ValueError, match=re.escape(f"preset='nope' is not one of {sorted(config.presets)}")):
        config.from_preset("nope", output_dir=str(tmp_path))


def test_paper_follows_the_variant():
    from hfpref.trainers.caption_rl.caption_rl_trainer import CaptionRLTrainer

    trainer = CaptionRLTrainer.__new__(CaptionRLTrainer)
    trainer.args = type("Args", (), {"loss_type": "rloo"})()
    assert trainer._paper == {"title": METHODS["caption_rl"].variants["rloo"].paper_title, "id": "2402.14740"}
    trainer.args.loss_type = "scst"
    assert trainer._paper["id"] == "2509.14659"


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_micro_batch_index_is_the_place_of_the_batch_accelerate_deals(processes):
    """Process p's k-th micro-batch holds per-device batch `k * processes + p` of the sampler, as accelerate shards."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from hfpref.trainers.base_trainer import micro_batch_index

    def sampler():
        return BatchSampler(SequentialSampler(range(24)), batch_size=2, drop_last=True)

    batches = list(sampler())
    for process in range(processes):
        shard = list(BatchSamplerShard(sampler(), num_processes=processes, process_index=process))
        assert len(shard) == len(batches) // processes
        for micro_step, batch in enumerate(shard):
            assert batch == batches[micro_batch_index(micro_step, process, processes)]
