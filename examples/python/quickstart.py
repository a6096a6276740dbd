"""Chat on one port (docs/quickstart.md): python examples/python/quickstart.py, then open two tabs."""
import asyncio, contextlib, os, signal
from typing import Any

import ferrovia

PAGE = b"""<!doctype html><meta charset="utf-8"><title>Chat</title>
<input id="line" placeholder="Say something, then Enter" size="40"><pre id="log"></pre>
<script type="module">
  import { connect, MessageStream, serverCertificateHashes } from '/ferrovia/client.js';
  const transport = await connect(location.origin + '/chat?token=letmein', { serverCertificateHashes });
  const chat = new MessageStream(await transport.createBidirectionalStream(), { text: true });
  line.onkeydown = (e) => { if (e.key === 'Enter' && line.value) { chat.send(line.value); line.value = ''; } };
  log.textContent = 'connected over ' + transport.transport + '\\n';
  for await (const message of chat) log.textContent += message + '\\n';
</script>"""
members: set[ferrovia.StreamWriter] = set()


async def page(scope: Any, receive: Any, send: Any) -> None:  # ASGI: every HTTP request gets the page
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": PAGE})


async def chat(request: ferrovia.SessionRequest) -> None:
    if "token=letmein" not in request.url.partition("?")[2].split("&"):
        return await request.reject(401, headers={"www-authenticate": "Bearer"})
    async for reader, writer in (await request.accept()).incoming_bidirectional_streams():
        members.add(writer)
        # Over when the tab leaves, or sends more than 4096 bytes or text that is not UTF-8.
        with contextlib.suppress(ferrovia.WebTransportError, UnicodeDecodeError):
            async for message in reader.messages(max_size=4096):
                text = message.decode()
                for other in list(members):
                    try:
                        other.write_message(text)
                    except (BufferError, ferrovia.WebTransportError):  # it reads nothing, or left
                        members.discard(other)
                        other.reset()
        members.discard(writer)


async def main() -> None:
    # client=True serves /ferrovia/client.js: the connector and this server's certificate hashes.
    server = await ferrovia.serve(port=int(os.environ.get("PORT", 4433)), app=page, client=True)
    server.route("/chat", chat)
    print(f"chat on https://localhost:{server.port}/", flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.close()))
    await server.serve_forever()


asyncio.run(main())
