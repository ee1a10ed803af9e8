"""A real HTTP SMS gateway on loopback for tests: records each JSON POST; can be told to fail."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CODE = re.compile(r"#(\d{6})\s*$")


@dataclass
class Gateway:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with 503 first
    lock: threading.Lock = field(default_factory=threading.Lock)

    def codes_to(self, phone: str) -> list[str]:
        with self.lock:
            bodies = [m["body"] for m in self.received if m["to"] == phone]
        return [found.group(1) for body in bodies if (found := CODE.search(body))]


@pytest.fixture
def sms_gateway() -> Iterator[Gateway]:
    gateway = Gateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            payload = json.loads(self.rfile.read(length))
            with gateway.lock:
                failing = gateway.fail_next > 0
                if failing:
                    gateway.fail_next -= 1
                else:
                    gateway.received.append(payload)
            self.send_response(503 if failing else 202)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "queued"}' if not failing else b'{"error": "busy"}')

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}/sms"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gateway
    server.shutdown()
    server.server_close()


def wait_for_code(gateway: Gateway, phone: str, *, count: int = 1, timeout: float = 10.0) -> str:
    """The newest code once ``count`` codes reached the gateway (sent after the response)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = gateway.codes_to(phone)
        if len(codes) >= count:
            return codes[-1]
        time.sleep(0.05)
    raise AssertionError(f"no SMS code reached the gateway for {phone} within {timeout} s")
