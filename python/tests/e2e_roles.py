"""Helper processes of test_windows_redirector's end-to-end test.

    python3 e2e_roles.py server              the "internet" server (peer namespace)
    python3 e2e_roles.py client tcp|udp HOST PORT SIZE
                                             waits for a line on stdin, then talks
    python3 e2e_roles.py proxy HOST4 HOST6 OTHER_NS SELF4 SELF6
                                             a proxy on windows_redirector, with the
                                             redirector, in the client namespace; prints
                                             one JSON line per check. OTHER_NS: the
                                             server's namespace, where direct clients
                                             connect from to SELF4/SELF6 (the client
                                             namespace's own addresses)

Every reply of the server starts with "from=<the address it saw>\\n", so a
client can tell whether it went through the proxy (the server saw the
proxy's own socket) or directly (the server saw the client's).
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

TCP_PORT, UDP_PORT = 7000, 7001


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def recv_all(sock):
    """Everything until the peer's end of data."""
    parts = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def server(hosts):
    def serve_tcp(srv):
        while True:
            c, peer = srv.accept()
            threading.Thread(target=echo, args=(c, peer), daemon=True).start()

    def echo(c, peer):
        with c:
            c.sendall(b"from=" + fmt(peer).encode() + b"\n" + recv_all(c))

    def serve_udp(u):
        while True:
            data, peer = u.recvfrom(65535)
            u.sendto(b"from=" + fmt(peer).encode() + b"\n" + data, peer)

    for host in hosts:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        srv = socket.create_server((host, TCP_PORT), family=fam)
        threading.Thread(target=serve_tcp, args=(srv,), daemon=True).start()
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, UDP_PORT))
        threading.Thread(target=serve_udp, args=(u,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def client(proto, host, port, size):
    sys.stdin.readline()
    res = {"local": "", "from": "", "sent": 0, "received": 0, "data_ok": False, "err": ""}
    payload = os.urandom(size)
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=10) as c:
                res["local"] = fmt(c.getsockname())
                c.sendall(payload)
                res["sent"] = len(payload)
                c.shutdown(socket.SHUT_WR)
                reply = recv_all(c)
        else:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as c:
                c.settimeout(3)
                c.connect((host, port))
                res["local"] = fmt(c.getsockname())
                c.send(payload)
                res["sent"] = len(payload)
                reply = c.recv(65535)
        res["received"] = len(reply)
        head, _, data = reply.partition(b"\n")
        res["from"] = head.decode()[len("from="):]
        res["data_ok"] = head.startswith(b"from=") and data == payload
    except OSError as e:
        res["err"] = str(e)
    print(json.dumps(res), flush=True)


class Proxy:
    """A small transparent proxy on windows_redirector, recording origins."""

    def __init__(self, wr):
        self.wr = wr
        self.lock = threading.Lock()
        self.origins = []  # (origin, the proxy's own address towards the destination)
        self.refused = 0  # connections closed unserved: not redirected
        self.tcp = socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.udp.bind(("", self.port))
        self.flows = {}
        threading.Thread(target=self.serve_tcp, daemon=True).start()
        threading.Thread(target=self.serve_udp, daemon=True).start()

    def record(self, origin, upstream):
        with self.lock:
            self.origins.append((origin, fmt(upstream.getsockname())))

    def serve_tcp(self):
        while True:
            c, _ = self.tcp.accept()
            threading.Thread(target=self.relay, args=(c,), daemon=True).start()

    def relay(self, c):
        with c:
            try:
                o = self.wr.lookup(c)
            except self.wr.NotFound:  # made to the port directly: never served
                with self.lock:
                    self.refused += 1
                return
            with socket.create_connection(o.destination, timeout=10) as up:
                self.record(o, up)

                def pump(src, dst):
                    while True:
                        chunk = src.recv(65536)
                        if not chunk:
                            break
                        dst.sendall(chunk)
                    dst.shutdown(socket.SHUT_WR)

                t = threading.Thread(target=pump, args=(c, up))
                t.start()
                pump(up, c)
                t.join()

    def serve_udp(self):
        local = self.udp.getsockname()
        while True:
            data, peer = self.udp.recvfrom(65535)
            up = self.flows.get(peer)
            if up is None:
                try:
                    o = self.wr.lookup_udp(local, peer)
                except self.wr.NotFound:
                    continue
                fam = socket.AF_INET6 if ":" in o.destination[0] else socket.AF_INET
                up = socket.socket(fam, socket.SOCK_DGRAM)
                up.connect(o.destination)
                self.flows[peer] = up
                self.record(o, up)
                threading.Thread(target=self.replies, args=(up, peer), daemon=True).start()
            up.send(data)

    def replies(self, up, peer):
        while True:
            self.udp.sendto(up.recv(65535), peer)


def direct_refused(p, me, other_ns, hosts):
    """Direct connections to the proxy's port from the other namespace
    ("another machine") are closed unserved, and the proxy relays nothing."""
    with p.lock:
        mark, refused = len(p.origins), p.refused
    fails = []
    for host in hosts:
        cl = subprocess.Popen(["ip", "netns", "exec", other_ns, sys.executable, me, "client", "tcp", host, str(p.port),
                               "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        out, _ = cl.communicate("go\n", timeout=60)
        res = json.loads(out)
        if not res["local"]:
            fails.append(f"{host}: the direct client did not connect: {res['err']}")
        elif res["from"] or res["received"]:
            fails.append(f"{host}: the direct client was served: {res}")
    deadline = time.monotonic() + 3
    while p.refused < refused + len(hosts) and time.monotonic() < deadline:
        time.sleep(0.01)
    with p.lock:
        if p.refused - refused != len(hosts):
            fails.append(f"{p.refused - refused} of the {len(hosts)} direct connections refused")
        if len(p.origins) != mark:
            fails.append(f"the proxy relayed {len(p.origins) - mark} direct connections")
    print("E2E " + json.dumps({"check": "direct_from_another_machine_refused", "ok": not fails,
                               "detail": "; ".join(fails)}), flush=True)


def proxy(host4, host6, other_ns, self4, self6):
    import windows_redirector as wr  # the installed package (the interpreter of the test's virtual environment)
    p = Proxy(wr)
    wr.set_app_port(p.port)
    wr.configure({})
    wr.start()
    me = os.path.abspath(__file__)
    for check, proto, host, port in (("tcp4_by_pid", "tcp", host4, TCP_PORT), ("tcp6_by_pid", "tcp", host6, TCP_PORT),
                                     ("udp4_by_pid", "udp", host4, UDP_PORT)):
        cl = subprocess.Popen([sys.executable, me, "client", proto, host, str(port), str(100000 if proto == "tcp" else 1000)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        wr.configure({"intercept_pids": [cl.pid], "description": "python e2e"})
        with p.lock:
            mark = len(p.origins)
        out, _ = cl.communicate("go\n", timeout=60)
        res = json.loads(out)
        time.sleep(0.2)
        with p.lock:
            got = p.origins[mark:]
        mine = [(o, up) for o, up in got if o.pid == cl.pid]
        fails = []
        if not mine:
            st = wr.stats()
            fails.append(f"redirection was not observed: the proxy received nothing from the client; the server saw it at "
                         f"{res['from']} (its own address: {res['local']}). Library: {st['packets']} packets seen, "
                         f"{st['rewritten']} rewritten, {st['flows_redirected']} connections redirected")
        else:
            o, up = mine[0]
            want = fmt((host, port))
            if fmt(o.destination) != want or o.protocol != proto or o.direction != "outbound":
                fails.append(f"origin {o}, want destination {want} {proto} outbound")
            if fmt(o.client) != res["local"]:
                fails.append(f"origin.client {fmt(o.client)}, want the client's {res['local']}")
            if not os.path.basename(o.process).startswith("python"):
                fails.append(f"origin.process {o.process!r}, want the client's python")
            if res["from"] != up:
                fails.append(f"the server saw {res['from']}, want the proxy's own {up}")
        if not res["data_ok"] or res["err"]:
            fails.append(f"data did not round-trip: {res}")
        print("E2E " + json.dumps({"check": check, "ok": not fails, "detail": "; ".join(fails)}), flush=True)
    direct_refused(p, me, other_ns, (self4, self6))
    wr.stop()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(sys.argv[2:])
    elif role == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif role == "proxy":
        proxy(*sys.argv[2:7])
    else:
        sys.exit(f"unknown role {role}")
