"""Security on the wire: tokens, grants, origins, rate and connection limits, token expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.serving import serve
from tests.wsclient import WS

SECRET = "s" * 32
NAMESPACES = {"private": {"private": True}, "public": {"public": True}, "members": {"public": False}}


def token(claims: dict[str, Any] | None = None, key: Any = SECRET, alg: str = "HS256", **extra: Any) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 60, **(claims or {}), **extra}
    return jwt.encode(body, key, algorithm=alg)


async def close_code(url: str) -> int | None:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code


async def test_token_grants_private_channels_and_nothing_else():
    with serve(token_secret=SECRET, namespaces=NAMESPACES) as server:
        grant = token({"channels": {"private:alice*": ["subscribe"]}})
        async with await WS.open(f"{server.ws_url}?token={grant}") as ws:
            ok = await ws.request("subscribe", channel="private:alice-inbox")
            assert ok["op"] == "subscribed"
            refused = await ws.request("subscribe", channel="private:bob-inbox")
            assert refused["op"] == "error" and refused["code"] == "forbidden"
            assert (await ws.request("subscribe", channel="members:x"))["op"] == "subscribed"
        async with await WS.open(server.ws_url) as anonymous:
            refused = await anonymous.request("subscribe", channel="private:alice-inbox")
            assert refused["code"] == "forbidden"
            refused = await anonymous.request("subscribe", channel="members:x")
            assert refused["code"] == "forbidden"
            assert (await anonymous.request("subscribe", channel="public:x"))["op"] == "subscribed"


def _rsa() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


def _bad_tokens(rsa_key: Any, public_pem: bytes) -> dict[str, str]:
    good = token(key=rsa_key, alg="RS256")
    head, payload, sig = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(b'{"sub":"mallory","exp":9999999999}').decode()
    none = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode() + "." + payload + "."
    import hashlib
    import hmac as _hmac

    signing_input = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}').decode() + "." + payload
    confused_sig = jwt.utils.base64url_encode(
        _hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    ).decode()
    return {
        "expired": token(key=rsa_key, alg="RS256", exp=int(time.time()) - 10),
        "wrong audience": token(key=rsa_key, alg="RS256", aud="someone-else"),
        "wrong issuer": token(key=rsa_key, alg="RS256", iss="evil"),
        "tampered": f"{head}.{tampered_payload}.{sig}",
        "alg none": none,
        "HS256 with the RSA public key": f"{signing_input}.{confused_sig}",
    }


async def test_bad_tokens_are_refused_on_websocket_with_the_same_code(tmp_path):
    rsa_key, public_pem = _rsa()
    (tmp_path / "pub.pem").write_bytes(public_pem)
    settings: dict[str, Any] = {
        "auth": {"public_key_file": str(tmp_path / "pub.pem"), "audience": "tidings", "issuer": "me"}
    }
    with serve(**settings) as server:
        good = token(key=rsa_key, alg="RS256", aud="tidings", iss="me")
        async with await WS.open(f"{server.ws_url}?token={good}") as ws:
            assert (await ws.request("connect", token=good))["user"] == "alice"
        for name, bad in _bad_tokens(rsa_key, public_pem).items():
            async with httpx.AsyncClient(base_url=server.url) as http:
                for path in ("/sse", "/stream", "/poll"):
                    params = {"channel": "x", "timeout": "0"} if path == "/poll" else {"channel": "x"}
                    r = await http.get(path, params={**params, "token": bad})
                    assert r.status_code == 401, (name, path)
                    assert r.json()["error"]["code"] == "unauthorized", (name, path)
                    r = await http.get(path, params=params, headers={"Authorization": f"Bearer {bad}"})
                    assert r.status_code == 401, (name, path)
            code = await close_code(f"{server.ws_url}?token={bad}")
            expected = 4001 if name == "expired" else 4003
            assert code == expected, name
            async with await WS.open(server.ws_url) as ws:
                reply = await ws.request("connect", token=bad)
                assert reply["op"] == "error" and reply["code"] == "unauthorized", name


async def test_foreign_origin_is_refused_with_403_when_an_allow_list_is_set():
    with serve(allowed_origins=["https://app.example.com"]) as server:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.ws_url, origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        async with await WS.open(server.ws_url, origin="https://app.example.com") as ws:
            assert (await ws.request("ping"))["op"] == "pong"
        async with await WS.open(server.ws_url) as ws:  # no Origin: not a browser
            assert (await ws.request("ping"))["op"] == "pong"


async def test_publish_flood_is_rate_limited_and_the_connection_survives():
    with serve(limits={"publish_rate": 5, "publish_burst": 5}) as server:
        async with await WS.open(server.ws_url) as ws:
            replies = [await ws.request("publish", channel="flood", data=i) for i in range(20)]
            codes = [r.get("code", r["op"]) for r in replies]
            assert codes.count("published") >= 5 and "rate_limited" in codes
            assert (await ws.request("ping"))["op"] == "pong"


async def test_2000_connections_from_one_ip_over_the_limit_leave_the_server_healthy():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 5000:
        pytest.skip("needs 5,000 open files (client and server share this process)")
    limit = 1000  # the default max_connections_per_ip
    with serve() as server:

        async def attempt() -> Any:
            ws = await connect(server.ws_url, open_timeout=30)
            try:
                await ws.send('{"op":"ping","ref":1}')
                await asyncio.wait_for(ws.recv(), 30)
                return ws
            except ConnectionClosed:
                return ws.close_code

        results: list[Any] = []
        for _ in range(8):  # 2,000 attempts, 250 at a time
            results += await asyncio.gather(*(attempt() for _ in range(250)))
        held = [r for r in results if not isinstance(r, int)]
        refused = [r for r in results if isinstance(r, int)]
        try:
            assert len(held) == limit and len(refused) == 2000 - limit
            assert set(refused) == {4029}
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.post("/api/publish", json={"channel": "c", "data": 1})).status_code == 200
        finally:
            await asyncio.gather(*(ws.close() for ws in held))
        async with await WS.open(server.ws_url) as ws:  # slots come back
            assert (await ws.request("ping"))["op"] == "pong"


async def test_token_expiry_closes_with_4001_unless_refreshed():
    with serve(token_secret=SECRET) as server:
        short = token(exp=int(time.time()) + 2)
        async with connect(f"{server.ws_url}?token={short}") as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001
        short = token(exp=int(time.time()) + 2)
        async with await WS.open(f"{server.ws_url}?token={short}") as ws:
            fresh = token(exp=int(time.time()) + 60)
            assert (await ws.request("connect", token=fresh))["op"] == "connected"
            other_user = token(sub="bob")
            assert (await ws.request("connect", token=other_user))["code"] == "unauthorized"
            await asyncio.sleep(3)  # past the first token's expiry: the refresh must hold
            assert (await ws.request("ping"))["op"] == "pong"


async def test_subscription_token_grants_one_private_channel():
    with serve(token_secret=SECRET, namespaces=NAMESPACES) as server:
        sub_token = jwt.encode(
            {"sub": "", "channel": "private:room", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
        )
        async with await WS.open(server.ws_url) as ws:
            ok = await ws.request("subscribe", channel="private:room", token=sub_token)
            assert ok["op"] == "subscribed"
            other = await ws.request("subscribe", channel="private:other", token=sub_token)
            assert other["code"] in ("forbidden", "unauthorized")


async def _notice(ws: WS, op: str, deadline: float = 10.0) -> dict[str, Any]:
    """The next frame ``op`` the server sends on its own (no ``ref``)."""
    while True:
        msg = await ws.recv(deadline)
        if msg["op"] == op and "ref" not in msg:
            return msg


async def test_a_subscription_tokens_grant_ends_at_its_exp():
    rooms = {"room": {"private": True, "presence": True}}
    with serve(token_secret=SECRET, namespaces=rooms) as server:
        exp = time.time() + 1.5
        sub_token = jwt.encode({"sub": "", "channel": "room:7", "exp": exp}, SECRET, algorithm="HS256")
        async with await WS.open(server.ws_url) as left, await WS.open(server.ws_url) as held:
            for ws in (left, held):
                ok = await ws.request("subscribe", channel="room:7", token=sub_token)
                assert ok["op"] == "subscribed"
                assert (await ws.request("history", channel="room:7"))["op"] == "history"
                assert (await ws.request("presence", channel="room:7"))["op"] == "presence"
            assert (await left.request("unsubscribe", channel="room:7"))["op"] == "unsubscribed"
            # the live subscription is ended by the server at exp, with a reason
            ended = await _notice(held, "unsubscribed")
            assert ended["channel"] == "room:7" and ended["code"] == "unauthorized"
            assert time.time() >= exp - 0.05
            for ws in (left, held):  # and the grant is gone on both connections
                for op in ("subscribe", "history", "presence"):
                    refused = await ws.request(op, channel="room:7")
                    assert refused["op"] == "error" and refused["code"] == "forbidden", (op, refused)
            # a fresh token subscribes again
            fresh = jwt.encode(
                {"sub": "", "channel": "room:7", "exp": time.time() + 60}, SECRET, algorithm="HS256"
            )
            assert (await held.request("subscribe", channel="room:7", token=fresh))["op"] == "subscribed"


@pytest.mark.parametrize("first_bytes", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
async def test_a_connection_that_does_not_finish_its_request_is_dropped(first_bytes: bytes):
    with serve(limits={"handshake_timeout": 1}) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(first_bytes)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(100), 10) == b""  # closed by the server
        assert 0.5 < time.monotonic() - started < 5
        writer.close()
        async with await WS.open(server.ws_url) as ws:  # still serving
            assert (await ws.request("ping"))["op"] == "pong"


async def test_wss_and_https_sse_with_a_certificate_made_in_the_test(tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with serve(certfile=certfile, keyfile=keyfile) as server:
        https = server.url.replace("http://", "https://")
        async with await WS.open(server.ws_url.replace("ws://", "wss://"), ssl=context) as ws:
            await ws.request("subscribe", channel="tls")
            async with (
                httpx.AsyncClient(base_url=https, verify=context) as http,
                http.stream("GET", "/sse", params={"channel": "tls"}) as stream,
            ):
                assert stream.status_code == 200
                await http.post("/api/publish", json={"channel": "tls", "data": "secret"})
                body = b""
                async for chunk in stream.aiter_bytes():
                    body += chunk
                    if b'"secret"' in body:
                        break
            assert (await ws.messages(1))[0]["data"] == "secret"


async def test_abusive_clients_do_not_cost_well_behaved_clients_any_delivery():
    with serve(
        limits={"outbox_bytes": 65536, "publish_rate": 20, "publish_burst": 20, "max_frame_bytes": 4096}
    ) as server:
        good = [await WS.open(server.ws_url) for _ in range(5)]
        for ws in good:
            await ws.request("subscribe", channel="shared")
        slow = [await connect(server.ws_url, max_queue=1) for _ in range(3)]
        for ws in slow:
            await ws.send('{"op":"subscribe","channel":"shared"}')

        async def flood() -> None:
            async with await WS.open(server.ws_url) as ws:
                for i in range(200):
                    await ws.send("publish", channel="shared", data=i)  # rate limited
                await ws.conn.send("x" * 10000)  # oversize: closed

        async def garbage() -> None:
            for _ in range(20):
                async with await WS.open(server.ws_url) as ws:
                    await ws.conn.send("not json")

        abuse = [asyncio.create_task(flood()), asyncio.create_task(garbage())]
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(100):
                r = await http.post(
                    "/api/publish", json={"channel": "shared", "data": {"n": i, "pad": "p" * 2000}}
                )
                assert r.status_code == 200
        await asyncio.gather(*abuse, return_exceptions=True)
        for ws in good:
            got: list[int] = []
            while len(got) < 100:  # the flooder's accepted publishes are interleaved
                data = (await ws.messages(1))[0]["data"]
                if isinstance(data, dict):
                    got.append(data["n"])
            assert got == list(range(100))
            await ws.close()
        for ws in slow:
            # They never read: a close handshake would wait its 10 s for a reply they cannot see.
            ws.transport.abort()
