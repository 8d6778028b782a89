import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from hfpref.guidance.audibility_data import (
    generate_audibility_examples,
    load_audibility_dataset,
    load_seed_set,
    normalize_label,
    parse_llm_examples,
)


def test_seed_set_is_balanced_unique_and_large_enough():
    seed = load_seed_set()
    assert len(seed) >= 200
    assert sum(seed["label"]) * 2 == len(seed)
    normalized = [" ".join(s.lower().split()) for s in seed["sentence"]]
    assert len(set(normalized)) == len(normalized)
    assert seed.features["label"].names == ["non_audible", "audible"]


def test_loader_reads_csv_and_jsonl_with_any_label_spelling(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("text,is_audible\nA dog barks.,audible\nThe wall is green.,Non-Audible\nBells ring.,1\n")
    ds = load_audibility_dataset(str(csv), split="train", text_column="text", label_column="is_audible")
    assert ds["sentence"] == ["A dog barks.", "The wall is green.", "Bells ring."] and ds["label"] == [1, 0, 1]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"sentence": "Rain falls.", "label": true}\n{"sentence": "Snow is white.", "label": 0}\n')
    assert load_audibility_dataset(str(jsonl), split="train")["label"] == [1, 0]


def test_loader_names_the_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence": "Rain falls.", "label": "audible"}\n{"sentence": "x", "label": "maybe"}\n')
    with pytest.raises(ValueError, match="row 1: label 'maybe'"):
        load_audibility_dataset(str(path), split="train")
    with pytest.raises(ValueError, match="no column"):
        load_audibility_dataset(str(path), split="train", text_column="text")


def test_normalize_label_rejects_other_values():
    with pytest.raises(ValueError, match="not audible/non-audible"):
        normalize_label(2)


def test_parse_counts_malformed_lines():
    answer = "\n".join(
        [
            "```json",
            '{"sentence": "A cat meows at the door.", "label": "audible"}',
            '{"sentence": "The sky is pale blue.", "label": "non_audible"},',
            '{"sentence": "Too short", "label": "audible"}',
            '{"sentence": "A horn honks.", "label": "sometimes"}',
            '{"text": "wrong key", "label": "audible"}',
            "Here are more examples:",
            "```",
        ]
    )
    parsed = parse_llm_examples(answer)
    assert parsed.examples == [
        {"sentence": "A cat meows at the door.", "label": 1},
        {"sentence": "The sky is pale blue.", "label": 0},
    ]
    assert len(parsed.malformed) == 4


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat/completions endpoint answering from a script."""

    answers: list[str] = []
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        answer = type(self).answers[min(len(type(self).requests) - 1, len(type(self).answers) - 1)]
        payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_llm():
    _FakeLLM.requests = []
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _FakeLLM
    server.shutdown()
    server.server_close()


FIRST = "\n".join(
    [
        '{"sentence": "A dog barks repeatedly while a car passes by.", "label": "audible"}',  # in the seed set
        '{"sentence": "A tractor engine chugs across a muddy field.", "label": "audible"}',
        '{"sentence": "The curtains are made of heavy velvet.", "label": "non_audible"}',
        "not json at all",
    ]
)
SECOND = "\n".join(
    [
        '{"sentence": "Sleet taps against the car windshield.", "label": "audible"}',
        '{"sentence": "A tractor engine chugs across a muddy field.", "label": "audible"}',  # repeated
        '{"sentence": "The marble floor is cold and white.", "label": "non_audible"}',
        '{"sentence": "Seagulls shriek above the fishing boats.", "label": "audible"}',  # past the target
        '{"sentence": "", "label": "audible"}',
    ]
)


def test_generation_against_a_local_openai_compatible_server(fake_llm):
    base_url, handler = fake_llm
    handler.answers = [FIRST, SECOND]
    report = generate_audibility_examples(
        base_url, "fake-model", per_class=2, api_key="sk-test", existing=load_seed_set()["sentence"]
    )
    assert report.requests == 2
    assert report.counts() == {"non_audible": 2, "audible": 2}
    assert (report.malformed, report.duplicates, report.surplus) == (2, 2, 1)
    first = handler.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "fake-model" and first["body"]["messages"][0]["role"] == "system"
    assert "2 audible and 2 non_audible" in first["body"]["messages"][1]["content"]
    assert "1 audible and 1 non_audible" in handler.requests[1]["body"]["messages"][1]["content"]


def test_cli_writes_jsonl_and_reports_drops(fake_llm, tmp_path, monkeypatch, capsys):
    from hfpref.cli.main import main

    base_url, handler = fake_llm
    handler.answers = [FIRST, SECOND]
    monkeypatch.setenv("TEST_LLM_KEY", "sk-cli")
    out = tmp_path / "aud.jsonl"
    argv = [
        "audibility-data",
        "--base-url",
        base_url,
        "--model",
        "m",
        "--per-class",
        "2",
        "--api-key-env",
        "TEST_LLM_KEY",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dropped 2 malformed line(s), 2 duplicate(s)" in printed and "malformed: not json at all" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["label"] for r in rows} == {"audible", "non_audible"}
    assert handler.requests[0]["auth"] == "Bearer sk-cli"
    assert len(load_audibility_dataset(str(out), split="train")) == 4

    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(SystemExit, match="TEST_LLM_KEY is not set"):
        main(argv)
    # Never enough valid answers: the command says it fell short and fails.
    handler.answers = ["garbage"]
    assert main([*argv[:-2], "--no-api-key", "--max-requests", "2", "--output", str(out)]) == 1
    assert "short of the target" in capsys.readouterr().out
