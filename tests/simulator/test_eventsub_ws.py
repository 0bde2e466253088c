"""Tests of the EventSub WebSocket simulator (simulator/eventsub_ws.py) with a real client on loopback.

Time is compressed (keepalive timeouts of a second or two); waits are generous and only lower bounds of
time are asserted, so a starved test process delays the tests without failing them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import re
import time
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from simulator.eventsub_ws import (
    CLOSE_REASONS,
    CLOSE_STATUSES,
    DISCONNECTED,
    ConnectionLimitError,
    EventSubWebSocketServer,
    JsonObject,
    SubscriptionLimitError,
    UnknownSessionError,
    UnknownSubscriptionError,
)

#: Every wait's ceiling: far above what anything takes, so only a real hang fails.
WAIT_S = 20.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def subscription(sub_id: str = "sub-1", sub_type: str = "channel.follow", session_id: str = "") -> JsonObject:
    return {
        "id": sub_id,
        "status": "enabled",
        "type": sub_type,
        "version": "2",
        "cost": 0,
        "condition": {"broadcaster_user_id": "1234"},
        "transport": {"method": "websocket", "session_id": session_id},
        "created_at": "2026-12-07T10:00:00.000000000Z",
    }


class Ends:
    """Collects ``on_session_end`` calls."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[str, str]] = queue.Queue()

    def __call__(self, session_id: str, status: str) -> None:
        self.calls.put((session_id, status))

    def next(self) -> tuple[str, str]:
        return self.calls.get(timeout=WAIT_S)


@pytest.fixture
def make_server() -> Iterator[Callable[..., EventSubWebSocketServer]]:
    started: list[EventSubWebSocketServer] = []

    def make(**kwargs: object) -> EventSubWebSocketServer:
        options: dict[str, object] = {"min_keepalive_s": 0.1, "default_keepalive_s": 1.0, "close_unused": False}
        options.update(kwargs)
        server = EventSubWebSocketServer(**options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[[str], ClientConnection]]:
    with contextlib.ExitStack() as stack:

        def open_client(url: str) -> ClientConnection:
            opening = connect(url, open_timeout=WAIT_S, proxy=None, ping_interval=None, close_timeout=2)
            return stack.enter_context(opening)

        yield open_client


def recv_json(client: ClientConnection) -> JsonObject:
    data = client.recv(timeout=WAIT_S)
    message = json.loads(data)
    assert isinstance(message, dict)
    return message


def recv_type(client: ClientConnection, message_type: str) -> JsonObject:
    """The next message of ``message_type``, skipping keepalives."""
    while True:
        message = recv_json(client)
        kind = metadata(message)["message_type"]
        if kind == message_type:
            return message
        assert kind == "session_keepalive", message


def metadata(message: JsonObject) -> JsonObject:
    value = message["metadata"]
    assert isinstance(value, dict)
    return value


def session_of(message: JsonObject) -> JsonObject:
    payload = message["payload"]
    assert isinstance(payload, dict)
    session = payload["session"]
    assert isinstance(session, dict)
    return session


def welcome_id(client: ClientConnection) -> str:
    session_id = session_of(recv_type(client, "session_welcome"))["id"]
    assert isinstance(session_id, str)
    return session_id


def close_of(client: ClientConnection) -> tuple[int | None, str | None]:
    """Read (skipping keepalives) until the server closes; the close code and reason received."""
    deadline = time.monotonic() + WAIT_S
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            recv_type(client, "never")
    rcvd = closed.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------- welcome


def test_welcome_has_the_documented_shape(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws", server.url)
    welcome = recv_json(clients(server.url))
    meta = metadata(welcome)
    assert set(meta) == {"message_id", "message_type", "message_timestamp"}
    assert meta["message_type"] == "session_welcome"
    assert TIMESTAMP.match(str(meta["message_timestamp"]))
    session = session_of(welcome)
    assert session["status"] == "connected"
    assert session["keepalive_timeout_seconds"] == 1
    assert session["reconnect_url"] is None
    assert TIMESTAMP.match(str(session["connected_at"]))
    assert isinstance(session["id"], str) and session["id"]
    assert server.has_session(session["id"])
    assert server.sessions() == [session["id"]]
    assert not server.has_session("no-such-session")


@pytest.mark.parametrize(("query", "expected"), [("", 10), ("=30", 30), ("=5", 10), ("=1000", 600), ("=abc", 10)])
def test_keepalive_query_is_clamped_to_twitchs_range(
    clients: Callable[[str], ClientConnection], query: str, expected: int
) -> None:
    with EventSubWebSocketServer() as server:
        url = server.url + (f"?keepalive_timeout_seconds{query}" if query else "")
        session = session_of(recv_json(clients(url)))
        assert session["keepalive_timeout_seconds"] == expected


def test_lowered_floor_accepts_subsecond_keepalives(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(min_keepalive_s=0.2, max_keepalive_s=2.0)
    low = session_of(recv_json(clients(server.url + "?keepalive_timeout_seconds=0.05")))
    high = session_of(recv_json(clients(server.url + "?keepalive_timeout_seconds=9")))
    assert (low["keepalive_timeout_seconds"], high["keepalive_timeout_seconds"]) == (0.2, 2)


def test_unknown_path_is_refused_before_the_upgrade(make_server: Callable[..., EventSubWebSocketServer]) -> None:
    server = make_server()
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(server.url.removesuffix("/ws") + "/other", open_timeout=WAIT_S, proxy=None),
    ):
        pass
    assert refused.value.response.status_code == 404


# ------------------------------------------------------------------------------------------ keepalive


def test_keepalives_come_after_silence(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(default_keepalive_s=0.5)
    client = clients(server.url)
    session_id = welcome_id(client)
    for _ in range(3):
        message = recv_json(client)
        assert metadata(message)["message_type"] == "session_keepalive"
        assert message["payload"] == {}
    wait_until(lambda: len(server.records(session_id)) >= 4)
    sent_at = [r.at for r in server.records(session_id) if r.kind == "sent"][:4]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert min(gaps) >= 0.35  # the server's send times (the client may read late): 0.8 of 0.5 s of silence
    assert [r.message_type for r in server.records(session_id)][:4] == [
        "session_welcome",
        "session_keepalive",
        "session_keepalive",
        "session_keepalive",
    ]


def test_silenced_keepalives_send_nothing(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(default_keepalive_s=0.3)
    server.keepalives_enabled = False
    client = clients(server.url)
    session_id = welcome_id(client)
    with pytest.raises(TimeoutError):
        client.recv(timeout=1.5)  # five keepalive timeouts
    assert server.has_session(session_id)
    server.keepalives_enabled = True
    assert metadata(recv_json(client))["message_type"] == "session_keepalive"


# ------------------------------------------------------------------------------------- unused, closes


def test_unused_connection_closes_with_4003(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(default_keepalive_s=0.5, close_unused=True, on_session_end=ends)
    client = clients(server.url)
    session_id = welcome_id(client)
    assert close_of(client) == (4003, "connection unused")
    assert ends.next() == (session_id, "websocket_connection_unused")
    assert not server.has_session(session_id)
    assert server.session_status(session_id) == "websocket_connection_unused"


def test_subscribed_connection_stays_open(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(default_keepalive_s=2.0, close_unused=True)
    client = clients(server.url)
    session_id = welcome_id(client)
    server.attach(session_id, subscription(session_id=session_id))
    for _ in range(2):  # past the 2 s window
        assert metadata(recv_json(client))["message_type"] == "session_keepalive"
    assert server.has_session(session_id)


@pytest.mark.parametrize("code", sorted(CLOSE_REASONS))
def test_documented_close_codes(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection], code: int
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    client = clients(server.url)
    session_id = welcome_id(client)
    server.attach(session_id, subscription(session_id=session_id))
    server.close(session_id, code)
    assert close_of(client) == (code, CLOSE_REASONS[code])
    assert ends.next() == (session_id, CLOSE_STATUSES[code])
    assert [s["status"] for s in server.subscriptions(session_id)] == [CLOSE_STATUSES[code]]
    with pytest.raises(UnknownSessionError):
        server.attach(session_id, subscription("sub-2"))


def test_close_refuses_undocumented_codes(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    session_id = welcome_id(clients(server.url))
    with pytest.raises(ValueError, match="4008"):
        server.close(session_id, 4008)
    assert server.has_session(session_id)


def test_client_message_closes_with_4001(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    client = clients(server.url)
    session_id = welcome_id(client)
    client.send('{"hello": "twitch"}')
    assert close_of(client) == (4001, "client sent inbound traffic")
    assert ends.next() == (session_id, "websocket_received_inbound_traffic")
    assert [r.text for r in server.records(session_id) if r.kind == "received"] == ['{"hello": "twitch"}']


def test_client_close_and_drop_end_the_session_as_disconnected(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    closing, dropped = clients(server.url), clients(server.url)
    closing_id, dropped_id = welcome_id(closing), welcome_id(dropped)
    closing.close()
    assert ends.next() == (closing_id, DISCONNECTED)
    server.drop(dropped_id)
    assert close_of(dropped) == (None, None)  # no close frame: the TCP connection was cut
    assert ends.next() == (dropped_id, DISCONNECTED)
    assert server.sessions() == []


def test_stop_closes_with_1001_and_start_reuses_the_port(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    url = server.url
    client = clients(url)
    session_id = welcome_id(client)
    server.stop()
    assert close_of(client)[0] == 1001
    assert ends.next() == (session_id, DISCONNECTED)
    server.start()
    assert server.url == url
    assert welcome_id(clients(url)) != session_id


# ------------------------------------------------------------------------------------------- reconnect


def test_reconnect_moves_the_subscriptions_and_closes_the_old_socket(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    old = clients(server.url)
    session_id = welcome_id(old)
    server.attach(session_id, subscription(session_id=session_id))

    reconnect_url = server.reconnect(session_id)
    message = recv_type(old, "session_reconnect")
    session = session_of(message)
    assert session["id"] == session_id
    assert session["status"] == "reconnecting"
    assert session["keepalive_timeout_seconds"] is None
    assert session["reconnect_url"] == reconnect_url

    new = clients(reconnect_url)
    welcome = session_of(recv_type(new, "session_welcome"))
    assert welcome["id"] == session_id
    assert welcome["status"] == "connected"
    assert welcome["keepalive_timeout_seconds"] == 1
    assert close_of(old)[0] == 1000
    assert server.has_session(session_id)
    assert [s["id"] for s in server.subscriptions(session_id)] == ["sub-1"]

    server.notify("sub-1", {"user_login": "viewer"})
    notification = recv_type(new, "notification")
    assert notification["payload"] == {
        "subscription": subscription(session_id=session_id),
        "event": {"user_login": "viewer"},
    }
    assert ends.calls.empty()
    assert {r.connection for r in server.records(session_id) if r.kind == "sent"} == {1, 2}


def test_reconnect_not_taken_closes_with_4004(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(reconnect_grace_s=0.5, on_session_end=ends)
    old = clients(server.url)
    session_id = welcome_id(old)
    server.attach(session_id, subscription(session_id=session_id))
    reconnect_url = server.reconnect(session_id)
    recv_type(old, "session_reconnect")
    assert close_of(old) == (4004, "reconnect grace time expired")
    assert ends.next() == (session_id, "websocket_failed_to_reconnect")
    late = clients(reconnect_url)
    assert close_of(late) == (4007, "invalid reconnect")


def test_closing_the_old_socket_first_makes_the_reconnect_invalid(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    ends = Ends()
    server = make_server(on_session_end=ends)
    old = clients(server.url)
    session_id = welcome_id(old)
    server.attach(session_id, subscription(session_id=session_id))
    reconnect_url = server.reconnect(session_id)
    recv_type(old, "session_reconnect")
    old.close()
    assert ends.next() == (session_id, DISCONNECTED)
    new = clients(reconnect_url)
    assert close_of(new) == (4007, "invalid reconnect")
    assert [s["status"] for s in server.subscriptions(session_id)] == [DISCONNECTED]


def test_reconnect_url_works_once(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    old = clients(server.url)
    session_id = welcome_id(old)
    server.attach(session_id, subscription(session_id=session_id))
    reconnect_url = server.reconnect(session_id)
    assert welcome_id(clients(reconnect_url)) == session_id
    assert close_of(clients(reconnect_url)) == (4007, "invalid reconnect")
    assert close_of(clients(server.url + "?reconnect_id=made-up")) == (4007, "invalid reconnect")
    assert server.has_session(session_id)


# ------------------------------------------------------------------------------ notifications, revocation


def test_duplicate_notification_keeps_its_message_id(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    client = clients(server.url)
    session_id = welcome_id(client)
    server.attach(session_id, subscription(session_id=session_id))
    sent = server.notify("channel.follow", {"user_id": "42"}, duplicate=True)
    first, second = recv_type(client, "notification"), recv_type(client, "notification")
    assert first == second == sent[0]
    meta = metadata(first)
    assert (meta["subscription_type"], meta["subscription_version"]) == ("channel.follow", "2")
    assert TIMESTAMP.match(str(meta["message_timestamp"]))
    server.notify("sub-1", {"user_id": "43"})
    third = recv_type(client, "notification")
    assert metadata(third)["message_id"] != meta["message_id"]
    assert len(server.sent(session_id, "notification")) == 3


def test_notify_reaches_only_the_session_holding_the_subscription(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    holder, other = clients(server.url), clients(server.url)
    holder_id, other_id = welcome_id(holder), welcome_id(other)
    server.attach(holder_id, subscription("sub-a", "channel.cheer", holder_id))
    server.attach(other_id, subscription("sub-b", "channel.follow", other_id))
    server.notify("sub-a", {"bits": 100})
    assert metadata(recv_type(holder, "notification"))["subscription_type"] == "channel.cheer"
    assert server.sent(other_id, "notification") == []
    with pytest.raises(UnknownSubscriptionError):
        server.notify("channel.raid", {})


def test_revocation_message_and_the_subscription_leaves(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server()
    client = clients(server.url)
    session_id = welcome_id(client)
    server.attach(session_id, subscription(session_id=session_id))
    server.revoke("sub-1", "authorization_revoked")
    message = recv_type(client, "revocation")
    meta = metadata(message)
    assert (meta["subscription_type"], meta["subscription_version"]) == ("channel.follow", "2")
    assert message["payload"] == {
        "subscription": {**subscription(session_id=session_id), "status": "authorization_revoked"}
    }
    assert server.subscriptions(session_id) == []
    with pytest.raises(UnknownSubscriptionError):
        server.notify("sub-1", {})
    assert server.has_session(session_id)


# ------------------------------------------------------------------------------------------------ limits


def test_subscription_limit_per_connection(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(max_subscriptions_per_connection=2)
    session_id = welcome_id(clients(server.url))
    server.attach(session_id, subscription("sub-1"))
    server.attach(session_id, subscription("sub-2"))
    server.attach(session_id, subscription("sub-2"))  # the same one again is no new subscription
    with pytest.raises(SubscriptionLimitError):
        server.attach(session_id, subscription("sub-3"))
    assert server.detach("sub-1")
    server.attach(session_id, subscription("sub-3"))
    assert [s["id"] for s in server.subscriptions(session_id)] == ["sub-2", "sub-3"]
    assert EventSubWebSocketServer().max_subscriptions_per_connection == 300


def test_connection_limit_per_owner(
    make_server: Callable[..., EventSubWebSocketServer], clients: Callable[[str], ClientConnection]
) -> None:
    server = make_server(max_connections=2)
    first, second, third = clients(server.url), clients(server.url), clients(server.url)
    ids = [welcome_id(first), welcome_id(second), welcome_id(third)]
    server.attach(ids[0], subscription("sub-1"), owner="client:1234")
    server.attach(ids[1], subscription("sub-2"), owner="client:1234")
    with pytest.raises(ConnectionLimitError):
        server.attach(ids[2], subscription("sub-3"), owner="client:1234")
    server.attach(ids[2], subscription("sub-3"), owner="client:5678")
    assert server.connection_count("client:1234") == 2
    first.close()
    wait_until(lambda: server.connection_count("client:1234") == 1)
    assert EventSubWebSocketServer().max_connections == 3


def test_control_calls_on_unknown_sessions_raise(make_server: Callable[..., EventSubWebSocketServer]) -> None:
    server = make_server()
    for call in (
        lambda: server.attach("nope", subscription()),
        lambda: server.reconnect("nope"),
        lambda: server.close("nope", 4000),
        lambda: server.drop("nope"),
        lambda: server.subscriptions("nope"),
    ):
        with pytest.raises(UnknownSessionError):
            call()
    with pytest.raises(UnknownSubscriptionError):
        server.revoke("nope")
