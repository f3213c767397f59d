"""Shared by the uvicorn fixtures of tests/py/: serve an ASGI app on a port
bound first (0: any free one) and print `{"event":"listening","port":N}`
once uvicorn has started, then serve until stopped.

  import uvicorn_serve
  uvicorn_serve.serve(app, host, port, lifespan="off", ...)
"""

import asyncio
import json
import socket
import sys

import uvicorn


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def serve(app, host, port, **config):
    """Runs `app` under uvicorn on host:port; `config` goes to uvicorn.Config."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))

    async def run():
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            log(event="listening", port=port)
        await serving

    asyncio.run(run())
