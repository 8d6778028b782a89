"""Push preference datasets to the Hub with their dataset card."""

from datasets import Dataset, DatasetDict

from ..data.schemas import validate_dataset
from .cards import render_dataset_card


def push_preference_dataset(
    ds_or_dict: Dataset | DatasetDict,
    repo_id: str,
    *,
    kind: str,
    private: bool = False,
    token: str | None = None,
    require_audio: bool = True,
    **card_kwargs,
):
    r"""
    Validate a preference dataset, push it to the Hub, then push its dataset card.

    `Dataset.push_to_hub` writes a README whose YAML holds the `configs` and `dataset_info` the Hub viewer needs; the
    card rendered here keeps those two fields (read back with `DatasetCard.load`) and replaces the rest.

    Args:
        ds_or_dict (`datasets.Dataset` or `datasets.DatasetDict`):
            The dataset to push.
        repo_id (`str`):
            Hub dataset repository, `"user/name"`.
        kind (`str`):
            The preference kind (see [`~data.schemas.validate_dataset`]).
        private (`bool`, *optional*, defaults to `False`):
            Whether to create the repository as private.
        token (`str`, *optional*):
            Hub token; defaults to the logged-in one.
        require_audio (`bool`, *optional*, defaults to `True`):
            Passed to [`~data.schemas.validate_dataset`].
        **card_kwargs:
            Passed to [`~hub.cards.render_dataset_card`] (`pretty_name`, `description`, `source`, `license`, ...).

    Returns:
        `huggingface_hub.DatasetCard`: the card that was pushed.
    """
    from huggingface_hub import DatasetCard

    validate_dataset(ds_or_dict, kind, require_audio=require_audio)
    card = render_dataset_card(ds_or_dict, repo_id=repo_id, kind=kind, **card_kwargs)
    ds_or_dict.push_to_hub(repo_id, private=private, token=token)
    pushed = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    for key in ("configs", "dataset_info"):
        if pushed.data.get(key) is not None:
            card.data[key] = pushed.data[key]
    card.push_to_hub(repo_id, repo_type="dataset", token=token)
    return card
