"""The `gql` client with its `websockets` transport, a client we did not write.

Usage:
  graphql_client.py URL [--to 30] [--interval-ms 20] [--from 0]
                    [--subprotocol graphql-transport-ws|graphql-ws]
                    [--send ID ...] [--timeout 30]

Connects to URL (ws://HOST:PORT/graphql) with gql's WebsocketsTransport,
offering only SUBPROTOCOL (default graphql-transport-ws), runs one
`mutation { send(id: ID) }` per --send, then subscribes to
`count(to: TO, intervalMs: INTERVAL_MS, from: FROM) { seq }` until the
server completes it, an error, or --timeout seconds.

Prints one JSON line per happening on stdout (flushed):
  {"event":"connected","subprotocol":SUBPROTOCOL}
  {"event":"sent","id":ID}                  the mutation's answer
  {"event":"next","seq":SEQ}                one per subscription item
  {"event":"complete","count":N}            the server completed the subscription
  {"event":"error","error":TEXT,"count":N}  anything else ended it
Exit status 0 after "complete", else 1.
"""
import argparse
import asyncio
import json
import sys

from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


SUBSCRIPTION = gql("subscription ($to: Int, $ms: Int!, $from: Int!) "
                   "{ count(to: $to, intervalMs: $ms, from: $from) { seq } }")
SEND = gql("mutation ($id: String!) { send(id: $id) }")


async def run(args, received):
    transport = WebsocketsTransport(url=args.url, subprotocols=[args.subprotocol],
                                    connect_timeout=5, ack_timeout=5, close_timeout=2)
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        log(event="connected", subprotocol=transport.subprotocol)
        for message_id in args.send:
            result = await session.execute(SEND, variable_values={"id": message_id})
            log(event="sent", id=result["send"])
        variables = {"to": args.to, "ms": args.interval_ms, "from": args.start}
        async for result in session.subscribe(SUBSCRIPTION, variable_values=variables):
            received[0] += 1
            log(event="next", seq=result["count"]["seq"])
    log(event="complete", count=received[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("--to", type=int, default=30)
    p.add_argument("--interval-ms", type=int, default=20)
    p.add_argument("--from", dest="start", type=int, default=0)
    p.add_argument("--subprotocol", default=WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
                   choices=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL])
    p.add_argument("--send", action="append", default=[])
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    received = [0]
    try:
        asyncio.run(asyncio.wait_for(run(args, received), args.timeout))
    except BaseException as e:  # noqa: BLE001 - every ending is reported
        if isinstance(e, KeyboardInterrupt):
            raise
        text = f"{type(e).__name__}: {e}".strip()
        log(event="error", error=text, count=received[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
