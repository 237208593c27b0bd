"""PortForward: local TCP connections carried to a pod's port through the API server double.

Every test goes through the real kubernetes-asyncio client and a real WebSocket
(``v4.channel.k8s.io``) to the double, which connects to a TCP server of the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.k8s.portforward import PortForward, PortForwardError
from netobserv_tui.model.errors import CaptureError
from netobserv_tui.model.fetch import finish_and_fetch
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.model.stream import FlowBatch, LiveStream

pytestmark = pytest.mark.timeout(10)

NS = "netobserv-cli"
POD = "netobserv-aggregator"
PORT = 9990
TOKEN = "pf-t0ken"
LOGGER = "netobserv_tui.k8s.portforward"
MB = 1024 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ------------------------------------------------------------------------------- helpers


def add_pod(apiserver: ApiServerDouble, name: str = POD, *, node: str | None = "node-a") -> None:
    """A pod as the cluster would have it once scheduled (``node=None``: not scheduled)."""
    if apiserver.get("namespaces", NS) is None:
        apiserver.put("namespaces", {"metadata": {"name": NS}})
    if node is not None and apiserver.get("nodes", node) is None:
        apiserver.add_node(node)
    spec: dict[str, Any] = {"containers": [{"name": "aggregator", "image": "agg:1"}]}
    if node is not None:
        spec["nodeName"] = node
    apiserver.put("pods", {"metadata": {"name": name, "namespace": NS}, "spec": spec})


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 1.0) -> None:
    """Re-check ``predicate`` at every turn of the event loop until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def our_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running PortForward code."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").startswith("PortForward.")
    ]


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 1.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


class Target:
    """A TCP server standing for the pod's process; its connections are closed at the end."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> tuple[str, int]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.writers.append(writer)
            try:
                await self._handler(reader, writer)
            except ConnectionError:
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return ("127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF; ``quit`` closes the connection from the pod side."""
    while data := await reader.read(65536):
        if data == b"quit":
            return
        writer.write(data)
        await writer.drain()


@pytest.fixture
async def serve(
    apiserver: ApiServerDouble,
) -> AsyncIterator[Callable[[Handler], Awaitable[Target]]]:
    """Start a target and make ``POD``:``PORT`` lead to it."""
    targets: list[Target] = []

    async def start(handler: Handler) -> Target:
        target = Target(handler)
        targets.append(target)
        apiserver.forward(NS, POD, PORT, await target.start())
        return target

    yield start
    for target in targets:
        await target.close()


@pytest.fixture
async def forward(ws_api_client: WsApiClient) -> AsyncIterator[PortForward]:
    """A started PortForward to ``POD``:``PORT`` (stopped at the end)."""
    async with PortForward(ws_api_client, NS, POD, PORT) as pf:
        yield pf


async def connect(pf: PortForward) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*pf.address)


async def round_trip(pf: PortForward, payload: bytes) -> None:
    reader, writer = await connect(pf)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(1):
            assert await reader.readexactly(len(payload)) == payload
    finally:
        writer.close()


# ------------------------------------------------------------------------------- bytes


async def test_echo_round_trip(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
) -> None:
    add_pod(apiserver)
    await serve(echo)
    host, port = forward.address
    assert host == "127.0.0.1" and port > 0
    await forward.check()

    reader, writer = await connect(forward)
    writer.write(b"hello pod")
    await writer.drain()
    async with asyncio.timeout(1):
        assert await reader.readexactly(9) == b"hello pod"
    assert forward.connections == 1
    assert (forward.bytes_out, forward.bytes_in) == (9, 9)
    # The local client closes: the tunnel ends, the WebSocket and the pod connection close.
    writer.close()
    await wait_until(lambda: forward.connections == 0, "the tunnel to end")
    await apiserver.wait_for(lambda: apiserver.streams("portforward") == 0)


async def test_the_pod_closing_its_side_gives_the_client_eof(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
) -> None:
    add_pod(apiserver)

    async def greet_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye\n")
        await writer.drain()

    await serve(greet_and_close)
    reader, writer = await connect(forward)
    assert await read_to_eof(reader) == b"bye\n"
    writer.close()
    await wait_until(lambda: forward.connections == 0, "the tunnel to end")


async def test_20_mb_each_way_arrive_intact(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
) -> None:
    add_pod(apiserver)
    size = 20 * MB
    up = random.Random(1).randbytes(size)
    down = random.Random(2).randbytes(size)
    received_by_pod: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def source_and_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def sink() -> None:
            digest, left = hashlib.sha256(), size
            while left:
                chunk = await reader.read(min(MB, left))
                assert chunk, "EOF before all the bytes"
                digest.update(chunk)
                left -= len(chunk)
            received_by_pod.set_result(digest.hexdigest())

        async def source() -> None:
            for start in range(0, size, 100_000):  # odd size: frames do not line up
                writer.write(down[start : start + 100_000])
                await writer.drain()

        await asyncio.gather(sink(), source())  # then the pod side closes

    await serve(source_and_sink)
    reader, writer = await connect(forward)

    async def send() -> None:
        for start in range(0, size, 300_000):
            writer.write(up[start : start + 300_000])
            await writer.drain()

    async def receive() -> tuple[int, str]:
        digest, total = hashlib.sha256(), 0
        while chunk := await reader.read(MB):
            digest.update(chunk)
            total += len(chunk)
        return total, digest.hexdigest()

    async with asyncio.timeout(5):
        _, (total, got) = await asyncio.gather(send(), receive())
    writer.close()
    assert total == size and got == hashlib.sha256(down).hexdigest()
    assert received_by_pod.result() == hashlib.sha256(up).hexdigest()
    assert (forward.bytes_out, forward.bytes_in) == (size, size)


async def test_a_slow_client_holds_the_pod_back(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
) -> None:
    """Backpressure: what the tunnel holds for a slow reader stays bounded (kernel buffers
    and one frame), and nothing is lost or reordered when it catches up."""
    add_pod(apiserver)
    # What may legitimately sit between the tunnel and a slow client: the kernel buffers of
    # the local connection (the client's receive buffer, made small here, and the tunnel's
    # send buffer, at most tcp_wmem's maximum), plus 1 MB of slack for the client's
    # StreamReader, the tunnel's StreamWriter high-water mark and a frame in hand.
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    bound = 2 * 65536 + wmem_max + MB
    size = max(16 * MB, 3 * bound)  # an unbounded tunnel would take nearly all of it
    down = random.Random(3).randbytes(size)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, size, 65536):
            writer.write(down[start : start + 65536])
            await writer.drain()

    await serve(source)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, forward.address)
    reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
    digest, got, most_ahead = hashlib.sha256(), 0, 0
    async with asyncio.timeout(5):
        while chunk := await reader.read(16384):
            digest.update(chunk)
            got += len(chunk)
            most_ahead = max(most_ahead, forward.bytes_in - got)
            for _ in range(3):  # a slow reader: the tunnel runs several turns per read
                await asyncio.sleep(0)
    writer.close()
    assert got == size and digest.hexdigest() == hashlib.sha256(down).hexdigest()
    assert most_ahead <= bound, f"{most_ahead:,} bytes held for the client (bound {bound:,})"


async def test_concurrent_connections_are_independent(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
) -> None:
    add_pod(apiserver)
    target = await serve(echo)
    clients = [await connect(forward) for _ in range(8)]
    await wait_until(lambda: forward.connections == 8, "8 tunnels")
    await wait_until(lambda: target.accepted == 8, "8 pod connections")

    async def exchange(index: int) -> None:
        reader, writer = clients[index]
        payload = random.Random(index).randbytes(200_000 + index)
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload

    async with asyncio.timeout(2):
        await asyncio.gather(*(exchange(i) for i in range(8)))

    # One closed by the pod, one reset by its client: the others carry on.
    clients[0][1].write(b"quit")
    assert await read_to_eof(clients[0][0]) == b""
    clients[1][1].transport.abort()
    await wait_until(lambda: forward.connections == 6, "two tunnels to end")
    async with asyncio.timeout(2):
        await asyncio.gather(*(exchange(i) for i in range(2, 8)))
    await round_trip(forward, b"a new one")
    for _, writer in clients:
        writer.close()


# ------------------------------------------------------------------------------- aggregator


def flow_record(i: int) -> dict[str, Any]:
    """A complete base record (every BASE_COLUMNS field), distinct per ``i``."""
    start = 1_795_633_800_000 + 1000 * i
    return {
        "SrcAddr": f"198.18.0.{10 + i % 4}", "DstAddr": "198.18.0.20",
        "SrcPort": 10000 + i, "DstPort": 8080, "Proto": 6,
        "SrcMac": "0A:58:C6:12:00:0A", "DstMac": "0A:58:C6:12:00:14", "Etype": 2048,
        "Dscp": 0, "IcmpType": 0, "IcmpCode": 0, "Flags": 16, "Bytes": 1000 + i,
        "Packets": 1 + i % 7, "Sampling": 0,
        "TimeFlowStartMs": start, "TimeFlowEndMs": start + 400,
        "AgentIP": "198.18.0.254", "Interface": "eth0", "IfDirection": i % 2,
        "Interfaces": ["eth0"], "IfDirections": [i % 2], "FlowDirection": i % 2,
    }  # fmt: skip


def export(exporter: Exporter, records: list[dict[str, Any]]) -> None:
    """Send ``records`` as an agent does and wait for their ACKs (blocking: run in a thread)."""
    columns = list(BASE_COLUMNS)
    exporter.submit(columns, [[r[c] for c in columns] for r in records])
    deadline = time.monotonic() + 5
    while exporter.pending_rows:
        assert time.monotonic() < deadline, "the aggregator did not acknowledge the batch"
        exporter.pump(wait=0.05)


async def test_a_real_aggregator_streams_and_hands_over_its_files(
    apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """The live stream and FINISH/FETCH of a real aggregator, fed by the real agent
    Exporter, through a PortForward built from an ordinary ApiClient."""
    add_pod(apiserver)
    aggregator = Aggregator(tmp_path / "pod", TOKEN, live_interval=0.02, stats_interval=0.05)
    await aggregator.start()
    apiserver.forward(NS, POD, PORT, ("127.0.0.1", aggregator.port))
    agent = {"ip": "198.18.0.254", "hostname": "node-a", "version": "test"}
    exporter = Exporter("127.0.0.1", aggregator.port, TOKEN, agent, batch_rows=1000)
    try:
        await asyncio.to_thread(exporter.connect)
        async with PortForward(api_client, NS, POD, PORT) as pf:
            await pf.check()
            host, port = pf.address
            async with LiveStream(host, port, TOKEN) as stream:
                assert stream.capture == aggregator.capture
                frames = aiter(stream)
                await asyncio.to_thread(export, exporter, [flow_record(i) for i in range(20)])
                seen: set[int] = set()
                async with asyncio.timeout(2):
                    while len(seen) < 20:
                        frame = await anext(frames)
                        if isinstance(frame, FlowBatch):
                            column = frame.columns.index("SrcPort")
                            seen.update(row[column] - 10000 for row in frame.rows)
                assert seen == set(range(20))
                more = [flow_record(i) for i in range(20, 6000)]
                await asyncio.to_thread(export, exporter, more)
                await asyncio.to_thread(exporter.finish, 2.0)

                summary = await finish_and_fetch(host, port, TOKEN, tmp_path / "here", grace=0)
                # The aggregator ended the live stream too: the subscriber sees its end.
                async with asyncio.timeout(1):
                    async for _ in frames:
                        pass
            assert summary["flows"] == 6000
            for kind in ("json", "db"):
                local = Path(summary["local_files"][kind])
                remote = Path(summary["files"][kind])
                assert local.parent == tmp_path / "here" / "flow"
                assert local.read_bytes() == remote.read_bytes(), kind
            assert pf.bytes_in >= sum(Path(p).stat().st_size for p in summary["files"].values())
        assert aggregator.finished.is_set()
    finally:
        await aggregator.stop(grace=0)


# ------------------------------------------------------------------------------- errors


async def test_a_missing_pod_is_named(
    apiserver: ApiServerDouble, forward: PortForward, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PortForwardError, match=f"pod {POD} not found in namespace {NS}") as err:
        await forward.check()
    assert err.value.status == 404
    assert isinstance(err.value, CaptureError)
    # A connection made anyway is closed at once, and the reason logged with the pod.
    caplog.set_level(logging.WARNING, LOGGER)
    reader, writer = await connect(forward)
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: forward.connections == 0, "the tunnel to end")
    assert any(POD in r.getMessage() and "not found" in r.getMessage() for r in caplog.records)


async def test_rbac_denial_names_the_permission(
    apiserver: ApiServerDouble, forward: PortForward
) -> None:
    add_pod(apiserver)
    apiserver.deny("create", "pods/portforward", NS, reason="no port-forward for you")
    with pytest.raises(PortForwardError, match="'create pods/portforward'") as err:
        await forward.check()
    assert err.value.status == 403
    assert f"namespace {NS}" in str(err.value) and "kubectl auth can-i" in str(err.value)


async def test_an_unscheduled_pod_is_not_running(
    apiserver: ApiServerDouble, forward: PortForward
) -> None:
    add_pod(apiserver, node=None)
    with pytest.raises(PortForwardError, match="the pod is not running") as err:
        await forward.check()
    assert err.value.status == 400


async def test_nothing_listening_in_the_pod(
    apiserver: ApiServerDouble, forward: PortForward, caplog: pytest.LogCaptureFixture
) -> None:
    add_pod(apiserver)  # no forward target registered: the double's dial is refused
    with pytest.raises(
        PortForwardError, match=f"does not accept connections on port {PORT}.*connection refused"
    ):
        await forward.check(settle=2.0)  # returns as soon as the error arrives
    caplog.set_level(logging.WARNING, LOGGER)
    reader, writer = await connect(forward)
    assert await read_to_eof(reader) == b""
    writer.close()
    await wait_until(lambda: forward.connections == 0, "the tunnel to end")
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(f"{NS}/{POD}" in m and "connection refused" in m for m in messages), messages


async def test_an_unreachable_api_server(apiserver: ApiServerDouble) -> None:
    add_pod(apiserver)
    async with apiserver.ws_api_client() as ws_client:
        await apiserver.stop(cancel_controllers=False)
        async with PortForward(ws_client, NS, POD, PORT) as pf:
            with pytest.raises(PortForwardError, match="cannot reach the API server at http"):
                await pf.check()


async def test_a_bad_port_or_busy_local_port(
    ws_api_client: WsApiClient, forward: PortForward
) -> None:
    with pytest.raises(ValueError, match="not a TCP port"):
        PortForward(ws_api_client, NS, POD, 0)
    busy = PortForward(ws_api_client, NS, POD, PORT, local_port=forward.address[1])
    with pytest.raises(PortForwardError, match="cannot listen on 127.0.0.1:"):
        await busy.start()
    await busy.stop()


# ------------------------------------------------------------------------------- lost server


async def test_dropped_connections_close_promptly_and_the_listener_recovers(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    forward: PortForward,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_pod(apiserver)
    await serve(echo)
    caplog.set_level(logging.WARNING, LOGGER)
    reader, writer = await connect(forward)
    writer.write(b"ping")
    async with asyncio.timeout(1):
        assert await reader.readexactly(4) == b"ping"

    assert apiserver.drop_connections() == 1
    assert await read_to_eof(reader, timeout=1) == b""  # promptly: EOF, no hang
    writer.close()
    await wait_until(lambda: forward.connections == 0, "the tunnel to end")
    assert any(
        f"{NS}/{POD}" in r.getMessage()
        and "connection through the API server was lost" in r.getMessage()
        for r in caplog.records
    )
    await round_trip(forward, b"still listening")

    # The API server goes away: new connections end at once; it is back: they work again.
    await apiserver.stop(cancel_controllers=False)
    reader, writer = await connect(forward)
    assert await read_to_eof(reader) == b""
    writer.close()
    assert any("cannot reach the API server" in r.getMessage() for r in caplog.records)
    await apiserver.start()
    await round_trip(forward, b"back again")


async def test_stop_closes_everything_and_leaves_no_task(
    apiserver: ApiServerDouble,
    serve: Callable[[Handler], Awaitable[Target]],
    api_client: client.ApiClient,
) -> None:
    add_pod(apiserver)
    target = await serve(echo)
    before = asyncio.all_tasks()
    pf = PortForward(api_client, NS, POD, PORT)
    address = await pf.start()
    assert await pf.start() == address  # starting twice is a no-op
    clients = [await connect(pf) for _ in range(3)]
    for reader, writer in clients:
        writer.write(b"x")
        async with asyncio.timeout(1):
            assert await reader.readexactly(1) == b"x"
    assert pf.connections == 3 and our_tasks()

    await pf.stop()
    assert our_tasks() == [] and pf.connections == 0
    for reader, writer in clients:
        assert await read_to_eof(reader) == b""
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)
    await pf.stop()  # idempotent
    await apiserver.wait_for(lambda: apiserver.streams("portforward") == 0)
    await target.close()
    current = asyncio.current_task()
    await wait_until(
        lambda: asyncio.all_tasks() - before - {current} == set(), "the server side to end"
    )
