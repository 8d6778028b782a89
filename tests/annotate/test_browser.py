"""The annotation app in a real headless browser (Debian's chromium and chromedriver, which `make test` installs):
two annotators, keys and clicks, a server killed mid-session and restarted, then the export and its kappa."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from hfpref.cli.main import main


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (`make test` installs them: "
    "apt-get install chromium chromium-driver)",
)
KEYS = {"A": "1", "B": "2", "tie": "3", "both_wrong": "4"}
METADATA = "const p = document.getElementById('player'); return p.readyState >= 1 ? p.duration : null"


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1100,620",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


class Server:
    """`hfpref annotate` in a subprocess, as a user runs it."""

    def __init__(self, args: list[str], log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.args, self.log, self.process = args, log, None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        command = [sys.executable, "-m", "hfpref.cli.main", "annotate", *self.args, "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=2) as response:
                    return json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not come up:\n{self.log.read_text()}")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def _page(driver):
    body = driver.find_element("tag name", "body")
    return body.get_attribute("data-state"), body.get_attribute("data-item-id")


def _wait(driver, predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(*_page(driver)):
            return _page(driver)
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; page state {_page(driver)}")


def _choice(driver, items, item_id, answer):
    """The button that gives `answer` on this page: A or B depend on the order the page shows the captions in."""
    if answer not in ("caption_1", "caption_2"):
        return answer
    shown = driver.find_element("id", "text-A").text.split("\n", 1)[1]
    row = items["item_id"].index(item_id)
    return "A" if shown == items[row][answer] else "B"


def _answer(driver, items, plan, by="key"):
    """Answer the item on screen as `plan` says (a canonical answer, or (answer, correction)); return its row."""
    from selenium.webdriver.common.keys import Keys

    _, item_id = _wait(driver, lambda state, item: state == "ready", "an item")
    row = items["item_id"].index(item_id)
    answer, correction = plan[row] if isinstance(plan[row], tuple) else (plan[row], None)
    choice = _choice(driver, items, item_id, answer)
    if by == "key":
        driver.find_element("tag name", "body").send_keys(KEYS[choice])
    else:
        driver.find_element("id", f"choice-{choice}").click()
    if correction:
        box = driver.find_element("id", "correction")
        assert box.is_displayed() and driver.switch_to.active_element == box
        box.send_keys(correction + Keys.ENTER)
    _wait(driver, lambda state, item: state in ("done", "offline") or (state == "ready" and item != item_id), "next")
    return row


def _progress(driver):
    return driver.find_element("id", "progress-text").text


def _pending(driver, annotator):
    return driver.execute_script(
        "return JSON.parse(localStorage.getItem(`hfpref-pending:${location.host}:${arguments[0]}`) || '[]').length",
        annotator,
    )


# What each annotator answers on each of the 4 items (by item row), in the items' own caption order.
PLAN = {
    "alice": ["caption_1", "caption_2", "tie", "caption_2"],
    "bob": ["caption_1", "caption_2", "caption_1", ("both_wrong", "a bell rings twice")],
}


def test_two_annotators_a_killed_server_and_the_export(driver, tmp_path, world_dir, judgments_dir):
    load_from_disk(str(judgments_dir)).select(range(4)).save_to_disk(str(tmp_path / "items"))
    folder = tmp_path / "session"
    args = ["--task", "pairwise", "--items", str(tmp_path / "items"), "--audio-dataset", str(world_dir)]
    server = Server([*args, "--output-dir", str(folder), "--annotator", "alice"], tmp_path / "server.log")
    assert server.start()["items"] == 4
    items = load_from_disk(str(folder / "items"))

    # alice (the --annotator default): one answer by key, one by click; the clip plays in the browser
    driver.get(server.url + "/")
    alice = driver.current_window_handle
    _wait(driver, lambda state, item: state == "ready", "alice's first item")
    deadline = time.monotonic() + 20
    while (duration := driver.execute_script(METADATA)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert duration == pytest.approx(1.0, abs=0.05)  # the browser decoded the 1 s clip the server sent
    driver.save_screenshot(str(tmp_path / "annotate.png"))
    _answer(driver, items, PLAN["alice"])
    _answer(driver, items, PLAN["alice"], by="click")
    assert _progress(driver) == "2 of 4 answered"

    # bob, at the same time, in another tab
    driver.switch_to.new_window("tab")
    bob = driver.current_window_handle
    driver.get(server.url + "/?annotator=bob")
    _answer(driver, items, PLAN["bob"])

    # the server dies; alice keeps answering: the page keeps the answer and says so
    server.kill()
    driver.switch_to.window(alice)
    _answer(driver, items, PLAN["alice"])
    assert _page(driver)[0] == "offline" and "Server unreachable" in driver.find_element("id", "status").text
    assert _pending(driver, "alice") == 1
    assert len((folder / "answers" / "alice.jsonl").read_text().splitlines()) == 2

    # restarted with the same command: the page sends the kept answer by itself and moves on
    server.start()
    _wait(driver, lambda state, item: state == "ready", "alice's page after the restart")
    assert _pending(driver, "alice") == 0 and _progress(driver) == "3 of 4 answered"
    # the last item: first a tie, then back (U) to revise it
    last = _page(driver)[1]
    revised = PLAN["alice"][items["item_id"].index(last)]
    driver.find_element("tag name", "body").send_keys(KEYS["tie" if revised != "tie" else "A"])
    _wait(driver, lambda state, item: state == "done", "alice done")
    driver.find_element("tag name", "body").send_keys("u")
    _wait(driver, lambda state, item: state == "ready" and item == last, "alice's last item again")
    assert "selected" in driver.find_element("id", f"choice-{'tie' if revised != 'tie' else 'A'}").get_attribute(
        "class"
    )
    _answer(driver, items, PLAN["alice"])
    assert _page(driver)[0] == "done" and _progress(driver) == "4 of 4 answered"

    # bob reloads: he resumes where he left off, and writes a correction for the pair that is all wrong
    driver.switch_to.window(bob)
    driver.refresh()
    _wait(driver, lambda state, item: state == "ready", "bob's page after the restart")
    assert _progress(driver) == "1 of 4 answered"
    for _ in range(3):
        _answer(driver, items, PLAN["bob"])
    assert _page(driver)[0] == "done"
    assert server.stop() == 0

    # every answer is on disk once, in both caption orders, and the export follows the votes
    records = [json.loads(line) for path in sorted((folder / "answers").glob("*.jsonl")) for line in path.open()]
    assert len(records) == 9  # alice's revised answer is a record of its own
    assert {r["shown_order"] for r in records} == {"12", "21"}
    assert main(["annotate", "--output-dir", str(folder), "--export", "--report", "--json"]) == 0
    dataset = load_from_disk(str(folder / "dataset"))
    greedy, top_k = items["caption_1"], items["caption_2"]
    assert [(r["chosen"], r["rejected"], r["source"]) for r in dataset] == [
        (greedy[0], top_k[0], "human"),  # +2
        (top_k[1], greedy[1], "human"),  # -2
        (greedy[2], top_k[2], "human"),  # tie + caption_1: +1
        (top_k[3], greedy[3], "human"),  # caption_2 + both wrong: -1
        ("a bell rings twice", greedy[3], "correction"),
        ("a bell rings twice", top_k[3], "correction"),
    ]
    assert dataset["challenging"] == [False, False, False, True, True, True]
    report = json.loads((folder / "report.json").read_text())
    # (caption_1, caption_2, tie, both_wrong): [2,0,0,0], [0,2,0,0], [1,0,1,0], [0,1,0,1]; P_i = 1, 1, 0, 0,
    # P_bar = 1/2; shares 3/8, 3/8, 1/8, 1/8 give P_e = 20/64; kappa = (1/2 - 5/16) / (1 - 5/16) = 3/11.
    assert report["splits"]["all"]["fleiss_kappa"]["kappa"] == pytest.approx(3 / 11)
    # non-challenging items 0-2: P_bar = 2/3, P_e = (9 + 4 + 1) / 36, kappa = 5/11
    assert report["splits"]["non_challenging (annotators)"]["fleiss_kappa"]["kappa"] == pytest.approx(5 / 11)
    assert report["splits"]["all"]["votes"] == {"caption_1": 3, "caption_2": 3, "tie": 1, "both_wrong": 1}
    assert report["annotator_agreement"]["alice|bob"] == {"items": 4, "agreement": 0.5}
    assert (tmp_path / "annotate.png").read_bytes().startswith(b"\x89PNG")


def test_binary_keys_and_an_optional_correction(driver, tmp_path):
    from hfpref.data.tta_feedback import write_feedback_skeleton

    rng = np.random.default_rng(0)
    prompts = ["a dog barks", "a bell rings", "rain falls"]
    write_feedback_skeleton(prompts, [[rng.uniform(-0.3, 0.3, 8000)] for _ in prompts], tmp_path, sampling_rate=16000)
    folder = tmp_path / "session"
    server = Server(["--task", "binary", "--items", str(tmp_path), "--output-dir", str(folder)], tmp_path / "log")
    server.start()
    driver.get(server.url + "/")
    _wait(driver, lambda state, item: state == "login", "the name form")
    driver.find_element("id", "name").send_keys("carol\n")
    from selenium.webdriver.common.keys import Keys

    answers = {"a dog barks": ("y", None), "a bell rings": ("n", None), "rain falls": ("c", "water drips")}
    for _ in prompts:
        _, item_id = _wait(driver, lambda state, item: state == "ready", "an item")
        key, correction = answers[driver.find_element("id", "text-0").text.split("\n", 1)[1]]
        driver.find_element("tag name", "body").send_keys(key)
        if correction:
            driver.find_element("id", "correction").send_keys(correction + Keys.ENTER)
        _wait(driver, lambda state, item, seen=item_id: state == "done" or (state == "ready" and item != seen), "next")
    assert _page(driver)[0] == "done" and "carol" in driver.current_url
    assert server.stop() == 0
    assert main(["annotate", "--output-dir", str(folder), "--export"]) == 0
    dataset = load_from_disk(str(folder / "dataset"))
    assert sorted(zip(dataset["prompt"], dataset["label"], dataset["source"])) == [
        ("a bell rings", 0, "human"),
        ("a dog barks", 1, "human"),
        ("rain falls", 0, "human"),
        ("water drips", 1, "correction"),
    ]
