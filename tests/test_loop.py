"""
`hfpref loop` on the tiny world: rounds with their folders, records and results, the preference dataset growing with
a `round` column, the KL reference fixed to round 0, resumption, the win rates recounted, the reward-model judge
checked against the reward model, and an `annotate` round driven through the app's HTTP API and resumed after its
process is killed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict, load_from_disk


pytestmark = pytest.mark.xdist_group("loop")  # one worker runs the tiny loop once for every test here

LOOP_ARGS = ["loop", "--size", "tiny", "--rounds", "2", "--judge", "oracle", "--seed", "0", "--output-dir", "loop"]


@pytest.fixture(scope="session")
def loop_run(tmp_path_factory):
    """
    The Done-when command, with a control round and the Hub push recorded; run from its folder (relative paths).
    Session-scoped: a module-scoped fixture is torn down and made again when the worker runs another module's tests
    between two of these.
    """
    from hfpref.cli.main import main

    root = tmp_path_factory.mktemp("loop")
    pushed = []

    def record_push(self, repo_id, **kwargs):
        pushed.append({"repo_id": repo_id, "rounds": sorted(set(self["train"]["round"])), **kwargs})

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(DatasetDict, "push_to_hub", record_push)
        code = main([*LOOP_ARGS, "--control", "--push-to-hub", "someone/loop-pairs"])
    assert code == 0
    return root, root / "loop", pushed


def _record(folder: Path, stage: str) -> dict:
    return json.loads((folder / "stages" / f"{stage}.json").read_text())


def test_loop_writes_every_round_and_the_report(loop_run):
    root, out, pushed = loop_run
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for k in (1, 2):
        per_round = json.loads((out / f"round-{k}" / "results.json").read_text())
        assert per_round["round"] == k and per_round["judge"] == "oracle"
        assert per_round == results["rounds"][k - 1]
        assert results["per_round_results"][k - 1] == f"round-{k}/results.json"
    assert (out / "results.md").read_text().count("\n| 2") == 2  # round 2 and its control
    assert (out / "win_rates.png").stat().st_size > 0
    assert str(root) not in (out / "results.json").read_text()  # no machine-local path

    # One preference dataset grows: every round's pairs, with their round, held-out pairs of every round.
    prefs = load_from_disk(str(out / "round-2" / "preferences"))
    assert set(prefs["train"]["round"]) == {0, 1, 2} and set(prefs["test"]["round"]) == {0, 1, 2}
    previous = load_from_disk(str(out / "round-1" / "preferences"))
    assert len(prefs["train"]) == len(previous["train"]) + len(load_from_disk(str(out / "round-2" / "pairs"))["train"])
    assert (
        results["rounds"][1]["pairs"]["by_round"]["train"]["1"]
        == results["rounds"][0]["pairs"]["by_round"]["train"]["1"]
    )
    # Fresh clips every round: no clip id of a pool is in the world or in another round's pool.
    world = load_from_disk(str(out / "round-0" / "world"))
    world_ids = {c for split in world.values() for c in split["clip_id"]}
    pools = [set(load_from_disk(str(out / f"round-{k}" / "pool"))["clip_id"]) for k in (1, 2)]
    assert not (pools[0] & pools[1]) and not (pools[0] | pools[1]) & world_ids
    assert set(load_from_disk(str(out / "round-2" / "candidates"))["clip_id"]) == pools[1]

    # RL starts from the previous round's captioner; the KL reference stays round 0's SFT; the reward is this round's.
    for k, start in ((1, "loop/round-0/sft"), (2, "loop/round-1/rl")):
        rl = _record(out / f"round-{k}", "rl")["config"]
        assert rl["model_name_or_path"] == start and rl["ref_model_name_or_path"] == "loop/round-0/sft"
        assert rl["reward_model_name_or_path"] == f"loop/round-{k}/reward-model"
        assert _record(out / f"round-{k}", "reward")["config"]["dataset_name"] == f"loop/round-{k}/preferences"
    # The control: round 2 again from round 1's captioner, without new pairs (round 1's reward models).
    control = _record(out / "round-2-control", "rl")["config"]
    assert control["model_name_or_path"] == "loop/round-1/rl"
    assert control["reward_model_name_or_path"] == "loop/round-1/reward-model"
    assert control["selection_reward_model"] == "loop/round-1/selection-reward-model"
    assert results["control"]["control"] and "pairs" not in results["control"]
    assert not (out / "round-2-control" / "pool").exists()

    # Cards name their round; the dataset was pushed once a round, with every round's pairs so far.
    assert "round 2 of an `hfpref loop` run" in (out / "round-2" / "rl" / "README.md").read_text()
    assert "reward model of round 1" in (out / "round-1" / "reward-model" / "README.md").read_text()
    assert [(p["repo_id"], p["rounds"], p["commit_message"]) for p in pushed] == [
        ("someone/loop-pairs", [0, 1], "hfpref loop round 1"),
        ("someone/loop-pairs", [0, 1, 2], "hfpref loop round 2"),
    ]


def test_win_rates_are_recounted_from_the_per_clip_scores(loop_run, monkeypatch):
    """
    Round 2's evaluation run again with its current captioner writing the true caption of every other test clip
    (oracle 1.0) and an empty caption elsewhere: the win rates over round 1 and round 0, recounted clip by clip from
    the oracle's scores of each caption, match the report's.
    """
    import hfpref.models.captioning as captioning
    from hfpref.judges.oracle import OracleJudge
    from hfpref.loop.config import LoopConfig
    from hfpref.loop.pipeline import _evaluate

    root, out, _ = loop_run
    monkeypatch.chdir(root)
    test = load_from_disk(str(out / "round-0" / "world"))["test"]
    truth = [c if i % 2 == 0 else "" for i, c in enumerate(test["caption"])]
    real = captioning.generate_captions

    def fake(model, processor, audio, **kwargs):
        return truth if getattr(model, "_is_current", False) else real(model, processor, audio, **kwargs)

    import hfpref.quickstart.stages as stages

    load = stages._load_captioner

    def marked(path):
        model, processor = load(path)
        model._is_current = Path(path).name == "rl" and Path(path).parent.name == "round-2"
        return model, processor

    monkeypatch.setattr(captioning, "generate_captions", fake)
    monkeypatch.setattr("hfpref.loop.pipeline._load_captioner", marked)
    folder = root / "recount"
    folder.mkdir()
    evaluation = _evaluate(folder, Path("loop"), LoopConfig(size="tiny", rounds=2), 2, Path("loop/round-2/rl"))
    rows = [json.loads(line) for line in (folder / "evaluation.jsonl").read_text().splitlines()]
    oracle = OracleJudge()
    assert [r["current"] for r in rows] == truth
    assert all(r["current_oracle"] == 1.0 for r in rows[::2])
    for opponent in ("previous", "round_0"):
        for split, keep in (
            ("all", lambda r, o=opponent: True),
            ("challenging", lambda r, o=opponent: r[f"challenging_{o}"]),
        ):
            chosen = [r for r in rows if keep(r)]
            wins = losses = 0
            for r, events in zip(rows, test["events"]):
                if not keep(r):
                    continue
                mine = oracle.score([r["current"]], events=events)[0]
                theirs = oracle.score([r[opponent]], events=events)[0]
                wins, losses = wins + (mine > theirs + 1e-9), losses + (theirs > mine + 1e-9)
            reported = evaluation["win_rates"][opponent]["oracle"][split]
            assert reported["non_ties"] == wins + losses
            if wins + losses:
                assert reported["win_rate"] == pytest.approx(wins / (wins + losses))
            assert len(chosen) >= 1
    assert evaluation["frozen_reward_model"] == "round-1/reward-model"


def test_an_interrupted_loop_resumes_and_reuses_finished_stages(loop_run, capsys):
    """Run again, every stage is reused; with round 2's RL weights gone, only round 2's RL and evaluation run."""
    from hfpref.cli.main import main

    root, out, _ = loop_run
    before = json.loads((out / "results.json").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main([*LOOP_ARGS, "--control"]) == 0
        printed = capsys.readouterr().out
        assert printed.count(": reused (") == 5 + 2 * 7 + 2
        evaluated = (out / "round-2" / "evaluation.jsonl").read_bytes()
        (out / "round-2" / "rl" / "model.safetensors").unlink()
        assert main([*LOOP_ARGS, "--control"]) == 0
        printed = capsys.readouterr().out
    ran = [line.split(":")[0] for line in printed.splitlines() if line.startswith("[") and "reused" not in line]
    assert ran == ["[6/7] rl", "[7/7] evaluate"]
    assert (out / "round-2" / "rl" / "model.safetensors").is_file()
    after = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in after["rounds"]] == [r["round"] for r in before["rounds"]]
    assert (out / "round-2" / "evaluation.jsonl").read_bytes() == evaluated  # the same seed: the same captions


def test_reward_model_judge_prefers_the_caption_its_reward_model_scores_higher(loop_run):
    from hfpref.encoders.clap import ClapEmbedder
    from hfpref.loop.judging import reward_model_judgments
    from hfpref.rewards import CLAPRewardModel

    _, out, _ = loop_run
    pool = load_from_disk(str(out / "round-1" / "pool"))
    candidates = load_from_disk(str(out / "round-1" / "candidates"))
    candidates = candidates.add_column("audio", list(pool["audio"])).cast_column("audio", pool.features["audio"])
    rm, clap = out / "round-0" / "reward-model", out / "round-0" / "clap"
    rows = reward_model_judgments(candidates, str(rm), str(clap), str(out / "embedding-cache"))
    embedder = ClapEmbedder.from_pretrained(str(clap), show_progress=False)
    model = CLAPRewardModel.from_pretrained(str(rm)).eval()
    import torch

    from hfpref.data.audio import decode_audio

    rate = embedder.sampling_rate
    audio = embedder.embed_audio([decode_audio(a, rate) for a in pool["audio"]], sampling_rate=rate)

    with torch.no_grad():
        greedy = model(audio_embedding=torch.from_numpy(audio),
                       text_embedding=torch.from_numpy(embedder.embed_text(candidates["greedy"]))).rewards  # fmt: skip
        top_k = model(audio_embedding=torch.from_numpy(audio),
                      text_embedding=torch.from_numpy(embedder.embed_text(candidates["top_k"]))).rewards  # fmt: skip
    expected = np.where(np.abs(greedy - top_k) <= 1e-9, "tie", np.where(greedy > top_k, "greedy", "top_k"))
    assert [r["verdict"] for r in rows] == list(expected)
    assert not any(r["both_fail"] for r in rows)  # a reward model writes no corrections


def test_loop_config_errors_name_the_setting(tmp_path):
    from hfpref.cli.loop import JUDGES
    from hfpref.loop import LOOP_JUDGES, LoopConfig

    assert JUDGES == list(LOOP_JUDGES)
    path = tmp_path / "loop.yaml"
    path.write_text("rounds: 2\njudges: oracle\n")
    with pytest.raises(ValueError, match=r"loop.yaml: unknown loop settings \['judges'\]"):
        LoopConfig.from_yaml(path)
    path.write_text("rounds: 3\njudge: oracle\nseed: 4\n")
    assert LoopConfig.from_yaml(path, seed=5).seed == 5 and LoopConfig.from_yaml(path).rounds == 3
    with pytest.raises(ValueError, match="judge='people' is not one of"):
        LoopConfig(judge="people")
    with pytest.raises(ValueError, match="needs rounds >= 2"):
        LoopConfig(rounds=1, control=True)
    with pytest.raises(ValueError, match="needs llm_base_url and llm_model"):
        LoopConfig(judge="llm")
    with pytest.raises(ValueError, match="push_to_hub needs hub_dataset_id"):
        LoopConfig(push_to_hub=True)


def _http(url: str, token: str | None = None, payload: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Hfpref-Token"] = token
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
        return json.loads(response.read())


def _wait_for_server(session: Path, process: subprocess.Popen, timeout: float = 240.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the loop exited ({process.returncode}) before serving the annotation round")
        if (session / "server.json").is_file():
            return json.loads((session / "server.json").read_text())
        time.sleep(0.5)
    raise AssertionError("the annotation app did not start")


def test_annotate_round_through_the_http_api_resumes_after_the_server_is_killed(loop_run, tmp_path):
    """
    Round 1 judged by people: the loop serves the round's items in the annotation app; half are answered over HTTP,
    the loop's process is killed (SIGKILL: nothing is flushed at exit), the loop is started again, serves the same
    session with the answers kept, the rest are answered, and the round finishes with every answer in its judgments:
    "A" picks as the caption shown first, "both_wrong" with a correction as a correction pair.
    """
    _, out, _ = loop_run
    work = tmp_path / "run"
    work.mkdir()
    shutil.copytree(out / "round-0", work / "loop" / "round-0")  # round 0 is reused (relative paths, same hashes)
    shutil.copytree(out / "embedding-cache", work / "loop" / "embedding-cache")
    argv = [sys.executable, "-m", "hfpref.cli", "loop", "--size", "tiny", "--rounds", "1", "--judge", "annotate",
            "--annotate-port", "0", "--seed", "0", "--output-dir", "loop"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    session = work / "loop" / "round-1" / "annotation"
    logs = [open(tmp_path / f"loop-{i}.log", "w") for i in range(2)]
    process = subprocess.Popen(argv, cwd=work, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    given: dict[str, tuple[str, str | None]] = {}  # item id -> (what was answered, the shown order)

    def answer(server: dict, count: int) -> None:
        token = (session / server["token_file"]).read_text().strip()
        for _ in range(count):
            state = _http(f"{server['url']}api/state?annotator=alice")
            item = state["item"]
            if item is None:
                return
            if len(given) % 3 == 2:
                payload = {"choice": "both_wrong", "correction": f"a corrected caption number {len(given)}"}
            else:
                payload = {"choice": "A"}
            payload.update(annotator="alice", item_id=item["item_id"], answer_id=uuid.uuid4().hex)
            assert _http(f"{server['url']}api/answer", token, payload)["ok"]
            given[item["item_id"]] = (payload["choice"], item["shown_order"], payload.get("correction"))

    try:
        server = _wait_for_server(session, process)
        total = _http(f"{server['url']}api/state?annotator=alice")["total"]
        assert total >= 4
        answer(server, total // 2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        (session / "server.json").unlink()  # a killed process leaves it behind
        process = subprocess.Popen(argv, cwd=work, env=env, stdout=logs[1], stderr=subprocess.STDOUT)
        server = _wait_for_server(session, process)
        state = _http(f"{server['url']}api/state?annotator=alice")
        assert state["done"] == total // 2  # the answers given before the kill are kept
        answer(server, total)
        assert process.wait(timeout=300) == 0, (tmp_path / "loop-1.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        for log in logs:
            log.close()
    assert len(given) == total
    judged = load_from_disk(str(work / "loop" / "round-1" / "judgments"))
    items = load_from_disk(str(session / "items"))
    by_clip = {row["clip_id"]: row for row in judged}
    corrections = set()
    for item in items:
        choice, shown, correction = given[item["item_id"]]
        row = by_clip[item["clip_id"]]
        if choice == "A":
            expected = "greedy" if shown[0] == "1" else "top_k"  # caption_1 is the greedy caption
            assert row["verdict"] == expected and not row["both_fail"]
        else:
            assert row["verdict"] == "tie" and row["both_fail"] and row["correction"] == correction
            corrections.add(correction)
    pairs = load_from_disk(str(work / "loop" / "round-1" / "pairs"))
    written = {p["chosen"] for split in pairs.values() for p in split if p["source"] == "correction"}
    assert written == corrections
    results = json.loads((work / "loop" / "results.json").read_text())
    assert results["rounds"][0]["pairs"]["judged"]["answers"] == total


@pytest.mark.parametrize("name", ["config_oracle.yaml", "config_annotate.yaml"])
def test_shipped_loop_configs_load(name):
    from hfpref.loop import LoopConfig

    config = LoopConfig.from_yaml(Path(__file__).resolve().parents[1] / "recipes" / "loop" / name)
    assert config.rounds == 2 and config.judge in name


def test_llm_judge_picks_the_caption_the_endpoint_scores_higher(loop_run):
    """Round 1's candidates judged by an OpenAI-compatible endpoint (a local fake that scores crc32(caption) % 10 + 1)."""
    import importlib.util
    import zlib

    from hfpref.loop.judging import llm_judgments

    spec = importlib.util.spec_from_file_location("chat_server", Path(__file__).parent / "judges" / "chat_server.py")
    chat_server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chat_server)
    _, out, _ = loop_run
    candidates = load_from_disk(str(out / "round-1" / "candidates")).select(range(8))
    server = chat_server.FakeChatServer()
    with server:
        rows = llm_judgments(candidates, server.base_url, "judge-7b", None, 10.0)
    score = lambda caption: zlib.crc32(caption.encode()) % 10 + 1  # noqa: E731
    for row, candidate in zip(rows, candidates):
        g, s = score(candidate["greedy"]), score(candidate["top_k"])
        assert row["verdict"] == ("tie" if g == s else "greedy" if g > s else "top_k")
        assert not row["both_fail"]
    prompt = server.requests[0]["messages"][0]["content"]
    assert len(server.requests) == 16 and "expert annotator of audio captions" in prompt
    assert candidates[0]["references"][0] in prompt


def test_round_configs_start_rl_from_the_previous_round_and_can_warm_start_the_reward_models():
    from hfpref.loop import LoopConfig
    from hfpref.loop.pipeline import round_configs

    out = Path("out")
    cold = round_configs(LoopConfig(size="tiny"), out, 2)
    assert "init_from" not in cold["reward"] and "init_from" not in cold["selection"]
    assert (
        cold["rl"]["model_name_or_path"] == "out/round-1/rl"
        and cold["rl"]["ref_model_name_or_path"] == "out/round-0/sft"
    )
    assert cold["reward"]["seed"] == 2 and cold["reward"]["dataset_name"] == "out/round-2/preferences"
    warm = {k: round_configs(LoopConfig(size="tiny", reward_warm_start=True), out, k) for k in (1, 2)}
    assert warm[1]["reward"]["init_from"] == "out/round-0/reward-model" and "init_from" not in warm[1]["selection"]
    assert warm[2]["reward"]["init_from"] == "out/round-1/reward-model"
    assert warm[2]["selection"]["init_from"] == "out/round-1/selection-reward-model"
    control = round_configs(LoopConfig(size="tiny", reward_warm_start=True), out, 2, control=True)
    assert control["rl"]["reward_model_name_or_path"] == "out/round-1/reward-model"
    assert control["rl"]["output_dir"] == "out/round-2-control/rl" and "init_from" not in control["reward"]
