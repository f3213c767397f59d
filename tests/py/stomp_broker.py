"""A small STOMP 1.2 broker over WebSocket on Python `websockets`: topics, receipts, heart-beats.

Usage:
  stomp_broker.py [--host 127.0.0.1] [--port 0] [--heart-beat 1000,1000]

The test suite's stand-in for a STOMP broker (RabbitMQ's web-stomp,
ActiveMQ, ...), written from the STOMP 1.2 specification
(https://stomp.github.io/stomp-specification-1.2.html). Any path upgrades;
the subprotocol is `v12.stomp` when the client offers it (`v10.stomp` and
`v11.stomp` alone are refused, no subprotocol at all is accepted). A
WebSocket message, text or binary, may hold any number of frames and EOL
heart-beats; a frame may also span messages. Frames:

  CONNECT / STOMP   accept-version must list 1.2 and `host` is required, else
                    ERROR (with `version:1.2`); answered with
                    CONNECTED version:1.2, heart-beat:<sx>,<sy>, session, server.
                    heart-beat: the client's `cx,cy` against --heart-beat
                    `SX,SY`: the broker sends an EOL every max(SX,cy) ms when
                    both are > 0 (<sx>, every interval, whether or not other
                    frames went out: STOMP asks for at least that much) and
                    expects something from the client every max(cx,SY) ms when
                    both are > 0 (<sy>); nothing for twice that closes the
                    connection (code 1011, "heart-beat timeout").
  SUBSCRIBE         `id` and `destination` required, `ack` must be auto (the
                    default); an id already in use is an ERROR.
  UNSUBSCRIBE       `id` of a subscription of this connection.
  SEND              `destination` required: a MESSAGE to every subscription
                    on exactly that destination, on any connection, with
                    `subscription`, `message-id`, `destination`,
                    `content-length`, the SEND's other headers (`receipt`
                    and `content-type` too, as RabbitMQ copies them) and
                    its body. Every destination is a topic:
                    nothing is kept for absent subscribers. With
                    `transaction:T` it waits for COMMIT T (ABORT T drops it).
  BEGIN/COMMIT/ABORT  `transaction` required.
  DISCONNECT        RECEIPT (if `receipt`) and the connection closes (1000).
  ACK / NACK        ERROR: every subscription is ack:auto.

Any frame but CONNECT with a `receipt` header is answered, after it took
effect, with RECEIPT receipt-id:<that value>. Header values are unescaped
(\\r \\n \\c \\\\) except in CONNECT, and escaped the same way in every frame
but CONNECTED; the first of repeated headers wins; `content-length` gives the
body length, else the body ends at the first NUL. A malformed frame (no
colon in a header line, a bad escape, a wrong content-length, a command that
is not a client frame, a frame over 1 MiB), a frame before CONNECT or a
second CONNECT gets ERROR with `message` (and `receipt-id` when the frame had
`receipt`), and the connection closes (code 1002). Server frames go out as
text messages, one frame per message (binary when the body is not UTF-8).
GET /health answers 200 "ok".

Prints one JSON line on stdout (flushed) per event:
  {"event":"listening","port":PORT}                                  once bound
  {"event":"connected","session":S,"subprotocol":P|null,"heart_beat":[SX,SY]}
  {"event":"error","session":S,"message":M}                          an ERROR sent
  {"event":"closed","session":S,"reason":R,"frames_in":N,"messages_out":N,
   "receipts_out":N,"heartbeats_out":N,"heartbeats_in":N}            a connection ended
"""
import argparse
import asyncio
import http
import itertools
import json
import sys
import time

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, NegotiationError

MAX_FRAME = 1 << 20
CLIENT_COMMANDS = {
    "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
    "BEGIN", "COMMIT", "ABORT", "DISCONNECT",
}
# Headers of SEND that are not copied into its MESSAGEs (the MESSAGE sets
# its own, or they are about the transaction). `receipt` is copied, as
# RabbitMQ does: a script's reply regex must tell a RECEIPT from a MESSAGE.
SEND_ONLY = {"destination", "transaction", "content-length",
             "subscription", "message-id", "ack"}
UNESCAPE = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Malformed(Exception):
    """A frame that cannot be parsed: ERROR, then the connection closes."""


class Refused(Exception):
    """A well-formed frame the broker will not carry out: ERROR, then close."""


def unescape(raw, where):
    out = []
    chars = iter(raw)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt not in UNESCAPE:
            raise Malformed(f"undefined escape \\{nxt} in {where}")
        out.append(UNESCAPE[nxt])
    return "".join(out)


def escape(value):
    return (value.replace("\\", "\\\\").replace("\r", "\\r")
            .replace("\n", "\\n").replace(":", "\\c"))


def encode(command, headers, body=b""):
    """A server frame; `headers` in order; header values escaped but in CONNECTED."""
    lines = [command]
    for name, value in headers:
        value = str(value)
        if command != "CONNECTED":
            name, value = escape(name), escape(value)
        lines.append(f"{name}:{value}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


def parse_one(buf):
    """Takes one frame off the front of `buf` (a bytearray, with leading EOLs
    already gone): (command, headers dict, body) or None when incomplete."""
    # The command and header lines end at the first blank line.
    end = None
    pos = 0
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) > MAX_FRAME:
                raise Malformed("frame too large")
            return None
        line = buf[pos:nl]
        if line in (b"", b"\r") and pos > 0:
            end = nl + 1
            break
        pos = nl + 1
    try:
        text = bytes(buf[:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("command or headers are not UTF-8")
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    command = lines[0]
    if command not in CLIENT_COMMANDS:
        raise Malformed(f"unknown command {command[:40]!r}")
    headers = {}
    for line in lines[1:]:
        if line == "":
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise Malformed(f"header line without a colon: {line[:40]!r}")
        if command not in ("CONNECT", "STOMP"):
            name = unescape(name, "a header name")
            value = unescape(value, f"header {name}")
        headers.setdefault(name, value)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Malformed(f"content-length {length[:20]!r} is not a number")
        need = end + int(length)
        if need + 1 > MAX_FRAME:
            raise Malformed("frame too large")
        if len(buf) < need + 1:
            return None
        if buf[need] != 0:
            raise Malformed("no NUL after content-length octets of body")
        body = bytes(buf[end:need])
        del buf[:need + 1]
    else:
        nul = buf.find(b"\0", end)
        if nul < 0:
            if len(buf) > MAX_FRAME:
                raise Malformed("frame too large")
            return None
        body = bytes(buf[end:nul])
        del buf[:nul + 1]
    return command, headers, body


class Broker:
    def __init__(self, heart_beat):
        self.heart_beat = heart_beat           # (SX, SY) in ms
        self.subscribers = {}                  # destination -> {(conn, sub id)}
        self.sessions = itertools.count(1)
        self.message_ids = itertools.count(1)

    def publish(self, destination, headers, body):
        extra = [(k, v) for k, v in headers.items() if k not in SEND_ONLY]
        for conn, sub_id in list(self.subscribers.get(destination, ())):
            conn.push(encode("MESSAGE", [
                ("subscription", sub_id),
                ("message-id", f"m-{next(self.message_ids)}"),
                ("destination", destination),
                ("content-length", len(body)),
                *extra,
            ], body))
            conn.messages_out += 1


class Conn:
    def __init__(self, broker, ws):
        self.broker = broker
        self.ws = ws
        self.session = f"s-{next(broker.sessions)}"
        self.out = asyncio.Queue()
        self.buf = bytearray()
        self.connected = False
        self.subs = {}                         # id -> destination
        self.transactions = {}                 # name -> [(destination, headers, body)]
        self.send_every = 0                    # ms
        self.expect_every = 0                  # ms
        self.last_in = time.monotonic()
        self.reason = "client closed"
        self.frames_in = 0
        self.messages_out = 0
        self.receipts_out = 0
        self.heartbeats_out = 0
        self.heartbeats_in = 0

    def push(self, frame):
        self.out.put_nowait(frame)

    def close_after_queued(self, code, reason):
        self.reason = reason
        self.out.put_nowait((code, reason))

    async def writer(self):
        while True:
            item = await self.out.get()
            if isinstance(item, tuple):
                await self.ws.close(*item)
                return
            try:
                await self.ws.send(item.decode("utf-8"))
            except UnicodeDecodeError:
                await self.ws.send(item)

    async def heartbeats(self):
        every = self.send_every / 1000.0
        while True:
            await asyncio.sleep(every)
            self.push(b"\n")
            self.heartbeats_out += 1

    async def watchdog(self):
        limit = 2 * self.expect_every / 1000.0
        while True:
            await asyncio.sleep(limit / 4)
            if time.monotonic() - self.last_in > limit:
                self.reason = "heart-beat timeout"
                await self.ws.close(1011, "heart-beat timeout")
                return

    def error(self, message, headers, code=1002):
        fields = [("message", message), ("content-type", "text/plain")]
        if "receipt" in headers:
            fields.append(("receipt-id", headers["receipt"]))
        self.push(encode("ERROR", fields, message.encode()))
        log(event="error", session=self.session, message=message)
        self.close_after_queued(code, "STOMP ERROR")

    def receipt(self, headers):
        if "receipt" in headers:
            self.push(encode("RECEIPT", [("receipt-id", headers["receipt"])]))
            self.receipts_out += 1

    def on_data(self, data, tasks):
        """Parses what arrived; False once the connection is to end."""
        self.last_in = time.monotonic()
        self.buf += data
        while True:
            # EOLs between frames are heart-beats.
            while self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n":
                del self.buf[:1 if self.buf[:1] == b"\n" else 2]
                self.heartbeats_in += 1
            if not self.buf or self.buf == b"\r":
                return True
            headers = {}
            try:
                frame = parse_one(self.buf)
                if frame is None:
                    return True
                command, headers, body = frame
                self.frames_in += 1
                if not self.on_frame(command, headers, body, tasks):
                    return False
            except (Malformed, Refused) as err:
                self.error(str(err), headers)
                return False

    def need(self, headers, name, command):
        value = headers.get(name)
        if value is None or value == "":
            raise Refused(f"{command} needs a {name} header")
        return value

    def on_frame(self, command, headers, body, tasks):
        if command in ("CONNECT", "STOMP"):
            if self.connected:
                raise Refused("already connected")
            versions = headers.get("accept-version", "1.0").split(",")
            if "1.2" not in versions:
                self.push(encode("ERROR", [
                    ("version", "1.2"), ("message", "unsupported protocol version"),
                    ("content-type", "text/plain"),
                ], b"Supported protocol versions are 1.2"))
                log(event="error", session=self.session,
                    message=f"unsupported accept-version {headers.get('accept-version')}")
                self.close_after_queued(1002, "STOMP ERROR")
                return False
            self.need(headers, "host", command)
            try:
                cx, cy = (int(v) for v in headers.get("heart-beat", "0,0").split(","))
                if cx < 0 or cy < 0:
                    raise ValueError
            except ValueError:
                raise Malformed(f"heart-beat {headers.get('heart-beat')!r} is not two numbers")
            sx, sy = self.broker.heart_beat
            self.send_every = max(sx, cy) if sx and cy else 0
            self.expect_every = max(cx, sy) if cx and sy else 0
            self.connected = True
            self.push(encode("CONNECTED", [
                ("version", "1.2"),
                ("heart-beat", f"{self.send_every},{self.expect_every}"),
                ("session", self.session),
                ("server", "stomp_broker.py/1.0"),
            ]))
            if self.send_every:
                tasks.append(asyncio.create_task(self.heartbeats()))
            if self.expect_every:
                tasks.append(asyncio.create_task(self.watchdog()))
            log(event="connected", session=self.session, subprotocol=self.ws.subprotocol,
                heart_beat=[self.send_every, self.expect_every])
            return True
        if not self.connected:
            raise Refused(f"{command} before CONNECT")
        if command == "SEND":
            destination = self.need(headers, "destination", command)
            tx = headers.get("transaction")
            if tx is not None:
                if tx not in self.transactions:
                    raise Refused(f"no transaction {tx!r}")
                self.transactions[tx].append((destination, headers, body))
            else:
                self.broker.publish(destination, headers, body)
        elif command == "SUBSCRIBE":
            sub_id = self.need(headers, "id", command)
            destination = self.need(headers, "destination", command)
            if headers.get("ack", "auto") != "auto":
                raise Refused(f"ack:{headers['ack']} is not supported (only auto)")
            if sub_id in self.subs:
                raise Refused(f"subscription id {sub_id!r} already in use")
            self.subs[sub_id] = destination
            self.broker.subscribers.setdefault(destination, set()).add((self, sub_id))
        elif command == "UNSUBSCRIBE":
            sub_id = self.need(headers, "id", command)
            if sub_id not in self.subs:
                raise Refused(f"no subscription {sub_id!r}")
            self.drop_subscription(sub_id)
        elif command == "BEGIN":
            tx = self.need(headers, "transaction", command)
            if tx in self.transactions:
                raise Refused(f"transaction {tx!r} already begun")
            self.transactions[tx] = []
        elif command in ("COMMIT", "ABORT"):
            tx = self.need(headers, "transaction", command)
            if tx not in self.transactions:
                raise Refused(f"no transaction {tx!r}")
            sends = self.transactions.pop(tx)
            if command == "COMMIT":
                for destination, send_headers, send_body in sends:
                    self.broker.publish(destination, send_headers, send_body)
        elif command in ("ACK", "NACK"):
            raise Refused(f"{command}: every subscription is ack:auto")
        elif command == "DISCONNECT":
            self.receipt(headers)
            self.close_after_queued(1000, "DISCONNECT")
            return False
        self.receipt(headers)
        return True

    def drop_subscription(self, sub_id):
        destination = self.subs.pop(sub_id)
        subs = self.broker.subscribers.get(destination, set())
        subs.discard((self, sub_id))
        if not subs:
            self.broker.subscribers.pop(destination, None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--heart-beat", default="1000,1000",
                   help="SX,SY: send at most every SX ms, want something every SY ms (0: never)")
    args = p.parse_args()
    sx, sy = (int(v) for v in args.heart_beat.split(","))
    broker = Broker((sx, sy))

    async def handler(ws):
        conn = Conn(broker, ws)
        tasks = [asyncio.create_task(conn.writer())]
        try:
            async for message in ws:
                data = message.encode("utf-8") if isinstance(message, str) else message
                if not conn.on_data(data, tasks):
                    # Let the writer send what is queued (ERROR, RECEIPT) and close.
                    await asyncio.wait_for(tasks[0], timeout=5)
                    break
        except ConnectionClosed:
            pass
        except asyncio.TimeoutError:
            conn.reason = "close timed out"
        finally:
            for sub_id in list(conn.subs):
                conn.drop_subscription(sub_id)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log(event="closed", session=conn.session, reason=conn.reason,
                frames_in=conn.frames_in, messages_out=conn.messages_out,
                receipts_out=conn.receipts_out, heartbeats_out=conn.heartbeats_out,
                heartbeats_in=conn.heartbeats_in)

    def select_subprotocol(connection, offered):
        if "v12.stomp" in offered:
            return "v12.stomp"
        if offered:
            raise NegotiationError("this broker speaks STOMP 1.2: offer v12.stomp")
        return None

    def process_request(connection, request):
        if request.path.startswith("/health"):
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def run():
        async with serve(handler, args.host, args.port, process_request=process_request,
                         select_subprotocol=select_subprotocol, max_size=MAX_FRAME,
                         compression=None) as server:
            log(event="listening", port=server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(run())


if __name__ == "__main__":
    main()
