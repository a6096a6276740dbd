import asyncio
import ferrovia

async def echo(request: ferrovia.SessionRequest) -> None:
    session = await request.accept()  # WebTransport or QMux alike
    print("session over", session.transport)
    async for reader, writer in session.incoming_bidirectional_streams():
        writer.write(await reader.read())
        writer.write_eof()

async def main() -> None:
    async with ferrovia.serve(port=4433) as server:
        print("certificate hash:", server.certificate_hashes[0].hex())
        server.route("/echo", echo)  # each request in its own task, held by the server
        await server.serve_forever()

asyncio.run(main())
