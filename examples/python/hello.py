import asyncio
import ferrovia

async def echo(session: ferrovia.Session) -> None:
    async for reader, writer in session.incoming_bidirectional_streams():
        writer.write(await reader.read())
        writer.write_eof()

async def main() -> None:
    async with ferrovia.serve(port=4433) as server:
        print("certificate hash:", server.certificate_hashes[0].hex())
        async for request in server.requests("/echo"):
            asyncio.create_task(echo(await request.accept()))

asyncio.run(main())
