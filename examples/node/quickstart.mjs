// Chat on one port (docs/quickstart.md): node examples/node/quickstart.mjs, then open two tabs.
import { MessageStream, Server } from 'ferrovia';

const PAGE = `<!doctype html><meta charset="utf-8"><title>Chat</title>
<input id="line" placeholder="Say something, then Enter" size="40"><pre id="log"></pre>
<script type="module">
  import { connect, MessageStream, serverCertificateHashes } from '/ferrovia/client.js';
  const transport = await connect(location.origin + '/chat?token=letmein', { serverCertificateHashes });
  const chat = new MessageStream(await transport.createBidirectionalStream(), { text: true });
  line.onkeydown = (e) => { if (e.key === 'Enter' && line.value) { chat.send(line.value); line.value = ''; } };
  log.textContent = 'connected over ' + transport.transport + '\\n';
  for await (const message of chat) log.textContent += message + '\\n';
</script>`;

const members = new Set();
const server = await Server.listen({
  port: Number(process.env.PORT ?? 4433),
  client: true, // serves /ferrovia/client.js: the connector and this server's certificate hashes
  fetch: () => new Response(PAGE, { headers: { 'content-type': 'text/html; charset=utf-8' } }),
});
console.log(`chat on https://localhost:${server.port}/`);
process.on('SIGTERM', () => server.close());

server.route('/chat', async (request) => {
  if (new URL(request.url).searchParams.get('token') !== 'letmein') {
    return request.reject(401, { headers: { 'www-authenticate': 'Bearer' } });
  }
  const session = await request.accept();
  for await (const stream of session.incomingBidirectionalStreams) {
    const member = new MessageStream(stream, { text: true, maxMessageSize: 4096 });
    members.add(member);
    try {
      for await (const message of member) {
        for (const other of members) {
          if (other.bufferedAmount <= 65536) other.send(message);
          else {
            members.delete(other); // it reads nothing: drop it rather than buffer without bound
            other.abort();
          }
        }
      }
    } catch {
      session.close(); // the tab went away mid-message, or sent more than 4096 bytes
    } finally {
      members.delete(member);
    }
  }
});
