"""Drives wsfault's admin API with the unmodified toxiproxy-python client.

Usage: toxiproxy_client.py ADMIN_HOST ADMIN_PORT UPSTREAM
Prints one "step: ..." line per step; exits non-zero on the first failure.
"""
import json
import socket
import sys

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

host, port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = Toxiproxy()
server.update_api_consumer(host, port)


def step(name, value=""):
    print(f"step: {name} {value}", flush=True)


def listening(listen):
    h, p = listen.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((h, int(p))) == 0


assert server.running(), "admin API not reachable"
version = server.version()
assert b"version" in version, version
step("version", version.decode())

proxy = server.create(upstream=upstream, name="chat", listen="127.0.0.1:0")
assert proxy.name == "chat" and proxy.upstream == upstream and proxy.enabled is True
assert not proxy.listen.endswith(":0"), proxy.listen
assert listening(proxy.listen)
step("create", proxy.listen)

try:
    server.create(upstream=upstream, name="chat")
    raise AssertionError("duplicate create accepted")
except ProxyExists:
    step("duplicate refused")

assert set(server.proxies()) == {"chat"}
assert server.get_proxy("chat").listen == proxy.listen

proxy.add_toxic(type="latency", attributes={"latency": 200, "jitter": 10})
proxy.add_toxic(name="lossy", type="message_loss", stream="upstream", toxicity=0.5,
                attributes={"probability": 0.25})
toxics = proxy.toxics()
assert set(toxics) == {"latency_downstream", "lossy"}, toxics
assert toxics["latency_downstream"].attributes == {"latency": 200, "jitter": 10}
assert toxics["lossy"].stream == "upstream" and toxics["lossy"].toxicity == 0.5
assert toxics["lossy"].attributes == {"probability": 0.25}
step("add toxics", sorted(toxics))

try:
    proxy.add_toxic(type="gremlin")
    raise AssertionError("unknown toxic type accepted")
except InvalidToxic as err:
    assert b"valid types" in err.args[0], err
    step("invalid toxic refused")

# The client has no update call of its own: its API layer posts the update.
updated = APIConsumer.post("/proxies/chat/toxics/lossy", json={"attributes": {"probability": 0.75}}).json()
assert updated["attributes"] == {"probability": 0.75}, updated
assert proxy.get_toxic("lossy").attributes == {"probability": 0.75}
step("update toxic")

assert proxy.destroy_toxic("latency_downstream") is True
assert set(proxy.toxics()) == {"lossy"}
try:
    proxy.destroy_toxic("latency_downstream")
    raise AssertionError("removing a missing toxic succeeded")
except NotFound:
    step("remove toxic")

proxy.disable()
assert server.get_proxy("chat").enabled is False
assert not listening(proxy.listen)
proxy.enable()
assert server.get_proxy("chat").enabled is True
assert listening(proxy.listen)
with proxy.down():
    assert not listening(proxy.listen)
assert listening(proxy.listen)
step("toggle")

proxy.disable()
assert server.reset() is True
chat = server.get_proxy("chat")
assert chat.enabled is True and listening(chat.listen)
assert proxy.toxics() == {}
step("reset")

populated = server.populate([{"name": "other", "upstream": upstream, "listen": "127.0.0.1:0"}])
assert [p.name for p in populated] == ["other"]
step("populate (client side)")

assert server.destroy(proxy) is True
assert server.get_proxy("chat") is None
assert not listening(proxy.listen)
server.destroy_all()
assert server.proxies() == {}
try:
    server.destroy(proxy)
    raise AssertionError("destroying a missing proxy succeeded")
except NotFound:
    step("destroy")
print("all steps passed", flush=True)
