"""A `python-socketio` chat server (ASGI under `uvicorn`), a service we did not write.

Usage:
  socketio_server.py [--host 127.0.0.1] [--port 0] [--ping-interval 25]
                     [--ping-timeout 20] [--retain 1000]
                     [--tick-ms 0] [--tick-room ROOM ...]

Serves Socket.IO 5 / Engine.IO 4 at /socket.io/, WebSocket transport only
(`ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`); anything else on
HTTP: GET /health answers 200 "ok".

Events (default namespace):
  join {room, from}        joins `room` (leaving none), replays the retained
                           room messages with seq > from to this client
                           (default from: no replay), acks {room, seq} with
                           the room's last seq.
  chat {id, body, room?}   `room` defaults to the room this client joined
                           last, else "lobby". Broadcasts event `chat`
                           {room, seq, id, body} to the room, `seq` 1, 2, 3, ...
                           per room, and acks the sender with {id}.
Ticks (--tick-ms N > 0): every N ms, event `tick` {room, seq} to each room in
--tick-room (repeatable; default: every room joined so far). Ticks and chats
of a room share its seq counter, are retained and replayed alike.

Prints one JSON line per happening on stdout (flushed):
  {"event":"listening","port":PORT}       first, once bound
  {"event":"connect","sid":SID}
  {"event":"join","sid":SID,"room":ROOM,"from":FROM,"replayed":N}
  {"event":"disconnect","sid":SID,"reason":REASON}
REASON is python-engineio's server-side reason: "ping timeout" (no pong
within ping_timeout of a ping), "client disconnect", "server disconnect",
"transport close", "transport error".
"""
import argparse
import asyncio
import collections
import json
import sys

import socketio
import uvicorn_serve


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Rooms:
    """Per-room seq counters and retained messages."""

    def __init__(self, retain):
        self.seq = collections.defaultdict(int)
        self.kept = collections.defaultdict(lambda: collections.deque(maxlen=retain or None))
        self.locks = collections.defaultdict(asyncio.Lock)


def build(args):
    sio = socketio.AsyncServer(
        async_mode="asgi",
        transports=["websocket"],
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        # In order, per connection: acks and broadcasts follow the sends.
        async_handlers=False,
        cors_allowed_origins="*",
    )
    rooms = Rooms(args.retain)
    joined = {}  # sid -> room joined last

    async def publish(room, event, message):
        """Numbers and broadcasts one message; the lock keeps seq order on the wire."""
        async with rooms.locks[room]:
            rooms.seq[room] += 1
            message["seq"] = rooms.seq[room]
            if args.retain:
                rooms.kept[room].append((event, message))
            await sio.emit(event, message, room=room)
        return message

    @sio.event
    async def connect(sid, environ, auth=None):
        log(event="connect", sid=sid)

    @sio.event
    async def disconnect(sid, reason=None):
        joined.pop(sid, None)
        log(event="disconnect", sid=sid, reason=str(reason))

    @sio.event
    async def join(sid, data):
        data = data or {}
        room = str(data.get("room") or "lobby")
        after = data.get("from")
        async with rooms.locks[room]:
            old = joined.get(sid)
            if old is not None and old != room:
                await sio.leave_room(sid, old)
            await sio.enter_room(sid, room)
            joined[sid] = room
            replayed = 0
            if after is not None:
                for event, message in list(rooms.kept[room]):
                    if message["seq"] > int(after):
                        await sio.emit(event, message, to=sid)
                        replayed += 1
            last = rooms.seq[room]
        log(event="join", sid=sid, room=room, **{"from": after}, replayed=replayed)
        return {"room": room, "seq": last}

    @sio.event
    async def chat(sid, data):
        data = data or {}
        room = str(data.get("room") or joined.get(sid) or "lobby")
        await publish(room, "chat", {"room": room, "id": data.get("id"), "body": data.get("body")})
        return {"id": data.get("id")}

    async def ticker():
        every = args.tick_ms / 1000.0
        while True:
            await asyncio.sleep(every)
            targets = args.tick_room or sorted(set(joined.values()))
            for room in targets:
                await publish(room, "tick", {"room": room})

    async def health(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if args.tick_ms > 0:
                        asyncio.get_running_loop().create_task(ticker())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            ok = scope.get("path", "").startswith("/health")
            await send({"type": "http.response.start", "status": 200 if ok else 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok\n" if ok else b"not found\n"})

    return socketio.ASGIApp(sio, other_asgi_app=health)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ping-interval", type=float, default=25.0, help="seconds between server pings")
    p.add_argument("--ping-timeout", type=float, default=20.0, help="seconds the server waits for a pong")
    p.add_argument("--retain", type=int, default=1000, help="messages kept per room for replay (0: none)")
    p.add_argument("--tick-ms", type=int, default=0, help="push a tick to rooms every N ms (0: off)")
    p.add_argument("--tick-room", action="append", default=[], help="room to tick (repeatable; default all joined)")
    args = p.parse_args()

    uvicorn_serve.serve(build(args), args.host, args.port, lifespan="on", ws_max_size=16 * 1024 * 1024)


if __name__ == "__main__":
    main()
