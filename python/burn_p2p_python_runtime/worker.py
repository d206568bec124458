"""The worker process.

    python -m burn_p2p_python_runtime.worker --factory MODULE:ATTR --config-json JSON \
        --connect-host HOST --connect-port PORT

``--config-file PATH`` may stand for ``--config-json``: the TypeScript client
uses it so the config stays out of argv (visible in ``ps``, 128 KiB per
argument on Linux); the reference client's ``--config-json`` works unchanged.

Loads the workload (``MODULE.ATTR(config)``) before connecting, connects to the
client's listener and serves one request at a time until ``shutdown`` or EOF.

Exit status: 0 after ``shutdown`` or when the client closes the connection;
1 when the stream breaks (a bad frame, a reset, a failed connect); 2 when the
command line, the environment or the workload factory is unusable (the first
stderr line says why, a traceback follows).

Environment:
- ``BURN_P2P_WORKER_MAX_FRAME_BYTES``: largest request body accepted
  (default 268435456). A longer header gets a ``FrameError`` answer, then exit 1.
- ``BURN_P2P_WORKER_EXIT_ON_STDIN_EOF=1``: exit as soon as stdin reaches EOF.
  Off by default because the reference client gives the worker /dev/null; a
  client that keeps a pipe open on stdin gets an orphan guard, since the pipe
  closes when the client process dies, however it dies.
"""

import argparse
import json
import os
import sys
import threading

from .dispatch import Dispatcher, encode_response, error_response
from .transport import DEFAULT_MAX_FRAME_BYTES, FrameError, connect, read_frame, write_frame
from .workload_adapter import WorkloadAdapter, load_factory

MAX_FRAME_ENV = "BURN_P2P_WORKER_MAX_FRAME_BYTES"
STDIN_GUARD_ENV = "BURN_P2P_WORKER_EXIT_ON_STDIN_EOF"


def main(argv=None):
    args = _parse_args(argv)
    try:
        max_frame_bytes = _max_frame_bytes()
    except ValueError as error:
        _complain(str(error))
        return 2
    if os.environ.get(STDIN_GUARD_ENV) == "1":
        _start_orphan_guard()
    try:
        workload = load_factory(args.factory)(_decode_config(args))
    except Exception as error:
        # The config is not printed: it may hold secrets.
        _complain(f"cannot load workload factory {args.factory!r}: {type(error).__name__}: {error}")
        import traceback

        traceback.print_exception(error, file=sys.stderr)
        return 2
    dispatcher = Dispatcher(WorkloadAdapter(workload))
    try:
        sock = connect(args.connect_host, args.connect_port)
    except OSError as error:
        _complain(f"cannot connect to {args.connect_host}:{args.connect_port}: {error}")
        return 1
    with sock:
        return serve(sock, dispatcher, max_frame_bytes)


def serve(sock, dispatcher, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
    """Answers requests until shutdown (0), EOF (0) or a broken stream (1)."""
    while True:
        try:
            body = read_frame(sock, max_frame_bytes)
        except FrameError as error:
            # The stream is out of step: answer once, without an id, and stop.
            _complain(f"{error}; closing the connection")
            try:
                write_frame(sock, encode_response(error_response(None, error, error_type="FrameError")))
            except OSError:
                pass
            return 1
        except OSError as error:
            _complain(f"connection lost while reading a request: {error}")
            return 1
        if body is None:
            return 0
        response, stop = dispatcher.handle_frame(body)
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


def _decode_config(args):
    if args.config_file is not None:
        with open(args.config_file, encoding="utf-8") as handle:
            text, source = handle.read(), "--config-file"
    else:
        text, source = args.config_json, "--config-json"
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from error


def _max_frame_bytes():
    raw = os.environ.get(MAX_FRAME_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_FRAME_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_FRAME_ENV} must be a positive integer, got {raw!r}")
    return value


def _start_orphan_guard():
    def watch_stdin():
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        try:
            _complain("stdin reached EOF: the client is gone; exiting")
        finally:
            # The client held stderr's reading end too: the message may raise
            # BrokenPipeError, and the worker must exit all the same.
            os._exit(0)

    threading.Thread(target=watch_stdin, name="stdin-eof-guard", daemon=True).start()


def _complain(message):
    print(f"burn_p2p worker: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
