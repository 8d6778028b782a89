"""The annotation app against other web pages and bad input: cross-origin answers, DNS rebinding, malformed and
half-sent requests, items naming files that are not clips, and corrupt answer files."""

import http.client
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
from datasets import Dataset

from hfpref.annotate.app import REQUEST_TIMEOUT_S, TOKEN_HEADER, AnnotationApp, make_server, session_token
from hfpref.annotate.export import export_annotations
from hfpref.annotate.items import load_items
from hfpref.annotate.storage import Session, read_answers
from hfpref.cli.main import main
from hfpref.data.audio import encode_wav


@pytest.fixture(scope="module")
def items(world_dir, judgments_dir):
    return load_items(judgments_dir, "pairwise", audio_dataset=world_dir)


@pytest.fixture
def session(tmp_path, items):
    table, counts = items
    return Session.create(tmp_path / "session", {"task": "pairwise", "items": "q", "seed": 0, **counts}, table)


@pytest.fixture
def serve(session):
    """Start servers on free ports (keyword arguments go to `make_server`); each yields its port."""
    servers = []

    def start(**kwargs):
        server = make_server(AnnotationApp(session, annotator="alice"), port=0, **kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _request(port, method, path, body=None, headers=None):
    """(status, JSON or bytes body) of one request; `headers` may set `Host` (http.client then sends no other)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(data) if is_json else data
    finally:
        connection.close()


def _answer(session, **fields):
    item_id = AnnotationApp(session).order("alice")[0]
    answer = {"annotator": "alice", "item_id": item_id, "choice": "A", "answer_id": "a" * 12, "elapsed_ms": 900}
    return json.dumps({**answer, **fields}).encode()


@pytest.mark.parametrize(
    "origin, token, message",
    [
        ("http://evil.example", "right", "not from origin 'http://evil.example'"),
        ("http://127.0.0.1:1", "right", "not from origin"),  # another port is another origin
        ("null", "right", "not from origin 'null'"),  # sandboxed frames and file:// pages
        (None, None, "header is missing or wrong"),  # a form or a script that cannot read the page
        ("same", "wrong", "header is missing or wrong"),
    ],
)
def test_a_cross_origin_answer_is_refused(session, serve, origin, token, message):
    port = serve()
    right = session_token(session.output_dir)
    headers = {"Content-Type": "application/json"}
    if origin:
        headers["Origin"] = f"http://127.0.0.1:{port}" if origin == "same" else origin
    if token:
        headers[TOKEN_HEADER] = right if token == "right" else right[:-4] + "AAAA"
    status, reply = _request(port, "POST", "/api/answer", _answer(session), headers)
    assert status == 403 and message in reply["error"]
    assert read_answers(session.output_dir) == []
    # the control: the same answer from the app's own page, with its token, is taken
    headers.update({"Origin": f"http://127.0.0.1:{port}", TOKEN_HEADER: right})
    status, reply = _request(port, "POST", "/api/answer", _answer(session), headers)
    assert status == 200 and [r["answer_id"] for r in read_answers(session.output_dir)] == ["a" * 12]


def test_the_token_is_in_the_page_owner_only_and_outlives_a_restart(session, serve):
    port = serve()
    status, page = _request(port, "GET", "/")
    token = session_token(session.output_dir)
    assert status == 200 and len(token) >= 43 and f'"token": "{token}"'.encode() in page
    assert f'"{TOKEN_HEADER}": CONFIG.token'.encode() in page  # the page sends it with every answer
    assert os.stat(session.output_dir / "app-token").st_mode & 0o777 == 0o600
    assert AnnotationApp(Session.open(session.output_dir)).token == token  # a restarted server takes kept answers
    (session.output_dir.parent / "other").mkdir()
    assert session_token(session.output_dir.parent / "other") != token  # fails with p = 2^-256 otherwise


def test_requests_naming_another_host_are_refused(session, serve):
    port = serve(allowed_host=["Annotate.LAN"])
    item_id = AnnotationApp(session).order("alice")[0]
    for path in ("/", "/api/state?annotator=alice", f"/audio/{item_id}", "/api/health"):
        # a page on a name re-pointed at 127.0.0.1 (DNS rebinding) reads nothing
        status, reply = _request(port, "GET", path, headers={"Host": f"attacker.example:{port}"})
        assert status == 403 and "host 'attacker.example:" in reply["error"] and "--allowed-host" in reply["error"]
        for host in ("127.0.0.1", "localhost", "LOCALHOST", "[::1]", "annotate.lan"):
            assert _request(port, "GET", path, headers={"Host": f"{host}:{port}"})[0] == 200, (path, host)
    token = session_token(session.output_dir)
    headers = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}", TOKEN_HEADER: token}
    assert _request(port, "POST", "/api/answer", _answer(session), headers)[0] == 403
    assert _request(port, "GET", "/api/health", headers={"Host": "[::1"})[0] == 403  # not a host name at all
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # HTTP/1.0 without a Host header
        raw.sendall(b"GET /api/state?annotator=alice HTTP/1.0\r\n\r\n")
        assert raw.makefile("rb").readline().split()[1] == b"403"
    assert read_answers(session.output_dir) == []


def _handler_attribute(app, name, *args, **kwargs):
    server = make_server(app, *args, **kwargs)
    server.server_close()
    return getattr(server.RequestHandlerClass, name)


def test_a_server_on_every_interface_answers_only_to_the_names_given(session):
    app = AnnotationApp(session)
    assert _handler_attribute(app, "hosts", "0.0.0.0", 0) == {"localhost", "127.0.0.1", "::1"}
    named = _handler_attribute(app, "hosts", "0.0.0.0", 0, allowed_host=["lab-pc:7860", "10.0.0.5"])
    assert named == {"localhost", "127.0.0.1", "::1", "lab-pc", "10.0.0.5"}
    assert _handler_attribute(app, "hosts", "127.0.0.2", 0) == {"localhost", "127.0.0.1", "::1", "127.0.0.2"}


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{", "the body is not JSON"),
        (b'\xff\xfe{"a": 1}', "the body is not JSON"),  # not UTF-8
        (b"[" * 60000, "the body is not JSON"),  # nested too deeply for the parser
        (b"[1, 2]", "a JSON object, not list"),
        ({"item_id": ["a list"]}, "unknown item ['a list']"),
        ({"item_id": {"a": 1}}, "unknown item"),
        ({"correction": 5}, "correction must be a text or null, got int"),
        ({"elapsed_ms": float("inf")}, "elapsed_ms must be a finite number"),
        ({"elapsed_ms": -3}, "elapsed_ms must be a finite number"),
        ({"elapsed_ms": "fast"}, "elapsed_ms must be a finite number"),
        ({"choice": ["A"]}, "is not one of"),
    ],
)
def test_malformed_answers_get_a_400_with_the_reason(session, serve, body, message):
    port = serve()
    if isinstance(body, dict):
        body = _answer(session, **body)
    headers = {"Content-Type": "application/json", TOKEN_HEADER: session_token(session.output_dir)}
    status, reply = _request(port, "POST", "/api/answer", body, headers)
    assert status == 400 and message in reply["error"]
    assert read_answers(session.output_dir) == []


@pytest.mark.parametrize(
    "length, message", [("abc", "Content-Length 'abc' is not a number"), ("0", "got 0"), ("99999", "got 99999")]
)
def test_bad_content_lengths_get_a_400(session, serve, length, message):
    port = serve()
    headers = {TOKEN_HEADER: session_token(session.output_dir), "Content-Length": length}
    status, reply = _request(port, "POST", "/api/answer", b"{}", headers)
    assert status == 400 and message in reply["error"]


def _silence_until_closed(port, sent: bytes) -> float:
    """Send the start of a request, then nothing: seconds until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(sent)
        start = time.monotonic()
        assert raw.recv(4096) == b""  # closed without an answer; a server without a timeout raises TimeoutError here
        return time.monotonic() - start


def test_half_sent_requests_are_dropped(session, serve):
    assert REQUEST_TIMEOUT_S == 30 and _handler_attribute(AnnotationApp(session), "timeout", port=0) == 30
    port = serve(timeout=0.3)
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    token = f"{TOKEN_HEADER}: {session_token(session.output_dir)}\r\n".encode()
    headers_cut = b"POST /api/answer HTTP/1.1\r\n" + host + b"Content-Len"
    body_cut = b"POST /api/answer HTTP/1.1\r\n" + host + token + b"Content-Length: 200\r\n\r\n{"
    # 0.3 s timeout, 5 s client limit: a loaded 2-core machine adds well under the 4.7 s margin
    assert all(_silence_until_closed(port, sent) < 4 for sent in (headers_cut, body_cut))
    assert _request(port, "GET", "/api/health")[0] == 200  # the server goes on serving
    assert read_answers(session.output_dir) == []


def test_a_body_shorter_than_its_content_length_gets_a_400(session, serve):
    port = serve()
    token = session_token(session.output_dir)
    request = f"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{TOKEN_HEADER}: {token}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request.encode() + b"Content-Length: 200\r\n\r\n{}")
        raw.shutdown(socket.SHUT_WR)  # the client has sent all it will
        reply = raw.makefile("rb").read()
    assert reply.split()[1] == b"400" and b"the body ended after 2 of the 200 bytes" in reply


# Items naming files: what the session copies and the export publishes.


def _items(folder, audio_paths):
    """A `save_to_disk` items table in `folder` whose `audio` column holds file paths."""
    rows = {"clip_id": [f"c{i}" for i in range(len(audio_paths))], "audio": [str(p) for p in audio_paths]}
    rows["prompt"] = [f"a dog barks {i}" for i in range(len(audio_paths))]
    Dataset.from_dict(rows).save_to_disk(str(folder))
    return folder


def _wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_wav(np.random.default_rng(0).uniform(-0.3, 0.3, 800), 8000))
    return path


def test_items_take_only_decodable_audio_from_their_folder(tmp_path, monkeypatch):
    (tmp_path / "items").mkdir()
    monkeypatch.chdir(tmp_path / "items")  # relative audio paths are read from the working directory
    inside, outside = _wav(tmp_path / "items" / "clips" / "a.wav"), _wav(tmp_path / "elsewhere" / "b.wav")
    (tmp_path / "items" / "clips" / "notes.wav").write_text("not audio at all\n")
    table, _ = load_items(_items(tmp_path / "items", [inside]), "binary")
    assert table[0]["audio"]["bytes"] is None and table[0]["audio"]["path"] == str(inside)

    path = _items(tmp_path / "items", [inside, "/etc/passwd"])
    with pytest.raises(ValueError, match=r"items: row 1 \(clip 'c1'\) names audio file '/etc/passwd', which is "):
        load_items(path, "binary")
    with pytest.raises(ValueError, match=r"items: row 1 \(clip 'c1'\) has no usable audio: cannot decode"):
        load_items(path, "binary", allow_audio_outside=True)  # allowed from anywhere, but still not audio

    path = _items(tmp_path / "items", [inside, tmp_path / "items" / "clips" / "notes.wav"])
    with pytest.raises(ValueError, match=r"items: row 1 \(clip 'c1'\) has no usable audio: .*notes\.wav"):
        load_items(path, "binary")

    sibling = _wav(tmp_path / "items-other" / "c.wav")  # its path starts with the items folder's path
    for path in (outside, "../elsewhere/b.wav", sibling):
        with pytest.raises(ValueError, match=r"row 1 \(clip 'c1'\) names audio file .*, which is not under"):
            load_items(_items(tmp_path / "items", [inside, path]), "binary")

    path = _items(tmp_path / "items", [inside, outside, "../elsewhere/b.wav", sibling])
    assert len(load_items(path, "binary", allow_audio_outside=True)[0]) == 4
    assert len(load_items(path, "binary", audio_root=tmp_path)[0]) == 4
    with pytest.raises(ValueError, match="row 0 .* which is not under"):
        load_items(path, "binary", audio_root=tmp_path / "elsewhere")


def test_the_cli_passes_the_audio_options_on(tmp_path):
    path = _items(tmp_path / "items", ["/etc/passwd"])
    args = ["annotate", "--task", "binary", "--items", str(path), "--output-dir", str(tmp_path / "session")]
    with pytest.raises(ValueError, match="which is not under"):
        main(args)
    with pytest.raises(ValueError, match="has no usable audio"):
        main([*args, "--allow-audio-outside"])
    assert not (tmp_path / "session").exists()  # refused before the session copies anything
    with pytest.raises(SystemExit, match="apply to --items only"):
        main(["annotate", "--output-dir", str(tmp_path / "session"), "--allow-audio-outside"])


# Corrupt answer files: the export names the file and line.


@pytest.mark.parametrize(
    "line, message",
    [
        (b"[1, 2]", "is a JSON list, not an object"),
        (b'{"answer_id": "b2", "annotator": "alice", "item_id": "ITEM", "answer": "bogus"}', "answer 'bogus' is not"),
        (b'{"answer_id": 7, "annotator": "alice", "item_id": "ITEM", "answer": "tie"}', "has answer_id 7, not a text"),
        (
            b'{"answer_id": "b2", "annotator": "alice", "item_id": "ITEM", "answer": "both_wrong", "correction": 5}',
            "has correction 5, not a text or null",
        ),
        (b'{"answer_id": "b2", "annotator": "al/ice", "item_id": "ITEM", "answer": "tie"}', "annotator name"),
        (b'{"answer_id": "b2", "annotator": "alice", "item_id": "nope", "answer": "tie"}', "not in this session"),
        (b'{"answer_id": "b2", "annotator": "alice", "item_id": ["ITEM"], "answer": "tie"}', "not a text"),
        (b'{"answer_id": "\xff"}', "is not valid JSON"),
        (b'{"answer_id": "b2", "annotator": "alice"}', "lacks ['item_id', 'answer']"),
    ],
)
def test_a_corrupt_answer_file_is_an_error_naming_file_and_line(session, line, message):
    item_id = session.items["item_id"][0]
    first = {"answer_id": "b1", "annotator": "alice", "item_id": item_id, "answer": "caption_1"}
    (session.output_dir / "answers").mkdir()
    path = session.output_dir / "answers" / "alice.jsonl"
    path.write_bytes(json.dumps(first).encode() + b"\n" + line.replace(b"ITEM", item_id.encode()) + b"\n")
    with pytest.raises(ValueError, match=r"alice\.jsonl: line 2 ") as error:
        export_annotations(session.output_dir)
    assert message in str(error.value)
    path.write_bytes(json.dumps(first).encode() + b"\n")  # the control: the valid line alone exports
    assert export_annotations(session.output_dir)[1]["answers"] == 1
