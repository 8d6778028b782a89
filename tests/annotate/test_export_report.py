import json

import numpy as np
import pytest
from datasets import load_from_disk

from hfpref.annotate.app import AnnotationApp
from hfpref.annotate.export import build_preference_dataset, export_annotations
from hfpref.annotate.items import load_items
from hfpref.annotate.report import annotation_report, render_report_markdown
from hfpref.annotate.storage import Session
from hfpref.cli.main import main
from hfpref.data.preference import load_binary_feedback, load_preference_dataset
from hfpref.data.tta_feedback import load_unlabelled_feedback, write_feedback_skeleton


def _session(tmp_path, items, task, **kwargs):
    table, counts = load_items(items, task, **kwargs)
    return Session.create(tmp_path / "session", {"task": task, "items": str(items), "seed": 0, **counts}, table)


def _answer(app, annotator, row, answer, correction=None):
    """Answer as the page does: pairwise answers are sent as the button shown (A or B)."""
    item_id = app.items[row]["item_id"]
    choice = answer
    if answer in ("caption_1", "caption_2"):
        choice = "AB"[app.shown_order(annotator, item_id).index(answer[-1])]
    payload = {"annotator": annotator, "item_id": item_id, "choice": choice, "correction": correction}
    return app.answer({**payload, "answer_id": f"{annotator}-{row}-{answer}", "elapsed_ms": 1500})


def _answer_plan(app, plan):
    """`plan[annotator][row]` is an answer, or `(answer, correction)`."""
    for annotator, answers in plan.items():
        for row, answer in enumerate(answers):
            answer, correction = answer if isinstance(answer, tuple) else (answer, None)
            _answer(app, annotator, row, answer, correction)


# Three annotators on the six quickstart items; clip 5 is never answered.
PAIRWISE_PLAN = {
    "ann_a": ["caption_1", "caption_2", "tie", ("both_wrong", "a bell rings twice"), "caption_1"],
    "ann_b": ["caption_1", "caption_2", "tie", ("both_wrong", "a bell rings"), "caption_2"],
    "ann_c": ["caption_1", "tie", "caption_1", "caption_2"],
}


@pytest.fixture
def pairwise_session(tmp_path, world_dir, judgments_dir):
    session = _session(tmp_path, judgments_dir, "pairwise", audio_dataset=world_dir)
    _answer_plan(AnnotationApp(session), PAIRWISE_PLAN)
    return session


def test_pairwise_export_follows_the_vote_sums(pairwise_session):
    dataset, stats = build_preference_dataset(pairwise_session)
    items = pairwise_session.items
    greedy, top_k = items["caption_1"], items["caption_2"]
    # clip 0: +3, clip 1: -2, clip 2: +1, clip 3: -1 (2 of 3 say both wrong: challenging), clip 4: 0 -> no pair
    human = [r for r in dataset if r["source"] == "human"]
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in human] == [
        (greedy[0], top_k[0], 3.0),
        (top_k[1], greedy[1], 2.0),
        (greedy[2], top_k[2], 1.0),
        (top_k[3], greedy[3], 1.0),
    ]
    assert [r["votes"] for r in human] == [[1, 1, 1], [-1, -1, 0], [0, 0, 1], [0, 0, -1]]
    assert [r["challenging"] for r in human] == [False, False, False, True]
    corrections = [(r["chosen"], r["rejected"]) for r in dataset if r["source"] == "correction"]
    assert corrections == [
        ("a bell rings twice", greedy[3]),
        ("a bell rings twice", top_k[3]),
        ("a bell rings", greedy[3]),
        ("a bell rings", top_k[3]),
    ]
    assert stats["answered"] == 5 and stats["answers"] == 14 and stats["no_preference"] == 1
    assert stats["human"] == 4 and stats["correction"] == 4 and stats["challenging"] == 1
    assert set(dataset["clip_id"]) == {items["clip_id"][i] for i in range(4)}
    for row in dataset:  # every row carries its clip's audio
        assert row["audio"]["bytes"] == items[items["clip_id"].index(row["clip_id"])]["audio"]["bytes"]


def test_pairwise_report_by_hand(pairwise_session):
    report = annotation_report(pairwise_session.output_dir)
    everything = report["splits"]["all"]
    assert everything["votes"] == {"caption_1": 5, "caption_2": 4, "tie": 3, "both_wrong": 2}
    assert everything["ties"] == 3 and everything["items_without_preference"] == 1
    assert everything["preferred"] == {"caption_1": 2, "caption_2": 2} and everything["win_rate_caption_1"] == 0.5
    # Kappa over the 4 items rated by 3 annotators (clip 4 has 2 ratings and is left out). Category counts
    # (caption_1, caption_2, tie, both_wrong): [3,0,0,0], [0,2,1,0], [1,0,2,0], [0,1,0,2]. Per-item agreement
    # P_i = (sum n_ij^2 - 3) / 6 = 1, 1/3, 1/3, 1/3, so P_bar = 1/2; category shares 4/12, 3/12, 3/12, 2/12 give
    # P_e = 19/72; kappa = (1/2 - 19/72) / (1 - 19/72) = 17/53.
    kappa = everything["fleiss_kappa"]
    assert (kappa["raters"], kappa["items"], kappa["left_out"]) == (3, 4, 1)
    assert kappa["kappa"] == pytest.approx(17 / 53)
    # Only clip 3 is challenging: [0,1,0,2] gives P_bar = 1/3, P_e = 1/9 + 4/9, kappa = (1/3 - 5/9) / (4/9) = -1/2.
    assert report["splits"]["challenging (annotators)"]["fleiss_kappa"]["kappa"] == pytest.approx(-0.5)
    agreement = report["annotator_agreement"]
    assert agreement["ann_a|ann_b"] == {"items": 5, "agreement": 0.8}
    assert agreement["ann_a|ann_c"] == {"items": 4, "agreement": 0.25}
    assert report["annotators"]["ann_c"]["answers"] == 4 and report["annotators"]["ann_c"]["median_seconds"] == 1.5
    assert report["sources"] == {"caption_1": ["greedy"], "caption_2": ["top_k"]}
    assert "| all | 6 | 5 | 14 | 5 | 4 | 3 | 2 | 0.321 | 3 x 4 (1) | 1 | 0.500 |" in render_report_markdown(report)


def test_a_revised_answer_replaces_the_first(pairwise_session):
    app = AnnotationApp(pairwise_session)
    _answer(app, "ann_c", 0, "caption_2")  # ann_c changes its mind on clip 0: +3 becomes +1
    dataset, _ = build_preference_dataset(pairwise_session)
    assert dataset[0]["votes"] == [1, 1, -1] and dataset[0]["margin"] == 1.0


@pytest.fixture
def binary_session(tmp_path):
    rng = np.random.default_rng(0)
    prompts = ["a dog barks", "a bell rings", "rain falls", "an engine idles", "a cat meows"]
    clips = [[rng.uniform(-0.5, 0.5, 4000)] for _ in prompts]
    write_feedback_skeleton(prompts, clips, tmp_path / "tta", sampling_rate=16000)
    csv = (tmp_path / "tta" / "feedback.csv").read_text().splitlines()
    tasks = ["integrity"] * 3 + ["temporal"] * 2
    csv = csv[:1] + [line.replace(",,,", f",,{task},", 1) for line, task in zip(csv[1:], tasks)]
    (tmp_path / "tta" / "feedback.csv").write_text("\n".join(csv) + "\n")
    session = _session(tmp_path, tmp_path / "tta" / "feedback.csv", "binary")
    plan = {
        "a": ["match", "mismatch", "match", "skip", ("mismatch", "a cat purrs")],
        "b": ["match", "mismatch", "mismatch", "skip", "match"],
        "c": ["mismatch", "skip", "skip", "skip", "mismatch"],
    }
    _answer_plan(AnnotationApp(session), plan)
    return session


def test_binary_export_takes_the_majority_and_counts_what_it_drops(binary_session):
    dataset, stats = build_preference_dataset(binary_session)
    assert dataset.column_names[:3] == ["audio", "prompt", "label"]
    assert [(r["prompt"], r["label"], r["source"]) for r in dataset] == [
        ("a dog barks", 1, "human"),
        ("a bell rings", 0, "human"),
        ("a cat meows", 0, "human"),
        ("a cat purrs", 1, "correction"),
    ]
    assert dataset[1]["votes"] == [0, 0] and dataset[1]["skips"] == 1
    assert stats["no_majority"] == 1 and stats["all_skipped"] == 1  # "rain falls" 1:1, "an engine idles" skipped


def test_binary_report_by_hand(binary_session):
    splits = annotation_report(binary_session.output_dir)["splits"]
    assert splits["all"]["votes"] == {"match": 4, "mismatch": 6, "skip": 5}
    assert splits["all"]["labels"] == {"1": 1, "0": 2, "none": 2}
    # (match, mismatch, skip) per item: [2,1,0], [0,2,1], [1,1,1], [0,0,3], [1,2,0]; P_i = 1/3, 1/3, 0, 1, 1/3,
    # P_bar = 2/5; shares 4/15, 6/15, 5/15 give P_e = 77/225; kappa = (90 - 77) / (225 - 77) = 13/148.
    assert splits["all"]["fleiss_kappa"]["kappa"] == pytest.approx(13 / 148)
    # integrity (the first three items): P_bar = 2/9; shares 3/9, 4/9, 2/9 give P_e = 29/81;
    # kappa = (18 - 29) / (81 - 29) = -11/52
    assert splits["integrity"]["fleiss_kappa"]["kappa"] == pytest.approx(-11 / 52)
    assert splits["temporal"]["items"] == 2


def test_cli_exports_a_dataset_the_loader_accepts_and_reports(pairwise_session, capsys):
    folder = str(pairwise_session.output_dir)
    assert main(["annotate", "--output-dir", folder, "--export", "--report", "--json"]) == 0
    out = capsys.readouterr().out
    assert "Exported 8 rows" in out
    report = json.loads(out[out.index("{", out.index("\n")) :])
    assert report["splits"]["all"]["answers"] == 14
    loaded = load_preference_dataset(pairwise_session.output_dir / "dataset", kind="pairwise")
    assert len(loaded) == 8 and loaded.features["audio"].decode is False
    assert json.loads((pairwise_session.output_dir / "export.json").read_text())["human"] == 4
    assert (pairwise_session.output_dir / "report.md").read_text().startswith("# Listening test: pairwise")


def test_cli_push_to_hub_passes_the_license_to_the_dataset_card(pairwise_session, monkeypatch, capsys):
    import hfpref.hub.datasets

    pushed = []
    monkeypatch.setattr(
        hfpref.hub.datasets, "push_preference_dataset", lambda ds, repo, **kw: pushed.append((repo, kw))
    )
    folder = str(pairwise_session.output_dir)
    assert main(["annotate", "--output-dir", folder, "--push-to-hub", "me/prefs", "--license", "cc-by-4.0"]) == 0
    ((repo, kwargs),) = pushed
    assert repo == "me/prefs" and kwargs["license"] == "cc-by-4.0" and kwargs["kind"] == "pairwise"


def test_nothing_to_export_is_an_error(tmp_path, world_dir, judgments_dir):
    session = _session(tmp_path, judgments_dir, "pairwise", audio_dataset=world_dir)
    with pytest.raises(ValueError, match="no answer gives a preference row yet"):
        export_annotations(session.output_dir)


def test_a_session_refuses_other_items(tmp_path, world_dir, judgments_dir):
    _session(tmp_path, judgments_dir, "pairwise", audio_dataset=world_dir)
    other = load_from_disk(str(judgments_dir)).select(range(3))
    other.save_to_disk(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="holds a session on other items"):
        _session(tmp_path, tmp_path / "other", "pairwise", audio_dataset=world_dir)


def test_binary_labels_fill_the_feedback_file_for_the_baton_recipe(binary_session, caplog):
    _, stats = export_annotations(binary_session.output_dir)
    path = binary_session.output_dir / "feedback.csv"
    assert stats["feedback_file"] == str(path)
    human = load_binary_feedback(path, text_column="prompt")  # what recipes/reward_weighted_diffusion.py reads
    assert sorted(zip(human["prompt"], human["label"])) == [
        ("a bell rings", 0),
        ("a cat meows", 0),
        ("a dog barks", 1),
    ]
    assert "dropped 2 skipped item(s)" in caplog.text  # no majority, all skipped
    assert len(load_unlabelled_feedback(path)) == 0


def test_unanswered_feedback_rows_stay_in_the_reward_model_pool(tmp_path):
    rng = np.random.default_rng(0)
    prompts = ["a dog barks", "a bell rings", "rain falls"]
    write_feedback_skeleton(prompts, [[rng.uniform(-0.5, 0.5, 4000)] for _ in prompts], tmp_path, sampling_rate=16000)
    session = _session(tmp_path, tmp_path, "binary")
    _answer(AnnotationApp(session), "a", 0, "match")
    export_annotations(session.output_dir)
    path = session.output_dir / "feedback.csv"
    assert load_binary_feedback(path)["prompt"] == ["a dog barks"]
    assert load_unlabelled_feedback(path)["prompt"] == ["a bell rings", "rain falls"]


@pytest.fixture(scope="module")
def oracle_items(tmp_path_factory):
    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.judges.oracle import make_oracle_preferences

    world = make_world(24, seed=11, clip_seconds=0.5)
    folder = tmp_path_factory.mktemp("oracle-items")
    make_oracle_preferences(world, seed=0, pairs_per_clip=4).save_to_disk(str(folder / "pairs"))
    return load_items(folder / "pairs", "pairwise")


def _simulated_kappa(folder, oracle_items, seed, flip):
    """
    Fleiss' kappa of three annotators who each give the item's true answer except, independently, for `flip` of
    the items. The true answer is caption_1 or caption_2 at random per item: with one answer true everywhere, kappa
    would be about 0 however consistent the annotators are (it corrects for the answers' marginal shares).
    """
    items, counts = oracle_items
    session = Session.create(folder, {"task": "pairwise", "items": "oracle", "seed": 0, **counts}, items)
    truth = np.random.default_rng(100).integers(1, 3, len(items))
    rng = np.random.default_rng(seed)
    (folder / "answers").mkdir()
    for annotator in ("a", "b", "c"):  # written in one go: the fsync of every answer is tested elsewhere
        lines = []
        for item_id, true in zip(session.items["item_id"], truth):
            answer = f"caption_{3 - true if rng.random() < flip else true}"
            record = {"answer_id": f"{annotator}-{item_id}", "annotator": annotator, "item_id": item_id}
            lines.append(json.dumps({**record, "answer": answer}) + "\n")
        (folder / "answers" / f"{annotator}.jsonl").write_text("".join(lines))
    return annotation_report(folder)["splits"]["all"]["fleiss_kappa"]["kappa"]


def test_kappa_is_high_for_consistent_annotators_and_at_chance_for_random_ones(tmp_path, oracle_items):
    # 3 annotators x 92 pairs. With balanced true answers, P_e ~ 1/2 and P_bar = (1-q)^2 + q^2, so
    # kappa ~ 1 - 4q(1-q): 0.64 at q = 0.1, 0 at q = 0.5 (random annotators, the control).
    consistent = [_simulated_kappa(tmp_path / f"c{seed}", oracle_items, seed, flip=0.1) for seed in range(5)]
    random = [_simulated_kappa(tmp_path / f"r{seed}", oracle_items, seed, flip=0.5) for seed in range(5)]
    assert min(consistent) > 0.45 and abs(np.mean(random)) < 0.1 and max(random) < 0.25


def test_push_to_hub_goes_through_push_preference_dataset(pairwise_session, monkeypatch):
    from datasets import Dataset
    from huggingface_hub import DatasetCard

    pushed = {}
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, repo_id, **kwargs: pushed.update(data=(repo_id, len(self)))
    )
    monkeypatch.setattr(DatasetCard, "load", classmethod(lambda cls, repo_id, **kwargs: DatasetCard("---\n---\n")))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo_id, **kwargs: pushed.update(card=str(self)))
    dataset, _ = export_annotations(pairwise_session.output_dir, push_to_hub="user/caption-preferences")
    assert pushed["data"] == ("user/caption-preferences", len(dataset))
    assert "an annotator's correction beats the caption" in pushed["card"] and "hfpref annotate" in pushed["card"]
