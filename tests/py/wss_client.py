"""A Python `websockets` client over TLS (wss://), trusting only the given PEM.

Usage: wss_client.py URL CAFILE [--count N]

Connects with an `ssl` context whose only trust anchor is CAFILE (the
proxy's certificate, as served at GET /proxies/{p}/certificate), sends N
text messages one at a time and waits for each echo. Prints one JSON line:
  {"event":"done","echoed":N,"rtt_ms":[...],"cipher":"TLS_...","version":"TLSv1.3"}
or, when the connection fails (e.g. the certificate is not trusted):
  {"event":"error","error":"..."}  and exits 1.
"""
import argparse
import asyncio
import json
import ssl
import sys
import time

from websockets.asyncio.client import connect


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("cafile")
    p.add_argument("--count", type=int, default=5)
    args = p.parse_args()

    async def run():
        ctx = ssl.create_default_context(cafile=args.cafile)
        try:
            async with connect(args.url, ssl=ctx, open_timeout=10) as ws:
                rtts = []
                for i in range(args.count):
                    sent = f"message {i}"
                    start = time.monotonic()
                    await ws.send(sent)
                    got = await asyncio.wait_for(ws.recv(), 10)
                    if got != sent:
                        raise RuntimeError(f"echo {got!r} != {sent!r}")
                    rtts.append(round((time.monotonic() - start) * 1000, 3))
                tls = ws.transport.get_extra_info("ssl_object")
                print(json.dumps({"event": "done", "echoed": len(rtts), "rtt_ms": rtts,
                                  "cipher": tls.cipher()[0], "version": tls.version()}), flush=True)
        except Exception as err:  # reported to the test, which decides
            print(json.dumps({"event": "error", "error": f"{type(err).__name__}: {err}"}), flush=True)
            sys.exit(1)

    asyncio.run(run())


if __name__ == "__main__":
    main()
