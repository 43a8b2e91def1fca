"""The official Segment Python client, pointed at Tidings, works unchanged: its events land
in the log and, once the worker has applied them, on the contact."""

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient
from segment.analytics.client import Client
from sqlalchemy import Engine

from tidings.api.app import create_app
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.worker import Worker


@pytest.fixture
def live_server(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, engine, clock), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(400):  # bounded: ~20 s at most
        if server.started:
            started.set()
            break
        started.wait(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_segment_python_client_events_reach_the_contact(
    live_server: str, write_key: str, admin: dict[str, str], client: TestClient, worker: Worker
) -> None:
    errors: list[Exception] = []
    segment = Client(
        write_key,
        host=live_server,
        sync_mode=True,
        max_retries=0,
        on_error=lambda exc, _batch: errors.append(exc),
    )
    segment.identify("user-7", {"email": "Li@Example.com", "name": "Li Wei", "plan": "pro"})
    segment.track("user-7", "Product Viewed", {"sku": "TEE-01", "price": 25})
    segment.page("user-7", "Docs", "Getting started", {"path": "/docs"})
    segment.flush()
    assert errors == []

    worker.run_once()

    found = client.get("/v1/contacts", params={"external_id": "user-7"}, headers=admin).json()
    (contact,) = found["data"]
    assert contact["email"] == "li@example.com"
    assert (contact["first_name"], contact["last_name"]) == ("Li", "Wei")
    assert contact["attributes"]["plan"] == "pro"
    events = client.get(f"/v1/contacts/{contact['id']}/events", headers=admin).json()["data"]
    assert [e["type"] for e in events] == ["page", "track", "identify"]
    assert events[1]["name"] == "Product Viewed"
    assert events[1]["properties"] == {"sku": "TEE-01", "price": 25}
