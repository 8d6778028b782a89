import json
import threading
import urllib.error
import urllib.request

import pytest

from hfpref.annotate.app import TOKEN_HEADER, AnnotationApp, make_server, session_token
from hfpref.annotate.items import load_items
from hfpref.annotate.storage import Session, read_answers


@pytest.fixture
def served(tmp_path, world_dir, judgments_dir):
    items, counts = load_items(judgments_dir, "pairwise", audio_dataset=world_dir)
    session = Session.create(tmp_path / "session", {"task": "pairwise", "items": "q", "seed": 0, **counts}, items)
    server = make_server(AnnotationApp(session, annotator="alice"), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield session, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Content-Type"), response.read()


def _state(base, annotator="alice", item_id=None):
    query = f"/api/state?annotator={annotator}" + (f"&item_id={item_id}" if item_id else "")
    return json.loads(_get(base + query)[1])


def _post(base, payload, token):
    headers = {"Content-Type": "application/json", TOKEN_HEADER: token}
    request = urllib.request.Request(base + "/api/answer", data=json.dumps(payload).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_page_state_answer_audio_and_resume(served):
    session, base = served
    content_type, page = _get(base + "/")
    assert content_type.startswith("text/html") and b'"annotator": "alice"' in page and b"__CONFIG__" not in page
    state = _state(base)
    assert (state["total"], state["done"], state["item"]["position"]) == (6, 0, 1)
    item = state["item"]
    row = session.items["item_id"].index(item["item_id"])
    shown = [session.items[row][f"caption_{k}"] for k in item["shown_order"]]
    assert item["texts"] == shown
    content_type, audio = _get(base + item["audio_url"])
    assert content_type == "audio/wav" and audio == session.items[row]["audio"]["bytes"]

    token = session_token(session.output_dir)
    assert token.encode() in page  # the page sends it with every answer
    status, reply = _post(
        base, {"annotator": "alice", "item_id": item["item_id"], "choice": "A", "answer_id": "x" * 12}, token
    )
    assert status == 200 and reply["ok"]
    (stored,) = read_answers(session.output_dir)
    assert stored["answer"] == f"caption_{item['shown_order'][0]}"  # A is whichever caption was shown first
    after = _state(base)
    assert after["done"] == 1 and after["item"]["item_id"] != item["item_id"]
    assert after["item"]["back"] == item["item_id"]
    revisit = _state(base, item_id=item["item_id"])["item"]
    assert revisit["answer"] == "A"
    # a restarted server resumes at the same item
    assert AnnotationApp(Session.open(session.output_dir)).state("alice")["item"] == after["item"]


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"choice": "C"}, "choice 'C' is not one of"),
        ({"choice": "both_wrong"}, "needs a correction"),
        ({"choice": "A", "item_id": "nope"}, "unknown item"),
        ({"choice": "A", "annotator": "a/b"}, "annotator name"),
        ({"choice": "A", "answer_id": "x"}, "answer_id"),
    ],
)
def test_bad_answers_are_refused_with_the_reason(served, payload, message):
    session, base = served
    first = _state(base)["item"]["item_id"]
    payload = {"annotator": "alice", "item_id": first, "answer_id": "y" * 12, **payload}
    status, reply = _post(base, payload, session_token(session.output_dir))
    assert status == 400 and message in reply["error"]
    assert read_answers(session.output_dir) == []


def test_orders_are_randomized_per_annotator(served):
    session, _ = served
    app = AnnotationApp(session)
    orders = {name: app.order(name) for name in ("alice", "bob", "carol")}
    assert all(sorted(order) == sorted(session.items["item_id"]) for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) > 1
    shown = [app.shown_order(name, item) for name in orders for item in session.items["item_id"]]
    assert {"12", "21"} == set(shown)
    assert AnnotationApp(session).order("bob") == orders["bob"]  # the same after a restart
