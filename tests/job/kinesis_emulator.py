"""A local Kinesis for the tests: npm ``kinesis-local`` (kinesis-mock's Node build, installed into
``tools/kinesis-local`` by ``make setup``) in a network namespace of its own, reachable from the
test's namespace on 127.0.0.1 only.

kinesis-local binds 0.0.0.0 with no option to change it, so it runs inside ``unshare --net``
(a namespace with nothing but its own loopback). This file, run there as a script (stdlib only),
brings that loopback up, starts the emulator (its output goes to ``emulator.log`` next to the
socket), and serves a Unix socket that forwards each connection
to the emulator's plain-HTTP port; Unix sockets are not network-namespaced. In the test's process,
``KinesisEmulator`` listens on 127.0.0.1:<free port> and forwards each connection to that Unix
socket. Closing the emulator (or the test process dying: the helper watches its stdin) stops both
and removes the socket directory::

    with KinesisEmulator() as kinesis:
        client = kinesis.client()                # boto3, test credentials, region us-east-1
        arn = kinesis.create_stream("telemetry", shards=4)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_MAIN = PROJECT_ROOT / "tools" / "kinesis-local" / "node_modules" / "kinesis-local" / "main.js"
REGION = "us-east-1"
ACCOUNT = "000000000000"
ACCESS_KEY = "asset-cycle-test"
SECRET_KEY = "asset-cycle-test-secret"
_PLAIN_PORT = 4568
_TLS_PORT = 4567
_CHUNK = 65536
_CONTENT_TYPE = re.compile(rb"(?im)^content-type:\s*([^\r\n;]+)")


def _pump(src: socket.socket, dst: socket.socket, inspect: Any = None) -> None:
    try:
        while True:
            data = src.recv(_CHUNK)
            if not data:
                break
            if inspect is not None:
                inspect(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def _forward(client: socket.socket, connect: Any, inspect: Any = None) -> None:
    """Pipe ``client`` to a new connection made by ``connect()``, both ways, until both ends close;
    ``inspect(bytes)`` sees what the client sends."""
    try:
        upstream = connect()
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream, inspect)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, connect: Any, stop: threading.Event, inspect: Any = None) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        client.settimeout(None)
        threading.Thread(target=_forward, args=(client, connect, inspect), daemon=True).start()


def _loopback_up() -> None:
    """``ip link set lo up`` without iproute2 (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, request)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def _inside(unix_path: str, node: str, main_js: str) -> int:
    """In the new namespace: loopback up, emulator started, Unix socket -> 127.0.0.1:4568 until stdin closes."""
    _loopback_up()
    env = dict(os.environ, KINESIS_MOCK_PLAIN_PORT=str(_PLAIN_PORT), KINESIS_MOCK_TLS_PORT=str(_TLS_PORT),
               LOG_LEVEL=os.environ.get("KINESIS_MOCK_LOG_LEVEL", "ERROR"))  # fmt: skip
    log = open(os.path.join(os.path.dirname(unix_path), "emulator.log"), "ab")  # noqa: SIM115 - open while the emulator runs
    emulator = subprocess.Popen([node, main_js], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=os.path.dirname(main_js))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", _PLAIN_PORT), timeout=1).close()
                break
            except OSError:
                if emulator.poll() is not None or time.monotonic() > deadline:
                    print("kinesis-local did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(unix_path)
        listener.listen(64)
        stop = threading.Event()
        threading.Thread(target=_serve, args=(listener, lambda: socket.create_connection(
            ("127.0.0.1", _PLAIN_PORT)), stop), daemon=True).start()  # fmt: skip
        sys.stdin.buffer.read()  # returns when the test side closes the pipe or dies
        stop.set()
        listener.close()
        return 0
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()


class KinesisEmulator:
    """kinesis-local in its own network namespace, at ``endpoint`` (http://127.0.0.1:PORT)."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._dir: str | None = None
        self._proc: subprocess.Popen | None = None
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.content_types: Counter[str] = Counter()
        """Content-Type of every request sent to the emulator (what protocol clients speak)."""

    def __enter__(self) -> KinesisEmulator:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout_s: float = 90.0) -> None:
        node = shutil.which("node")
        if node is None or not EMULATOR_MAIN.is_file():
            raise RuntimeError(f"kinesis-local not installed ({EMULATOR_MAIN}); run: make setup")
        self._dir = tempfile.mkdtemp(prefix="kinesis-emulator-")
        unix_path = os.path.join(self._dir, "kinesis.sock")
        self._proc = subprocess.Popen(
            ["unshare", "--net", "--", sys.executable, __file__, unix_path, node, str(EMULATOR_MAIN)],
            stdin=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(unix_path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = Path(self._dir) / "emulator.log"
                tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                self.stop()
                raise RuntimeError(f"the Kinesis emulator did not come up (is `unshare --net` allowed here?)\n{tail}")
            time.sleep(0.1)

        def connect() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(unix_path)
            return sock

        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=_serve, args=(self._listener, connect, self._stop, self._count_content_type),
                         daemon=True).start()  # fmt: skip

    def _count_content_type(self, data: bytes) -> None:
        for match in _CONTENT_TYPE.finditer(data[:8192]):
            self.content_types[match.group(1).decode("latin-1").strip()] += 1

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def client(self) -> Any:
        """A boto3 Kinesis client for the emulator (test credentials)."""
        import boto3

        return boto3.client("kinesis", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)  # fmt: skip

    def create_stream(self, name: str, shards: int = 4, timeout_s: float = 30.0) -> str:
        """Create a stream and wait until it is ACTIVE; returns its ARN."""
        client = self.client()
        client.create_stream(StreamName=name, ShardCount=shards)
        return self.wait_active(name, timeout_s)

    def wait_active(self, name: str, timeout_s: float = 30.0) -> str:
        """Wait until the stream is ACTIVE again (after create or reshard); returns its ARN."""
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while True:
            summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            if summary["StreamStatus"] == "ACTIVE":
                return summary["StreamARN"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {name} not ACTIVE after {timeout_s:.0f} s")
            time.sleep(0.2)


def jvm_credentials() -> dict[str, str]:
    """System properties that give the job's JVM the emulator's test credentials (the SDK's default
    chain reads ``aws.accessKeyId`` / ``aws.secretAccessKey``)."""
    return {"aws.accessKeyId": ACCESS_KEY, "aws.secretAccessKey": SECRET_KEY}


if __name__ == "__main__":
    sys.exit(_inside(*sys.argv[1:4]))
