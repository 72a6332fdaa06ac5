"""A tiny `swarmtel serve` stand-in for the tests: Unix socket, hello / reply / lines / bye."""
import json
import os
import socket
import threading
import time


class ProtoServer:
    """Accepts connections on a Unix socket. Each connection: read the hello, answer it
    (``ok`` or ``refuse=<error>``), then record every line until EOF.
    ``conns`` is a list of dicts: ``hello``, ``lines`` (parsed events), ``bye``, ``raw_bad``,
    ``seqs`` (each line's sequence number, when the hello had ``seq``), ``acked`` (the last
    ack sent).

    ``acks``: a hello with ``seq`` gets ``"acks": true`` and ``{"ack": N}`` frames: with
    ``auto_ack``, every 10 ms while lines arrive, each covering every line read so far;
    without, only when the test calls :meth:`ack`. Without ``acks`` the server is an older
    one: it ignores ``seq`` and sends nothing after the reply."""

    def __init__(self, path, refuse=None, stall=False, rcvbuf=None, refuse_retry=0, acks=False, auto_ack=True):
        self.path = path
        self.refuse = refuse
        self.acks = acks
        self.auto_ack = auto_ack
        # Refuse this many hellos with "retry": true, then accept.
        self.refuse_retry = refuse_retry
        self.stall = threading.Event()
        if stall:
            self.stall.set()
        self.rcvbuf = rcvbuf
        self.conns = []
        self.sock = None
        self.threads = []
        self.client_socks = []
        self.closed = False

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.closed = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.rcvbuf:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            self.client_socks.append(c)
            rec = {"hello": None, "lines": [], "bye": None, "raw_bad": [], "eof": False, "seqs": [],
                   "acked": None, "sock": c, "send_lock": threading.Lock()}
            self.conns.append(rec)
            t = threading.Thread(target=self._serve, args=(c, rec), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c, rec):
        f = c.makefile("rb")
        try:
            line = f.readline()
            if not line:
                return
            rec["hello"] = json.loads(line)
            if self.refuse:
                reply = {"hello": "swarmtel", "version": 1, "ok": False, "error": self.refuse}
                if self.refuse_retry > 0:
                    self.refuse_retry -= 1
                    reply["retry"] = True
                c.sendall((json.dumps(reply) + "\n").encode())
                c.close()
                if self.refuse_retry == 0 and reply.get("retry"):
                    self.refuse = None  # the next connection is taken
                return
            h = rec["hello"]
            reply = {"hello": "swarmtel", "version": 1, "ok": True, "run_id": h.get("run_id") or "server-run",
                     "testplan": h.get("testplan") or "server-plan"}
            seq = h.get("seq") if self.acks else None
            if seq is not None:
                reply["acks"] = True
                rec["acked"] = seq
            c.sendall((json.dumps(reply) + "\n").encode())
            if seq is not None and self.auto_ack:
                t = threading.Thread(target=self._auto_ack, args=(rec,), daemon=True)
                t.start()
                self.threads.append(t)
            while True:
                while self.stall.is_set() and not self.closed:
                    threading.Event().wait(0.01)
                line = f.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    rec["raw_bad"].append(line)
                    break
                try:
                    obj = json.loads(line)
                except ValueError:
                    rec["raw_bad"].append(line)
                    continue
                if obj.get("bye") is True:
                    rec["bye"] = obj
                else:
                    if seq is not None:
                        rec["seqs"].append(seq)
                        seq += 1
                    rec["lines"].append(obj)
        except (OSError, ValueError):
            pass
        finally:
            rec["eof"] = True
            try:
                c.close()
            except OSError:
                pass

    def ack(self, index, n):
        """Send ``{"ack": n}`` on connection ``index``."""
        self._send_ack(self.conns[index], n)

    @staticmethod
    def _send_ack(rec, n):
        with rec["send_lock"]:
            rec["sock"].sendall((json.dumps({"ack": n}) + "\n").encode())
            rec["acked"] = n

    def _auto_ack(self, rec):
        """Acknowledge every line read so far, every 10 ms, until the connection ends."""
        while not rec["eof"] and not self.closed:
            time.sleep(0.01)
            seqs = rec["seqs"]
            if seqs and seqs[-1] + 1 != rec["acked"]:
                try:
                    self._send_ack(rec, seqs[-1] + 1)
                except OSError:
                    return

    def stop(self):
        """Close the listener and every connection (a crash or restart of the runtime)."""
        self.closed = True
        self.stall.clear()
        for rec in self.conns:
            rec["send_lock"].acquire()  # an ack being sent is sent whole, and recorded
        for c in self.client_socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for rec in self.conns:
            rec["send_lock"].release()
        self.client_socks = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if os.path.exists(self.path):
            os.unlink(self.path)


if __name__ == "__main__":
    # Used as a fake `swarmtel` binary: swarmtel serve --config OUT --listen unix:PATH
    # Writes every connection record to OUT (JSON) on SIGTERM.
    import signal
    import sys

    argv = sys.argv[1:]
    assert argv[0] == "serve", argv
    out = argv[argv.index("--config") + 1]
    listen = argv[argv.index("--listen") + 1]
    assert listen.startswith("unix:")
    srv = ProtoServer(listen[len("unix:"):], acks=os.environ.get("FAKE_SERVE_ACKS") == "1")
    done = threading.Event()

    def term(*_):
        done.set()

    signal.signal(signal.SIGTERM, term)
    time.sleep(float(os.environ.get("FAKE_SERVE_DELAY", "0")))
    srv.start()
    while not done.wait(0.05):
        pass
    time.sleep(0.2)
    with open(out, "w") as fh:
        conns = [{k: v for k, v in c.items() if k not in ("sock", "send_lock")} for c in srv.conns]
        json.dump({"argv": sys.argv, "token": os.environ.get("SWARMTEL_TOKEN"), "conns": conns}, fh)
    srv.stop()
