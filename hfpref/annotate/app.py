"""The listening-test web app: a small HTTP server on 127.0.0.1 (Python's standard library) and one page.

The page plays the clip and shows the caption(s); annotators answer with buttons or keys, see their progress, and
resume where they left off (their answers are on the server, under their name). Several annotators work on one item
set at once, each at `/?annotator=NAME`, each with an item order and, in pairwise tests, a caption order (A/B)
randomized per annotator and item (FENSE's protocol: the order must not hint at the source). The browser keeps every
answer in `localStorage` until the server has stored it (see [`~annotate.storage.append_answer`]), so answers given
while the server is down or restarting are sent when it is back; closing the tab loses nothing either.

Other web pages the annotator has open must not read or write the session:

- every request must name an allowed host in its `Host` header (`localhost`, `127.0.0.1`, `::1`, the host the server
  is bound to, and any `--allowed-host`), so a page on a name that an attacker re-points at 127.0.0.1 (DNS
  rebinding) reads neither the items, the audio nor the token;
- an answer (`POST /api/answer`) must carry the session's token in the `X-Hfpref-Token` header (the page gets it in
  its config; it is kept in `<output-dir>/app-token`, so a restarted server takes the answers the page kept), and,
  when the browser sends an `Origin`, come from the page's own origin. A page on another origin can neither read
  the token nor send the header without a CORS preflight, which the server does not answer;
- a request whose headers or body stop arriving is dropped after [`REQUEST_TIMEOUT_S`] seconds of silence, so
  half-sent requests cannot hold the server's threads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import signal
import threading
import time
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, urlparse, urlsplit

import numpy as np

from .storage import ANSWERS, Session, append_answer, check_annotator, check_answer


logger = logging.getLogger(__name__)

# What the page sends for each pairwise button (A and B as shown) and each binary button.
PAIRWISE_CHOICES = ("A", "B", "tie", "both_wrong")
AUDIO_TYPES = ((b"RIFF", "audio/wav"), (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"))
# Host names every server answers to; the bound host and `--allowed-host` names are added.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Bind addresses that are no host name (every interface): the names to reach them by go in `--allowed-host`.
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
TOKEN_FILE = "app-token"
TOKEN_HEADER = "X-Hfpref-Token"
# Seconds a connection may stay silent while its request line, headers or body are being read.
REQUEST_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 65536


def _digest(*parts) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def session_token(output_dir: str | Path) -> str:
    """
    The session's answer token: read from `<output_dir>/app-token`, or made (32 random bytes, readable by the owner
    only) on first use. It outlives a restart, so answers a page kept while the server was down are still taken.
    """
    path = Path(output_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if len(token) < 32:
            raise ValueError(
                f"{path}: the token is {len(token)} characters, fewer than 32; delete the file to make a new one."
            )
        return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def host_name(value: str | None) -> str | None:
    """
    The host name of a `Host` header or an origin's `host[:port]`, lower-cased, without port or IPv6 brackets
    (`None` when there is none).

    Example:
    ```python
    >>> host_name("LocalHost:7860"), host_name("[::1]:7860"), host_name(""), host_name("[::1")
    ('localhost', '::1', None, None)

    ```
    """
    if not value:
        return None
    try:
        return urlsplit("//" + value.strip()).hostname or None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """
    The host names a server bound to `host` answers to: `localhost`, `127.0.0.1`, `::1`, `host` itself (unless it
    is a wildcard such as `0.0.0.0`) and the `extra` names (`--allowed-host`, e.g. the machine's name on the LAN).
    """
    names = set(LOCAL_HOSTS)
    if host not in WILDCARD_HOSTS:
        names.add(host_name(host) or host)
    for value in extra:
        name = host_name(value)
        if not name:
            raise ValueError(f"--allowed-host {value!r} is not a host name")
        names.add(name)
    return frozenset(names)


def audio_type(data: bytes) -> str:
    """
    The MIME type of an audio file from its first bytes (`application/octet-stream` when unknown).

    Example:
    ```python
    >>> audio_type(b"RIFF....WAVEfmt ")
    'audio/wav'

    ```
    """
    for magic, mime in AUDIO_TYPES:
        if data.startswith(magic):
            return mime
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return "application/octet-stream"


class AnnotationApp:
    r"""
    The state behind the page: the session, each annotator's item order and shown caption order.

    Args:
        session ([`~annotate.storage.Session`]): the session to annotate.
        annotator (`str`, *optional*): the name the page starts with (`--annotator`); others use `?annotator=`.
        seed (`int`, *optional*): seed of the randomized orders; defaults to the session's (`--seed` when it began).
        token (`str`, *optional*): the token answers must carry; defaults to the session's [`session_token`].
    """

    def __init__(
        self, session: Session, annotator: str | None = None, seed: int | None = None, token: str | None = None
    ):
        self.session = session
        self.token = session_token(session.output_dir) if token is None else token
        self.task = session.task
        self.default_annotator = check_annotator(annotator) if annotator else None
        self.seed = session.settings.get("seed", 0) if seed is None else seed
        columns = [c for c in session.items.column_names if c != "audio"]
        self.items = session.items.select_columns(columns).to_list()
        self.rows = {item["item_id"]: row for row, item in enumerate(self.items)}
        self._audio_lock = threading.Lock()
        self._orders: dict[str, list[str]] = {}

    def order(self, annotator: str) -> list[str]:
        """The annotator's item order: a permutation seeded by the session seed and the annotator's name."""
        if annotator not in self._orders:
            rng = np.random.default_rng(int.from_bytes(_digest(self.seed, annotator)[:8], "little"))
            ids = [item["item_id"] for item in self.items]
            self._orders[annotator] = [ids[i] for i in rng.permutation(len(ids))]
        return self._orders[annotator]

    def shown_order(self, annotator: str, item_id: str) -> str:
        """`"12"` when caption_1 is shown as A, `"21"` when caption_2 is."""
        return "21" if _digest(self.seed, annotator, item_id)[0] & 1 else "12"

    def _payload(self, annotator: str, item_id: str, answered: dict[str, dict]) -> dict:
        item = self.items[self.rows[item_id]]
        order = self.order(annotator)
        position = order.index(item_id)
        payload = {"item_id": item_id, "clip_id": item["clip_id"], "audio_url": f"/audio/{item_id}"}
        payload["position"] = position + 1
        payload["back"] = order[position - 1] if position > 0 else None
        previous = answered.get(item_id)
        if self.task == "pairwise":
            shown = self.shown_order(annotator, item_id)
            payload["shown_order"] = shown
            payload["texts"] = [item[f"caption_{shown[0]}"], item[f"caption_{shown[1]}"]]
            if previous:
                payload["answer"] = self._choice(previous["answer"], shown)
        else:
            payload["texts"] = [item["text"]]
            if previous:
                payload["answer"] = previous["answer"]
        if previous:
            payload["correction"] = previous.get("correction") or ""
        return payload

    @staticmethod
    def _choice(answer: str, shown: str) -> str:
        if answer in ("caption_1", "caption_2"):
            return "AB"[shown.index(answer[-1])]
        return answer

    def state(self, annotator: str, item_id: str | None = None) -> dict:
        """Progress and the item to show: `item_id`, or the first unanswered item of the annotator's order."""
        check_annotator(annotator)
        answered = {r["item_id"]: r for r in self.session.answers(annotator)}
        order = self.order(annotator)
        state = {"task": self.task, "annotator": annotator, "total": len(order), "done": len(answered)}
        if item_id is None:
            item_id = next((i for i in order if i not in answered), None)
            if item_id is None:
                state.update(item=None, back=order[-1] if order else None)
                return state
        elif item_id not in self.rows:
            raise ValueError(f"unknown item {item_id!r}")
        state["item"] = self._payload(annotator, item_id, answered)
        return state

    def answer(self, payload: dict) -> dict:
        """Validate an answer from the page, store it durably, and return the stored record."""
        annotator = check_annotator(payload.get("annotator"))
        item_id = payload.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.rows:
            raise ValueError(f"unknown item {item_id!r}")
        answer_id = payload.get("answer_id")
        if not isinstance(answer_id, str) or not 8 <= len(answer_id) <= 64:
            raise ValueError("answer_id must be a string of 8 to 64 characters")
        choice = payload.get("choice")
        record = {"answer_id": answer_id, "annotator": annotator, "item_id": item_id, "choice": choice}
        if self.task == "pairwise":
            if choice not in PAIRWISE_CHOICES:
                raise ValueError(f"choice {choice!r} is not one of {list(PAIRWISE_CHOICES)}")
            shown = self.shown_order(annotator, item_id)
            record["shown_order"] = shown
            record["answer"] = f"caption_{shown['AB'.index(choice)]}" if choice in ("A", "B") else choice
        else:
            record["answer"] = choice
        correction = payload.get("correction")
        if correction is not None and not isinstance(correction, str):
            raise ValueError(f"correction must be a text or null, got {type(correction).__name__}")
        record["correction"] = check_answer(self.task, record["answer"], correction)
        elapsed = payload.get("elapsed_ms")
        valid = isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and math.isfinite(elapsed)
        if elapsed is not None and not (valid and elapsed >= 0):
            raise ValueError(f"elapsed_ms must be a finite number >= 0 or null, got {elapsed!r}")
        record["elapsed_ms"] = None if elapsed is None else int(elapsed)
        record["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        append_answer(self.session.output_dir, record)
        return record

    def audio(self, item_id: str) -> bytes:
        """The clip's file bytes, as stored (WAV, FLAC, OGG or MP3 play in the browser)."""
        with self._audio_lock:
            value = self.session.items[self.rows[item_id]]["audio"]
        if value.get("bytes"):
            return value["bytes"]
        return Path(value["path"]).read_bytes()

    def page(self) -> bytes:
        config = {
            "task": self.task,
            "annotator": self.default_annotator,
            "choices": list(ANSWERS[self.task]),
            "token": self.token,
        }
        template = (files("hfpref.annotate") / "page.html").read_text(encoding="utf-8")
        return template.replace("__CONFIG__", json.dumps(config)).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    app: AnnotationApp
    hosts: frozenset[str]
    server_version = "hfpref-annotate"
    # `StreamRequestHandler` sets it on the connection: a read that waits longer raises and drops the connection.
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _host_refused(self) -> bool:
        """Answer 403 and return True when the `Host` header names no allowed host (DNS rebinding)."""
        host = self.headers.get("Host")
        if host_name(host) in self.hosts:
            return False
        logger.warning("refused a request for host %r from %s", host, self.address_string())
        self._json(
            HTTPStatus.FORBIDDEN,
            {
                "error": f"host {host!r} is not allowed; this server answers to {sorted(self.hosts)} (start it with "
                "--allowed-host NAME to add a name)"
            },
        )
        return True

    def _post_refused(self) -> str | None:
        """Why an answer must be refused (another origin, no or a wrong token), or `None`."""
        origin = self.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != self.headers.get("Host", "").lower():
                return f"answers are only taken from this app's own page, not from origin {origin!r}"
        token = self.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(token.encode("utf-8", "replace"), self.app.token.encode("utf-8")):
            return f"the {TOKEN_HEADER} header is missing or wrong: reload the app's page"
        return None

    def do_GET(self):  # noqa: N802 - BaseHTTPRequestHandler's name
        if self._host_refused():
            return
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                self._send(HTTPStatus.OK, self.app.page(), "text/html; charset=utf-8")
            elif url.path == "/api/state":
                self._json(HTTPStatus.OK, self.app.state(query.get("annotator", ""), query.get("item_id")))
            elif url.path.startswith("/audio/") and url.path[7:] in self.app.rows:
                data = self.app.audio(url.path[7:])
                self._send(HTTPStatus.OK, data, audio_type(data))
            elif url.path == "/api/health":
                self._json(HTTPStatus.OK, {"ok": True, "task": self.app.task, "items": len(self.app.items)})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {url.path!r}"})
        except ValueError as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})

    def do_POST(self):  # noqa: N802
        if self._host_refused():
            return
        if urlparse(self.path).path != "/api/answer":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path!r}"})
            return
        refused = self._post_refused()
        if refused:
            logger.warning("refused an answer from %s: %s", self.address_string(), refused)
            self._json(HTTPStatus.FORBIDDEN, {"error": refused})
            return
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ValueError(f"Content-Length {self.headers.get('Content-Length')!r} is not a number") from None
            if not 0 < length <= MAX_ANSWER_BYTES:
                raise ValueError(f"an answer is 1 to {MAX_ANSWER_BYTES} bytes of JSON, got {length}")
            body = self.rfile.read(length)
            if len(body) != length:
                raise ValueError(f"the body ended after {len(body)} of the {length} bytes its Content-Length states")
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as error:  # bad JSON, not UTF-8, or nested too deeply
                raise ValueError(f"an answer is a JSON object; the body is not JSON ({error})") from None
            if not isinstance(payload, dict):
                raise ValueError(f"an answer is a JSON object, not {type(payload).__name__}")
            record = self.app.answer(payload)
        except ValueError as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self._json(HTTPStatus.OK, {"ok": True, "answer_id": record["answer_id"]})


def make_server(
    app: AnnotationApp,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    allowed_host: list[str] | tuple[str, ...] = (),
    timeout: float = REQUEST_TIMEOUT_S,
) -> ThreadingHTTPServer:
    r"""
    An HTTP server for `app` (not started); `port=0` picks a free port (`server.server_address[1]`).

    Args:
        app ([`AnnotationApp`]): the state behind the page.
        host (`str`, *optional*, defaults to `"127.0.0.1"`): the address to bind.
        port (`int`, *optional*, defaults to `7860`): the port to bind; 0 picks a free one.
        allowed_host (`list[str]`, *optional*): host names the server answers to besides [`allowed_hosts`]' defaults
            (e.g. the machine's name when annotators on the LAN reach a server bound to `0.0.0.0`).
        timeout (`float`, *optional*, defaults to `30.0`): seconds of silence after which a connection whose request
            is not fully read is dropped.
    """
    attributes = {"app": app, "hosts": allowed_hosts(host, allowed_host), "timeout": timeout}
    handler = type("Handler", (_Handler,), attributes)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(
    output_dir: str | Path,
    *,
    annotator: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    open_browser: bool = False,
    allowed_host: list[str] | tuple[str, ...] = (),
) -> None:
    """
    Serve the session in `output_dir` until interrupted (Ctrl-C or SIGTERM); every answer is on disk once the page
    shows the next item. `allowed_host` names the host names besides localhost and `host` that the page may be
    reached by (see [`make_server`]).
    """
    app = AnnotationApp(Session.open(output_dir), annotator=annotator)
    server = make_server(app, host, port, allowed_host=allowed_host)
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/" + (f"?annotator={annotator}" if annotator else "")
    if host in WILDCARD_HOSTS and not allowed_host:
        print(
            f"Bound to {host or 'every interface'}: other machines reach the page only by a name given with "
            "--allowed-host NAME (requests naming other hosts are refused).",
            flush=True,
        )
    answered = len(app.session.answers())
    print(f"Annotation app ({app.task}, {len(app.items)} items, {answered} answers so far) on {url}", flush=True)
    print("Other annotators: add ?annotator=NAME to the address. Ctrl-C stops the server.", flush=True)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    start = time.perf_counter()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    print(f"Stopped after {time.perf_counter() - start:.0f} s; {len(app.session.answers())} answers stored.")
