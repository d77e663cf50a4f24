"""A typed program using the installed package: `mypy --strict typed_user.py`
passes only if the wheel carries py.typed and the public API's hints are
right (npm test's python-pkg suite runs it). Not run, only checked."""
import socket
from typing import Optional

import windows_redirector as wr


def serve(srv: socket.socket) -> Optional[wr.Origin]:
    conn, _ = srv.accept()
    with conn:
        try:
            origin: wr.Origin = wr.lookup(conn)
        except wr.NotFound:
            return None
        host: str = origin.destination[0]
        port: int = origin.destination[1]
        print(host, port, origin.pid, origin.process, origin.bytes_up)
        return origin


def main() -> None:
    wr.set_library_path(None)
    path: str = wr.library_path()
    print(path, wr.version(), wr.running(), wr.would_intercept(1, "/usr/bin/curl"))
    with wr.redirecting(8080, intercept=["curl"], protocols=["tcp"]):
        srv = socket.create_server(("", 8080), family=socket.AF_INET6, dualstack_ipv6=True)
        serve(srv)
        event: Optional[wr.Event] = wr.next_event(0.5)
        if event is not None:
            print(event.type, event.origin.destination)
        counters: int = wr.stats()["packets"]
        print(counters)
    wr.configure({"intercept_pids": [1234]})
    wr.configure('{"intercept_pids": [1234]}')
    udp: wr.Origin = wr.lookup_udp(("::", 8080), ("::ffff:198.18.0.10", 53))
    print(udp.protocol)
