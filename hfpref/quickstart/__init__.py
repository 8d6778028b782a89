"""
The main job, `make quickstart`: the RLHF audio-captioning pipeline end to end on the offline synthetic world.

The stages follow "Aligning Audio Captions with Human Preferences" (https://huggingface.co/papers/2509.14659), with
the world's oracle (which knows every clip's true events) standing in for the human annotators:

1. `world`: synthesize train / preference / test / validation clips;
2. `clap`: fit a tiny CLAP contrastively on the train clips and the clips only it sees (the world's `clap` split);
3. `sft`: train a small captioner from scratch on part of the train clips, short of convergence (the baseline): a
   2-layer Whisper, or with `captioner="audio-llm"` (`hfpref quickstart --captioner audio-llm`) Qwen2-Audio's
   architecture (audio encoder, projector, decoder-only LLM) cut to 2 layers each side;
4. `preferences`: for each preference clip a greedy and a top-k caption from the baseline; the oracle picks one, ties
   and both-fail cases are recorded (both-fail clips are the "challenging" split and get the oracle's correction),
   plus synthetic negatives (a clip's true caption against another clip's);
5. `reward`: an ensemble of CLAP reward models (each member on its own bootstrap resample of those pairs) trained with
   Bradley-Terry, scored on held-out clips; RL's reward is its conservative `mean - lambda * std`;
6. `selection`: one more reward model, from another seed, that RL never optimises: it picks the RL checkpoint;
7. `rl`: RL fine-tuning of the baseline (RLOO, 4 samples a clip; the paper's SCST is `loss_type: scst`) with the
   ensemble's reward (without the paper's length penalty, see `stage_configs`), evaluated on the validation clips
   during training; the checkpoint the selection reward model scores highest is kept;
8. `evaluate`: baseline vs RL on the test clips (scored once), split into challenging and non-challenging, and the
   same win rates on the validation clips, where the quickstart's settings were chosen.

Stages 2, 3, 5, 6 and 7 run the same scripts as `recipes/{clap_contrastive,caption_sft,reward_model,caption_rl}.py`
with the configs of `recipes/quickstart/` (written by [`write_stage_configs`]); a finished stage is reused on a re-run
unless its configuration changed or `force=True`.

The package, one module per part of the pipeline (each imports only the ones above it):

- `stages.py`: sizes, the recipe config of each training stage, the runner that reuses finished stages, and the
  stages `world`, `clap`, `sft`, `reward` (and `selection`), `rl`;
- `preferences.py`: stage 4, the oracle's judgments of the baseline's captions and the preference pairs;
- `report.py`: the targets, `results.md` and its plots, and the summary over seeds;
- `evaluation.py`: stage 8, baseline vs RL on the test clips (and the validation clips' win rates);
- `pipeline.py`: [`run_quickstart`] and [`run_quickstart_seeds`].

The oracle itself is a judge, [`~hfpref.judges.oracle.OracleJudge`].
"""

from .pipeline import run_quickstart, run_quickstart_seeds
from .preferences import FAIL_BELOW
from .report import (
    SEED_FIGURES,
    TARGETS,
    render_results_markdown,
    render_seeds_markdown,
    summarize_seeds,
)
from .stages import (
    CAPTIONERS,
    DEFAULT_CAPTIONER,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_OUTPUT_DIRS,
    DEFAULT_SIZE,
    SIZES,
    STAGE_OUTPUTS,
    STAGES,
    TRAINING_STAGES,
    QuickstartSize,
    parse_stage_config,
    render_stage_config,
    stage_config_name,
    stage_configs,
    write_stage_configs,
)


__all__ = [
    "CAPTIONERS",
    "DEFAULT_CAPTIONER",
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_OUTPUT_DIRS",
    "DEFAULT_SIZE",
    "FAIL_BELOW",
    "SEED_FIGURES",
    "SIZES",
    "STAGES",
    "STAGE_OUTPUTS",
    "TARGETS",
    "TRAINING_STAGES",
    "QuickstartSize",
    "parse_stage_config",
    "render_results_markdown",
    "render_seeds_markdown",
    "render_stage_config",
    "run_quickstart",
    "run_quickstart_seeds",
    "stage_config_name",
    "stage_configs",
    "summarize_seeds",
    "write_stage_configs",
]
