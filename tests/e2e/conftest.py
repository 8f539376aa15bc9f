"""The end-to-end tests' local LLM server: the fast 0.5B model, one server per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from config.settings import Settings
from services.llama_server import LlamaServer
from weights.registry import model_path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm_url(tmp_path_factory) -> AsyncIterator[str]:
    """A llama.cpp server on Qwen2.5-Coder 0.5B; yields its OpenAI-compatible base URL."""
    server = LlamaServer(
        model_path("qwen2.5-coder-0.5b", Settings().home),
        log_path=tmp_path_factory.mktemp("llm") / "llama-server.log",
    )
    async with server:
        yield server.base_url
