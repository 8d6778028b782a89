import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from hfpref.data.synthetic.audio_world import EVENT_KINDS, parse_events
from hfpref.judges.oracle import oracle_score
from hfpref.prompts.tta_prompts import (
    INTEGRITY_CONJUNCTIONS,
    TEMPORAL_CONJUNCTIONS,
    OpenAICompatibleRephraser,
    build_tta_prompts,
    prompts_to_dataset,
    rephrase_prompts,
    split_multi_event_captions,
    world_event_phrases,
)


AUDIOCAPS_LABELS = ["Speech", "Vehicle", "Dog", "Bird", "Train horn", "Baby cry, infant cry", "Waves, surf", "Rain"]


def test_the_papers_conjunction_lists():
    assert INTEGRITY_CONJUNCTIONS == (",", "and", "while", "with", "as", "followed by", "then", "and then", "before")
    assert len(TEMPORAL_CONJUNCTIONS) == 11 and all(len(pair) == 2 for pair in TEMPORAL_CONJUNCTIONS)
    assert ("with", "and then") in TEMPORAL_CONJUNCTIONS and ("before", "as") in TEMPORAL_CONJUNCTIONS


@pytest.mark.parametrize("task,size,options", [("integrity", 2, INTEGRITY_CONJUNCTIONS), ("temporal", 3, None)])
def test_groups_have_distinct_labels_and_every_conjunction_is_used(task, size, options):
    prompts = build_tta_prompts(AUDIOCAPS_LABELS, 99, task, seed=3)
    assert len(prompts) == 99
    for p in prompts:
        assert len(p.labels) == size == len(set(p.labels)) and set(p.labels) <= set(AUDIOCAPS_LABELS)
        assert p.order == p.labels and p.task == task and len(p.conjunctions) == size - 1
        assert p.prompt == p.original_prompt and not p.rephrased
    expected = [(c,) for c in INTEGRITY_CONJUNCTIONS] if task == "integrity" else list(TEMPORAL_CONJUNCTIONS)
    counts = Counter(p.conjunctions for p in prompts)
    # Consecutive permutations of the list: 99 prompts use each of 9 (11) entries exactly 11 (9) times.
    assert set(counts) == set(expected) and len(set(counts.values())) == 1


def test_prompt_text_joins_phrases_with_the_conjunctions():
    prompts = build_tta_prompts(["Dog", "Rain"], 18, "integrity", seed=0)
    texts = {p.conjunctions[0]: p.prompt for p in prompts}
    assert texts[","] in ("Dog, rain", "Rain, dog")
    assert texts["followed by"] in ("Dog followed by rain", "Rain followed by dog")
    labels = {p.conjunctions[0]: p.labels for p in prompts}
    assert texts["before"].lower() == f"{labels['before'][0].lower()} before {labels['before'][1].lower()}"


def test_seeded_and_varied():
    a = build_tta_prompts(AUDIOCAPS_LABELS, 10, "temporal", seed=1)
    assert a == build_tta_prompts(AUDIOCAPS_LABELS, 10, "temporal", seed=1)
    assert a != build_tta_prompts(AUDIOCAPS_LABELS, 10, "temporal", seed=2)
    # Two prompts never share one conjunction pair only.
    assert len({p.conjunctions for p in build_tta_prompts(AUDIOCAPS_LABELS, 2, "temporal", seed=5)}) == 2


def test_world_prompts_name_their_events_in_order_for_the_oracle():
    prompts = build_tta_prompts(EVENT_KINDS, 40, "temporal", seed=0, event_phrases=world_event_phrases())
    for p in prompts:
        assert parse_events(p.prompt) == list(p.order)
        assert oracle_score(p.prompt, p.order) == 1.0


def test_bad_arguments_say_what_is_valid():
    with pytest.raises(ValueError, match="is not one of"):
        build_tta_prompts(AUDIOCAPS_LABELS, 2, "order")
    with pytest.raises(ValueError, match="3 distinct labels"):
        build_tta_prompts(["Dog", "Dog", "Rain"], 2, "temporal")
    with pytest.raises(ValueError, match="fewer than 2 distinct"):
        build_tta_prompts(AUDIOCAPS_LABELS, 2, conjunctions=["and", "and"])
    with pytest.raises(ValueError, match="needs 2 conjunction"):
        build_tta_prompts(AUDIOCAPS_LABELS, 2, "temporal", conjunctions=["and", "then"])
    with pytest.raises(ValueError, match="no phrase for label"):
        build_tta_prompts(["Dog", "Rain"], 1, event_phrases={"Dog": ["a dog barks"]})


def test_dataset_keeps_labels_and_order():
    ds = prompts_to_dataset(build_tta_prompts(AUDIOCAPS_LABELS, 4, "temporal", seed=0))
    assert ds.column_names == ["prompt", "labels", "order", "task", "conjunctions", "original_prompt", "rephrased"]
    assert all(len(labels) == 3 for labels in ds["labels"]) and ds["labels"] == ds["order"]


class _ChatHandler(BaseHTTPRequestHandler):
    """Speaks OpenAI's /chat/completions: answers "Caption: <the prompt, reworded>", fails on prompts with 'Rain'."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        content = body["messages"][0]["content"]
        caption = content.rsplit("Caption: ", 1)[1]
        if "rain" in caption.lower():
            self.send_response(500)
            self.end_headers()
            return
        answer = {"choices": [{"message": {"role": "assistant", "content": f'Caption: "We hear {caption.lower()}."'}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _ChatHandler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_rephrasing_through_an_openai_compatible_server_counts_failures(chat_server):
    prompts = build_tta_prompts(["Dog", "Rain", "Bird", "Speech"], 8, "integrity", seed=0)
    rephraser = OpenAICompatibleRephraser(base_url=chat_server, model="tiny-llm", api_key="k", timeout=5)
    out, report = rephrase_prompts(prompts, rephraser)
    with_rain = sum("rain" in p.prompt.lower() for p in prompts)
    assert 0 < with_rain < len(prompts)
    assert (report.requested, report.rephrased, report.failed) == (8, 8 - with_rain, with_rain)
    assert len(report.errors) == with_rain and "HTTPError" in report.errors[0]
    for before, after in zip(prompts, out):
        assert after.labels == before.labels and after.order == before.order
        if "rain" in before.prompt.lower():
            assert after == before  # the failure kept the joined prompt
        else:
            assert after.rephrased and after.prompt == f"We hear {before.prompt.lower()}."
            assert after.original_prompt == before.prompt
    path, auth, body = _ChatHandler.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "tiny-llm"


def test_unreachable_endpoint_keeps_every_prompt():
    prompts = build_tta_prompts(["Dog", "Bird"], 2, seed=0)
    out, report = rephrase_prompts(prompts, OpenAICompatibleRephraser("http://127.0.0.1:9/v1", "m", timeout=1))
    assert out == prompts and report.failed == 2 and report.rephrased == 0


def test_test_set_filter_splits_two_and_three_event_captions():
    captions = [
        "A dog barks and a cat meows",  # 1 filter word -> 2 events
        "Wind blows",  # no filter word
        "A man speaks then a door slams before music plays",  # 2 -> 3 events
        "Thunder rumbles as rain falls and then birds chirp and wind blows",  # 4 -> 5 events: neither
        "Spandex band",  # "and" inside a word does not count
        "Rain continues after a pause",  # "after" counts
    ]
    assert split_multi_event_captions(captions) == {"integrity": [0, 5], "temporal": [2]}
    labels = [["Dog", "Cat"], ["Wind"], ["Speech", "Door"], ["Thunder", "Rain", "Bird"], ["Music"], ["Rain"]]
    assert split_multi_event_captions(captions, labels) == {"integrity": [0, 2], "temporal": [3]}
