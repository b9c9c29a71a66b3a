"""Reading an HTTP answer's body with a bound.

aiohttp's ``response.text()`` reads a body whole, however large: a gateway (or a proxy in front
of it) that answers with an endless or huge body would fill the pod's memory, and do it again
for the same job after every restart. What the consumer needs of an answer is small (a 2xx's
``jobId``, a 4xx's first 2,048 characters, a token), so a body is read up to a limit and the
rest is left unread (aiohttp then closes that connection instead of reusing it).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import aiohttp

#: The most read of a token endpoint's answer: a token response is a few kilobytes.
MAX_TOKEN_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    #: the body went on past the limit; ``text`` is its beginning
    cut: bool


async def read_answer(response: aiohttp.ClientResponse, limit: int) -> Answer:
    """At most ``limit`` bytes of the body, decoded by its charset (else UTF-8, as aiohttp's
    ``text()`` falls back to), undecodable bytes replaced."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    raw = b"".join(chunks)
    cut = len(raw) > limit
    return Answer(raw[:limit].decode(_encoding(response), errors="replace"), cut)


def _encoding(response: aiohttp.ClientResponse) -> str:
    if response.charset:
        try:
            return codecs.lookup(response.charset).name
        except LookupError:
            pass
    return "utf-8"
