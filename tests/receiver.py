"""A real loopback HTTP server that receives webhooks, for the tests that need one."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cli.local_services import free_port


class Receiver:
    """A real HTTP server that records deliveries and answers with scripted status codes."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.script.pop(0) if receiver.script else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, job_id: str) -> list[dict]:
        found = [json.loads(body) for _, body in self.received]
        return [e for e in found if e["data"]["job_id"] == job_id]

    def wait_for(self, job_id: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events(job_id)
            if len(events) >= count:
                return events
            time.sleep(0.1)
        raise TimeoutError(f"{len(self.events(job_id))} of {count} deliveries arrived")
