"""The warm ClientApp executor: runs Flower ClientApp tasks for one or more SuperNodes in one
long-lived process that keeps Keras, the model and the clients' data loaded.

Flower's SuperNode hands every message to a task executor. Its own, `flower-superexec`, starts
a fresh `flwr-clientapp` process per message; importing TensorFlow and Keras there would cost
about 6 s of CPU per client per round. A SuperNode started with `--isolation process` instead
waits for an outside executor to take its tasks over its Runtime API, which is what this
process does: it asks each of its SuperNodes for tasks (`AcquireTask`, as SuperExec does) and
runs each one the way `flwr-clientapp` does (`flwr.supernode.runtime.run_clientapp`: pull the
message, context and FAB, install the FAB, load the ClientApp named in it, call it, push the
reply and the context back, with the task's heartbeat running) without leaving the process.
The ClientApp is Flower's own object (workbench.federated.client_app), mods included
(client-side DP clipping), and finds the warm worker of its node in
`workbench.federated.task.LOCAL_WORKERS`.

    python -m workbench.federated.executor JOB CLIENT=RUNTIME_ADDRESS [CLIENT=ADDRESS ...]

A SuperNode that stops answering (killed, or gone) is asked again every few seconds; the
SuperLink, not the executor, decides what its absence means for a round.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

POLL_SECONDS = 0.05  # between a SuperNode's answers that it has no task, at first;
MAX_POLL_SECONDS = 0.4  # doubling while it has none (idle polling costs the clients' CPU)
RETRY_SECONDS = 2.0  # before asking a SuperNode that did not answer again


def _runtime_client(address, token=None):
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, \
        RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors = [RuntimeVersionHttpInterceptor(
        component_name="flwr-clientapp" if token else "SuperExec")]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    # No retry invoker: Flower's retries back off for minutes (and end the process on an
    # unauthorised reply); here a failed call fails the one task, and the loop goes on.
    return RuntimeHttpClient.from_server_address(address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors)


_INSTALLED_FABS: set = set()
_INSTALL_LOCK = threading.Lock()


def run_task(address, token):
    """One ClientApp task, as `flwr-clientapp --token TOKEN` runs it, in this process."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, \
        push_task_output

    client = _runtime_client(address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    message = reply = context = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        heartbeat.start()
        message, context, run, fab = pull_task_input(client)
        with _INSTALL_LOCK:
            if fab.hash_str not in _INSTALLED_FABS:
                install_from_fab(fab.content, skip_prompt=True)
                _INSTALLED_FABS.add(fab.hash_str)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        client_app = load(run.fab_id, run.fab_version, fab.hash_str)
        reply = client_app(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # the task fails; Flower's SuperLink counts a failed reply
        code = (ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(error, LoadClientAppError)
                else ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
        details = f"{type(error)}:<'{error}'>"
        print(f"task failed: {type(error).__name__}: {error}", flush=True)
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
            push_task_output(client, context, sub_status, details)
        except Exception as error:  # the SuperNode went away mid-task
            print(f"could not hand the reply back: {type(error).__name__}: {error}", flush=True)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()


def serve(nodes):
    """Take and run the tasks of `nodes` ({client: runtime address}) until the process ends:
    one thread per SuperNode, so a SuperNode that hangs or dies mid-task holds up only its own
    tasks; the clients' Keras work takes turns on the workers' shared lock."""
    threads = [threading.Thread(target=_serve_node, args=(address,), daemon=True,
                                name=f"client-{client}") for client, address in nodes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _serve_node(address):
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    poller = _runtime_client(address)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    wait = POLL_SECONDS
    while True:
        try:
            response = poller.AcquireTask(request)
        except Exception:  # the SuperNode is not (or no longer) there
            time.sleep(RETRY_SECONDS)
            continue
        if response.HasField("task") and response.token:
            run_task(address, response.token)
            wait = POLL_SECONDS
        else:
            time.sleep(wait)
            wait = min(2 * wait, MAX_POLL_SECONDS)


def parse_nodes(arguments):
    nodes = {}
    for argument in arguments:
        client, _, address = argument.partition("=")
        if not address:
            raise SystemExit(f"expected CLIENT=RUNTIME_ADDRESS, got '{argument}'")
        nodes[int(client)] = address
    return nodes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    job_path, nodes = argv[0], parse_nodes(argv[1:])
    from workbench.quiet import configure_environment

    configure_environment(debug=False)
    import keras

    from workbench.federated import task
    from workbench.federated.jobs import read_job

    job = read_job(job_path)
    keras.utils.set_random_seed(job["seed"] + min(nodes))
    started = time.perf_counter()
    task.LOCAL_WORKERS.update(task.client_workers(job, sorted(nodes)))
    sizes = ", ".join(f"{client}: {task.LOCAL_WORKERS[client].train_examples}"
                      for client in sorted(nodes))
    print(f"executor of clients {sorted(nodes)} ready in {time.perf_counter() - started:.1f} s "
          f"(training examples {sizes})", flush=True)
    ready = os.environ.get("WORKBENCH_EXECUTOR_READY")
    if ready:
        Path(ready).write_text("ready\n")
    serve(nodes)


if __name__ == "__main__":
    main()
