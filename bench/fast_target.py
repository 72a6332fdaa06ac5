"""A load-test target fast enough that Locust, not the target, is the bottleneck: an
asyncio protocol that answers every HTTP/1.1 request on a keep-alive connection with a
tiny 200, without parsing more than the end of the request head.

    python bench/fast_target.py PORT      (0 picks a free port; prints "listening on HOST:PORT")

GET requests only (a request with a body would be misread): the benchmarks send GET /.
"""
import asyncio
import sys

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: keep-alive\r\n\r\nok")


class Answer(asyncio.Protocol):
    """Counts request heads (ending in a blank line) and answers each one."""

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        if heads:
            self.transport.write(RESPONSE * heads)
            data = data[data.rfind(b"\r\n\r\n") + 4:]
        # An unfinished head waits for the rest; a runaway one is cut off.
        self.pending = data if len(data) < 65536 else b""


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answer, "127.0.0.1", port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
