"""A recipe run that diverged but stayed finite fails instead of saving its model (hfpref.utils.checks)."""

import pytest
from recipe_helpers import load_recipe, yaml_args


def test_a_reward_model_that_diverged_but_stayed_finite_is_not_saved(tmp_path, tiny_clap_dir):
    from hfpref.utils.checks import DivergedTrainingError

    # Learning rate 1e6: the Bradley-Terry loss goes from ln 2 (0.6994 on the first step) to ~5e9, eval loss 4.3e9 and
    # accuracy 0, every value finite. With the default logging_steps nothing but the evaluations is logged in these 12
    # steps; the reference is the first step's loss. (The same config at 1e-3 saves: test_recipe_main_runs_from_yaml.)
    argv = yaml_args(
        tmp_path / "config.yaml",
        synthetic_clips=24,
        synthetic_negatives=True,
        clap_model_name_or_path=str(tiny_clap_dir),
        loss_type="bt",
        l2_coef=0.1,
        num_train_epochs=2,
        per_device_train_batch_size=16,
        hidden_sizes=[32, 8],
        learning_rate=1.0e6,
        eval_strategy="epoch",
        output_dir=str(tmp_path / "out"),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    recipe = load_recipe("reward_model")
    with pytest.raises(
        DivergedTrainingError, match=r"eval_loss is \d\.\d+e\+09 at step 12, more than 100x the loss of"
    ):
        recipe.main(*recipe.make_parser().parse_args_and_config(argv))
    assert not (tmp_path / "out" / "model.safetensors").exists()
