"""The `python-socketio` AsyncClient (WebSocket transport only), a client we did not write.

Usage:
  socketio_client.py URL [--room r1] [--from N] [--count 20] [--rate 50]
                     [--body-bytes 16] [--duration 30] [--linger 0.3]
                     [--reconnect] [--debug]

Connects to URL (http://HOST:PORT or ws://HOST:PORT; the client adds
/socket.io/), joins ROOM (`join` {room, from}, with --from N), then sends
COUNT `chat` {id: "c-1".., body} events at RATE per second, each asking for
an ack. It ends (disconnecting itself) once every chat it sent has been
acked and broadcast back, plus --linger seconds; or on a disconnect (unless
--reconnect, where python-socketio reconnects and the client re-joins from
the last seq it saw); or after --duration seconds. --count 0 only listens.
--debug puts python-engineio's log on stderr.

Prints one JSON line per happening on stdout (flushed):
  {"event":"connect","sid":SID}
  {"event":"joined","room":ROOM,"seq":LAST_SEQ_OF_ROOM}
  {"event":"ack","id":ID,"ms":LATENCY_MS}
  {"event":"chat","room":ROOM,"seq":SEQ,"id":ID}
  {"event":"tick","room":ROOM,"seq":SEQ}
  {"event":"disconnect","reason":REASON,"t_ms":MS,"pings":N,
   "last_ping_ago_ms":MS,"last_packet_ago_ms":MS,
   "ping_interval_ms":MS,"ping_timeout_ms":MS}
  {"event":"error","error":TEXT}                       (connection failed)
  {"event":"done","sent":N,"acked":N,"chats":N,"ticks":N,"disconnects":N}   last

REASON is python-socketio's own disconnect reason, verbatim; it has only
three: "client disconnect" (this client's own disconnect, e.g. at the end),
"server disconnect" (an Engine.IO CLOSE packet or a Socket.IO disconnect
from the server) and "transport error" (the WebSocket closed or failed, or
nothing at all arrived within pingInterval + pingTimeout). It has no "ping
timeout" reason, and any packet, not only a PING, restarts its read timeout,
so while chats or ticks flow it never times out by itself. When the
server's PINGs are lost, the server's ping timeout fires instead (the
server prints {"event":"disconnect",...,"reason":"ping timeout"} about
pingInterval + pingTimeout after its last pong), it stops sending, and the
client then ends with "transport error" (when the server closes the
WebSocket, or by its own silence timeout, about pingInterval + pingTimeout
later). `t_ms` is the time since the client started; `pings` counts the
Engine.IO PINGs (`2`) it received; `last_ping_ago_ms` and
`last_packet_ago_ms` say how long before the disconnect the last PING and
the last packet of any kind came (null: none).
Exit status 0, or 1 when the first connection failed.
"""
import argparse
import asyncio
import json
import sys
import time

import socketio


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("--room", default="r1")
    p.add_argument("--from", dest="start", type=int, default=None)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--body-bytes", type=int, default=16)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--linger", type=float, default=0.3)
    p.add_argument("--reconnect", action="store_true")
    p.add_argument("--debug", action="store_true", help="python-engineio's log on stderr")
    args = p.parse_args()

    started = time.monotonic()
    sio = socketio.AsyncClient(reconnection=args.reconnect, reconnection_delay=0.2,
                               reconnection_delay_max=1.0, randomization_factor=0.0,
                               engineio_logger=args.debug)
    state = {"sent": 0, "acked": 0, "chats": 0, "ticks": 0, "disconnects": 0,
             "last_seq": args.start, "pings": 0, "last_ping": None, "last_packet": None}
    mine = set()  # ids sent and not yet broadcast back
    unacked = {}  # id -> send time
    ended = asyncio.Event()
    in_room = asyncio.Event()  # set once `join` is acked, cleared on disconnect
    all_back = asyncio.Event()

    # Observe Engine.IO PINGs: wrap the engine client's packet handler (the
    # library answers them itself; this only counts and timestamps).
    eio_receive = sio.eio._receive_packet

    async def receive_packet(pkt):
        state["last_packet"] = time.monotonic()
        if pkt.packet_type == 2:  # engineio.packet.PING
            state["pings"] += 1
            state["last_ping"] = state["last_packet"]
        return await eio_receive(pkt)

    sio.eio._receive_packet = receive_packet

    def check_all_back():
        if state["sent"] >= args.count and not mine and not unacked:
            all_back.set()

    def saw(seq):
        if state["last_seq"] is None or seq > state["last_seq"]:
            state["last_seq"] = seq

    @sio.event
    async def connect():
        log(event="connect", sid=sio.sid)
        ack = await sio.call("join", {"room": args.room, "from": state["last_seq"]}, timeout=5)
        log(event="joined", room=ack.get("room"), seq=ack.get("seq"))
        if state["last_seq"] is None:
            state["last_seq"] = ack.get("seq")
        in_room.set()

    @sio.event
    async def disconnect(reason=None):
        state["disconnects"] += 1
        in_room.clear()
        now = time.monotonic()

        def ago(then):
            return None if then is None else round((now - then) * 1000)

        log(event="disconnect", reason=str(reason), t_ms=ago(started), pings=state["pings"],
            last_ping_ago_ms=ago(state["last_ping"]), last_packet_ago_ms=ago(state["last_packet"]),
            ping_interval_ms=round((sio.eio.ping_interval or 0) * 1000),
            ping_timeout_ms=round((sio.eio.ping_timeout or 0) * 1000))
        if not args.reconnect:
            ended.set()

    @sio.on("chat")
    async def on_chat(data):
        state["chats"] += 1
        saw(data.get("seq"))
        log(event="chat", room=data.get("room"), seq=data.get("seq"), id=data.get("id"))
        mine.discard(data.get("id"))
        check_all_back()

    @sio.on("tick")
    async def on_tick(data):
        state["ticks"] += 1
        saw(data.get("seq"))
        log(event="tick", room=data.get("room"), seq=data.get("seq"))

    def acked(message_id):
        def callback(answer=None):
            sent_at = unacked.pop(message_id, None)
            state["acked"] += 1
            ms = None if sent_at is None else round((time.monotonic() - sent_at) * 1000, 2)
            log(event="ack", id=(answer or {}).get("id"), ms=ms)
            check_all_back()
        return callback

    try:
        await sio.connect(args.url, transports=["websocket"], wait_timeout=5)
    except Exception as e:  # connection refused, bad handshake, ...
        log(event="error", error=str(e))
        log(event="done", **{k: state[k] for k in ("sent", "acked", "chats", "ticks", "disconnects")})
        return 1

    async def sender():
        body = "x" * args.body_bytes
        gap = 1.0 / args.rate if args.rate > 0 else 0.0
        next_at = time.monotonic()
        for n in range(1, args.count + 1):
            while not in_room.is_set():
                if ended.is_set():
                    return
                await asyncio.sleep(0.02)
            message_id = f"c-{n}"
            mine.add(message_id)
            unacked[message_id] = time.monotonic()
            state["sent"] += 1
            try:
                await sio.emit("chat", {"id": message_id, "body": body}, callback=acked(message_id))
            except socketio.exceptions.BadNamespaceError:
                pass  # disconnected meanwhile
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        check_all_back()

    send_task = asyncio.create_task(sender())
    waiters = [asyncio.create_task(ended.wait())]
    if args.count > 0:
        waiters.append(asyncio.create_task(all_back.wait()))
    await asyncio.wait(waiters, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
    if all_back.is_set() and not ended.is_set():
        await asyncio.sleep(args.linger)
    send_task.cancel()
    for w in waiters:
        w.cancel()
    if sio.connected:
        await sio.disconnect()
        await asyncio.sleep(0.05)
    log(event="done", **{k: state[k] for k in ("sent", "acked", "chats", "ticks", "disconnects")})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
