"""The worker against pathological input: deep or broken JSON, huge values, results it cannot send, a dying parent, a connect token."""

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from burn_p2p_python_runtime import dispatch, limits
from burn_p2p_python_runtime import worker as worker_module
from burn_p2p_python_runtime.dispatch import Dispatcher, decode_request, error_response
from burn_p2p_python_runtime.limits import (
    MAX_ERROR_CHARS,
    MAX_JSON_DEPTH,
    MAX_TRACEBACK_CHARS,
    QUOTE_CHARS,
    clip_head,
    clip_middle,
    nests_deeper_than,
    quote,
)
from burn_p2p_python_runtime.transport import read_frame, write_frame
from burn_p2p_python_runtime.workload_adapter import WorkloadAdapter, load_factory
from tests.helpers import micro_epoch
from tests.test_worker import DEADLINE, WorkerProcess

HARDENING = "hardening_workload:make"
GUARD = {"BURN_P2P_WORKER_EXIT_ON_STDIN_EOF": "1"}
TOKEN_ENV = "BURN_P2P_WORKER_CONNECT_TOKEN"
TEN_MB = 10 * 1024 * 1024


def nested(depth, shape):
    """A value ``depth`` containers deep (0 is a scalar): all lists, all objects, or alternating."""
    value = 0
    for level in range(depth):
        as_list = shape == "lists" or (shape == "mixed" and level % 2 == 0)
        value = [value] if as_list else {"k": value}
    return value


def deep_bytes(depth, shape):
    """The JSON text of ``nested(depth, shape)``, built without recursion (any depth)."""
    opens, closes = [], []
    for level in range(depth):
        as_list = shape == "lists" or (shape == "mixed" and level % 2 == 0)
        opens.append(b"[" if as_list else b'{"k":')
        closes.append(b"]" if as_list else b"}")
    return b"".join(reversed(opens)) + b"0" + b"".join(closes)


def deep_request(request_id, params_depth, shape):
    """An ``apply_patch`` frame whose params are ``params_depth`` deep, in our client's layout."""
    inner = deep_bytes(params_depth - 1, shape)
    return (b'{"id":%d,"method":"apply_patch","params":{"do":"echo","expect_depth":%d,"x":' % (request_id, params_depth)
            + inner + b"}}")


def wait_until(predicate, timeout=DEADLINE, what="condition"):
    """Polls ``predicate`` (every 10 ms) until it holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def gone(pid):
    """True when ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] == b"Z"


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class HardWorker(WorkerProcess):
    def __init__(self, test, factory=HARDENING, **kwargs):
        super().__init__(test, factory=factory, **kwargs)

    def raw(self, body, max_frame_bytes=1 << 30):
        """Sends ``body`` as one frame and returns the decoded answer and its size; the answer must fit ``max_frame_bytes``."""
        write_frame(self.sock, body)
        frame = read_frame(self.sock, max_frame_bytes)
        self.test.assertIsNotNone(frame, "worker closed the connection instead of answering")
        return json.loads(frame), len(frame)

    def assert_serving(self, model):
        """The worker answers, and ``model`` is still in its table."""
        self.test.assertEqual(self.result("hello")["workload_name"], "hardening")
        self.test.assertEqual(self.result("evaluate", {"model_id": model, "split": "Test"}), {"metrics": {"split": "Test"}})
        self.test.assertIsNone(self.process.poll())

    def read_stderr_line_containing(self, text):
        """Reads the worker's stderr until a line holding ``text`` (bounded wait); the rest stays for ``wait``."""
        deadline = time.monotonic() + DEADLINE
        buffered = b""
        fd = self.process.stderr.fileno()
        while text.encode() not in buffered:
            remaining = deadline - time.monotonic()
            self.test.assertGreater(remaining, 0, f"no {text!r} on stderr; got {buffered!r}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                self.test.assertTrue(chunk, f"stderr closed before {text!r}; got {buffered!r}")
                buffered += chunk
        return buffered


def assert_error_answer(test, response, error_type, request_id, *fragments):
    test.assertFalse(response["ok"])
    test.assertEqual(response["error_type"], error_type, response.get("error", "")[:2000])
    test.assertEqual(response["id"], request_id)
    test.assertTrue(response["error"].startswith(f"{error_type}: "), response["error"][:300])
    test.assertIn("Traceback (most recent call last):", response["traceback"])
    for fragment in fragments:
        test.assertIn(fragment, response["error"])
    test.assertLessEqual(len(response["error"]), MAX_ERROR_CHARS)
    test.assertLessEqual(len(response["traceback"]), MAX_TRACEBACK_CHARS)


class JsonDepthTest(unittest.TestCase):
    def test_the_limit_is_256_and_one_constant(self):
        self.assertEqual(limits.MAX_JSON_DEPTH, 256)
        self.assertIs(dispatch.MAX_JSON_DEPTH, limits.MAX_JSON_DEPTH)

    def test_requests_up_to_the_limit_reach_the_workload_and_round_trip(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        for shape in ("lists", "objects", "mixed"):
            for depth in (1, 2, 100, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH):
                with self.subTest(shape=shape, depth=depth):
                    params = {"do": "echo", "expect_depth": depth, "x": nested(depth - 1, shape)}
                    self.assertEqual(worker.result("apply_patch", params), params)
                    # The same request as raw bytes, in the client's layout.
                    worker.next_id += 1
                    response, _ = worker.raw(deep_request(worker.next_id, depth, shape))
                    self.assertTrue(response["ok"], response.get("error", "")[:2000])
                    self.assertEqual(response["result"]["expect_depth"], depth)
        worker.assert_serving(model)

    def test_deeper_requests_get_an_error_with_their_id_and_the_worker_keeps_its_models(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        for shape in ("lists", "objects", "mixed"):
            for depth in (MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 2, 600, 999, 1100, 5000, 100_000):
                with self.subTest(shape=shape, depth=depth):
                    worker.next_id += 1
                    response, size = worker.raw(deep_request(worker.next_id, depth, shape))
                    assert_error_answer(self, response, "RequestTooDeepError", worker.next_id, f"depth limit of {MAX_JSON_DEPTH}")
                    self.assertLess(size, 64 * 1024)
                    worker.assert_serving(model)

    def test_results_up_to_the_limit_are_sent_and_deeper_ones_refused(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        self.assertEqual(worker.result("apply_patch", {"do": "nest", "depth": MAX_JSON_DEPTH}), nested(MAX_JSON_DEPTH, "lists"))
        for depth in (MAX_JSON_DEPTH + 1, 900, 1100, 5000, 100_000):
            with self.subTest(depth=depth):
                response = worker.call("apply_patch", {"do": "nest", "depth": depth})
                assert_error_answer(self, response, "ResultTooDeepError", worker.next_id, f"depth limit of {MAX_JSON_DEPTH}")
                worker.assert_serving(model)

    def test_nests_deeper_than_counts_containers_of_every_shape(self):
        for shape in ("lists", "objects", "mixed"):
            for depth in (0, 1, 5, 256, 300):
                value = nested(depth, shape)
                self.assertFalse(nests_deeper_than(value, depth))
                self.assertEqual(nests_deeper_than(value, depth - 1), depth > 0)
        # Wide levels (the many-containers path) with one deep branch hidden among them.
        wide = [[i, [i]] for i in range(1000)] + [nested(10, "mixed")]
        self.assertFalse(nests_deeper_than(wide, 11))
        self.assertTrue(nests_deeper_than(wide, 10))
        few = {"a": list(range(10_000)), "b": [1, 2, [3, [4]]]}
        self.assertFalse(nests_deeper_than(few, 4))
        self.assertTrue(nests_deeper_than(few, 3))
        # Results may hold tuples and subclasses: those count too when not exact.
        class Mapping(dict):
            pass

        odd = (Mapping(a=(1, [2])),)
        self.assertTrue(nests_deeper_than(odd, 3, exact=False))
        self.assertFalse(nests_deeper_than(odd, 4, exact=False))

    def test_a_request_at_the_limit_parses_with_a_deep_call_stack(self):
        body = deep_request(1, MAX_JSON_DEPTH, "mixed")

        def at_depth(frames):
            return decode_request(body) if frames == 0 else at_depth(frames - 1)

        self.assertEqual(at_depth(200)["id"], 1)


class UndecodableRequestTest(unittest.TestCase):
    PREFIX = b'{"id":%d,"method":"train_window","params":'
    CORRUPT = {
        "invalid UTF-8 in a string": b'{"model_id":"m1\xff\xfe","batches":[]}}',
        "invalid UTF-8 lead byte": b'\xc3\x28}',
        "truncated": b'{"model_id":"m1","batches":[',
        "trailing garbage": b'{"model_id":"m1","batches":[]}} x',
        "bad escape": b'{"model_id":"\\q"}}',
        "bare word": b"undefined}",
        "integer too long to convert": b"1" + b"0" * 5000 + b"}",
        "control character in a string": b'"a\x01b"}',
        "UTF-8-encoded surrogate": b'"\xed\xa0\x80"}',
        "overlong encoding": b'"\xc0\xaf"}',
        "byte order mark": b'\xef\xbb\xbfnull}',
    }

    def test_a_broken_body_is_answered_with_the_id_of_its_prefix(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        for name, tail in self.CORRUPT.items():
            with self.subTest(name=name):
                worker.next_id += 1
                response, _ = worker.raw(self.PREFIX % worker.next_id + tail)
                assert_error_answer(self, response, "RequestDecodeError", worker.next_id, "not UTF-8 JSON")
                worker.assert_serving(model)
        # The id's own spelling: the largest u64, zero, and the spaces serde or a person may add.
        for prefix, request_id in ((b'{"id":18446744073709551615,', 18446744073709551615), (b'{"id":0}', 0),
                                   (b' \n{ "id" : 77 , "method":', 77), (b'{"id":-3,', -3)):
            with self.subTest(prefix=prefix):
                response, _ = worker.raw(prefix + b"\xff")
                assert_error_answer(self, response, "RequestDecodeError", request_id)
        worker.assert_serving(model)

    def test_without_a_readable_id_prefix_the_answer_has_a_null_id(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        cases = [b"", b"[", b"\xff", '{"id":5,"method":"hello","params":null}'.encode("utf-16-le"), b"\xef\xbb\xbf{}", b'{"method":"hello","id":5,\xff', b'{"id":"5",\xff', b'{"id":5.5,\xff', b'{"id":1e3,\xff',
                 b'{"id":123456789012345678901,\xff', b'{"id":05,\xff', b" " * 200 + b'{"id":5,\xff', b'{"ids":5,\xff']
        for body in cases:
            with self.subTest(body=body[:40]):
                response, _ = worker.raw(body)
                assert_error_answer(self, response, "RequestDecodeError", None)
                worker.assert_serving(model)

    def test_out_of_memory_while_decoding_is_an_answer(self):
        with mock.patch.object(dispatch.json, "loads", side_effect=MemoryError()):
            with self.assertRaises(dispatch.RequestDecodeError) as caught:
                decode_request(b'{"id":12,"method":"hello","params":null}')
        self.assertEqual(caught.exception.request_id, 12)
        self.assertIn("out of memory", str(caught.exception))
        self.assertIsInstance(caught.exception, dispatch.MalformedRequestError)


class UnencodableResultTest(unittest.TestCase):
    KINDS = ["set", "object", "unprintable", "bytes", "nan", "inf", "circular", "tuple_key", "huge_int"]

    def test_every_kind_is_an_error_answer_and_the_worker_keeps_serving(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        for kind in self.KINDS:
            if kind == "huge_int" and not hasattr(__import__("sys"), "get_int_max_str_digits"):
                continue  # Before 3.11 any int converts.
            with self.subTest(kind=kind):
                response = worker.call("apply_patch", {"do": "unencodable", "kind": kind})
                assert_error_answer(self, response, "ResultEncodeError", worker.next_id, "cannot be encoded as JSON")
                worker.assert_serving(model)

    def test_out_of_memory_while_encoding_is_an_answer(self):
        dispatcher = Dispatcher(WorkloadAdapter(object()))
        real = dispatch.encode_response
        calls = []

        def encode(response):
            calls.append(response)
            if len(calls) == 1:
                raise MemoryError()
            return real(response)

        with mock.patch.object(dispatch, "encode_response", side_effect=encode):
            payload, stop = dispatcher.handle_frame(b'{"id":3,"method":"shutdown","params":null}')
        answer = json.loads(payload)
        self.assertEqual((answer["id"], answer["ok"], answer["error_type"], stop), (3, False, "ResultEncodeError", False))
        self.assertIn("out of memory", answer["error"])


class ResultTooLargeTest(unittest.TestCase):
    def test_a_result_above_the_frame_limit_is_refused_and_nothing_larger_is_ever_sent(self):
        limit = 4096
        worker = HardWorker(self, env={"BURN_P2P_WORKER_MAX_FRAME_BYTES": str(limit)}).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]

        def big(chars, char="x"):
            worker.next_id += 1
            body = json.dumps({"id": worker.next_id, "method": "apply_patch", "params": {"do": "big", "chars": chars, "char": char}})
            return worker.raw(body.encode(), max_frame_bytes=limit)

        envelope = len(b'{"id":%d,"ok":true,"result":""}' % (worker.next_id + 1))
        response, size = big(limit - envelope)
        self.assertTrue(response["ok"])
        self.assertEqual(size, limit)
        for chars, char in ((limit - envelope + 1, "x"), (limit, "x"), (1000, "\u00e9"), (TEN_MB, "x"), (64 * 1024 * 1024, "y")):
            with self.subTest(chars=chars, char=char):
                response, size = big(chars, char)
                assert_error_answer(self, response, "ResultTooLargeError", worker.next_id, f"above the frame limit of {limit} bytes",
                                    "BURN_P2P_WORKER_MAX_FRAME_BYTES", "'apply_patch'")
                self.assertLessEqual(size, limit)
                worker.assert_serving(model)

    def test_error_answers_shrink_to_fit_a_small_frame_limit(self):
        limit = 400
        worker = HardWorker(self, env={"BURN_P2P_WORKER_MAX_FRAME_BYTES": str(limit)}).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        calls = [
            ({"do": "raise", "chars": 100_000}, "RuntimeError"),
            ({"do": "raise", "chars": 100_000, "chained": True}, "RuntimeError"),
            ({"do": "big", "chars": 1000}, "ResultTooLargeError"),
            ({"do": "big", "chars": 300, "char": "\U0001F600"}, "ResultTooLargeError"),
            ({"do": "unencodable", "kind": "set"}, "ResultEncodeError"),
        ]
        for params, error_type in calls:
            with self.subTest(params=params):
                worker.next_id += 1
                body = json.dumps({"id": worker.next_id, "method": "apply_patch", "params": params}).encode()
                response, size = worker.raw(body, max_frame_bytes=limit)
                self.assertLessEqual(size, limit)
                self.assertEqual((response["id"], response["ok"], response["error_type"]), (worker.next_id, False, error_type))
                self.assertTrue(response["error"].startswith(error_type))
                worker.assert_serving(model)
        worker.next_id += 1
        response, size = worker.raw(b'{"id":%d,"method":"' % worker.next_id + b"f" * 300 + b'"}', max_frame_bytes=limit)
        self.assertEqual(response["error_type"], "UnknownMethodError")

    def test_a_small_limit_still_answers_with_the_bare_error(self):
        bare = dispatch.encode_error_response(error_response(7, RuntimeError("x" * 10_000)), 50)
        self.assertEqual(json.loads(bare), {"id": 7, "ok": False, "error": "RuntimeError"})
        for limit in (90, 120, 200):
            with self.subTest(limit=limit):
                error = RuntimeError("x" * 10_000)
                payload = dispatch.encode_error_response(error_response(7, error), limit)
                answer = json.loads(payload)
                self.assertEqual((answer["id"], answer["ok"], answer["error_type"]), (7, False, "RuntimeError"))
                self.assertLessEqual(len(payload), limit)


class BoundedQuotingTest(unittest.TestCase):
    def test_quote_keeps_a_bounded_prefix_and_the_length(self):
        self.assertEqual(quote("m1"), "'m1'")
        self.assertEqual(quote("x" * QUOTE_CHARS), repr("x" * QUOTE_CHARS))
        long = quote("x" * TEN_MB)
        self.assertEqual(long, repr("x" * QUOTE_CHARS) + f"...({TEN_MB} chars)")
        self.assertEqual(quote(b"y" * TEN_MB), repr(b"y" * QUOTE_CHARS) + f"...({TEN_MB} chars)")
        for value in (["a" * TEN_MB] * 3, {"k" * TEN_MB: "v" * TEN_MB}, list(range(1_000_000)), nested(500, "mixed"),
                      ("t" * TEN_MB,), {1, 2, 3}, 10**4000, object()):
            with self.subTest(kind=type(value).__name__):
                self.assertLessEqual(len(quote(value)), 4 * QUOTE_CHARS)

        class Hostile:
            def __repr__(self):
                raise ValueError("no")

        self.assertIn("repr failed", quote(Hostile()))
        self.assertLessEqual(len(quote([Hostile()] * 3)), 4 * QUOTE_CHARS)

    def test_clips_keep_head_and_tail_within_the_limit(self):
        text = "H" * 5000 + "T" * 5000
        self.assertEqual(clip_head("short", 10), "short")
        self.assertEqual(len(clip_head(text, 100)), 100)
        self.assertTrue(clip_head(text, 100).endswith("...(10000 chars)"))
        middle = clip_middle(text, 100)
        self.assertEqual(len(middle), 100)
        self.assertTrue(middle.startswith("H") and middle.endswith("T"))

    def test_every_message_the_worker_builds_is_bounded(self):
        class Workload:
            workload_name = "w" * TEN_MB

            def init_model(self, device):
                return {}

            def train_window(self, state, batches):
                return {"n" * TEN_MB: float("nan")} if batches else {("t" * TEN_MB,): 1}

            def runtime_device(self):
                raise RuntimeError("r" * TEN_MB)

        dispatcher = Dispatcher(WorkloadAdapter(Workload()))
        self.assertEqual(dispatcher.handle({"id": 1, "method": "init_model", "params": {"device": "cpu"}})[0]["result"], {"model_id": "m1"})
        huge = "z" * TEN_MB
        requests = {
            "UnknownMethodError": {"id": 2, "method": huge},
            "UnknownModelError": {"id": 3, "method": "train_window", "params": {"model_id": huge, "batches": []}},
            "InvalidParamsError": {"id": 4, "method": "init_model", "params": {"device": [huge]}},
            "MalformedRequestError": {"id": huge, "method": "hello"},
            "InvalidMetricError": {"id": 6, "method": "train_window", "params": {"model_id": "m1", "batches": [1]}},
            "NotImplementedError": {"id": 7, "method": "evaluate", "params": {"model_id": "m1", "split": "Test"}},
            "RuntimeError": {"id": 8, "method": "capability_probe"},
        }
        for error_type, request in requests.items():
            with self.subTest(error_type=error_type):
                response, _ = dispatcher.handle(request)
                self.assertEqual(response["error_type"], error_type)
                self.assertLess(len(dispatch.encode_response(response)), 64 * 1024)
        second = dispatcher.handle({"id": 9, "method": "train_window", "params": {"model_id": "m1", "batches": []}})[0]
        self.assertEqual(second["error_type"], "InvalidMetricError")
        self.assertLess(len(second["error"]), 64 * 1024)
        for spec in ("x" * TEN_MB, "os:" + "a" * TEN_MB, "no_such_" + "m" * TEN_MB + ":f", "os:sep"):
            with self.subTest(spec=spec[:20]):
                with self.assertRaises(Exception) as caught:
                    load_factory(spec)
                self.assertLess(len(str(caught.exception)), 64 * 1024 if not spec.startswith("no_such") else TEN_MB * 2)
                answer = error_response(1, caught.exception)
                self.assertLessEqual(len(answer["error"]), MAX_ERROR_CHARS)

    def test_a_huge_model_id_or_exception_message_over_the_wire(self):
        worker = HardWorker(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        huge = "q" * TEN_MB
        response, size = worker.raw(json.dumps({"id": 1, "method": "train_window", "params": {"model_id": huge, "batches": []}}).encode())
        assert_error_answer(self, response, "UnknownModelError", 1, f"...({TEN_MB} chars) in model_id; live models: {model}")
        self.assertLess(size, 16 * 1024)
        response, size = worker.raw(json.dumps({"id": 2, "method": huge}).encode())
        assert_error_answer(self, response, "UnknownMethodError", 2, f"...({TEN_MB} chars)")
        self.assertLess(size, 16 * 1024)
        worker.next_id = 2
        for chained in (False, True):
            with self.subTest(chained=chained):
                response = worker.call("apply_patch", {"do": "raise", "chars": TEN_MB, "chained": chained})
                assert_error_answer(self, response, "RuntimeError", worker.next_id, "RuntimeError: mmmm")
                lines = response["traceback"].rstrip("\n").split("\n")
                self.assertEqual(lines[0], "Traceback (most recent call last):")
                self.assertTrue(lines[-1].startswith("RuntimeError: mmmm") and re.search(r"\.\.\.\(\d+ chars\)$", lines[-1]) is not None, lines[-1][-100:])
                self.assertIn("hardening_workload.py", response["traceback"])
                self.assertEqual("OSError: cccc" in response["traceback"], chained)
        worker.assert_serving(model)

    def test_a_huge_factory_spec_exits_2_with_a_short_complaint(self):
        for factory in ("x" * 100_000, "echo_workload:" + "a" * 100_000):
            with self.subTest(factory=factory[:20]):
                worker = WorkerProcess(self, factory=factory)
                code, stderr = worker.wait()
                self.assertEqual(code, 2)
                self.assertLess(len(stderr), 40 * 1024)
                self.assertTrue(stderr.startswith(f"burn_p2p worker: cannot load workload factory {quote(factory)}: "), stderr[:300])


class ConfigFileTest(unittest.TestCase):
    def config_file(self, config):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "config.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def test_the_file_is_gone_while_a_slow_factory_still_loads(self):
        path = self.config_file({"sleep_seconds": 120})
        worker = WorkerProcess(self, factory="hardening_workload:make_slow", config_file=path, env=GUARD,
                               stdin=subprocess.PIPE, start_new_session=True)
        wait_until(lambda: not path.exists() or worker.process.poll() is not None, what="the config file to go")
        self.assertFalse(path.exists())
        self.assertIsNone(worker.process.poll())
        # The client dies during the slow start: the guard is already watching.
        worker.close_stdin()
        code, stderr = worker.wait()
        self.assertEqual(code, -signal.SIGKILL, stderr)  # it leads its group, and kills that last
        self.assertIn("stdin reached EOF", stderr)

    def test_the_config_reaches_the_factory_and_the_file_is_removed(self):
        path = self.config_file({"dataset_seed": 2, "learning_rate": 0.3})
        worker = WorkerProcess(self, config_file=path).accept()
        self.assertFalse(path.exists())
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        self.assertEqual(worker.result("train_window", {"model_id": model, "batches": [micro_epoch([0])]})["metrics"]["learning_rate"], 0.3)

    def test_a_missing_file_exits_2(self):
        path = self.config_file({})
        path.unlink()
        worker = WorkerProcess(self, config_file=path)
        code, stderr = worker.wait()
        self.assertEqual(code, 2)
        self.assertTrue(stderr.startswith("burn_p2p worker: cannot read --config-file"), stderr)


class OrphanGuardTest(unittest.TestCase):
    def test_stdin_eof_kills_every_descendant_while_a_call_runs(self):
        # As the TypeScript client starts it (its own group), and as a plain child (the test's group, never killed).
        for leader in (True, False):
            with self.subTest(group_leader=leader):
                worker = HardWorker(self, env=GUARD, stdin=subprocess.PIPE, start_new_session=leader).accept()
                model = worker.result("init_model", {"device": "cpu"})["model_id"]
                pids = worker.result("apply_patch", {"do": "spawn", "seconds": 120})
                for pid in pids.values():
                    self.addCleanup(kill_quietly, pid)
                self.assertEqual(set(pids), {"child", "same", "detached", "great"})
                self.assertEqual(os.getsid(pids["detached"]), pids["detached"])
                self.assertEqual(os.getpgid(pids["great"]), pids["detached"])
                self.assertFalse(any(gone(pid) for pid in pids.values()))
                # A long call in pure Python holds the main thread; the workload says when it has started.
                write_frame(worker.sock, json.dumps({"id": 99, "method": "train_window", "params": {
                    "model_id": model, "batches": [micro_epoch([0], busy_seconds=60)]}}).encode())
                early = worker.read_stderr_line_containing("hardening workload: busy")
                started = time.monotonic()
                worker.close_stdin()
                code, stderr = worker.wait()
                self.assertLess(time.monotonic() - started, 10)
                # Leading its group, it kills that group last, itself included.
                self.assertEqual(code, -signal.SIGKILL if leader else 0, stderr)
                self.assertIn("stdin reached EOF", early.decode() + stderr)
                wait_until(lambda: all(gone(pid) for pid in pids.values()), timeout=10, what=f"{pids} to be gone")

    def test_without_proc_only_a_group_leader_kills_its_group(self):
        with mock.patch.object(worker_module.os, "killpg") as killpg, mock.patch.object(worker_module.os, "kill") as kill:
            self.assertEqual(worker_module.kill_descendants(proc="/nonexistent-proc"), 0)
            with mock.patch.object(worker_module.os, "getpgrp", return_value=os.getpid()):
                worker_module.kill_own_group()
            killpg.assert_called_once_with(os.getpid(), signal.SIGKILL)
            with mock.patch.object(worker_module.os, "getpgrp", return_value=1):
                worker_module.kill_own_group()
            killpg.assert_called_once()
        kill.assert_not_called()

    def test_the_process_table_skips_entries_that_vanish_or_are_odd(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        root = Path(directory.name)
        for name, stat in {"10": "10 (a) S 1 10 10", "11": "11 (we ird) (x)) R 10 10 10", "12": "garbage", "self": "x"}.items():
            (root / name).mkdir()
            (root / name / "stat").write_text(stat)
        (root / "13").mkdir()  # gone mid-walk: no stat file
        self.assertEqual(worker_module._process_table(str(root)), {10: (1, 10), 11: (10, 10)})
        self.assertEqual(worker_module._descendants({10: (1, 10), 11: (10, 10), 12: (11, 5), 13: (2, 13)}, 10), [11, 12])


class ConnectTokenTest(unittest.TestCase):
    TOKEN = "0123456789abcdef" * 4

    def test_the_token_frame_comes_first_and_the_token_leaves_the_environment(self):
        worker = HardWorker(self, env={TOKEN_ENV: self.TOKEN}).accept()
        first = worker.sock.recv(65536)
        pid = worker.process.pid
        body = b'{"connect_token":"%s","pid":%d,"pgid":%d}' % (self.TOKEN.encode(), pid, os.getpgid(pid))
        self.assertEqual(first, len(body).to_bytes(8, "big") + body)
        self.assertEqual(worker.result("apply_patch", {"do": "env", "name": TOKEN_ENV}), {"in_environ": False, "in_child": False})
        self.assertEqual(worker.result("hello")["workload_name"], "hardening")

    def test_without_a_token_nothing_comes_before_the_first_answer(self):
        for env in ({}, {TOKEN_ENV: ""}):
            with self.subTest(env=env):
                worker = HardWorker(self, env=env).accept()
                self.assertEqual(worker.result("hello")["workload_name"], "hardening")
                self.assertEqual(worker.result("apply_patch", {"do": "env", "name": TOKEN_ENV}), {"in_environ": False, "in_child": False})

    def test_a_token_worker_still_connects_fast(self):
        durations = []
        for _ in range(3):
            worker = WorkerProcess(self, env={TOKEN_ENV: self.TOKEN})
            started = time.perf_counter()
            worker.accept()
            pid = worker.process.pid
            body = read_frame(worker.sock, 1024)
            self.assertEqual(body, b'{"connect_token":"%s","pid":%d,"pgid":%d}' % (self.TOKEN.encode(), pid, os.getpgid(pid)))
            durations.append(time.perf_counter() - started)
            worker.result("shutdown")
            worker.wait()
        self.assertLess(min(durations), 2.0)


if __name__ == "__main__":
    unittest.main()
