"""A local OpenAI-compatible chat-completions server for the LLM-judge tests (http.server in a thread)."""

import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    """
    A local OpenAI-compatible `/v1/chat/completions` endpoint. The answer depends on the candidate caption in the
    prompt: `score N` -> `{"score": N}` (fenced when the caption says `fenced`), `prose` -> text, `eleven` -> 11,
    `nochoices` -> a JSON object without `choices`, `slow` -> sleeps past the client's timeout, `boom` -> HTTP 500,
    `hangup` -> closes the connection unanswered; any other caption scores `crc32(caption) % 10 + 1`. With
    `malformed_every=k`, every k-th request is answered in prose instead.
    """

    def __init__(self, malformed_every: int | None = None):
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                candidate = body["messages"][0]["content"].split("Candidate caption:\n", 1)[1].split("\n", 1)[0]
                if "hangup" in candidate:  # close the connection without an answer
                    self.close_connection = True
                    return
                if "boom" in candidate:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"internal error")
                    return
                if "slow" in candidate:
                    time.sleep(1.0)
                if "nochoices" in candidate:
                    content = None
                elif "prose" in candidate or (malformed_every and len(owner.requests) % malformed_every == 0):
                    content = "I would rate this caption fairly highly."
                elif "eleven" in candidate:
                    content = '{"score": 11}'
                elif "score " in candidate:
                    content = json.dumps({"score": int(candidate.split("score ")[1].split()[0])})
                    if "fenced" in candidate:
                        content = f"```json\n{content}\n```"
                else:
                    content = json.dumps({"score": zlib.crc32(candidate.encode()) % 10 + 1})
                answer = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                if "nochoices" in candidate:
                    answer = {"error": "no"}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout case)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
