"""A local, scriptable stand-in for the Anthropic API, good enough for the official `anthropic` SDK.

It listens on 127.0.0.1 (an ephemeral port) in a background thread and speaks:
  POST /v1/messages                         a Message (or an error, as scripted)
  POST /v1/messages/batches                 a MessageBatch, "in_progress"
  GET  /v1/messages/batches/{id}            the batch; "ended" after `batch_polls` retrievals (unless
                                            `hold_batches` is set), then with a `results_url`
  GET  /v1/messages/batches/{id}/results    JSONL, one result per custom_id
Requests must carry `x-api-key` or `Authorization: Bearer` (the SDK sends the latter); with `api_key`
set, any other key gets a 401. The key itself is never logged.

Scripting: `script(*replies)` queues replies for the next /v1/messages requests in arrival order;
`on(needle, *replies)` gives requests whose messages contain `needle` these replies in order (checked
first; batch requests too); `batch_outcome(position, params)` decides how a batch request ends.
Everything else gets `responder(body) -> text` (by default a JSON answer naming a few of
`target_titles`, chosen by a hash of the prompt) after `latency` seconds. `log` records every request
on arrival: method, path, status (once answered), the JSON body, and which auth header came;
`max_in_flight` is the most /v1/messages requests served at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence
from urllib.parse import urlsplit


@dataclasses.dataclass
class Reply:
  status: int = 200
  text: str | None = None  # None: the responder's answer
  headers: dict = dataclasses.field(default_factory=dict)
  error_type: str = ""
  delay: float = 0.0
  stop_reason: str = "end_turn"


def ok(text: str | None = None, delay: float = 0.0, stop_reason: str = "end_turn") -> Reply:
  return Reply(200, text, delay=delay, stop_reason=stop_reason)


def rate_limited(retry_after: float = 0.05) -> Reply:
  return Reply(429, headers={"retry-after": f"{retry_after:g}"}, error_type="rate_limit_error")


def overloaded() -> Reply:
  return Reply(529, error_type="overloaded_error")


def server_error(status: int = 500) -> Reply:
  return Reply(status, error_type="api_error")


def slow(seconds: float, text: str | None = None) -> Reply:
  return Reply(200, text, delay=seconds)


def bad_request(message: str = "prompt is too long") -> Reply:
  return Reply(400, text=message, error_type="invalid_request_error")


def json_answer(summary: str, items: Sequence[str]) -> str:
  return json.dumps({"summary": summary, "items": list(items)})


def _now_iso(offset: float = 0.0) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


class FakeAnthropic:
  """The server; use as a context manager (`with FakeAnthropic(...) as server: server.url`)."""

  def __init__(self, *, api_key: str | None = None, target_titles: Sequence[str] = (),
               latency: float = 0.0, batch_polls: int = 1, num_items: int = 4):
    self.api_key = api_key
    self.target_titles = list(target_titles)
    self.latency = float(latency)
    self.batch_polls = int(batch_polls)
    self.num_items = int(num_items)
    self.hold_batches = False
    self.responder: Callable[[dict], str] = self.default_answer
    # (position in its batch, params) -> None (answer as usual), a Reply (its text, or "errored" for an
    # error status), or "errored" / "expired" / "canceled": how a batch request ends.
    self.batch_outcome: Callable[[int, dict], Reply | str | None] = lambda position, params: None
    self.in_flight = 0
    self.max_in_flight = 0  # the most /v1/messages requests seen being served at once
    self.log: list[dict] = []
    self._queue: list[Reply] = []
    self._rules: list[tuple[str, list[Reply]]] = []
    self._batches: dict[str, dict] = {}
    self._lock = threading.Lock()
    self._count = 0
    self._httpd: ThreadingHTTPServer | None = None
    self._thread: threading.Thread | None = None

  # ---- scripting -------------------------------------------------------------------------------
  def script(self, *replies: Reply) -> None:
    with self._lock:
      self._queue.extend(replies)

  def on(self, needle: str, *replies: Reply) -> None:
    with self._lock:
      self._rules.append((needle, list(replies)))

  def default_answer(self, body: dict) -> str:
    """A valid answer naming `num_items` target titles picked by a hash of the prompt."""
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()
    n = len(self.target_titles)
    if n == 0:
      return json_answer("Likes things.", ["a thing"])
    picks = []
    for i in range(self.num_items):
      title = self.target_titles[int.from_bytes(digest[2 * i:2 * i + 2], "little") % n]
      if title not in picks:
        picks.append(title)
    return json_answer("Cooks often and likes practical tools.", picks)

  def _next_reply(self, body: dict, use_queue: bool = True) -> Reply:
    text = json.dumps(body.get("messages", []), ensure_ascii=False)
    with self._lock:
      for needle, replies in self._rules:
        if replies and needle in text:
          return replies.pop(0)
      if use_queue and self._queue:
        return self._queue.pop(0)
    return Reply(200, None)

  # ---- records ---------------------------------------------------------------------------------
  def _record(self, **entry) -> dict:
    """Logs a request on arrival; the handler fills in "status" once it has answered."""
    entry["t"] = time.monotonic()
    entry.setdefault("status", None)
    with self._lock:
      self.log.append(entry)
    return entry

  def message_bodies(self, status: int | None = 200) -> list[dict]:
    """Bodies of /v1/messages requests (answered with `status`; None: all)."""
    with self._lock:
      return [e["body"] for e in self.log if e["path"] == "/v1/messages" and e["method"] == "POST"
              and (status is None or e["status"] == status)]

  def batch_creations(self) -> list[dict]:
    with self._lock:
      return [e for e in self.log if e["path"] == "/v1/messages/batches" and e["method"] == "POST"]

  # ---- the API ---------------------------------------------------------------------------------
  def _message(self, body: dict, text: str, stop_reason: str) -> dict:
    with self._lock:
      self._count += 1
      n = self._count
    prompt_chars = len(json.dumps(body.get("messages", []))) + len(str(body.get("system", "")))
    return {"id": f"msg_{n:06d}", "type": "message", "role": "assistant",
            "model": body.get("model", "fake"), "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": prompt_chars // 4 + 1, "output_tokens": len(text) // 4 + 1}}

  def handle_messages(self, body: dict):
    reply = self._next_reply(body)
    with self._lock:
      self.in_flight += 1
      self.max_in_flight = max(self.max_in_flight, self.in_flight)
    try:
      time.sleep(self.latency + reply.delay)
    finally:
      with self._lock:
        self.in_flight -= 1
    if reply.status != 200:
      return reply.status, _error(reply.error_type, reply.text or "scripted error"), reply.headers
    text = reply.text if reply.text is not None else self.responder(body)
    return 200, self._message(body, text, reply.stop_reason), {}

  def handle_create_batch(self, body: dict):
    results = []
    for position, req in enumerate(body.get("requests", [])):
      cid, params = req["custom_id"], req["params"]
      outcome = self.batch_outcome(position, params)
      if outcome is None:
        outcome = self._next_reply(params, use_queue=False)
      if isinstance(outcome, Reply) and outcome.status != 200:
        outcome = "errored"
      if isinstance(outcome, Reply):
        text = outcome.text if outcome.text is not None else self.responder(params)
        result = {"type": "succeeded", "message": self._message(params, text, outcome.stop_reason)}
      else:
        result = {"type": outcome}
        if outcome == "errored":
          result["error"] = {"type": "error", "error": {"type": "api_error",
                                                       "message": "scripted batch error"}}
      results.append({"custom_id": cid, "result": result})
    with self._lock:
      bid = f"msgbatch_{len(self._batches) + 1:04d}"
      self._batches[bid] = {"id": bid, "results": results, "polls": 0, "created_at": _now_iso()}
    return 200, self._batch_json(bid), {}

  def _batch_json(self, bid: str) -> dict:
    b = self._batches[bid]
    ended = b["polls"] >= self.batch_polls and not self.hold_batches
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if ended:
      for r in b["results"]:
        counts[r["result"]["type"]] += 1
    else:
      counts["processing"] = len(b["results"])
    return {"id": bid, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": b["created_at"], "expires_at": _now_iso(86400),
            "ended_at": _now_iso() if ended else None, "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{bid}/results" if ended else None}

  def handle_get_batch(self, bid: str):
    with self._lock:
      if bid not in self._batches:
        return 404, _error("not_found_error", f"no batch {bid}"), {}
      self._batches[bid]["polls"] += 1
      return 200, self._batch_json(bid), {}

  def batch_results(self, bid: str) -> bytes | None:
    with self._lock:
      b = self._batches.get(bid)
      if b is None:
        return None
      return "".join(json.dumps(r) + "\n" for r in b["results"]).encode()

  # ---- lifecycle -------------------------------------------------------------------------------
  @property
  def url(self) -> str:
    assert self._httpd is not None, "start the server first"
    return f"http://127.0.0.1:{self._httpd.server_address[1]}"

  def start(self) -> "FakeAnthropic":
    server = self

    class Handler(_Handler):
      fake = server

    httpd = _Server(("127.0.0.1", 0), Handler)
    self._httpd = httpd
    self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                    daemon=True)
    self._thread.start()
    return self

  def close(self) -> None:
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.server_close()
      self._httpd = None

  def __enter__(self) -> "FakeAnthropic":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()


class _Server(ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 128  # 32+ concurrent clients connect at once


def _error(kind: str, message: str) -> dict:
  return {"type": "error", "error": {"type": kind or "api_error", "message": message}}


class _Handler(BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"
  fake: FakeAnthropic

  def log_message(self, *args) -> None:  # quiet
    pass

  def _auth(self) -> str | None:
    api_key = self.headers.get("x-api-key")
    bearer = self.headers.get("authorization", "")
    given = api_key or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
    if given is None:
      return None
    if self.fake.api_key is not None and given != self.fake.api_key:
      return "wrong"
    return "x-api-key" if api_key else "bearer"

  def _send(self, status: int, payload, headers: dict | None = None,
            content_type: str = "application/json") -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
      self.send_response(status)
      self.send_header("content-type", content_type)
      self.send_header("content-length", str(len(data)))
      self.send_header("request-id", "req_fake")
      for k, v in (headers or {}).items():
        self.send_header(k, v)
      self.end_headers()
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the client gave up (a timeout test)

  def _read_json(self) -> dict:
    length = int(self.headers.get("content-length") or 0)
    raw = self.rfile.read(length) if length else b""
    try:
      return json.loads(raw or b"{}")
    except json.JSONDecodeError:
      return {}

  def do_POST(self) -> None:
    path = urlsplit(self.path).path
    body = self._read_json()
    auth = self._auth()
    entry = self.fake._record(method="POST", path=path, body=body, auth=auth)
    if auth in (None, "wrong"):
      status, payload, headers = 401, _error("authentication_error", "invalid x-api-key"), {}
    elif path == "/v1/messages":
      status, payload, headers = self.fake.handle_messages(body)
    elif path == "/v1/messages/batches":
      status, payload, headers = self.fake.handle_create_batch(body)
    else:
      status, payload, headers = 404, _error("not_found_error", f"no route {path}"), {}
    entry["status"] = status
    self._send(status, payload, headers)

  def do_GET(self) -> None:
    path = urlsplit(self.path).path
    auth = self._auth()
    entry = self.fake._record(method="GET", path=path, body=None, auth=auth)
    parts = path.strip("/").split("/")
    content_type = "application/json"
    if auth in (None, "wrong"):
      status, payload, headers = 401, _error("authentication_error", "invalid x-api-key"), {}
    elif len(parts) == 5 and parts[:3] == ["v1", "messages", "batches"] and parts[4] == "results":
      data = self.fake.batch_results(parts[3])
      if data is None:
        status, payload, headers = 404, _error("not_found_error", "no such batch"), {}
      else:
        status, payload, headers, content_type = 200, data, {}, "application/binary"
    elif len(parts) == 4 and parts[:3] == ["v1", "messages", "batches"]:
      status, payload, headers = self.fake.handle_get_batch(parts[3])
    else:
      status, payload, headers = 404, _error("not_found_error", f"no route {path}"), {}
    entry["status"] = status
    self._send(status, payload, headers, content_type)
