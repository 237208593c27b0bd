"""``kubectl port-forward`` in-process: reach a pod's TCP port through the Kubernetes API server.

The controller of a cluster capture runs on the user's machine and the aggregator in a pod;
the live stream and, at the end, the FINISH/FETCH session that copies the files (see
:mod:`netobserv_tui.model.fetch`) go through the API server, which needs no Service exposed
and nothing but the user's credentials.  kubernetes-asyncio has no port-forward helper, so
this module speaks the protocol itself::

    async with PortForward(api_client, "netobserv-cli", "netobserv-aggregator", 9990) as pf:
        await pf.check()                 # PortForwardError now rather than at first use
        host, port = pf.address          # plain TCP for LiveStream and finish_and_fetch

Each local connection gets its own WebSocket (``v4.channel.k8s.io``, one port: channel 0
carries data, channel 1 errors; the server starts both with the port as 2 bytes
little-endian), so connections are independent: one failing, or the API server dropping it,
closes that local connection only, and the listener keeps accepting.  The protocol has no
half-close: when the local client ends its side, the tunnel ends.  Backpressure holds both
ways: a frame is read from one side only once the other side has taken the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from ..model.errors import CaptureError

__all__ = ["PortForward", "PortForwardError"]

log = logging.getLogger(__name__)

#: ``v4.channel.k8s.io`` channels of the first (only) port.
DATA_CHANNEL: Final = 0
ERROR_CHANNEL: Final = 1
#: Bytes of the port number that open each channel.
PORT_HEADER_SIZE: Final = 2
#: Bytes read from a local connection at a time (one WebSocket frame each).
CHUNK: Final = 64 * 1024
#: Longest wait for the WebSocket closing handshake before the connection is dropped.
CLOSE_TIMEOUT: Final = 2.0


class PortForwardError(CaptureError):
    """A port-forward to a pod could not be opened, or the pod side refused the port.

    ``status`` is the API server's HTTP status when it refused the WebSocket upgrade.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Channels:
    """Splits received frames into (channel, payload), dropping each channel's port header."""

    def __init__(self) -> None:
        self._header_left = {DATA_CHANNEL: PORT_HEADER_SIZE, ERROR_CHANNEL: PORT_HEADER_SIZE}

    @property
    def ready(self) -> bool:
        """Both port headers arrived: the server accepted the port-forward."""
        return not any(self._header_left.values())

    def split(self, frame: bytes) -> tuple[int, bytes]:
        if not frame:
            return -1, b""
        channel, payload = frame[0], frame[1:]
        left = self._header_left.get(channel, 0)
        if left:
            taken = min(left, len(payload))
            self._header_left[channel] = left - taken
            payload = payload[taken:]
        return channel, payload


class PortForward:
    """A local TCP listener on 127.0.0.1 (port 0 = any free port) whose every accepted
    connection is carried over its own WebSocket to <namespace>/<pod>:<port>.

    ``api_client`` may be any :class:`kubernetes_asyncio.client.ApiClient`.  A
    :class:`~kubernetes_asyncio.stream.WsApiClient` is used as is and stays the caller's to
    close.  Any other is only read for its ``configuration`` (server, TLS, credentials and
    their refresh hooks, all shared) to build a WsApiClient that this object owns and closes
    in :meth:`stop`: an ordinary ApiClient cannot open WebSockets, and a WsApiClient can do
    nothing else, so the controller keeps one ordinary client and passes it here.

    ``connections`` counts the local connections open now; ``bytes_out`` the bytes sent to
    the pod and ``bytes_in`` those received from it, over all connections.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        pod: str,
        port: int,
        *,
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        open_timeout: float = 30.0,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port (1-65535)")
        self._given = api_client
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.local_host = local_host
        self.local_port = local_port
        #: Longest wait for the API server to accept one WebSocket.
        self.open_timeout = open_timeout
        self.connections = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._owned: WsApiClient | None = None
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        """``namespace/pod:port``, as messages name it."""
        return f"{self.namespace}/{self.pod}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """Where to connect, once started."""
        if self._address is None:
            raise RuntimeError(f"the port-forward to {self.target} is not started")
        return self._address

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> tuple[str, int]:
        """Listen locally; returns the (host, port) to connect to.  Starting twice is a no-op.

        Nothing is asked of the API server yet: :meth:`check` does that, and every accepted
        connection opens its own WebSocket.
        """
        if self._server is not None:
            return self.address
        try:
            server = await asyncio.start_server(self._accept, self.local_host, self.local_port)
        except OSError as exc:
            raise PortForwardError(
                f"cannot listen on {self.local_host}:{self.local_port} for the port-forward "
                f"to {self.target}: {exc.strerror or exc}; choose another local port (0 = any)"
            ) from None
        self._server = server
        host, port = server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        log.debug("Port-forward to %s listening on %s:%d", self.target, host, port)
        return self._address

    async def stop(self) -> None:
        """Close the listener and every open tunnel (their local connections see EOF), then
        the WebSocket client if this object built it.  Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tunnels = list(self._tunnels)
        for task in tunnels:
            task.cancel()
        await asyncio.gather(*tunnels, return_exceptions=True)
        if server is not None:
            # After the tunnels: from Python 3.12 this waits for the connections to close.
            await server.wait_closed()
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()

    async def __aenter__(self) -> PortForward:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- checks

    async def check(self, *, timeout: float = 10.0, settle: float = 0.25) -> None:
        """Open one WebSocket, wait for the port headers, then up to ``settle`` seconds for
        an error: raises :class:`PortForwardError` early if the pod, the port or the RBAC is
        wrong, instead of at the first real connection.

        The protocol has no positive answer for "connected": the kubelet dials the pod's port
        right after the headers and reports a failure on the error channel, so a refused port
        is seen within ``settle`` (the dial is local to the node); silence means success.
        The pod's process sees one connection that closes without data.
        """
        ws = await self._open(timeout)
        try:
            channels = _Channels()
            try:
                async with asyncio.timeout(timeout):
                    while not channels.ready:
                        data = await self._check_frame(ws, channels, "before the port headers")
                        if data is not None:
                            return  # data already: the port answered
            except TimeoutError:
                raise PortForwardError(
                    f"the API server accepted the port-forward to {self.target} but sent "
                    f"nothing within {timeout:g}s; check the node and the kubelet"
                ) from None
            try:
                async with asyncio.timeout(settle):
                    while await self._check_frame(ws, channels, "after the headers") is None:
                        pass
            except TimeoutError:
                pass  # no error: the port is reachable
        finally:
            await self._close_ws(ws)

    async def _check_frame(
        self, ws: aiohttp.ClientWebSocketResponse, channels: _Channels, when: str
    ) -> bytes | None:
        """One frame for :meth:`check`: data (returned), nothing yet (None), or an error."""
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                channel, payload = channels.split(message.data)
                if channel == ERROR_CHANNEL and payload:
                    raise PortForwardError(
                        f"pod {self.namespace}/{self.pod} does not accept connections on port "
                        f"{self.port}: {_text(payload)}; check that the pod's container is "
                        f"running and listening on {self.port} (kubectl logs {self.pod} -n "
                        f"{self.namespace})"
                    )
                return payload if channel == DATA_CHANNEL and payload else None
            if message.type in _END_TYPES:
                raise PortForwardError(
                    f"the API server closed the port-forward to {self.target} {when}, without "
                    f"an error message; check the pod (kubectl describe pod {self.pod} -n "
                    f"{self.namespace})"
                )

    # ----------------------------------------------------------------- WebSockets

    def _ws_client(self) -> WsApiClient:
        if isinstance(self._given, WsApiClient):
            return self._given
        if self._owned is None:
            self._owned = WsApiClient(configuration=self._given.configuration)
        return self._owned

    async def _open(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        """One WebSocket to the pod's port, the API server's refusals as PortForwardError."""
        ws_client = self._ws_client()
        server = ws_client.configuration.host
        api = client.CoreV1Api(ws_client)
        try:
            async with asyncio.timeout(timeout):
                # The stubs say str; without preloading, WsApiClient returns aiohttp's
                # not-yet-entered ws_connect context manager, which awaiting connects.
                pending: Any = await api.connect_get_namespaced_pod_portforward(
                    self.pod, self.namespace, ports=self.port, _preload_content=False
                )
                ws: aiohttp.ClientWebSocketResponse = await pending
                return ws
        except aiohttp.WSServerHandshakeError as exc:
            raise self._refused(exc.status, exc.message) from None
        except TimeoutError:
            raise PortForwardError(
                f"the API server at {server} did not answer within {timeout:g}s when asked "
                f"for a port-forward to {self.target}; check the cluster (kubectl cluster-info)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PortForwardError(
                f"cannot reach the API server at {server} for a port-forward to "
                f"{self.target}: {exc}; check the cluster (kubectl cluster-info)"
            ) from None

    def _refused(self, status: int, reason: str) -> PortForwardError:
        ns, pod = self.namespace, self.pod
        if status == 401:
            message = (
                f"the API server rejected the credentials (401) when asked for a port-forward "
                f"to {self.target}; log in again or check the kubeconfig's user"
            )
        elif status == 403:
            message = (
                f"not allowed to port-forward to pod {ns}/{pod} (403 Forbidden): the user "
                f"needs permission to 'create pods/portforward' (and 'get') in namespace "
                f"{ns}; check with 'kubectl auth can-i create pods/portforward -n {ns}' and "
                f"ask a cluster administrator for a Role that grants it"
            )
        elif status == 404:
            message = (
                f"pod {pod} not found in namespace {ns} (404) for the port-forward to port "
                f"{self.port}: it was deleted or never created (kubectl get pod {pod} -n {ns})"
            )
        elif status == 400:
            message = (
                f"the API server refused the port-forward to pod {ns}/{pod} (400 Bad "
                f"Request): the pod is not running (not yet scheduled, or its containers not "
                f"started); check 'kubectl describe pod {pod} -n {ns}'"
            )
        else:
            message = (
                f"the API server refused the port-forward to {self.target}: HTTP {status} "
                f"{reason}".rstrip()
            )
        return PortForwardError(message, status=status)

    @staticmethod
    async def _close_ws(ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close cleanly if the server answers soon, else drop the connection."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await ws.close()

    # ----------------------------------------------------------------- tunnels

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Start the tunnel of a new local connection as a task this object tracks."""
        if self._server is None:  # stopping: accepted just before the listener closed
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(
            self._tunnel(reader, writer), name=f"port-forward to {self.target}"
        )
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        self.connections += 1
        try:
            ws = await self._open(self.open_timeout)
            try:
                problem = await self._carry(reader, writer, ws)
            finally:
                await self._close_ws(ws)
            if problem:
                log.warning(
                    "Port-forward to pod %s/%s port %d: %s; closing the local connection from %s",
                    self.namespace,
                    self.pod,
                    self.port,
                    problem,
                    peer,
                )
            else:
                log.debug("Port-forward connection from %s to %s ended", peer, self.target)
        except PortForwardError as exc:
            log.warning(
                "Port-forward to pod %s/%s: %s; closing the local connection from %s",
                self.namespace,
                self.pod,
                exc,
                peer,
            )
        except Exception:
            log.exception(
                "Port-forward to pod %s/%s port %d failed; closing the local connection from %s",
                self.namespace,
                self.pod,
                self.port,
                peer,
            )
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _carry(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ws: aiohttp.ClientWebSocketResponse,
    ) -> str:
        """Copy both ways until one side ends; returns what went wrong on the pod side, if
        anything (error channel text, a lost connection), else ``""``."""
        loop = asyncio.get_running_loop()
        up = loop.create_task(self._upstream(reader, ws))
        down = loop.create_task(self._downstream(ws, writer))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
            if not down.done():
                # The local client ended its side; no half-close in v4: end the tunnel.
                await self._close_ws(ws)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await asyncio.wait((down,))
                return ""
            return down.result()
        finally:
            up.cancel()
            down.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _upstream(
        self, reader: asyncio.StreamReader, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        """Local bytes to channel 0, one frame per read; ``send_bytes`` waits for the socket
        to drain, so a slow API server slows the local reads."""
        prefix = bytes([DATA_CHANNEL])
        try:
            while chunk := await reader.read(CHUNK):
                await ws.send_bytes(prefix + chunk)
                self.bytes_out += len(chunk)
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.debug("Port-forward to %s: local side ended: %s", self.target, exc)

    async def _downstream(
        self, ws: aiohttp.ClientWebSocketResponse, writer: asyncio.StreamWriter
    ) -> str:
        """Channel 0 to the local connection, draining after each frame; ends at the first
        error text or when the WebSocket closes.  Returns the problem to log, or ``""``."""
        channels = _Channels()
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                channel, payload = channels.split(message.data)
                if not payload:
                    continue
                if channel == ERROR_CHANNEL:
                    return _text(payload)
                if channel == DATA_CHANNEL:
                    writer.write(payload)
                    self.bytes_in += len(payload)
                    try:
                        await writer.drain()
                    except ConnectionError:
                        return ""  # the local client went away
            elif message.type is aiohttp.WSMsgType.ERROR:
                return f"the WebSocket failed: {message.data}"
            elif message.type in _END_TYPES:
                code = ws.close_code
                if code is not None and code != aiohttp.WSCloseCode.OK:
                    return f"the connection through the API server was lost (close code {code})"
                return ""


_END_TYPES: Final = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "replace").strip()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
