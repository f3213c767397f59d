"""A Python `websockets` server with a page: the upstream of the browser tests.

Usage: page_echo_server.py [--host 127.0.0.1] [--port 0]

GET / answers an HTML page whose script opens a WebSocket to the same
host (`wss://` when the page came over https, `ws://` otherwise) at /ws,
sends 5 messages, and writes what came back into <pre id="result"> as JSON:
  {"scheme":"wss:","echoed":["m0",...,"m4"],"error":null}
Any other path upgrades to an echo WebSocket. Prints one JSON line once
bound: {"event":"listening","port":PORT}
"""
import argparse
import asyncio
import http
import json
import sys

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>wss test</title></head>
<body><pre id="result">running</pre>
<script>
const out = document.getElementById("result");
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(scheme + "//" + location.host + "/ws");
const echoed = [];
ws.onopen = () => { for (let i = 0; i < 5; i++) ws.send("m" + i); };
ws.onmessage = (e) => {
  echoed.push(e.data);
  if (echoed.length === 5) {
    out.textContent = JSON.stringify({scheme, echoed, error: null});
    ws.close(1000, "done");
  }
};
ws.onerror = () => { out.textContent = JSON.stringify({scheme, echoed, error: "websocket error"}); };
</script></body></html>
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()

    async def echo(ws):
        try:
            async for message in ws:
                await ws.send(message)
        except Exception:
            pass

    def process_request(connection, request):
        if request.path == "/" or request.path.startswith("/?"):
            body = PAGE.encode()
            headers = Headers([("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Length", str(len(body))), ("Connection", "close")])
            return Response(http.HTTPStatus.OK, "OK", headers, body)
        return None

    async def run():
        async with serve(echo, args.host, args.port, process_request=process_request) as server:
            port = server.sockets[0].getsockname()[1]
            sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
            sys.stdout.flush()
            await asyncio.Future()

    asyncio.run(run())


if __name__ == "__main__":
    main()
