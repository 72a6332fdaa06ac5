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
    one: it ignores ``seq`` and sends nothing after the reply.

    ``ready``: ``None``, a server that predates readiness (no ``ready`` key in its replies);
    ``True``, one with its plugins loaded (``"ready": true``); ``False``, one still loading
    them: it answers ``"ready": false``, reads and records lines but acknowledges nothing until
    :meth:`set_ready`, which sends ``{"ready": true}`` to each connection whose hello had
    ``seq`` and was told ``false``; :meth:`fail` sends those ``{"error": ...}`` instead and
    closes every connection. ``wants``: sent with ``"ready": true`` (reply or frame)."""

    def __init__(self, path, refuse=None, stall=False, rcvbuf=None, refuse_retry=0, acks=False, auto_ack=True,
                 ready=None, wants=None):
        self.path = path
        self.wants = wants
        self.refuse = refuse
        self.acks = acks
        self.auto_ack = auto_ack
        self.ready = ready
        self.loaded = threading.Event()
        if ready is not False:
            self.loaded.set()
        self.ready_lock = threading.Lock()  # a reply's `ready` and the frame that follows agree
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
                   "acked": None, "sock": c, "send_lock": threading.Lock(), "awaiting_ready": False,
                   "frames": []}
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
            with self.ready_lock:
                if self.ready is not None:
                    reply["ready"] = self.loaded.is_set()
                    rec["awaiting_ready"] = seq is not None and not reply["ready"]
                    if reply["ready"] and self.wants is not None:
                        reply["wants"] = self.wants
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

    def set_ready(self):
        """The plugins are loaded: send ``{"ready": true}`` where it is awaited; acks start."""
        with self.ready_lock:
            self.loaded.set()
            for rec in self.conns:
                if rec["awaiting_ready"]:
                    rec["awaiting_ready"] = False
                    frame = {"ready": True}
                    if self.wants is not None:
                        frame["wants"] = self.wants
                    self._send_frame(rec, frame)

    def fail(self, error):
        """Loading failed: send ``{"error": error}`` where readiness is awaited, then close
        every connection and the listener (the runtime exits)."""
        with self.ready_lock:
            for rec in self.conns:
                if rec["awaiting_ready"]:
                    rec["awaiting_ready"] = False
                    self._send_frame(rec, {"error": error})
        self.stop()

    @staticmethod
    def _send_frame(rec, frame):
        with rec["send_lock"]:
            try:
                rec["sock"].sendall((json.dumps(frame) + "\n").encode())
            except OSError:
                return
            rec["frames"].append(frame)

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
            if not self.loaded.is_set():
                continue  # lines are held, not processed, while the plugins load
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
    # FAKE_SERVE_LOAD_SECONDS: answer hellos at once, but "load plugins" that long (None:
    # forever) first; then, by FAKE_SERVE_LOAD_FAIL: nothing (ready), "frame" (an error frame
    # with FAKE_SERVE_LOAD_ERROR, then exit 1), or "exit" (exit 3, no frame). The output has
    # `ready_at` (time.time() when it became ready) and `pid`.
    load = os.environ.get("FAKE_SERVE_LOAD_SECONDS")
    load_fail = os.environ.get("FAKE_SERVE_LOAD_FAIL")
    load_error = os.environ.get("FAKE_SERVE_LOAD_ERROR", "plugins[0] cannot load")
    acks = os.environ.get("FAKE_SERVE_ACKS") == "1" or load is not None
    srv = ProtoServer(listen[len("unix:"):], acks=acks, ready=None if load is None else False)
    done = threading.Event()
    ready_at = None

    def term(*_):
        done.set()

    def dump():
        with open(out, "w") as fh:
            conns = [{k: v for k, v in c.items() if k not in ("sock", "send_lock")} for c in srv.conns]
            json.dump({"argv": sys.argv, "token": os.environ.get("SWARMTEL_TOKEN"), "conns": conns,
                       "ready_at": ready_at, "pid": os.getpid()}, fh)

    signal.signal(signal.SIGTERM, term)
    time.sleep(float(os.environ.get("FAKE_SERVE_DELAY", "0")))
    srv.start()
    if load is not None:
        sys.stderr.write("swarmtel: compiling plugins\n")
        sys.stderr.flush()
        with open(out + ".pid", "w") as fh:
            fh.write(str(os.getpid()))
        until = None if load == "forever" else time.monotonic() + float(load)
        # FAKE_SERVE_READY_AFTER_NODES: also keep loading until these nodes said hello.
        nodes = set(filter(None, os.environ.get("FAKE_SERVE_READY_AFTER_NODES", "").split(",")))

        def loading():
            if until is None or time.monotonic() < until:
                return True
            return not nodes <= {c["hello"]["node"] for c in srv.conns if c["hello"]}

        while not done.wait(0.05) and loading():
            pass
        if not done.is_set():
            if load_fail == "frame":
                sys.stderr.write(f"swarmtel: error: {load_error}\n")
                sys.stderr.flush()
                srv.fail(load_error)
                dump()
                sys.exit(1)
            if load_fail == "exit":
                sys.stderr.write("swarmtel: compiling crashed\n")
                sys.stderr.flush()
                srv.stop()
                os._exit(3)
            ready_at = time.time()
            sys.stderr.write("swarmtel: plugins ready\n")
            sys.stderr.flush()
            srv.set_ready()
    while not done.wait(0.05):
        pass
    time.sleep(0.2)
    dump()
    srv.stop()
