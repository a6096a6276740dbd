"""The TCP side from Python: plain WebSocket sessions and QMux requests on the same port as
WebTransport, with the ``websockets`` library as an independent client."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

import ferrovia


def tls_for(server: ferrovia.Server) -> ssl.SSLContext:
    """A client context that trusts exactly the server's certificate."""
    ctx = ssl.create_default_context(cadata=server.certificate.chain_pem())
    return ctx


def url(server: ferrovia.Server, path: str) -> str:
    address = server.tcp_address
    assert address is not None
    return f"wss://localhost:{address[1]}{path}"


async def test_websocket_echo_subprotocol_and_close_codes_both_ways() -> None:
    async with ferrovia.serve("127.0.0.1", 0) as server:
        assert server.tcp_address == ("127.0.0.1", server.port)
        requests = server.requests("/ws", websockets=True)
        accepted: asyncio.Queue[ferrovia.WebSocket] = asyncio.Queue()

        async def serve_one() -> None:
            request = await requests.accept()
            assert request is not None
            assert request.transport == "websocket"
            assert request.http_version == "1.1"
            assert request.subprotocols == ["chat", "other"]
            ws = await request.accept_websocket(protocol="chat")
            assert ws.subprotocol == "chat"
            await accepted.put(ws)
            async for message in ws:
                await ws.send(message)

        task = asyncio.create_task(serve_one())
        async with websockets.connect(
            url(server, "/ws"), ssl=tls_for(server), subprotocols=["chat", "other"]  # type: ignore[list-item]
        ) as client:
            assert client.subprotocol == "chat"
            await client.send("hello ✓")
            assert await client.recv() == "hello ✓"
            blob = bytes(range(256)) * 800
            await client.send(blob)
            assert await client.recv() == blob
            ws = await accepted.get()
            await client.close(4000, "client bye")
        assert await asyncio.wait_for(ws.wait_closed(), 10) == (4000, "client bye")
        assert (ws.close_code, ws.close_reason) == (4000, "client bye")
        await asyncio.wait_for(task, 10)

        # The server closes.
        async def close_one() -> None:
            request = await requests.accept()
            assert request is not None
            ws = await request.accept_websocket()
            await ws.close(4001, "server bye")

        task = asyncio.create_task(close_one())
        async with websockets.connect(url(server, "/ws"), ssl=tls_for(server)) as client:
            with pytest.raises(ConnectionClosed) as info:
                await client.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "server bye")
        await asyncio.wait_for(task, 10)
        for _ in range(100):
            if server.session_count == 0:
                break
            await asyncio.sleep(0.02)
        assert server.session_count == 0


async def test_refusals_and_the_wrong_accept() -> None:
    async with ferrovia.serve("127.0.0.1", 0) as server:
        _sessions_only = server.requests("/sessions")
        with pytest.raises(InvalidStatus) as status:
            async with websockets.connect(url(server, "/sessions"), ssl=tls_for(server)):
                pass
        assert status.value.response.status_code == 400
        with pytest.raises(ValueError, match="needs a path"):
            server.requests(websockets=True)

        mixed = server.requests("/mixed", websockets=True)

        async def answer() -> None:
            request = await mixed.accept()
            assert request is not None
            with pytest.raises(ValueError, match="accept_websocket"):
                await request.accept()
            assert not request.answered
            request.reject(403)

        task = asyncio.create_task(answer())
        with pytest.raises(InvalidStatus) as status:
            async with websockets.connect(url(server, "/mixed"), ssl=tls_for(server)):
                pass
        assert status.value.response.status_code == 403
        await task

        # A QMux offer is a session request; accept_websocket does not apply to it.
        async def qmux() -> None:
            request = await mixed.accept()
            assert request is not None
            assert request.transport == "qmux"
            with pytest.raises(ValueError, match="use accept"):
                await request.accept_websocket()
            request.reject(404)

        task = asyncio.create_task(qmux())
        with pytest.raises(InvalidStatus):
            async with websockets.connect(
                url(server, "/mixed"), ssl=tls_for(server), subprotocols=["qmux-02"]  # type: ignore[list-item]
            ):
                pass
        await task


async def test_tcp_off_and_plain_behind_a_proxy() -> None:
    async with ferrovia.serve("127.0.0.1", 0, tcp=False) as server:
        assert server.tcp_address is None
    async with ferrovia.serve("127.0.0.1", 0, tcp=("127.0.0.1", 0), tcp_behind_tls_proxy=True) as server:
        address = server.tcp_address
        assert address is not None
        requests = server.requests("/p", websockets=True)

        async def echo() -> None:
            request = await requests.accept()
            assert request is not None
            ws = await request.accept_websocket()
            async for m in ws:
                await ws.send(m)

        task = asyncio.create_task(echo())
        async with websockets.connect(
            f"ws://127.0.0.1:{address[1]}/p", additional_headers={"Host": "localhost"}
        ) as client:
            await client.send("through the proxy")
            assert await client.recv() == "through the proxy"
        await asyncio.wait_for(task, 10)


async def test_forwarding_headers_count_only_from_trusted_proxies() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        host, _ = scope["client"] or ("-", 0)
        body = f"{scope['scheme']} {host}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    async def who(trusted: list[str] | None) -> str:
        async with ferrovia.serve(
            "127.0.0.1", 0, tcp=("127.0.0.1", 0), tcp_behind_tls_proxy=True, trusted_proxies=trusted, app=app
        ) as server:
            address = server.tcp_address
            assert address is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", address[1])
            writer.write(
                b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
                b"x-forwarded-for: 6.6.6.6, 192.0.2.9, 10.1.2.3\r\nx-forwarded-proto: https\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer.split(b"\r\n\r\n", 1)[1].decode()

    assert await who(["127.0.0.1", "10.0.0.0/8"]) == "https 192.0.2.9"
    # This loopback peer is not trusted: its headers are its own claims.
    assert await who(["10.0.0.0/8"]) == "http 127.0.0.1"
    assert await who(None) == "https 10.1.2.3"
    with pytest.raises(ValueError, match="CIDR"):
        async with ferrovia.serve("127.0.0.1", 0, tcp=("127.0.0.1", 0), tcp_behind_tls_proxy=True, trusted_proxies=["10/8"]):
            pass
    with pytest.raises(ValueError, match="tcp_behind_tls_proxy"):
        ferrovia.serve("127.0.0.1", 0, trusted_proxies=["10.0.0.0/8"])


async def test_reject_with_headers_reaches_the_client() -> None:
    async with ferrovia.serve("127.0.0.1", 0) as server:
        requests = server.requests("/auth", websockets=True)

        async def refuse() -> None:
            request = await requests.accept()
            assert request is not None
            with pytest.raises(ValueError, match="bad header"):
                request.reject(401, headers={"bad header": "x"})
            assert not request.answered
            assert request.url == f"https://localhost:{server.port}/auth"
            # Awaitable, as in Node (and answered whether awaited or not).
            await request.reject(401, headers={"www-authenticate": 'Bearer realm="chat"'})
            assert request.answered

        task = asyncio.create_task(refuse())
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url(server, "/auth"), ssl=tls_for(server)):
                pass
        await task
        assert refused.value.response.status_code == 401
        assert refused.value.response.headers["www-authenticate"] == 'Bearer realm="chat"'



def _deflate_echo_server(mode: str, max_message_size: int | None = None) -> ferrovia.Serving:
    return ferrovia.serve(
        "127.0.0.1",
        0,
        websocket_compression=mode,  # type: ignore[arg-type]
        limits=ferrovia.Limits(max_message_size=max_message_size) if max_message_size else None,
    )


CHAT = [
    '{"room": "lobby", "seq": %d, "user": "ana", "text": "hello everyone, how is it going today?"}' % i * 20
    for i in range(30)
]


async def _echo_route(server: ferrovia.Server) -> asyncio.Task[None]:
    requests = server.requests("/z", websockets=True)

    async def serve() -> None:
        async def one(request: ferrovia.SessionRequest) -> None:
            ws = await request.accept_websocket()
            try:
                async for message in ws:
                    await ws.send(message)
            except ferrovia.WebSocketClosedError:
                pass

        tasks = set()
        while (request := await requests.accept()) is not None:
            t = asyncio.create_task(one(request))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    return asyncio.create_task(serve())


async def test_permessage_deflate_with_websockets_compression_on_and_off() -> None:
    serving = _deflate_echo_server("deflate")
    async with serving as server:
        task = await _echo_route(server)
        # websockets offers permessage-deflate by default.
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server)) as client:
            assert client.response is not None
            assert client.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
            for message in CHAT:
                await client.send(message)
                assert await client.recv() == message
            blob = bytes(range(256)) * 1000
            await client.send(blob)
            assert await client.recv() == blob
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server), compression=None) as plain:
            assert plain.response is not None
            assert "Sec-WebSocket-Extensions" not in plain.response.headers
            await plain.send(CHAT[0])
            assert await plain.recv() == CHAT[0]
        task.cancel()


async def test_permessage_deflate_light_mode_and_the_default_off() -> None:
    serving = _deflate_echo_server("deflate-no-context")
    async with serving as server:
        task = await _echo_route(server)
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server)) as client:
            assert client.response is not None
            assert (
                client.response.headers["Sec-WebSocket-Extensions"]
                == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )
            for message in CHAT[:5]:
                await client.send(message)
                assert await client.recv() == message
        task.cancel()
    async with ferrovia.serve("127.0.0.1", 0) as server:
        task = await _echo_route(server)
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server)) as client:
            assert client.response is not None
            assert "Sec-WebSocket-Extensions" not in client.response.headers
        task.cancel()
    with pytest.raises(ValueError, match="websocket_compression"):
        ferrovia.serve("127.0.0.1", 0, websocket_compression="gzip")  # type: ignore[arg-type]


async def test_a_decompression_bomb_is_refused_with_1009() -> None:
    serving = _deflate_echo_server("deflate", max_message_size=1024 * 1024)
    async with serving as server:
        task = await _echo_route(server)
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server)) as client:
            await client.send(bytes(10 * 1024 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
            assert "inflates past the limit" in closed.value.rcvd.reason
        # The server keeps serving.
        async with websockets.connect(url(server, "/z"), ssl=tls_for(server)) as again:
            await again.send(CHAT[1])
            assert await again.recv() == CHAT[1]
        task.cancel()
