"""
An LLM judge behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI, llama.cpp's server, ...),
in place of AlignCap's GPT-3.5 scoring prompt ([Liang et al., 2024](https://huggingface.co/papers/2410.19134),
figure 5, whose text the paper does not reproduce; [`SCORING_PROMPT`] is ours).

Each candidate is one request (`POST {base_url}/chat/completions`, temperature 0); the answer must be a JSON object
`{"score": <number from 1 to 10>}`, possibly inside a code fence. A timeout, an HTTP or connection error, or a
malformed answer raises [`~hfpref.judges.base.JudgeError`] naming the candidate and the reason, and is counted in
`stats` (`timeouts`, `http_errors`, `malformed_answers`); nothing is ever scored by default.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import urllib.error
import urllib.request

from .base import Judge, JudgeError


SCORING_PROMPT = """You are an expert annotator of speech emotion captions. A caption should describe how a \
speaker sounds: the emotion, and the pitch, speaking rate (rhythm), volume, intonation and tone of the voice.

Reference captions, written by people who listened to the clip:
{references}

Candidate caption:
{candidate}

Rate the candidate from 1 (wrong or unrelated) to 10 (as accurate and complete as the references). Reward every \
emotional clue the references support; penalise clues that contradict them (a wrong emotion, pitch, rate or volume) \
more than missing ones; ignore wording and grammar unless they make the caption unclear.
Answer with a JSON object only, for example {{"score": 7}}."""

# The same rating for audio captions (what happens in the clip, in order), e.g. for `hfpref loop --judge llm`.
AUDIO_CAPTION_PROMPT = """You are an expert annotator of audio captions. A caption should describe what can be heard \
in the clip: the sound events and their sources, in the order they happen.

Reference captions, written by people who listened to the clip:
{references}

Candidate caption:
{candidate}

Rate the candidate from 1 (wrong or unrelated) to 10 (as accurate and complete as the references). Penalise sounds \
the references do not support (a hallucinated or wrong event) more than missing ones, and a wrong order of events; \
ignore wording and grammar unless they make the caption unclear.
Answer with a JSON object only, for example {{"score": 7}}."""

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class OpenAIJudge(Judge):
    """
    Scores captions with an LLM served behind an OpenAI-compatible `/chat/completions` endpoint.

    Args:
        base_url (`str`): e.g. `"http://localhost:8000/v1"` (the path up to `/chat/completions`).
        model (`str`): model name sent in each request.
        api_key (`str`, *optional*): sent as `Authorization: Bearer <api_key>` when given.
        timeout (`float`, *optional*, defaults to `30.0`): seconds per request.
        prompt (`str`, *optional*, defaults to [`SCORING_PROMPT`]): template with `{references}` and `{candidate}`.
        max_tokens (`int`, *optional*, defaults to `32`): answer length limit.
    """

    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        prompt: str = SCORING_PROMPT,
        max_tokens: int = 32,
    ):
        super().__init__()
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} must start with http:// or https://")
        if "{references}" not in prompt or "{candidate}" not in prompt:
            raise ValueError("the scoring prompt must contain {references} and {candidate}")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout} must be > 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout, self.prompt, self.max_tokens = (
            model,
            api_key,
            timeout,
            prompt,
            max_tokens,
        )

    def _request(self, content: str) -> dict:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": content}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.stats["requests"] += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except TimeoutError as error:
            self.stats["timeouts"] += 1
            raise JudgeError(f"{self.url} did not answer within {self.timeout} s") from error
        except urllib.error.HTTPError as error:
            self.stats["http_errors"] += 1
            raise JudgeError(f"{self.url} answered HTTP {error.code}: {error.read()[:200]!r}") from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                self.stats["timeouts"] += 1
                raise JudgeError(f"{self.url} did not answer within {self.timeout} s") from error
            self.stats["http_errors"] += 1
            raise JudgeError(f"cannot reach {self.url}: {error.reason}") from error
        except (http.client.HTTPException, ConnectionError) as error:  # e.g. the server hung up without answering
            self.stats["http_errors"] += 1
            raise JudgeError(f"connection to {self.url} failed: {error!r}") from error
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            self.stats["malformed_answers"] += 1
            raise JudgeError(f"{self.url} answered with invalid JSON: {raw[:200]!r}") from error

    def parse_score(self, answer: dict, candidate: str) -> float:
        """The score in a chat-completions response; [`JudgeError`] (counted) when it is not there or not 1..10."""
        try:
            content = answer["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            self.stats["malformed_answers"] += 1
            raise JudgeError(f"not a chat-completions response for {candidate!r}: {str(answer)[:200]}") from error
        fenced = _FENCE.match(content)
        try:
            score = json.loads(fenced.group(1) if fenced else content)["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not 1 <= score <= 10:
                raise ValueError(score)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            self.stats["malformed_answers"] += 1
            raise JudgeError(
                f'expected {{"score": 1..10}} for {candidate!r}, the LLM answered {content[:200]!r}'
            ) from error
        return float(score)

    def _score(self, candidates, references, audio):
        if not references:
            self.stats["missing_references"] += 1
            raise JudgeError("the LLM judge needs the clip's reference captions")
        listed = "\n".join(f"- {r}" for r in references)
        return [
            self.parse_score(self._request(self.prompt.format(references=listed, candidate=c)), c) for c in candidates
        ]
