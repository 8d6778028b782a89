from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """Six synthetic clips of 1 s, saved as a world (`clip_id`, `audio`, `caption`, `events`, ...)."""
    from hfpref.data.synthetic.audio_world import make_world

    path = tmp_path_factory.mktemp("annotate-world") / "world"
    make_world(6, seed=3, clip_seconds=1.0).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def judgments_dir(world_dir) -> Path:
    """The quickstart's `preference-judgments` for the world: a greedy (true) and a top-k (hallucinated) caption."""
    from datasets import load_from_disk

    from hfpref.data.synthetic.audio_world import make_caption_variants
    from hfpref.quickstart.preferences import FAIL_BELOW, _oracle_judgments

    world = load_from_disk(str(world_dir))
    rng = np.random.default_rng(0)
    greedy = list(world["caption"])
    top_k = [make_caption_variants(events, rng)["hallucination"] for events in world["events"]]
    path = world_dir.parent / "preference-judgments"
    Dataset.from_list(_oracle_judgments(world, greedy, top_k, FAIL_BELOW)).save_to_disk(str(path))
    return path
