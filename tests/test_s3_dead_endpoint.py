"""A dead S3 endpoint (it accepts connections and never answers) is found fast: a command's first request
waits the short metadata timeout, and only transfers to an endpoint that has answered wait the long one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmray import storage
from mmray.errors import StorageError, StorageNotFoundError
from mmray.s3_settings import S3_TIMEOUTS
from tests.train.conftest import run_mmray

NOT_FOUND = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code><Message>none</Message></Error>"


class Endpoint:
    """A loopback TCP server that answers its first `answers` HTTP requests with S3's NoSuchKey, then
    holds every connection open without a word."""

    def __init__(self, answers: int) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.answers = answers
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection = self.server.accept()[0]
            except OSError:
                continue
            self.held.append(connection)
            if self.answers > 0:
                self.answers -= 1
                threading.Thread(target=self._answer_once, args=(connection,), daemon=True).start()

    @staticmethod
    def _answer_once(connection: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(4096)
        head = f"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {len(NOT_FOUND)}\r\n\r\n"
        connection.sendall(head.encode() + NOT_FOUND)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.held:
            connection.close()
        self.server.close()


@pytest.fixture
def endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    server = Endpoint(answers=getattr(request, "param", 0))
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    yield server
    server.close()


def _fails_within(seconds: float, uri: str, message: str) -> float:
    started = time.monotonic()
    with pytest.raises(StorageError, match=message):
        storage.read_text(uri)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, elapsed
    return elapsed


@pytest.mark.parametrize("endpoint", [1], indirect=True)
def test_only_transfers_to_an_endpoint_that_answered_wait_the_long_read_timeout(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMRAY_S3_METADATA_TIMEOUT", "0.3")
    monkeypatch.setenv("MMRAY_S3_READ_TIMEOUT", "1.2")
    with pytest.raises(StorageNotFoundError, match="does not exist"):
        storage.read_text("s3://bucket/first.json")  # answered: the endpoint is alive
    elapsed = _fails_within(10, "s3://bucket/second.json", r"3 tries, timeouts 5 s to connect and 1.2 s to read\); "
                            ".*raise MMRAY_S3_READ_TIMEOUT")  # fmt: skip
    assert elapsed >= 3 * 1.2, "a transfer waited its own read timeout on every try"
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"0\.3 s to read"):
        storage.exists("s3://bucket/third.json")
    assert time.monotonic() - started < 3 * 1.2, "metadata requests keep the short timeout"


def test_the_first_request_to_an_endpoint_waits_the_short_timeout(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMRAY_S3_METADATA_TIMEOUT", "0.5")
    _fails_within(
        6, "s3://bucket/index.json", r"0.5 s to read\); check AWS_ENDPOINT_URL, or raise MMRAY_S3_METADATA_TIMEOUT"
    )
    monkeypatch.setenv("MMRAY_S3_METADATA_TIMEOUT", "none")
    with pytest.raises(StorageError, match="MMRAY_S3_METADATA_TIMEOUT='none': expected a positive number of seconds"):
        storage.read_text("s3://bucket/index.json")


@pytest.mark.slow
def test_a_commands_first_request_to_a_dead_endpoint_fails_within_30_seconds_in_one_line(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, _ in S3_TIMEOUTS:
        monkeypatch.delenv(name, raising=False)  # the defaults
    started = time.monotonic()
    local = run_mmray("search", str(tmp_path / "no-index"), "--text", "red", timeout=120)
    startup = time.monotonic() - started  # the same command up to its first read, without S3
    assert local.returncode == 2 and "index.json is missing" in local.stderr
    started = time.monotonic()
    result = run_mmray("search", "s3://bucket/x/index", "--text", "red", timeout=120)
    waited = time.monotonic() - started - startup
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "the S3 endpoint did not answer (ReadTimeoutError; 3 tries, timeouts 5 s to connect and 5 s" in lines[0]
    assert 10 <= waited < 30, f"the first request failed after {waited:.0f} s"
