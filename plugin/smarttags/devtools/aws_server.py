"""The embedded stack's S3 + SQS: moto's server, with its S3 and SQS state kept in a file across restarts.

moto holds everything in memory and has no persistence of its own, and no S3/SQS server on PyPI or in
Debian both persists to disk and sends S3 event notifications to SQS (which the upload path needs).
So this runs moto's own WSGI application and pickles its S3 and SQS backends: loaded back at start,
written again (to a temporary file, then renamed) at most once a second after a request that changed
something, and once more when the server stops. A crash loses at most the last second; a clean stop
loses nothing. The file is only ever read back by the moto version that wrote it.

    python -m smarttags.devtools.aws_server --port 9400 --state var/aws/moto-state.pickle
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import moto
from moto.backends import get_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

logger = logging.getLogger(__name__)

SERVICES = ("s3", "sqs")
SAVE_INTERVAL = 1.0  # seconds between snapshots while requests keep changing things
# SQS calls that only read (the worker long-polls ReceiveMessage all day; a lost receive is harmless:
# the message becomes visible again).
_SQS_READS = {"ReceiveMessage", "GetQueueUrl", "GetQueueAttributes", "ListQueues", "ListQueueTags"}
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
# What every BackendDict has from its constructor; anything else on one is service-wide state, e.g. the S3
# BackendDict's map of bucket names to accounts (without it, CreateBucket replaces a restored bucket).
_BACKEND_DICT_OWN = {"backend", "service_name", "_use_boto3_regions", "_additional_regions", "_id"}


class _Pickler(pickle.Pickler):
    """moto's models hold locks (SQS queues a Condition, S3 keys a Lock): they are saved as new ones."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if isinstance(obj, _LOCK_TYPES[0]):
            return threading.Lock, ()
        if isinstance(obj, _LOCK_TYPES[1]):
            return threading.RLock, ()
        return NotImplemented


def snapshot() -> bytes:
    """The S3 and SQS state of this process's moto, as bytes :func:`restore` reads back."""
    state = {
        "moto": moto.__version__,
        "backends": {svc: list(get_backend(svc).iter_backends()) for svc in SERVICES},  # type: ignore[call-overload]
        "shared": {svc: _shared_state(get_backend(svc)) for svc in SERVICES},  # type: ignore[call-overload]
    }
    for _ in range(20):
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
        except RuntimeError:  # a request changed a dict while it was being pickled: take it again
            continue
        return buffer.getvalue()
    raise RuntimeError("moto's state kept changing while being saved")


def _shared_state(backends: object) -> dict[str, Any]:
    return {name: value for name, value in vars(backends).items() if name not in _BACKEND_DICT_OWN}


def restore(data: bytes, source: Path) -> int:
    """Put a snapshot back into this process's moto; returns how many (service, account, region) backends.
    A snapshot of another moto version is refused with SystemExit naming the file."""
    try:
        state = pickle.loads(data)  # our own file, in the user's own data dir
    except Exception as exc:
        raise SystemExit(f"aws_server: cannot read {source} ({exc}); move it away to start empty") from None
    if state.get("moto") != moto.__version__:
        raise SystemExit(
            f"aws_server: {source} was written by moto {state.get('moto')}, this is moto {moto.__version__}: "
            f"install moto=={state.get('moto')} or move the file away to start empty"
        )
    count = 0
    for svc, rows in state["backends"].items():
        backends = get_backend(svc)
        for account_id, region, backend in rows:
            backends[account_id][region] = backend
            count += 1
        for name, value in state["shared"].get(svc, {}).items():
            setattr(backends, name, value)
    return count


def save(path: Path) -> None:
    data = snapshot()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def changes_state(environ: dict[str, Any]) -> bool:
    """Whether a request may change S3 or SQS state (errs on the side of yes)."""
    if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD", "OPTIONS"):
        return False
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    return not (target.startswith("AmazonSQS.") and target.split(".", 1)[1] in _SQS_READS)


class _Tracking:
    """moto's WSGI app, noting when a request changed something (before and after, so a snapshot taken
    while a request ran is followed by another)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], changed: threading.Event) -> None:
        self.app = app
        self.changed = changed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        changes = changes_state(environ)
        if changes:
            self.changed.set()
        try:
            return self.app(environ, start_response)
        finally:
            if changes:
                self.changed.set()


def serve(host: str, port: int, state_file: Path | None) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP; with a state file, load it first and save it last."""
    if state_file is not None and state_file.is_file():
        count = restore(state_file.read_bytes(), state_file)
        logger.info("restored %d S3/SQS backends from %s", count, state_file)
    changed = threading.Event()
    server = make_server(
        host,
        port,
        _Tracking(DomainDispatcherApplication(create_backend_app), changed),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)

    saver: threading.Thread | None = None
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        target = state_file

        def keep_saving() -> None:
            while not stopping.wait(SAVE_INTERVAL):
                if changed.is_set():
                    changed.clear()
                    try:
                        save(target)
                    except Exception:  # a full disk (or a model moto cannot pickle) must not stop the server
                        logger.exception("could not save S3/SQS state to %s; trying again", target)
                        changed.set()

        saver = threading.Thread(target=keep_saving, name="moto-state", daemon=True)
        saver.start()
    logger.info("moto %s serving S3 and SQS on %s:%d", moto.__version__, host, port)
    server.serve_forever()
    server.server_close()
    if saver is not None and state_file is not None:
        saver.join()
        save(state_file)
        logger.info("saved S3/SQS state to %s", state_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smarttags.devtools.aws_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, help="file to keep S3 and SQS state in (default: memory only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns the start-up errors
    serve(args.host, args.port, args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
