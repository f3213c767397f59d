"""A plain JSON feed on Python `websockets`: server-pushed `seq`, resumable, with request/reply.

Usage:
  json_feed_server.py [--host 127.0.0.1] [--port 0] [--rate 100] [--pad 0]

Every WebSocket connection (any path) gets text messages
  {"seq":N,"ts_ms":UNIX_MS}            (plus "pad":"xxx..." with --pad N)
at RATE per second, N = FROM+1, FROM+2, ... Query parameters of the upgrade
request override per connection:
  from=N    resume after N (default 0: start at 1)
  rate=R    messages per second (0: push nothing)
  count=C   stop after C messages and close with 1000
  pad=P     filler characters in "pad"
A client message {"id":X,...} is answered at once with {"reply":X}; any
other client message is ignored. GET /health answers 200 "ok".

Prints one JSON line on stdout (flushed) once bound:
  {"event":"listening","port":PORT}
"""
import argparse
import asyncio
import http
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--pad", type=int, default=0)
    args = p.parse_args()

    async def push(ws, start, rate, count, pad):
        if rate <= 0:
            return
        gap = 1.0 / rate
        filler = "x" * pad
        seq = start
        sent = 0
        next_at = time.monotonic()
        while count is None or sent < count:
            seq += 1
            message = {"seq": seq, "ts_ms": int(time.time() * 1000)}
            if pad:
                message["pad"] = filler
            await ws.send(json.dumps(message, separators=(",", ":")))
            sent += 1
            next_at += gap
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell far behind: do not burst
        await ws.close(1000, "count reached")

    async def replies(ws):
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict) and "id" in message:
                await ws.send(json.dumps({"reply": message["id"]}, separators=(",", ":")))

    async def handler(ws):
        query = parse_qs(urlsplit(ws.request.path).query)

        def param(name, kind, default):
            values = query.get(name)
            return kind(values[0]) if values else default

        start = param("from", int, 0)
        rate = param("rate", float, args.rate)
        count = param("count", int, None)
        pad = param("pad", int, args.pad)
        pusher = asyncio.create_task(push(ws, start, rate, count, pad))
        try:
            await replies(ws)
        except ConnectionClosed:
            pass
        finally:
            pusher.cancel()
            try:
                await pusher
            except (asyncio.CancelledError, ConnectionClosed):
                pass

    def process_request(connection, request):
        if request.path.startswith("/health"):
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def run():
        async with serve(handler, args.host, args.port, process_request=process_request,
                         max_size=None, compression=None) as server:
            log(event="listening", port=server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(run())


if __name__ == "__main__":
    main()
