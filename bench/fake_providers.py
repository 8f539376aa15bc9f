"""Host the loopback provider fakes in one process for a benchmark (the "network").

``python -m bench.fake_providers '<reply text>'`` starts the OpenAI, Anthropic, Deepgram and
Cartesia fakes (``testkit/providers/``), prints one JSON line with the settings that point
voxtutor at them (``openai_base_url``, ``anthropic_base_url``, ``deepgram_base_url``,
``cartesia_url``), and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack

from testkit.providers.anthropic_fake import AnthropicFake
from testkit.providers.cartesia_fake import CartesiaFake
from testkit.providers.deepgram_fake import DeepgramFake
from testkit.providers.openai_fake import OpenAIFake

TRANSCRIPT = "What do I need for a night flight?"


async def main(reply: str) -> None:
    """Serve the fakes until stdin closes."""
    async with AsyncExitStack() as stack:
        openai = await stack.enter_async_context(OpenAIFake())
        anthropic = await stack.enter_async_context(AnthropicFake())
        deepgram = await stack.enter_async_context(DeepgramFake(transcript=TRANSCRIPT))
        cartesia = await stack.enter_async_context(CartesiaFake())
        openai.reply = anthropic.reply = reply
        openai.transcript = TRANSCRIPT
        urls = {
            "openai_base_url": openai.base_url,
            "anthropic_base_url": anthropic.base_url,
            "deepgram_base_url": deepgram.base_url,
            "cartesia_url": cartesia.url,
        }
        print(json.dumps(urls), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "Good. What else?"))
