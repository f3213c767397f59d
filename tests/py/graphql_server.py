"""A `strawberry-graphql` server (ASGI under `uvicorn`), a service we did not write.

Usage:
  graphql_server.py [--host 127.0.0.1] [--port 0] [--keep-alive-ms 0]

Serves GraphQL at /graphql: HTTP POST/GET, and WebSocket with the
subprotocols `graphql-transport-ws` and `graphql-ws` (legacy), as strawberry
implements them. --keep-alive-ms N > 0 makes the legacy `graphql-ws` server
send `ka` every N ms. GET /health answers 200 "ok".

Schema:
  type Query { hello: String! }                    # "world"
  type Mutation { send(id: String!): String! }     # answers with the sent id
  type Count { seq: Int! }
  type Subscription {
    # Yields {seq: from+1}, {seq: from+2}, ... up to `to` (null: forever),
    # one every intervalMs ms, then completes.
    count(to: Int = null, intervalMs: Int = 20, from: Int = 0): Count!
  }

Prints one JSON line on stdout (flushed) once bound:
  {"event":"listening","port":PORT}
"""
import argparse
import asyncio
import datetime
import json
import sys
import typing

import strawberry
import uvicorn_serve
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL


def log(**fields):
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@strawberry.type
class Count:
    seq: int


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


@strawberry.type
class Mutation:
    @strawberry.mutation
    def send(self, id: str) -> str:
        return id


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(
        self,
        to: typing.Optional[int] = None,
        interval_ms: int = 20,
        from_: typing.Annotated[int, strawberry.argument(name="from")] = 0,
    ) -> typing.AsyncGenerator[Count, None]:
        seq = from_
        while to is None or seq < to:
            if seq > from_ and interval_ms > 0:
                await asyncio.sleep(interval_ms / 1000.0)
            seq += 1
            yield Count(seq=seq)


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)


def build(args):
    graphql = GraphQL(
        schema,
        graphql_ide=None,
        keep_alive=args.keep_alive_ms > 0,
        keep_alive_interval=max(args.keep_alive_ms, 1) / 1000.0,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL],
        connection_init_wait_timeout=datetime.timedelta(seconds=10),
        allowed_origins=["*"],
    )

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith("/health"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok\n"})
            return
        await graphql(scope, receive, send)

    return app


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--keep-alive-ms", type=int, default=0)
    args = p.parse_args()

    uvicorn_serve.serve(build(args), args.host, args.port, lifespan="off")


if __name__ == "__main__":
    main()
