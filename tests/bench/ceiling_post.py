"""Ceiling B: bare aiohttp posting of every job's final document, once, to the sandbox.

``--concurrency`` requests in flight at once (ours' default ``sync.concurrency``), one token
fetched up front, bodies read from ``--bodies`` (one JSON document per line) before the clock
that matters starts: the parent times it to the sandbox accepting the last document.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.bench.common import CLIENT_ID, CLIENT_SECRET, linger, report, run_arguments


async def token(session: aiohttp.ClientSession, base_url: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    async with session.post(f"{base_url}/connect/token", data=form) as response:
        response.raise_for_status()
        value: str = (await response.json())["access_token"]
        return value


async def post_all(base_url: str, bodies: list[bytes], concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {
            "Authorization": f"Bearer {await token(session, base_url)}",
            "Content-Type": "application/json",
        }
        url = f"{base_url}/jobs/v1/basicSync"
        failed = 0

        async def worker(offset: int) -> None:
            nonlocal failed
            for body in bodies[offset::concurrency]:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    failed += response.status >= 300

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        report(requests=len(bodies), failed=failed)


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0]).parse_args()
    with open(args.bodies, "rb") as lines:
        bodies = [line.rstrip(b"\n") for line in lines if line.strip()]
    asyncio.run(post_all(args.sandbox, bodies, args.concurrency))
    linger()


if __name__ == "__main__":
    main()
