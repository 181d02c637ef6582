"""The embedded dev/test stack: a real OpenSearch node (``launcher/``) and a moto server for S3 + SQS.

Each background service is a :class:`ManagedProcess`: its argv, pid file, log file and readiness check.
:func:`managed_processes` lists the ones ``smarttags stack up`` starts for some settings; adding another
(say the tagging worker) is one more entry there. Services the settings place elsewhere (a non-loopback
URL, or real AWS) are used as they are and never started or stopped.

Library API (the CLI and the pytest fixtures both use it)::

    node = start_opensearch(tmp / "opensearch", http_port=19200)   # -> ProcessHandle (.url, .stop())
    moto = start_moto(19400, run_dir=tmp / "run")
    result = stack_up(settings); stack_status(settings); stack_down(settings)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.errors import ConfigError, PrerequisiteError, ServiceUnavailable, SmartTagsError
from smarttags.settings import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
LAUNCHER_DIR = REPO_ROOT / "launcher"
LAUNCHER_MAIN = "org.smarttags.launcher.Main"
_BUILD_STAMP = "target/.smarttags-build"
_JAVA_HINT = "Java 17 not found: apt-get install openjdk-17-jdk-headless"
_MVN_HINT = "Maven not found: apt-get install maven"


# --- Prerequisites and the launcher build -----------------------------------------------------------


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else None


def find_java() -> Path:
    """A ``java`` of version 17 or newer (OpenSearch 2.19 runs on 17 and 21), or PrerequisiteError."""
    candidates = [shutil.which("java"), *sorted(map(str, Path("/usr/lib/jvm").glob("*17*/bin/java")))]
    for candidate in candidates:
        if candidate and (_java_major(candidate) or 0) >= 17:
            return Path(candidate).resolve()
    raise PrerequisiteError(_JAVA_HINT)


@functools.cache
def _default_java() -> str:
    # Stopping or listing processes must work without Java; only starting needs a good one.
    try:
        return str(find_java())
    except PrerequisiteError:
        return "java"


def find_maven() -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(_MVN_HINT)
    return Path(mvn)


def _launcher_fingerprint(launcher: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([launcher / "pom.xml", *(launcher / "src").rglob("*")]):
        if path.is_file():
            digest.update(str(path.relative_to(launcher)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def launcher_is_built(launcher: Path = LAUNCHER_DIR) -> bool:
    stamp = launcher / _BUILD_STAMP
    return stamp.is_file() and stamp.read_text().strip() == _launcher_fingerprint(launcher)


def build_launcher(launcher: Path = LAUNCHER_DIR, *, force: bool = False) -> bool:
    """Compile the launcher and copy its jars into target/lib and target/knn. False if already up to date.

    Maven runs offline first (everything is in ~/.m2 after the first build), online only if that fails.
    """
    if not force and launcher_is_built(launcher):
        logger.info("launcher is up to date")
        return False
    java = find_java()
    mvn = find_maven()
    env = dict(os.environ, JAVA_HOME=str(java.parent.parent))  # mvn must compile with the java we run
    base = [str(mvn), "-B", "-q", "-Dstyle.color=never", "compile"]
    for argv in ([*base[:1], "-o", *base[1:]], base):
        logger.info("building the launcher: %s", " ".join(argv))
        result = subprocess.run(argv, cwd=launcher, env=env, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            (launcher / _BUILD_STAMP).write_text(_launcher_fingerprint(launcher) + "\n")
            return True
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
    raise PrerequisiteError(f"the launcher's Maven build failed (in {launcher}):\n{tail}")


# --- Managed processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortNeed:
    """A port a run binds, what binds it and the setting that moves it."""

    port: int
    what: str
    setting: str
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class ManagedProcess:
    """A background service we start and stop: what to run, where its pid and log go, when it is ready."""

    name: str
    argv: Sequence[str]
    url: str
    pid_file: Path
    log_file: Path
    ready: Callable[[], bool]
    # A string that must appear in /proc/PID/cmdline for a pid file to count as ours (pids get reused).
    marker: str
    cwd: Path | None = None
    # The 127.0.0.1 ports it binds: checked free before a start, so a stranger on them is not "ready";
    # port_needs says, for each, what binds it and the setting that moves it (managed_processes fills it).
    ports: tuple[int, ...] = ()
    port_needs: tuple[PortNeed, ...] = ()
    # Logs the service writes itself (besides its output in log_file): where a failed start says why.
    logs: tuple[Path, ...] = ()
    ready_timeout: float = 120.0
    stop_timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment


@dataclass
class ProcessHandle:
    process: ManagedProcess
    pid: int
    reused: bool = False  # True when `up` found it already running

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def url(self) -> str:
        return self.process.url

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def stop(self) -> bool:
        return stop_process(self.process)


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running_pid(process: ManagedProcess) -> int | None:
    """The pid of our live instance of ``process``, from its pid file; None if it is not running."""
    try:
        pid = int(process.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    if cmdline is not None and process.marker not in cmdline:
        return None  # the pid was reused by something else
    return pid


def start_process(process: ManagedProcess) -> ProcessHandle:
    """Start ``process`` in the background unless it already runs, then wait until it is ready."""
    return start_processes([process])[0]


def start_processes(processes: Sequence[ManagedProcess]) -> list[ProcessHandle]:
    """Start those not yet running, all at once, then wait for each to be ready.

    If one fails to come up, the ones started here are stopped again (the ones found running stay).
    """
    _reap_children()
    started: list[tuple[ManagedProcess, subprocess.Popen[bytes] | None, int]] = []
    offsets: dict[str, dict[Path, int]] = {}
    try:
        for process in processes:
            pid = running_pid(process)
            if pid is not None:
                logger.info("%s already running (pid %d)", process.name, pid)
                started.append((process, None, pid))
            else:
                check_ports(_port_needs(process))
                offsets[process.name] = _log_offsets(process)
                spawned = _spawn(process)
                started.append((process, spawned, spawned.pid))
        for process, child, pid in started:
            _wait_ready(process, pid, child, offsets.get(process.name, {}))
    except BaseException:
        # Every one not found running is ours to stop: also one whose spawn a deferred signal ended
        # right after its pid file was written, before it was listed here.
        reused = {process.name for process, child, _ in started if child is None}
        for process in reversed(processes):
            if process.name not in reused:
                stop_process(process)
        raise
    return [ProcessHandle(p, pid, reused=child is None) for p, child, pid in started]


def free_port() -> int:
    """A loopback port nobody listens on right now (tests and benchmarks start services on them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails: a listener, or a socket bound without one. SO_REUSEADDR as the
    servers themselves set it, so our own connections still in TIME_WAIT after a stop do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(needs: Sequence[PortNeed]) -> None:
    """ConfigError, one line naming the first taken port and its setting, if any of ``needs`` is taken."""
    taken = [need for need in needs if port_taken(need.port, need.host)]
    if taken:
        first = taken[0]
        others = "".join(f"; also {n.host}:{n.port} ({n.what}, {n.setting})" for n in taken[1:])
        raise ConfigError(
            first.setting,
            f"{first.host}:{first.port} ({first.what}) is in use by another process; stop it or choose "
            f"another port{others}",
        )


def _port_needs(process: ManagedProcess) -> list[PortNeed]:
    return list(process.port_needs) or [PortNeed(port, process.name, "the settings") for port in process.ports]


# Popen objects of the services this process started. Kept so that a running service's Popen is never
# garbage-collected (that warns "subprocess is still running") and so stop_process can reap it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    """Forget (and reap) the children that died without being stopped, e.g. killed by someone else."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


def _spawn(process: ManagedProcess) -> subprocess.Popen[bytes]:
    process.pid_file.parent.mkdir(parents=True, exist_ok=True)
    process.log_file.parent.mkdir(parents=True, exist_ok=True)
    # A stop signal waits until the child is known and its pid file written: else nothing would stop it.
    with _signals_deferred(), process.log_file.open("ab") as log:
        # A session of its own: Ctrl-C in the terminal that ran `stack up` does not reach the service.
        child = subprocess.Popen(
            list(process.argv),
            cwd=process.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **process.env},
            start_new_session=True,
        )
        _CHILDREN[child.pid] = child
        process.pid_file.write_text(f"{child.pid}\n")
    logger.info("started %s (pid %d), log %s", process.name, child.pid, process.log_file)
    return child


def _log_offsets(process: ManagedProcess) -> dict[Path, int]:
    """Where each log ends before a start: a failed start shows only what this start wrote."""
    offsets = {}
    for path in (process.log_file, *process.logs):
        try:
            offsets[path] = path.stat().st_size
        except OSError:
            offsets[path] = 0
    return offsets


def _wait_ready(
    process: ManagedProcess,
    pid: int,
    child: subprocess.Popen[bytes] | None = None,
    offsets: dict[Path, int] | None = None,
) -> None:
    deadline = time.monotonic() + process.ready_timeout
    while time.monotonic() < deadline:
        exited = child.poll() is not None if child is not None else not _pid_alive(pid)
        if exited:
            raise ServiceUnavailable(process.name, f"exited during start; {why_failed(process, offsets or {})}")
        if process.ready():
            return
        time.sleep(0.25)
    raise ServiceUnavailable(
        process.name, f"not ready after {process.ready_timeout:.0f} s; {why_failed(process, offsets or {})}"
    )


# Java stack frames and "... 12 more": a failed start is told by the exception lines, not the frames.
_FRAME = re.compile(r"^\s*(at |\.\.\. \d+ more)")
_PROBLEM = re.compile(r"Exception|Error|ERROR|FATAL|Traceback|refused|denied|in use", re.IGNORECASE)


def why_failed(process: ManagedProcess, offsets: dict[Path, int], lines: int = 6) -> str:
    """What this start wrote to the service's logs: its exception lines first (the cause), then the last
    lines, each log named."""
    parts = []
    for path in (process.log_file, *process.logs):
        try:
            with path.open("rb") as file:
                file.seek(offsets.get(path, 0))
                text = file.read().decode(errors="replace")
        except OSError:
            continue
        # What the node printed to stderr reaches its log behind log4j's prefix: drop that first.
        unprefixed = (re.sub(r"^\[[^]]*\]\[WARN \]\[stderr\] \[[^]]*\] ", "", line) for line in text.splitlines())
        body = [line.rstrip() for line in unprefixed if line.strip() and not _FRAME.match(line)]
        if not body:
            continue
        problems = [line for line in body if _PROBLEM.search(line)][:4]
        shown = problems + [line for line in body[-lines:] if line not in problems]
        parts.append(f"{path}:\n" + "\n".join(f"  {line}" for line in shown))
    return "last log lines:\n" + "\n".join(parts) if parts else f"nothing in its logs ({process.log_file})"


def stop_process(process: ManagedProcess) -> bool:
    """SIGTERM our running instance, wait, SIGKILL if it lingers; remove the pid file. False if none ran."""
    pid = running_pid(process)
    stopped = False
    if pid is not None:
        logger.info("stopping %s (pid %d)", process.name, pid)
        _terminate(pid, process.stop_timeout)
        _wait_ports_released(process)
        stopped = True
    process.pid_file.unlink(missing_ok=True)
    return stopped


def _wait_ports_released(process: ManagedProcess, timeout: float = 10.0) -> None:
    """A process whose main thread is gone may still hold its sockets while its other threads exit: a
    start right after a stop must not find its own service's port taken."""
    deadline = time.monotonic() + timeout
    while any(port_taken(port) for port in process.ports) and time.monotonic() < deadline:
        time.sleep(0.05)


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, timeout):
        return
    logger.warning("pid %d ignored SIGTERM for %.0f s: SIGKILL", pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, 10)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:  # our child: reap it
            del _CHILDREN[pid]
            return True
        if child is None and not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


# --- The two services --------------------------------------------------------------------------------


def _http_json(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            value = json.loads(response.read())
            return value if isinstance(value, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (OSError, http.client.HTTPException):
        return False


def opensearch_process(
    home: Path,
    http_port: int = 9200,
    *,
    transport_port: int | None = None,
    run_dir: Path | None = None,
    heap_min: str = "512m",
    heap_max: str = "1g",
    launcher: Path = LAUNCHER_DIR,
    java: Path | None = None,
    ready_timeout: float = 120.0,
) -> ManagedProcess:
    """The embedded OpenSearch node: data and logs under ``home``, bound to 127.0.0.1 only."""
    home = home.resolve()
    run_dir = (run_dir or home / "run").resolve()
    transport_port = transport_port if transport_port is not None else http_port + 100
    url = f"http://127.0.0.1:{http_port}"
    classpath = ":".join(str(launcher / "target" / part) for part in ("classes", "lib/*", "knn/*"))
    argv = [
        str(java) if java else _default_java(),
        f"-Xms{heap_min}",
        f"-Xmx{heap_max}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        "-Dfile.encoding=UTF-8",
        # OpenSearch closes log4j itself when the node stops (what its jvm.options set).
        "-Dlog4j.shutdownHookEnabled=false",
        "-Dlog4j2.disable.jmx=true",
        "-Dio.netty.allocator.numDirectArenas=0",
        "-Dio.netty.noUnsafe=true",
        f"-Djava.io.tmpdir={home / 'tmp'}",
        "-cp",
        classpath,
        LAUNCHER_MAIN,
        "--home",
        str(home),
        "--http-port",
        str(http_port),
        "--transport-port",
        str(transport_port),
    ]
    (home / "tmp").mkdir(parents=True, exist_ok=True)

    def ready() -> bool:
        health = _http_json(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s")
        return health is not None and health.get("status") in ("yellow", "green")

    return ManagedProcess(
        name="opensearch",
        argv=argv,
        url=url,
        pid_file=run_dir / "opensearch.pid",
        log_file=home / "logs" / "launcher.log",
        ready=ready,
        marker=f"--home {home} ",
        cwd=launcher,
        ports=(http_port, transport_port),
        logs=(home / "logs" / "smarttags.log",),  # the node's own log: a failed bind or start is told there
        ready_timeout=ready_timeout,
    )


def moto_process(
    port: int, run_dir: Path, *, state_file: Path | None = None, ready_timeout: float = 30.0
) -> ManagedProcess:
    """moto in server mode: S3 and SQS (and the rest of AWS) on 127.0.0.1:port. With ``state_file``, the
    S3 and SQS state is kept there across restarts (``aws_server``); without, it lives in memory only."""
    run_dir = run_dir.resolve()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "smarttags.devtools.aws_server", "--host", "127.0.0.1", "--port", str(port)]
    if state_file is not None:
        argv += ["--state", str(state_file.resolve())]
    return ManagedProcess(
        name="moto",
        argv=argv,
        url=url,
        pid_file=run_dir / "moto.pid",
        log_file=run_dir / "moto.log",
        ready=lambda: _answers_http(f"{url}/moto-api/"),
        marker=f"aws_server --host 127.0.0.1 --port {port}",
        ports=(port,),
        ready_timeout=ready_timeout,
        # moto and its dependencies warn freely; that noise belongs in no terminal.
        env={"PYTHONWARNINGS": "ignore"},
    )


def start_opensearch(
    home: Path,
    http_port: int = 9200,
    *,
    transport_port: int | None = None,
    run_dir: Path | None = None,
    heap_max: str = "1g",
    launcher: Path = LAUNCHER_DIR,
    ready_timeout: float = 120.0,
) -> ProcessHandle:
    """Build the launcher if needed, start the node and wait for yellow/green health."""
    build_launcher(launcher)
    find_java()  # a clear PrerequisiteError now rather than a failed start
    process = opensearch_process(
        home,
        http_port,
        transport_port=transport_port,
        run_dir=run_dir,
        heap_max=heap_max,
        launcher=launcher,
        ready_timeout=ready_timeout,
    )
    return start_process(process)


def start_moto(port: int, run_dir: Path, *, state_file: Path | None = None) -> ProcessHandle:
    return start_process(moto_process(port, run_dir, state_file=state_file))


# --- The stack as the CLI sees it --------------------------------------------------------------------


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def managed_processes(settings: Settings, *, heap_max: str = "1g") -> list[ManagedProcess]:
    """What `stack up` starts for these settings, in start order (`down` stops in reverse).

    Only services on loopback URLs are ours to run; add further services (e.g. the worker) here.
    """
    run_dir = settings.data_dir / "stack"
    processes: list[ManagedProcess] = []
    if clients.is_loopback_url(settings.opensearch.url):
        http_port = _port(settings.opensearch.url, 9200)
        node = opensearch_process(settings.data_dir / "opensearch", http_port, run_dir=run_dir, heap_max=heap_max)
        setting = f"{settings_mod.ENV_PREFIX}OPENSEARCH__URL"
        needs = (
            PortNeed(http_port, "OpenSearch HTTP", setting),
            PortNeed(node.ports[1], "OpenSearch transport, the HTTP port + 100", setting),
        )
        processes.append(replace(node, port_needs=needs))
    if clients.is_loopback_url(settings.aws.endpoint_url):
        assert settings.aws.endpoint_url is not None
        state_file = settings.data_dir / "aws" / "moto-state.pickle"
        aws_port = _port(settings.aws.endpoint_url, 80)
        moto = moto_process(aws_port, run_dir, state_file=state_file)
        need = PortNeed(aws_port, "S3 + SQS (moto)", f"{settings_mod.ENV_PREFIX}AWS__ENDPOINT_URL")
        processes.append(replace(moto, port_needs=(need,)))
    return processes


def admin_port(settings: Settings) -> PortNeed:
    """The admin panel's port, for a run that will serve it (the demo checks it before starting anything)."""
    return PortNeed(settings.admin.port, "admin panel", f"{settings_mod.ENV_PREFIX}ADMIN__PORT", settings.admin.host)


def preflight(processes: Sequence[ManagedProcess], also: Sequence[PortNeed] = ()) -> None:
    """Before anything starts: every port the not-yet-running ``processes`` and ``also`` bind is free."""
    needs = [need for p in processes if running_pid(p) is None for need in _port_needs(p)]
    check_ports([*needs, *also])


def worker_process(settings: Settings) -> ManagedProcess:
    """The upload worker: the Lambda handler, run against the local queue (`smarttags worker`).
    It gets these very settings through ``SMARTTAGS_*`` variables."""
    run_dir = (settings.data_dir / "stack").resolve()
    log_file = run_dir / "worker.log"

    def ready() -> bool:
        # The worker says so once it has its queue and starts polling.
        return log_file.is_file() and "worker polling" in log_file.read_text(errors="replace")

    return ManagedProcess(
        name="worker",
        argv=[sys.executable, "-m", "smarttags", "worker"],
        url=f"queue {settings.aws.queue_name}",
        pid_file=run_dir / "worker.pid",
        log_file=log_file,
        ready=ready,
        marker="-m smarttags worker",
        cwd=Path.cwd(),
        ready_timeout=60.0,
        env=settings_mod.to_env(settings),
    )


@dataclass(frozen=True)
class UpResult:
    handles: list[ProcessHandle]
    wiring: clients.QueueWiring


def stack_up(settings: Settings, *, heap_max: str = "1g", also_ports: Sequence[PortNeed] = ()) -> UpResult:
    """Start what the settings want local (harmless if already running), then wire bucket -> queue.

    Every port it needs (and ``also_ports``) is checked free before anything starts."""
    processes = managed_processes(settings, heap_max=heap_max)
    preflight(processes, also_ports)
    if any(p.name == "opensearch" for p in processes):
        build_launcher()
        find_java()
    handles = start_processes(processes)
    try:
        wiring = clients.ensure_bucket_and_queue(settings)
        # The worker needs the queue, so it starts once the wiring exists.
        handles += start_processes([worker_process(settings)])
    except BaseException:  # a failure or a stop signal: what this call started goes again
        for handle in reversed(handles):
            if not handle.reused:
                handle.stop()
        raise
    return UpResult(handles, wiring)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    managed: bool  # started by `stack up` (False: an outside service we only use)
    pid: int | None
    state: str  # "up", "down" or an error text
    detail: str = ""  # version and health, or why not


def stack_status(settings: Settings) -> list[ServiceStatus]:
    """Each service with its pid (if ours), URL and version/health."""
    managed = {p.name: p for p in [*managed_processes(settings), worker_process(settings)]}
    rows: list[ServiceStatus] = []
    os_proc = managed.get("opensearch")
    rows.append(_opensearch_status(settings, os_proc is not None, running_pid(os_proc) if os_proc else None))
    aws_proc = managed.get("moto")
    rows.append(_aws_status(settings, aws_proc is not None, running_pid(aws_proc) if aws_proc else None))
    for name, process in managed.items():
        if name not in ("opensearch", "moto"):
            pid = running_pid(process)
            state = "up" if pid is not None and process.ready() else "down"
            rows.append(ServiceStatus(name, process.url, True, pid, state))
    return rows


def _opensearch_status(settings: Settings, managed: bool, pid: int | None) -> ServiceStatus:
    url = settings.opensearch.url
    try:
        client = clients.opensearch_client(settings)
        info = client.info()
        health = client.cluster.health()
    except Exception as exc:  # status reports every failure as a state
        error = exc if isinstance(exc, SmartTagsError) else clients.translate_opensearch_error(exc)
        return ServiceStatus("opensearch", url, managed, pid, "down", str(error))
    detail = f"OpenSearch {info['version']['number']}, health {health['status']}"
    return ServiceStatus("opensearch", url, managed, pid, "up", detail)


def _aws_status(settings: Settings, managed: bool, pid: int | None) -> ServiceStatus:
    url = settings.aws.endpoint_url or f"AWS {settings.aws.region}"
    try:
        sqs = clients.sqs_client(settings)
        queue_url = sqs.get_queue_url(QueueName=settings.aws.queue_name)["QueueUrl"]
        clients.s3_client(settings).head_bucket(Bucket=settings.aws.bucket)
    except Exception as exc:  # status reports every failure as a state
        error = exc if isinstance(exc, SmartTagsError) else clients.translate_aws_error(exc, "s3/sqs")
        return ServiceStatus("s3+sqs", url, managed, pid, "down", str(error))
    detail = f"bucket {settings.aws.bucket}, queue {queue_url}"
    return ServiceStatus("s3+sqs", url, managed, pid, "up", detail)


def stack_down(settings: Settings) -> list[str]:
    """Stop what `stack up` started (by pid file, nothing else). Returns the names of those stopped."""
    stopped = []
    for process in [worker_process(settings), *reversed(managed_processes(settings))]:
        if stop_process(process):
            stopped.append(process.name)
    return stopped


# --- Stopping on a signal ----------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM, SIGINT or SIGHUP asked the run to stop. A KeyboardInterrupt, so every Ctrl-C path takes it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopState:
    """Signals are per process, so this is too."""

    working = False  # a run_until_stopped body runs: the first stop signal interrupts it
    stopping = False  # that happened, or the clean-up began: further signals are only logged
    deferred = 0  # inside a section no signal may cut (a child spawned but not yet recorded)
    pending: int | None = None


def _on_stop_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _StopState.stopping or not _StopState.working:
        logger.warning("%s: already stopping, the clean-up goes on", name)
        return
    if _StopState.deferred:
        _StopState.pending = signum
        return
    _StopState.stopping = True
    raise Stopped(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    _StopState.deferred += 1
    try:
        yield
    finally:
        _StopState.deferred -= 1
    if not _StopState.deferred and _StopState.pending is not None and not _StopState.stopping:
        signum, _StopState.pending = _StopState.pending, None
        _StopState.stopping = True
        raise Stopped(signum)


def run_until_stopped(work: Callable[[], None], clean_up: Callable[[], None]) -> bool:
    """Run ``work`` until it returns, fails or SIGTERM, SIGINT or SIGHUP stops it (raising :class:`Stopped`
    in it), then ``clean_up`` once in every case; a signal during the clean-up does not cut it short. True
    if a signal stopped the work; any other error goes on after the clean-up. Main thread only."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stopped = False
    try:
        _StopState.working, _StopState.stopping, _StopState.pending = True, False, None
        for sig in STOP_SIGNALS:
            signal.signal(sig, _on_stop_signal)
        work()
        # A signal whose Stopped the work caught and returned on (waitress's serve does) stopped it too.
        stopped = _StopState.stopping
        _StopState.working = False  # a signal from here on finds the clean-up under way
    except Stopped:  # raised at most once (the handler set `stopping`), so none can land in this block
        stopped = True
    except BaseException:
        _StopState.working = False  # so no Stopped lands in the `finally` before the clean-up starts
        raise
    finally:
        _StopState.working = False
        _StopState.stopping = True
        try:
            clean_up()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _StopState.stopping = False
    return stopped
