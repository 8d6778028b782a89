"""One registry of judges, used by `hfpref pairs` and `recipes/aligncap_dpo.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from .base import Judge


JUDGES = ("clue_overlap", "reward_model", "llm")


def get_judge(
    name: str,
    *,
    clue_mode: str = "f1",
    reward_model_name_or_path: str | None = None,
    clap_model_name_or_path: str | None = None,
    embedding_cache_dir: str | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    llm_timeout: float = 30.0,
) -> Judge:
    """
    Build a judge by name: `"clue_overlap"` (offline default), `"reward_model"` (a saved CLAP reward model and the
    CLAP it was trained on) or `"llm"` (an OpenAI-compatible endpoint). An unknown name raises a `ValueError` listing
    the known ones.
    """
    # Imported here so that building the `hfpref` command line does not load NLTK and the metrics.
    from .base import ClueOverlapJudge, RewardModelJudge
    from .llm import OpenAIJudge

    if name == "clue_overlap":
        return ClueOverlapJudge(clue_mode)
    if name == "reward_model":
        if reward_model_name_or_path is None:
            raise ValueError("judge 'reward_model' needs reward_model_name_or_path")
        from ..utils.safe_loading import check_pretrained_path  # noqa: PLC0415

        check_pretrained_path(reward_model_name_or_path, what="reward model")
        if clap_model_name_or_path is not None:
            check_pretrained_path(clap_model_name_or_path, what="CLAP model")
        from ..rewards.functions import build_reward_funcs  # noqa: PLC0415

        (reward,), _ = build_reward_funcs(
            ["reward_model"],
            reward_model_name_or_path=reward_model_name_or_path,
            clap_model_name_or_path=clap_model_name_or_path,
            embedding_cache_dir=embedding_cache_dir,
            length_penalty_alpha=None,
        )
        return RewardModelJudge(reward)
    if name == "llm":
        if not llm_base_url or not llm_model:
            raise ValueError("judge 'llm' needs llm_base_url and llm_model")
        return OpenAIJudge(llm_base_url, llm_model, api_key=llm_api_key, timeout=llm_timeout)
    raise ValueError(f"judge={name!r} is not one of {list(JUDGES)}")
