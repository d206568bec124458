"""The worker as a real subprocess on loopback TCP, and the framing underneath it."""

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from random import Random

from burn_p2p_python_runtime.transport import (
    FrameError,
    OversizeFrameError,
    connect,
    read_frame,
    write_frame,
)
from tests.helpers import micro_epoch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "python"
REFERENCE = "burn_p2p_python_runtime.reference_workload:make"
ECHO = "echo_workload:make"
DEADLINE = 20


class TrickleSocket(socket.socket):
    """A real socket whose reads return at most a few bytes, as TCP is allowed to."""

    def __init__(self, rng, **kwargs):
        super().__init__(**kwargs)
        self.rng = rng

    def recv_into(self, buffer, nbytes=0, flags=0):
        limit = min(nbytes or len(buffer), self.rng.randint(1, 11))
        return super().recv_into(buffer, limit, flags)


class CountingSocket(socket.socket):
    """A real socket that records every sendall."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sent = []

    def sendall(self, data, flags=0):
        self.sent.append(bytes(data))
        return super().sendall(data, flags)


class TransportTest(unittest.TestCase):
    def socketpair(self):
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        return left, right

    def test_frames_reassemble_across_arbitrary_splits(self):
        left, right = self.socketpair()
        reader = TrickleSocket(Random(7), fileno=right.detach())
        self.addCleanup(reader.close)
        frames = [b"", b"x", b'{"id":1}', bytes(range(256)) * 40, b"tail"]
        stream = b"".join(struct.pack(">Q", len(frame)) + frame for frame in frames)
        chunks = Random(3)

        def send_in_pieces():
            position = 0
            while position < len(stream):
                size = chunks.randint(1, 17)
                left.sendall(stream[position : position + size])
                position += size
            left.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=send_in_pieces)
        writer.start()
        self.addCleanup(writer.join)
        received = [bytes(read_frame(reader, 1 << 20)) for _ in frames]
        self.assertEqual(received, frames)
        self.assertIsNone(read_frame(reader, 1 << 20))

    def test_eof_inside_a_frame_is_a_frame_error(self):
        for partial in (b"\x00\x00\x00", struct.pack(">Q", 10) + b"abc"):
            with self.subTest(partial=partial):
                left, right = self.socketpair()
                left.sendall(partial)
                left.shutdown(socket.SHUT_WR)
                with self.assertRaises(FrameError) as caught:
                    read_frame(right, 1024)
                self.assertIsInstance(caught.exception, ConnectionError)
                self.assertIn("connection closed", str(caught.exception))

    def test_oversize_header_is_refused_before_allocating(self):
        left, right = self.socketpair()
        left.sendall(struct.pack(">Q", 2**62))
        with self.assertRaises(OversizeFrameError) as caught:
            read_frame(right, 1024)
        self.assertEqual((caught.exception.length, caught.exception.max_bytes), (2**62, 1024))
        self.assertIsInstance(caught.exception, FrameError)

    def test_write_frame_sends_header_and_body_in_one_sendall(self):
        left, right = self.socketpair()
        writer = CountingSocket(fileno=left.detach())
        self.addCleanup(writer.close)
        write_frame(writer, b'{"id":1,"ok":true}')
        self.assertEqual(writer.sent, [struct.pack(">Q", 18) + b'{"id":1,"ok":true}'])
        self.assertEqual(bytes(read_frame(right, 1024)), b'{"id":1,"ok":true}')

    def test_a_64_mib_frame_is_read_quickly(self):
        left, right = self.socketpair()
        payload = bytes(range(256)) * (64 * 1024 * 1024 // 256)
        writer = threading.Thread(target=write_frame, args=(left, payload))
        started = time.perf_counter()
        writer.start()
        self.addCleanup(writer.join)
        body = read_frame(right, 1 << 30)
        elapsed = time.perf_counter() - started
        self.assertTrue(body == payload)
        self.assertLess(elapsed, 5.0)

    def test_connect_disables_nagle(self):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            sock = connect("127.0.0.1", listener.getsockname()[1])
            with sock:
                self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                self.assertIsNone(sock.gettimeout())


class WorkerProcess:
    """A worker subprocess connected back to a listener owned by the test."""

    def __init__(self, test, factory=REFERENCE, config=None, env=None, stdin=subprocess.DEVNULL, script=None, config_json=None,
                 config_file=None, start_new_session=False):
        self.test = test
        self.listener = socket.create_server(("127.0.0.1", 0))
        test.addCleanup(self.listener.close)
        entry = [str(script)] if script else ["-m", "burn_p2p_python_runtime.worker"]
        command = [
            sys.executable, *entry,
            "--factory", factory,
            *(["--config-file", str(config_file)] if config_file is not None else
              ["--config-json", config_json if config_json is not None else json.dumps(config or {})]),
            "--connect-host", "127.0.0.1",
            "--connect-port", str(self.listener.getsockname()[1]),
        ]
        full_env = dict(os.environ)
        full_env.pop("BURN_P2P_WORKER_EXIT_ON_STDIN_EOF", None)
        full_env.pop("BURN_P2P_WORKER_CONNECT_TOKEN", None)
        full_env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(FIXTURES)]), "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self.process = subprocess.Popen(command, env=full_env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=start_new_session)
        test.addCleanup(self.stop)
        self.sock = None
        self.next_id = 0

    def accept(self):
        self.listener.settimeout(DEADLINE)
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(DEADLINE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.test.addCleanup(self.sock.close)
        return self

    def send_raw(self, body):
        write_frame(self.sock, body)
        frame = read_frame(self.sock, 1 << 30)
        self.test.assertIsNotNone(frame, "worker closed the connection instead of answering")
        return json.loads(frame)

    def call(self, method, params=None):
        self.next_id += 1
        response = self.send_raw(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        self.test.assertEqual(response["id"], self.next_id)
        return response

    def result(self, method, params=None):
        response = self.call(method, params)
        self.test.assertTrue(response["ok"], response.get("error"))
        return response.get("result")

    def close_stdin(self):
        self.process.stdin.close()
        # communicate() would flush the closed pipe.
        self.process.stdin = None

    def wait(self):
        """Exit status and stderr, once the process has exited."""
        _, stderr = self.process.communicate(timeout=DEADLINE)
        return self.process.returncode, stderr.decode("utf-8", "replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=DEADLINE)


def candidate(model_id, sample_weight, quality_weight=1.0):
    return {"peer_id": f"peer-{model_id}", "head_id": "head", "artifact_id": "artifact", "model_id": model_id,
            "sample_weight": sample_weight, "quality_weight": quality_weight}


class WorkerTest(unittest.TestCase):
    def test_every_method_with_the_reference_workload(self):
        worker = WorkerProcess(self, config={"dataset_seed": 3}).accept()
        self.assertEqual(worker.result("hello"), {
            "protocol_version": 1, "workload_name": "reference-softmax",
            "capabilities": ["artifact_path_io", "diloco_checkpoint_job", "parameter_pack_export", "parameter_pack_import",
                             "exact_step_budget"]})
        probe = worker.result("capability_probe")
        self.assertEqual(probe["runtime_device"], "cpu")
        self.assertEqual(probe["capability"]["preferred_backends"], ["cpu"])
        self.assertGreater(probe["capability"]["work_units_per_second"], 0)

        first = worker.result("init_model", {"device": "cpu"})["model_id"]
        second = worker.result("init_model", {"device": "auto"})["model_id"]
        self.assertEqual((first, second), ("m1", "m2"))
        before = worker.result("evaluate", {"model_id": first, "split": "Validation"})["metrics"]
        losses = [
            worker.result("train_window", {"model_id": first, "batches": [micro_epoch([4 * r + i for i in range(4)])]})["metrics"]
            for r in range(4)
        ]
        self.assertEqual(losses[0]["examples"], 256)
        self.assertEqual(losses[0]["steps"], 8)
        self.assertIsInstance(losses[0]["loss"], float)
        after = worker.result("evaluate", {"model_id": first, "split": "Validation"})["metrics"]
        self.assertLess(after["loss"], before["loss"])
        self.assertEqual(after["split"], "Validation")
        self.assertEqual(worker.result("evaluate", {"model_id": first, "split": "Test"})["metrics"]["split"], "Test")

        patch = {"patch_id": "p1", "class": "Hot", "summary": "lr", "required_client_capabilities": []}
        self.assertEqual(worker.result("apply_patch", {**patch, "values": {"learning_rate": 1}}), "Applied")
        rate = worker.result("train_window", {"model_id": second, "batches": [micro_epoch([99])]})["metrics"]["learning_rate"]
        self.assertEqual(rate, 1.0)
        self.assertIn("momentum", worker.result("apply_patch", {**patch, "values": {"momentum": 0.9}})["Rejected"])

        with tempfile.TemporaryDirectory() as directory:
            saved, resaved = os.path.join(directory, "a.safetensors"), os.path.join(directory, "b.safetensors")
            self.assertEqual(worker.result("materialize_model_artifact", {"model_id": first, "artifact_path": saved}), {})
            self.assertEqual(worker.result("load_model_artifact", {"model_id": second, "artifact_path": saved}), {})
            worker.result("materialize_model_artifact", {"model_id": second, "artifact_path": resaved})
            self.assertEqual(Path(saved).read_bytes(), Path(resaved).read_bytes())
        self.assertEqual(worker.result("evaluate", {"model_id": second, "split": "Validation"})["metrics"], after)

        merged = worker.result("merge_candidate_models", {
            "base_model_id": first, "candidates": [candidate(first, 2.0), candidate(second, 1.0, 3.0)], "policy": "WeightedMean"})["model_id"]
        self.assertEqual(merged, "m3")
        none = worker.result("merge_candidate_models", {"base_model_id": first, "candidates": [], "policy": "Ema"})
        self.assertEqual(none, {"model_id": None})
        self.assertEqual(worker.result("apply_single_root_ema", {"base_model_id": first, "merged_model_id": merged, "policy": "Ema"}),
                         {"model_id": merged})
        for strategy in ("Replace", {"RootEma": {"canonical_weight": 0.25}}):
            self.assertEqual(worker.result("reconcile_canonical_model",
                                           {"local_model_id": first, "canonical_model_id": merged, "strategy": strategy}),
                             {"model_id": merged})
        self.assertEqual(worker.result("release_model", {"model_id": merged}), {})
        self.assertEqual(worker.result("release_model", {"model_id": merged}), {})
        self.assertEqual(worker.call("evaluate", {"model_id": merged, "split": "Test"})["error_type"], "UnknownModelError")
        self.assertEqual(worker.result("shutdown"), {})
        self.assertIsNone(read_frame(worker.sock, 1024))
        self.assertEqual(worker.wait()[0], 0)

    def test_trains_on_shards_written_by_the_cli(self):
        with tempfile.TemporaryDirectory() as directory:
            written = subprocess.run(
                [sys.executable, "-m", "burn_p2p_python_runtime.reference_workload", "write-shards", "--out", directory,
                 "--config-json", '{"dataset_seed": 5}', "--ordinals", "0,1,2", "--seed", "1"],
                env={**os.environ, "PYTHONPATH": str(ROOT / "python")}, capture_output=True, check=True, timeout=DEADLINE)
            paths = json.loads(written.stdout)
            self.assertEqual(len(paths), 3)
            worker = WorkerProcess(self, config={"dataset_seed": 5}).accept()
            from_shards = worker.result("init_model", {"device": "cpu"})["model_id"]
            generated = worker.result("init_model", {"device": "cpu"})["model_id"]
            batch = {"kind": "cached_microshard_group", "shard_paths": paths, "microshard_ids": ["a", "b", "c"],
                     "ordinals": [0, 1, 2], "bytes_len": sum(os.path.getsize(p) for p in paths)}
            shard_metrics = worker.result("train_window", {"model_id": from_shards, "batches": [batch]})["metrics"]
            generated_metrics = worker.result("train_window", {"model_id": generated, "batches": [micro_epoch([0, 1, 2])]})["metrics"]
            self.assertEqual(shard_metrics, generated_metrics)
            self.assertEqual(shard_metrics["examples"], 192)

    def test_error_answers_keep_the_worker_serving(self):
        worker = WorkerProcess(self, factory=ECHO).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]

        def assert_error(response, error_type, *fragments, request_id="same"):
            self.assertFalse(response["ok"])
            self.assertEqual(response["error_type"], error_type)
            if request_id != "same":
                self.assertEqual(response["id"], request_id)
            for fragment in fragments:
                self.assertIn(fragment, response["error"])
            self.assertTrue(response["error"].startswith(f"{error_type}: "))
            self.assertIn("Traceback", response["traceback"])
            self.assertEqual(worker.result("hello")["workload_name"], "EchoWorkload")

        assert_error(worker.call("fly"), "UnknownMethodError", "'fly'", "train_window", "shutdown")
        assert_error(worker.call("train_window", {"model_id": "m9", "batches": []}), "UnknownModelError",
                     "unknown model id 'm9' in model_id; live models: m1")
        assert_error(worker.call("merge_candidate_models", {"base_model_id": model, "candidates": [candidate("m7", 1.0)], "policy": "Ema"}),
                     "UnknownModelError", "candidates[0].model_id")
        assert_error(worker.call("train_window", {"model_id": model}), "InvalidParamsError", "params.batches")
        assert_error(worker.call("init_model", {"device": 3}), "InvalidParamsError", "params.device must be a string")
        assert_error(worker.call("init_model", None), "InvalidParamsError", "params must be an object")
        boom = worker.call("evaluate", {"model_id": model, "split": "Train"})
        assert_error(boom, "RuntimeError", "boom from workload")
        self.assertIn("echo_workload.py", boom["traceback"])
        assert_error(worker.send_raw(b"{not json"), "RequestDecodeError", "not UTF-8 JSON", request_id=None)
        assert_error(worker.send_raw(b"\xff\xfe"), "RequestDecodeError", request_id=None)
        assert_error(worker.send_raw(b'{"method": "hello"}'), "MalformedRequestError", "id must be an integer", request_id=None)
        assert_error(worker.send_raw(b'[1, "hello"]'), "MalformedRequestError", "JSON object", request_id=None)
        assert_error(worker.send_raw(b'{"id": 41, "method": 7}'), "MalformedRequestError", "method must be a string", request_id=41)
        nan = b'{"id": 42, "method": "train_window", "params": {"model_id": "m1", "batches": [{"kind": "micro_epoch", "payload": {"echo": NaN}}]}}'
        assert_error(worker.send_raw(nan), "InvalidMetricError", "'echo'", request_id=42)
        listed = worker.call("train_window", {"model_id": model, "batches": [micro_epoch([1], echo=[1, 2])]})
        assert_error(listed, "InvalidMetricError", "'echo'", "list")

    def test_echo_workload_fallbacks(self):
        worker = WorkerProcess(self, factory=ECHO).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        metrics = worker.result("train_window", {"model_id": model, "batches": [micro_epoch([1, 2], echo="hi"), micro_epoch([3])]})
        self.assertEqual(metrics, {"metrics": {"echo": "hi", "examples": 3}})
        self.assertEqual(worker.result("evaluate", {"model_id": model, "split": {"Custom": "holdout"}}), {"metrics": {"split": "holdout"}})
        self.assertEqual(worker.result("apply_patch", {"values": {}}), {"Rejected": "workload has no apply_patch"})
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "echo.json")
            worker.result("materialize_model_artifact", {"model_id": model, "artifact_path": path})
            self.assertEqual(json.loads(Path(path).read_text()), {"device": "cpu", "windows": 1})
            Path(path).write_text('{"device": "cpu", "windows": 40}')
            worker.result("load_model_artifact", {"model_id": model, "artifact_path": path})
            worker.result("materialize_model_artifact", {"model_id": model, "artifact_path": path})
            self.assertEqual(json.loads(Path(path).read_text())["windows"], 40)

    def test_echo_workload_can_kill_its_worker_mid_call(self):
        worker = WorkerProcess(self, factory=ECHO).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        write_frame(worker.sock, json.dumps({"id": 9, "method": "train_window",
                                             "params": {"model_id": model, "batches": [micro_epoch([0], exit_code=3)]}}).encode())
        self.assertIsNone(read_frame(worker.sock, 1024))
        self.assertEqual(worker.wait()[0], 3)

    def test_each_answer_is_one_write_and_arrives_fast(self):
        worker = WorkerProcess(self).accept()
        durations = []
        for _ in range(30):
            worker.next_id += 1
            body = json.dumps({"id": worker.next_id, "method": "hello", "params": None}).encode()
            started = time.perf_counter()
            write_frame(worker.sock, body)
            first = worker.sock.recv(65536)
            durations.append(time.perf_counter() - started)
            (length,) = struct.unpack(">Q", first[:8])
            self.assertEqual(len(first), 8 + length, "header and body arrived separately")
        self.assertLess(statistics.median(durations), 0.01)

    def test_shutdown_exits_zero(self):
        worker = WorkerProcess(self).accept()
        self.assertEqual(worker.result("shutdown"), {})
        self.assertEqual(worker.wait(), (0, ""))

    def test_eof_exits_zero(self):
        worker = WorkerProcess(self).accept()
        worker.result("hello")
        worker.sock.close()
        self.assertEqual(worker.wait(), (0, ""))

    def test_stdin_is_ignored_by_default(self):
        worker = WorkerProcess(self).accept()
        for _ in range(3):
            worker.result("hello")
        self.assertIsNone(worker.process.poll())

    def test_orphan_guard_exits_when_stdin_closes(self):
        worker = WorkerProcess(self, env={"BURN_P2P_WORKER_EXIT_ON_STDIN_EOF": "1"}, stdin=subprocess.PIPE).accept()
        worker.result("hello")
        worker.close_stdin()
        code, stderr = worker.wait()
        self.assertEqual(code, 0)
        self.assertIn("stdin reached EOF", stderr)

    def test_oversize_frame_is_answered_then_the_worker_exits(self):
        worker = WorkerProcess(self, env={"BURN_P2P_WORKER_MAX_FRAME_BYTES": "1024"}).accept()
        worker.result("hello")
        worker.sock.sendall(struct.pack(">Q", 4096))
        response = json.loads(read_frame(worker.sock, 1 << 20))
        self.assertEqual((response["id"], response["ok"], response["error_type"]), (None, False, "FrameError"))
        self.assertIn("4096 exceeds the limit of 1024", response["error"])
        code, stderr = worker.wait()
        self.assertEqual(code, 1)
        self.assertIn("4096 exceeds the limit of 1024", stderr)

    def test_truncated_frame_is_answered_then_the_worker_exits(self):
        worker = WorkerProcess(self).accept()
        worker.sock.sendall(struct.pack(">Q", 100) + b'{"id": 1')
        worker.sock.shutdown(socket.SHUT_WR)
        response = json.loads(read_frame(worker.sock, 1 << 20))
        self.assertEqual((response["id"], response["error_type"]), (None, "FrameError"))
        self.assertIn("after 8 of 100 bytes", response["error"])
        self.assertEqual(worker.wait()[0], 1)

    def test_large_train_window_request(self):
        worker = WorkerProcess(self).accept()
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        padding = "p" * (64 * 1024 * 1024)
        started = time.perf_counter()
        metrics = worker.result("train_window", {"model_id": model, "batches": [micro_epoch([0, 1, 2, 3], padding=padding)]})["metrics"]
        elapsed = time.perf_counter() - started
        self.assertEqual(metrics["examples"], 256)
        self.assertLess(elapsed, 5.0)

    def test_factory_failures_exit_2_with_a_clear_first_line(self):
        cases = [
            ("no_such_module:make", None, "ModuleNotFoundError: No module named 'no_such_module'"),
            ("echo_workload:missing", None, "AttributeError: module 'echo_workload' has no attribute 'missing'"),
            ("echo_workload:not_callable", None, "TypeError: 'echo_workload:not_callable' is not callable: found int 42"),
            ("echo_workload:make_raising", '{"k": 1}', "ValueError: bad config: {'k': 1}"),
            ("echo_workload:make", "{oops", "ValueError: --config-json is not valid JSON"),
            ("echo_workload", None, "ValueError: factory must be MODULE:ATTR, got 'echo_workload'"),
        ]
        for factory, config_json, detail in cases:
            with self.subTest(factory=factory):
                worker = WorkerProcess(self, factory=factory, config_json=config_json)
                code, stderr = worker.wait()
                self.assertEqual(code, 2)
                first_line = stderr.splitlines()[0]
                self.assertTrue(first_line.startswith(f"burn_p2p worker: cannot load workload factory {factory!r}: {detail}"), first_line)
                self.assertIn("Traceback (most recent call last)", stderr)
                worker.listener.setblocking(False)
                with self.assertRaises(BlockingIOError):
                    worker.listener.accept()


class ReferenceCompatWorkerTest(unittest.TestCase):
    """The stand-in for the reference worker that the TypeScript client is tested against."""

    def test_speaks_protocol_1_with_the_reference_quirks(self):
        worker = WorkerProcess(self, script=FIXTURES / "reference_compat_worker.py").accept()
        self.assertEqual(worker.result("hello"), {"protocol_version": 1, "workload_name": "reference-softmax"})
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        self.assertEqual(model, "m1")
        metrics = worker.result("train_window", {"model_id": model, "batches": [micro_epoch([0, 1])]})["metrics"]
        self.assertEqual(metrics["examples"], 128)
        self.assertEqual(worker.result("release_model", {"model_id": "m5"}), {"ok": True})
        failed = worker.call("evaluate", {"model_id": "m9", "split": "Test"})
        self.assertEqual(set(failed), {"id", "ok", "error"})
        self.assertIn("KeyError", failed["error"])
        self.assertEqual(worker.result("shutdown"), {"ok": True})
        self.assertEqual(worker.wait()[0], 0)

    def test_writes_the_header_and_the_body_separately(self):
        worker = WorkerProcess(self, script=FIXTURES / "reference_compat_worker.py").accept()
        header_alone = 0
        for _ in range(5):
            worker.next_id += 1
            write_frame(worker.sock, json.dumps({"id": worker.next_id, "method": "hello", "params": None}).encode())
            first = worker.sock.recv(65536)
            header_alone += len(first) == 8
            (length,) = struct.unpack(">Q", first[:8])
            remaining = 8 + length - len(first)
            while remaining:
                remaining -= len(worker.sock.recv(remaining))
        self.assertGreater(header_alone, 0)


if __name__ == "__main__":
    unittest.main()
