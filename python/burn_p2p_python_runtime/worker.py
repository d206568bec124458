"""The worker process.

    python -m burn_p2p_python_runtime.worker --factory MODULE:ATTR --config-json JSON \
        --connect-host HOST --connect-port PORT

``--config-file PATH`` may stand for ``--config-json``: the TypeScript client
uses it so the config stays out of argv (visible in ``ps``, 128 KiB per
argument on Linux); the reference client's ``--config-json`` works unchanged.
The worker reads the file and deletes it first thing after parsing argv,
before anything slow, so it does not outlive a client that dies during start.

Loads the workload (``MODULE.ATTR(config)``) before connecting, connects to the
client's listener and serves one request at a time until ``shutdown`` or EOF.

Exit status: 0 after ``shutdown`` or when the client closes the connection;
1 when the stream breaks (a bad frame, a reset, a failed connect); 2 when the
command line, the environment or the workload factory is unusable (the first
stderr line says why, a traceback follows). The orphan guard (below) ends with
SIGKILL when the worker leads its process group, else with 0.

Environment:
- ``BURN_P2P_WORKER_MAX_FRAME_BYTES``: largest frame body, both ways
  (default 268435456; the TypeScript client passes its ``maxFrameBytes``). A
  longer request header gets a ``FrameError`` answer, then exit 1. A longer
  answer is not sent: the request gets a ``ResultTooLargeError`` answer
  instead, and the worker keeps serving.
- ``BURN_P2P_WORKER_EXIT_ON_STDIN_EOF=1``: an orphan guard. Off by default
  because the reference client gives the worker /dev/null; a client that keeps
  a pipe open on stdin sets it, since the pipe closes when the client process
  dies, however it dies. At EOF on stdin (even mid-call, even while the
  factory loads) the worker kills every process it started, found by parent
  pid in ``/proc`` (stopped first, so none can fork away), and each one's
  process group unless it is the worker's own (``setsid`` children included);
  then, if it leads its own process group (the TypeScript client starts it
  so), that whole group with ``os.killpg``, itself included: it then dies of
  SIGKILL. Otherwise (the group is someone else's) it exits with status 0.
  The connection reaches EOF at the same moment: a worker that was idle then
  waits up to ``ORPHAN_GUARD_GRACE`` for the guard before it exits, so that its
  workload's processes die with it.
  Without ``/proc``, only the group kill is done.
- ``BURN_P2P_WORKER_CONNECT_TOKEN``: a per-start secret (the TypeScript client
  sends 64 lowercase hex characters). When set and non-empty, the worker
  removes it from its environment at once (workload children never see it)
  and, right after its TCP connect, before reading any request, sends one
  frame whose body is the compact JSON ``{"connect_token":"<token>","pid":N,"pgid":N}``, so the
  client can tell its own worker from any other local process that connects.
  Absent or empty: no such frame (the reference client knows no token).

Limits on JSON nesting and on the size of error answers: see ``limits``.
"""

import argparse
import json
import os
import sys
import threading

from .dispatch import Dispatcher, encode_error_response, error_response
from .limits import MAX_MESSAGE_CHARS, QUOTE_CHARS, clip_head, quote
from .transport import DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_ENV, FrameError, connect, read_frame, write_frame
from .workload_adapter import WorkloadAdapter, load_factory

STDIN_GUARD_ENV = "BURN_P2P_WORKER_EXIT_ON_STDIN_EOF"
ORPHAN_GUARD_GRACE = 1.0
"""Seconds a worker whose connection reached EOF waits for the stdin guard (the client may be dead) before it exits."""
CONNECT_TOKEN_ENV = "BURN_P2P_WORKER_CONNECT_TOKEN"


def main(argv=None):
    # Out of the environment before anything else runs: workload children must not inherit it.
    token = os.environ.pop(CONNECT_TOKEN_ENV, "")
    args = _parse_args(argv)
    try:
        config_text = _read_config(args)
    except OSError as error:
        _complain(f"cannot read --config-file {quote(args.config_file)}: {error}")
        return 2
    try:
        max_frame_bytes = _max_frame_bytes()
    except ValueError as error:
        _complain(str(error))
        return 2
    guard = None
    if os.environ.get(STDIN_GUARD_ENV) == "1":
        # Before the factory loads: a client may die during a slow start.
        guard = _start_orphan_guard()
    try:
        workload = load_factory(args.factory)(_decode_config(args, config_text))
    except Exception as error:
        # The config is not printed: it may hold secrets.
        message = clip_head(f"{type(error).__name__}: {error}", MAX_MESSAGE_CHARS)
        _complain(f"cannot load workload factory {quote(args.factory)}: {message}")
        from .dispatch import format_traceback

        print(format_traceback(error), end="", file=sys.stderr, flush=True)
        return 2
    dispatcher = Dispatcher(WorkloadAdapter(workload))
    del config_text
    # The pid and group let the client tell a worker a launcher moved into its own session (setsid).
    proof = {"connect_token": token, "pid": os.getpid(), "pgid": os.getpgrp()}
    token_frame = json.dumps(proof, separators=(",", ":")).encode("utf-8") if token else None
    try:
        sock = connect(args.connect_host, args.connect_port)
    except OSError as error:
        _complain(f"cannot connect to {clip_head(args.connect_host, QUOTE_CHARS)}:{args.connect_port}: {error}")
        return 1
    with sock:
        if token_frame is not None:
            try:
                write_frame(sock, token_frame)
            except OSError as error:
                _complain(f"connection lost while sending the connect token: {error}")
                return 1
        # A client that dies closes the connection and stdin at once: at EOF the guard gets its
        # moment to kill the workload's processes, else an idle worker's return would beat it.
        on_eof = None if guard is None else (lambda: guard.join(ORPHAN_GUARD_GRACE))
        return serve(sock, dispatcher, max_frame_bytes, on_eof)


def serve(sock, dispatcher, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES, on_eof=None):
    """Answers requests until shutdown (0), EOF (0, after ``on_eof()``) or a broken stream (1)."""
    while True:
        try:
            body = read_frame(sock, max_frame_bytes)
        except FrameError as error:
            # The stream is out of step: answer once, without an id, and stop.
            _complain(f"{error}; closing the connection")
            try:
                write_frame(sock, encode_error_response(error_response(None, error, error_type="FrameError"), max_frame_bytes))
            except OSError:
                pass
            return 1
        except OSError as error:
            _complain(f"connection lost while reading a request: {error}")
            return 1
        if body is None:
            if on_eof is not None:
                on_eof()
            return 0
        response, stop = dispatcher.handle_frame(body, max_frame_bytes)
        # Drop the request before waiting for the next one: it can be hundreds of MiB.
        del body
        try:
            write_frame(sock, response)
        except OSError as error:
            _complain(f"connection lost while answering: {error}")
            return 1
        if stop:
            return 0


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m burn_p2p_python_runtime.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--factory", required=True, help="MODULE:ATTR of the workload factory")
    config = parser.add_mutually_exclusive_group(required=True)
    config.add_argument("--config-json", help="JSON value passed to the factory")
    config.add_argument(
        "--config-file",
        help="file holding that JSON instead (extension: kept out of argv, where every user sees it and one argument is capped at 128 KiB)",
    )
    parser.add_argument("--connect-host", required=True)
    parser.add_argument("--connect-port", required=True, type=int)
    return parser.parse_args(argv)


def _read_config(args):
    """The config text; a ``--config-file`` is read, then deleted (already gone is fine)."""
    if args.config_file is None:
        return args.config_json
    with open(args.config_file, "rb") as handle:
        data = handle.read()
    try:
        os.unlink(args.config_file)
    except FileNotFoundError:
        pass
    return data


def _decode_config(args, text):
    source = "--config-file" if args.config_file is not None else "--config-json"
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{source} is not valid JSON: {clip_head(str(error), MAX_MESSAGE_CHARS)}") from error


def _max_frame_bytes():
    raw = os.environ.get(MAX_FRAME_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_FRAME_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_FRAME_ENV} must be a positive integer, got {quote(raw)}")
    return value


def _start_orphan_guard():
    # Imported here, by the main thread: the guard must not import while the
    # main thread may hold an import lock (a factory importing torch).
    import signal  # noqa: F401 (kill_descendants' import is then a lookup)

    def watch_stdin():
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        killed = "?"
        # Every /proc read below gives the GIL away: a main thread busy in Python
        # code would keep it for a whole switch interval (5 ms) each time, and a
        # walk of a few hundred processes would take seconds. Take it back fast.
        sys.setswitchinterval(1e-4)
        try:
            killed = kill_descendants()
        finally:
            try:
                # Not print(): the main thread may hold sys.stderr's lock. The
                # client held stderr's reading end too: the write may fail, and
                # the worker must exit all the same.
                _write_stderr_nowait(f"burn_p2p worker: stdin reached EOF: the client is gone; killed {killed} processes; exiting\n")
                # Last, in one step, whatever is left of the group: this process too.
                kill_own_group()
            finally:
                os._exit(0)

    thread = threading.Thread(target=watch_stdin, name="stdin-eof-guard", daemon=True)
    thread.start()
    return thread


def kill_descendants(proc="/proc"):
    """SIGKILLs every process this one started, their process groups, and the rest of its own group if it leads it.

    Returns how many processes it signalled. Descendants are found by parent
    pid and SIGSTOPped as they are found, walk after walk until a walk finds
    none new, so none can fork away or be reparented before the kill. Groups
    are killed too (a descendant's orphaned children stay in its group) but
    never the worker's own unless it leads it, nor its parent's, nor group 1.
    Processes vanishing mid-walk are skipped. Without ``/proc`` it does
    nothing (``kill_own_group`` then does what it can).
    """
    import signal

    me = os.getpid()
    own_group = os.getpgrp()
    leader = own_group == me
    try:
        table = _process_table(proc)
        if me not in table:
            raise OSError(f"{proc} does not list this process")
    except OSError:
        return 0
    found = {}
    try:
        for _ in range(1000):
            fresh = [pid for pid in _descendants(table, me) if pid not in found]
            if not fresh:
                break
            for pid in fresh:
                found[pid] = table[pid][1]
                _signal(pid, signal.SIGSTOP)
            table = _process_table(proc)
    finally:
        # Read again, all of them stopped: a group may have changed (setsid) since a pid was found.
        try:
            table = _process_table(proc)
        except OSError:
            pass
        for pid in found:
            if pid in table:
                found[pid] = table[pid][1]
            _signal(pid, signal.SIGKILL)
        spared = {own_group, _group_of(os.getppid())}
        for group in set(found.values()) - spared:
            if group > 1:
                _signal(-group, signal.SIGKILL)
        if leader:
            for pid, (_, group) in table.items():
                if group == own_group and pid != me:
                    found.setdefault(pid, group)
                    _signal(pid, signal.SIGKILL)
    return len(found)


def kill_own_group():
    """SIGKILLs this process's group, this process included, if it leads it; never someone else's group."""
    import signal

    group = os.getpgrp()
    if group == os.getpid():
        _signal(-group, signal.SIGKILL)


def _process_table(proc):
    """``{pid: (ppid, pgrp)}`` of every process in ``proc``; raises OSError only when ``proc`` cannot be listed."""
    table = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                stat = handle.read()
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat[stat.rindex(b")") + 2 :].split()
            table[int(name)] = (int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue  # gone mid-walk, or unreadable
    return table


def _descendants(table, root):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, seen, queue = [], {root}, list(children.get(root, ()))
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue  # a pid reused between two reads of the table
        seen.add(pid)
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def _signal(pid, signum):
    """``os.kill``; a negative pid is a process group. A process already gone is not an error."""
    try:
        if pid < 0:
            os.killpg(-pid, signum)
        else:
            os.kill(pid, signum)
    except OSError:
        pass


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _write_stderr_nowait(text):
    try:
        if not os.isatty(2):
            # A stderr pipe nobody reads must not hold up the exit.
            os.set_blocking(2, False)
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _complain(message):
    print(f"burn_p2p worker: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
