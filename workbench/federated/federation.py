"""A real Flower federation on this machine: one SuperLink, one SuperNode per client, and the
warm executors that run the SuperNodes' ClientApp tasks, all on 127.0.0.1 with free ports,
stopped together.

Flower's own executor starts a fresh `flwr-clientapp` process for every message it hands a
SuperNode; importing TensorFlow and Keras takes about 6 s of CPU, which every client would pay
in every round. The SuperNodes here run in Flower's `process` isolation mode instead, and a few
long-lived executor processes (`workbench.federated.executor`, one per CPU core by default) take
their tasks over the SuperNodes' Runtime API and run the ClientApp with the model, the optimizer
and the clients' data kept loaded. Everything Flower does (sampling, aggregation, privacy,
message routing, node failure) stays Flower's.

Every process this module starts is in its own process group and is stopped when the federation
closes, on success, on failure, on Ctrl-C and on SIGTERM (`Federation` is a context manager; an
`atexit` hook covers an interpreter that exits another way); on Linux each also gets SIGKILL
from the kernel when the stage's process dies, even by SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError

# Flower runs offline here: no telemetry, no update check, and an app's dependencies are the
# installed environment's (no `uv sync` at run time).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    # SuperExec looks for new ClientApp tasks every second by default; a round waits on it.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05",
}
FLOWER_EXTRA = 'pip install -e ".[dev]"  (or: pip install "flwr[dp]==1.42.0")'


def check_flower_installed():
    """Flower missing is bad input: say what to install."""
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise WorkbenchError(f"the federated stage needs Flower (flwr 1.42), which is not "
                             f"installed; install it with {FLOWER_EXTRA}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(port, what):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise WorkbenchError(f"{what} port {port} on 127.0.0.1 is in use; choose another or "
                                 "leave it at 0 for a free one") from None


def _port_open(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_until(ready, timeout, process, what, log=None):
    """Wait until `ready()`; fail as soon as `process` exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was "
                               f"ready{_log_tail(log)}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s{_log_tail(log)}")


def _log_tail(log):
    if log is None or not Path(log).is_file():
        return ""
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    return f" (last log line: {lines[-1][:200]})" if lines else ""


def flower_environment(home):
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(home)
    # The executors and apps import the workbench from this checkout too.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


_LIVE: set = set()


def _stop_all_live():
    for process in list(_LIVE):
        _stop(process, grace=1.0)


atexit.register(_stop_all_live)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _die_with_parent():
    """In the child, before exec: the kernel sends it SIGKILL when its parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _die_with_us():
    """Popen arguments for a child that the kernel kills when this process dies (Linux). The
    signal follows the thread that started the child, so children are started by threads that
    outlive them (the main thread, or the thread that waits for the child)."""
    return {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}


def _stop(process, grace=3.0):
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children of the group (SuperExec, ClientApp processes) may outlive the leader
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _LIVE.discard(process)


@dataclass
class Node:
    """One client: its SuperNode (with its Runtime API port) and the executor that serves it."""

    index: int
    runtime_port: int
    executor: int = 0
    supernode: subprocess.Popen | None = None


@dataclass
class Federation:
    """The processes of one local federation. Use as a context manager:

        with Federation(directory, job_path, clients=10) as federation:
            federation.start(executors=2)
            federation.run(app_dir, run_config, "run.log")
    """

    directory: Path
    job_path: Path
    clients: int
    superlink_port: int = 0
    processes: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    say: object = print

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.home = self.directory / "flwr_home"
        self.logs = self.directory / "logs"

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self):
        # SIGTERM (a scheduler, `timeout`, `kill`) would end Python without unwinding, leaving
        # the federation's processes behind: turn it into an exit that runs `close`.
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc):
        self.close()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        return False

    def _spawn(self, command, log_name, env):
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / log_name, "ab")
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       **_die_with_us())
        finally:
            log.close()
        self.processes.append(process)
        _LIVE.add(process)
        return process

    def start(self, executors=1, ready_timeout=180.0):
        """Start the SuperLink, the executors, then every SuperNode, and wait until all are up.
        Clients are dealt to `executors` executor processes in turn."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = flower_environment(self.home)
        if not self.superlink_port:
            self.superlink_port = free_port()
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "workbench"\n\n[superlink.workbench]\n'
            f'address = "127.0.0.1:{self.superlink_port}"\ninsecure = true\n')
        self.superlink = self._spawn(
            [_script("flower-superlink"), "--insecure", "--host", "127.0.0.1",
             "--port", str(self.superlink_port), "--disable-runtime-dependency-installation"],
            "superlink.log", env)
        executors = max(1, min(executors, self.clients))
        self.nodes = [Node(index, free_port(), index % executors)
                      for index in range(self.clients)]
        # The executors share the cores: each gets its share of TensorFlow's op threads.
        threads = max(1, (os.cpu_count() or 1) // executors)
        executor_env = dict(env, TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTEROP_THREADS="1",
                            TF_NUM_INTRAOP_THREADS=str(threads))
        self.executors = []
        for k in range(executors):
            ready = self.directory / f"executor-{k}.ready"
            ready.unlink(missing_ok=True)
            nodes = [f"{n.index}=127.0.0.1:{n.runtime_port}" for n in self.nodes
                     if n.executor == k]
            process = self._spawn(
                [sys.executable, "-m", "workbench.federated.executor", str(self.job_path),
                 *nodes], f"executor-{k}.log",
                dict(executor_env, WORKBENCH_EXECUTOR_READY=str(ready)))
            self.executors.append((process, ready))
        _wait_until(lambda: _port_open(self.superlink_port), 60, self.superlink,
                    "the Flower SuperLink", self.logs / "superlink.log")
        started = time.monotonic()
        for node in self.nodes:
            self.start_supernode(node, env)
        for k, (process, ready) in enumerate(self.executors):
            left = max(5.0, ready_timeout - (time.monotonic() - started))
            _wait_until(ready.exists, left, process, f"executor {k}",
                        self.logs / f"executor-{k}.log")
        self.say(f"  federation up: SuperLink 127.0.0.1:{self.superlink_port}, "
                 f"{self.clients} SuperNodes, {executors} executor"
                 f"{'s' if executors > 1 else ''} ({time.monotonic() - started:.1f} s to load "
                 "the model and the clients' data)")

    def start_supernode(self, node, env=None):
        env = env or flower_environment(self.home)
        node_config = f'client={node.index} job="{self.job_path}"'
        node.supernode = self._spawn(
            [_script("flower-supernode"), "--insecure",
             "--superlink", f"127.0.0.1:{self.superlink_port}",
             "--isolation", "process",
             "--host", "127.0.0.1", "--port", str(node.runtime_port),
             "--node-config", node_config],
            f"supernode-{node.index}.log", env)

    def kill_supernode(self, index):
        """SIGKILL one SuperNode (and its ClientApp processes), as a crashed device would go."""
        node = self.nodes[index]
        if node.supernode is not None and node.supernode.poll() is None:
            os.killpg(node.supernode.pid, signal.SIGKILL)
            node.supernode.wait()

    def close(self):
        for process in reversed(self.processes):
            _stop(process)
        self.processes = []

    # ---- runs ----------------------------------------------------------------------------

    def run(self, app_dir, run_config, log_name, on_line=None, timeout=None):
        """`flwr run APP workbench --stream` with `run_config`; lines the ServerApp marks for
        people go to `on_line`, everything to `logs/<log_name>`. Returns the exit code."""
        env = flower_environment(self.home)
        pairs = " ".join(f"{key}={_toml_value(value)}" for key, value in run_config.items())
        command = [_script("flwr"), "run", str(app_dir), "workbench", "--stream",
                   "--run-config", pairs]
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / log_name, "a", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       env=env, stdin=subprocess.DEVNULL, text=True,
                                       start_new_session=True, bufsize=1, **_die_with_us())
            self.processes.append(process)
            _LIVE.add(process)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
                    if deadline is not None and time.monotonic() > deadline:
                        raise RuntimeError(f"the Flower run did not finish within {timeout:.0f} s")
                return process.wait()
            finally:
                _stop(process, grace=1.0)
                self.processes.remove(process)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _script(name):
    """A console script of this interpreter's environment (the one Flower is installed in)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def write_app(directory, clientapp="workbench.federated.client_app:client_app",
              serverapp="workbench.federated.server_app:server_app"):
    """A Flower App directory (`pyproject.toml` naming the workbench's ServerApp and
    ClientApp); `flwr run` bundles it and the SuperLink and SuperNodes load the apps from the
    installed workbench."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(f'''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "workbench-federated"
version = "1.0.0"
description = "The workbench's federated training of a recipe's Keras model"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "workbench"

[tool.flwr.app.components]
serverapp = "{serverapp}"
clientapp = "{clientapp}"

[tool.flwr.app.config]
job = ""
strategy = "fedavg"
label = "fedavg"
resume = false
''')
    (directory / "workbench_app.py").write_text(
        '"""The workbench\'s Flower apps live in the installed package '
        '(workbench.federated.server_app, workbench.federated.client_app)."""\n')
    return directory
