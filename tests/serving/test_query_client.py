"""`mmray query` against a server that is not an mmray app (a web page, another JSON API): one line naming the
address and what came back, exit 2, never a KeyError traceback nor a page printed as if it were an answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.cli import invoke_mmray

ANSWERS = {
    "/html": (200, "text/html", b"<html>hello</html>"),
    "/list": (200, "application/json", b"[1, 2]"),
    "/missing": (404, "application/json", b"[]"),
    "/other": (200, "application/json", b'{"status": "up"}'),
}


class _Stub(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        prefix = "/" + self.path.split("/")[1]
        status, kind, body = ANSWERS.get(prefix, ANSWERS["/html"])
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("prefix", "endpoint"), [("/html", "search"), ("/list", "search"), ("/other", "search"), ("/html", "health"),
                             ("/missing", "models"), ("/other", "caption"), ("/other", "generate")]
)  # fmt: skip
def test_an_answer_that_is_not_the_apis_is_one_line_and_exit_2(stub: str, prefix: str, endpoint: str) -> None:
    args = ["--text", "a red circle"] if endpoint in ("search", "generate") else []
    if endpoint == "caption":
        args = ["--image", __file__]  # any file: the stub answers before looking
    result = invoke_mmray("query", stub + prefix, endpoint, *args)
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr and f"{stub}{prefix}" in result.stderr
    assert "not an mmray API" in result.stderr or "HTTP 404" in result.stderr, result.stderr


def test_a_timeout_beyond_a_day_is_refused(stub: str) -> None:
    result = invoke_mmray("query", stub, "health", "--timeout", "inf")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--timeout" in result.stderr
