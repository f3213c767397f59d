"""A Python `websockets` echo server, used as an upstream we did not write.

Usage: echo_server.py PORT_FILE [--deflate] — binds 127.0.0.1:0, writes the
port to PORT_FILE; with --deflate it negotiates permessage-deflate; with
--tls CERT KEY it serves wss://.
Echoes every message with its type; negotiates subprotocol "chat.v2" if offered;
answers plain HTTP GET /health with 200 "ok".
"""
import asyncio
import http
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except Exception:
        pass


def process_request(connection, request):
    if request.path.startswith("/health"):
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    if request.path.startswith("/private"):
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "who are you\n")
    return None


def select_subprotocol(connection, subprotocols):
    return "chat.v2" if "chat.v2" in subprotocols else None


def tls_context():
    if "--tls" not in sys.argv:
        return None
    import ssl
    i = sys.argv.index("--tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[i + 1], sys.argv[i + 2])
    return ctx


async def main():
    async with serve(echo, "127.0.0.1", 0, select_subprotocol=select_subprotocol, process_request=process_request,
                     max_size=None,
                     compression="deflate" if "--deflate" in sys.argv else None,
                     ssl=tls_context()) as server:
        port = server.sockets[0].getsockname()[1]
        with open(sys.argv[1], "w") as f:
            f.write(str(port))
        await asyncio.Future()


asyncio.run(main())
