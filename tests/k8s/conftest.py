"""Fixtures of the Kubernetes tests: a test double of the API server and clients bound to it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The protocol-speaking test peers of tests/unit (agg_helpers) serve here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from apiserver_double import ApiServerDouble
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServerDouble]:
    """A fresh API server double on 127.0.0.1 (random port), stopped after the test."""
    server = ApiServerDouble()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def api_client(apiserver: ApiServerDouble) -> AsyncIterator[client.ApiClient]:
    """The real kubernetes-asyncio ApiClient, as user ``admin``, talking to the double."""
    async with apiserver.api_client() as api:
        yield api


@pytest.fixture
async def ws_api_client(apiserver: ApiServerDouble) -> AsyncIterator[WsApiClient]:
    """The WebSocket flavour of the client (port-forward)."""
    async with apiserver.ws_api_client() as api:
        yield api


@pytest.fixture
def kubeconfig(apiserver: ApiServerDouble, tmp_path: Path) -> Path:
    """A kubeconfig file with two contexts on the double: ``double`` and ``double-viewer``."""
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")
