"""Protocol 2: parameter packs, the pack plan, run_inner_loop and hello's capabilities.

Standard-library parts (the filter, the reference workload's hooks, the
worker plumbing) always run. The torch parts are skipped only when torch is
not importable, and fail instead under CI (env CI=true or 1), as in
test_torch_workload.
"""

import fnmatch
import hashlib
import json
import os
import struct
import sys
import tempfile
import unittest
from unittest import mock

from burn_p2p_python_runtime import parameter_pack as pp
from burn_p2p_python_runtime import protocol2
from burn_p2p_python_runtime import reference_workload as rw
from burn_p2p_python_runtime.dispatch import Dispatcher
from burn_p2p_python_runtime.workload_adapter import WorkloadAdapter
from tests.helpers import micro_epoch
from tests.test_worker import ECHO, REFERENCE, WorkerProcess

try:
    import torch
except ImportError:
    torch = None

TORCH = "burn_p2p_python_runtime.torch_workload:make"
ALL_CAPABILITIES = ["artifact_path_io", "diloco_checkpoint_job", "parameter_pack_export", "parameter_pack_import", "exact_step_budget"]
NO_FILTER = {"include_globs": [], "exclude_globs": []}
TINY_TORCH = {"features": 4, "classes": 3, "hidden": [5], "examples_per_microshard": 16, "batch_size": 8, "probe_seconds": 0.02}


# -- independent implementations the worker is checked against ------------------------------


def struct_values(data):
    """An independent reader of values.f32le: struct, 4 bytes at a time."""
    assert len(data) % 4 == 0, len(data)
    return [struct.unpack_from("<f", data, offset)[0] for offset in range(0, len(data), 4)]


def independent_layout_hash(layout):
    text = json.dumps(layout, sort_keys=True, separators=(",", ":"))
    return "torch-layout-" + hashlib.sha256(text.encode()).hexdigest()


def reference_pack(state, model_schema_hash, state_dict_filter=None):
    """What the reference worker writes for a torch state: (values bytes, manifest text), via lists and struct.pack."""
    state_dict_filter = state_dict_filter or {}
    include = list(state_dict_filter.get("include_globs") or [])
    exclude = list(state_dict_filter.get("exclude_globs") or [])
    if isinstance(state, dict) and "modules" in state:
        modules = [(name, state["modules"][name]) for name in sorted(state["modules"])]
    else:
        modules = [("", state["model"] if isinstance(state, dict) else state)]
    layout, included, excluded, ignored, chunks = [], [], [], [], []
    for module_name, module in modules:
        state_dict = module.state_dict()
        for key in sorted(state_dict):
            name = f"{module_name}.{key}" if module_name else key
            tensor = state_dict[key]
            if not torch.is_floating_point(tensor):
                ignored.append(name)
                continue
            if (include and not any(fnmatch.fnmatchcase(name, g) for g in include)) or any(
                fnmatch.fnmatchcase(name, g) for g in exclude
            ):
                excluded.append(name)
                continue
            values = tensor.detach().to("cpu", torch.float32).reshape(-1).tolist()
            for start in range(0, len(values), 65536):
                chunk = values[start : start + 65536]
                chunks.append(struct.pack(f"<{len(chunk)}f", *chunk))
            layout.append({"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype), "numel": tensor.numel()})
            included.append(name)
    manifest = {
        "format": "burn-p2p-python-flattened-parameter-pack-v1",
        "model_schema_hash": model_schema_hash,
        "layout_hash": independent_layout_hash(layout),
        "parameter_count": sum(entry["numel"] for entry in layout),
        "values_f32_le": "values.f32le",
        "state_dict_filter": {"include_globs": include, "exclude_globs": exclude},
        "included_keys": included,
        "excluded_float_keys": excluded,
        "ignored_non_float_keys": ignored,
    }
    return b"".join(chunks), json.dumps(manifest, indent=2)


def read_pack(folder):
    with open(os.path.join(folder, "values.f32le"), "rb") as handle:
        values = handle.read()
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
        manifest = handle.read()
    return values, manifest


def owner_manifest(folder, manifest):
    """Rewrites a pack's manifest the way the owner writes its own packs: no filter, no key lists."""
    kept = {key: manifest[key] for key in ("format", "model_schema_hash", "layout_hash", "parameter_count", "values_f32_le")}
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(kept, handle, indent=2)


# -- helpers ----------------------------------------------------------------------------------


class DispatchHarness:
    def __init__(self, test, workload):
        self.test = test
        self.dispatcher = Dispatcher(WorkloadAdapter(workload))
        self.next_id = 0

    def call(self, method, params=None):
        self.next_id += 1
        response, _ = self.dispatcher.handle({"id": self.next_id, "method": method, "params": params})
        # Everything must survive the wire encoding.
        json.dumps(response, allow_nan=False)
        return response

    def result(self, method, params=None):
        response = self.call(method, params)
        self.test.assertTrue(response["ok"], response.get("error"))
        return response.get("result")

    def error(self, method, params, *fragments):
        response = self.call(method, params)
        self.test.assertFalse(response["ok"], response.get("result"))
        for fragment in fragments:
            self.test.assertIn(fragment, response["error"])
        return response


def scratch(test):
    directory = tempfile.TemporaryDirectory(prefix="packs-test-")
    test.addCleanup(directory.cleanup)
    return directory.name


def inner_params(model_id, output, steps=3, batches=None, optimizer_path=None, exact=True, schema="schema-1", state_dict_filter=None):
    return {
        "model_id": model_id,
        "batches": batches if batches is not None else [micro_epoch([0, 1])],
        "num_inner_steps": steps,
        "inner_optimizer_state_path": optimizer_path,
        "output_parameter_pack_path": output,
        "model_schema_hash": schema,
        "require_exact_steps": exact,
        "state_dict_filter": state_dict_filter if state_dict_filter is not None else NO_FILTER,
    }


class NonTorchState:
    pass


class HooksOnlyWorkload:
    """Pack hooks and an inner loop over a state the generic path cannot read; no plan hook."""

    workload_name = "hooks-only"
    supports_generic_parameter_packs = False

    def __init__(self, steps_completed=None, write_manifest=False, give_state=False):
        self.steps_completed = steps_completed
        self.write_manifest = write_manifest
        self.give_state = give_state
        self.exported = []
        self.seen_params = []

    def init_model(self, device):
        return NonTorchState()

    def export_parameter_pack_path(self, state, path, model_schema_hash):
        self.exported.append((state, path, model_schema_hash))
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "manifest.json"), "w") as handle:
            handle.write("exported by the hook")

    def import_parameter_pack_path(self, device, path):
        return NonTorchState()

    def run_inner_loop(self, state, params):
        self.seen_params.append(params)
        if self.write_manifest:
            os.makedirs(params["output_parameter_pack_path"], exist_ok=True)
            with open(os.path.join(params["output_parameter_pack_path"], "manifest.json"), "w") as handle:
                handle.write("written by the workload")
        result = {"metrics": {"inner": 1}}
        if self.steps_completed is not None:
            result["steps_completed"] = self.steps_completed
        if self.give_state:
            result["state"] = NonTorchState()
        return result


class PlainWorkload:
    """No hooks at all, and a state that is no torch module."""

    supports_generic_parameter_packs = False

    def init_model(self, device):
        return {"weights": [1.0]}


# -- the filter and the layout hash -------------------------------------------------------------


class FilterTest(unittest.TestCase):
    def keeps(self, name, include=(), exclude=()):
        return pp.filter_keeps(name, pp.normalize_filter({"include_globs": list(include), "exclude_globs": list(exclude)}))

    def test_empty_include_keeps_everything(self):
        self.assertTrue(self.keeps("encoder.layer.0.weight"))
        self.assertEqual(pp.normalize_filter(None), NO_FILTER)
        self.assertEqual(pp.normalize_filter({}), NO_FILTER)
        self.assertEqual(pp.normalize_filter({"include_globs": None}), NO_FILTER)

    def test_globs_are_shell_style_and_case_sensitive(self):
        self.assertTrue(self.keeps("encoder.weight", include=["encoder.*"]))
        self.assertFalse(self.keeps("decoder.weight", include=["encoder.*"]))
        self.assertTrue(self.keeps("layer1.bias", include=["layer?.bias"]))
        self.assertFalse(self.keeps("layer10.bias", include=["layer?.bias"]))
        self.assertTrue(self.keeps("layer3.bias", include=["layer[0-4].*"]))
        self.assertFalse(self.keeps("Encoder.weight", include=["encoder.*"]))
        # '*' crosses dots, as fnmatch's does.
        self.assertTrue(self.keeps("a.b.c.weight", include=["a*weight"]))

    def test_excludes_win(self):
        self.assertFalse(self.keeps("encoder.bias", include=["encoder.*"], exclude=["*.bias"]))
        self.assertTrue(self.keeps("encoder.weight", include=["encoder.*"], exclude=["*.bias"]))
        self.assertFalse(self.keeps("x", include=["x"], exclude=["x"]))
        self.assertFalse(self.keeps("anything", exclude=["*"]))

    def test_bad_filters_are_refused(self):
        for bad in ([], "x", {"include_globs": "a*"}, {"exclude_globs": [1]}):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                pp.normalize_filter(bad)

    def test_layout_hash_is_sha256_of_compact_sorted_json(self):
        layout = [pp.layout_entry("bias", [3], "torch.float32", 3), pp.layout_entry("weight", [3, 4], "torch.float16", 12)]
        self.assertEqual(pp.layout_hash(layout), independent_layout_hash(layout))
        text = '[{"dtype":"torch.float32","name":"bias","numel":3,"shape":[3]},{"dtype":"torch.float16","name":"weight","numel":12,"shape":[3,4]}]'
        self.assertEqual(pp.layout_hash(layout), "torch-layout-" + hashlib.sha256(text.encode()).hexdigest())


# -- hello ----------------------------------------------------------------------------------------


class HelloTest(unittest.TestCase):
    def test_capabilities_follow_the_workload(self):
        cases = [
            (rw.make({}), ALL_CAPABILITIES),
            (HooksOnlyWorkload(), ALL_CAPABILITIES),
            (PlainWorkload(), ["artifact_path_io"]),
        ]
        export_only = type("ExportOnly", (), {"supports_generic_parameter_packs": False,
                                              "export_parameter_pack_path": lambda self, s, p, h: None,
                                              "run_inner_loop": lambda self, s, p: None})()
        cases.append((export_only, ["artifact_path_io", "parameter_pack_export"]))
        generic_without_loop = type("Generic", (), {"supports_generic_parameter_packs": True})()
        cases.append((generic_without_loop, ["artifact_path_io", "parameter_pack_export", "parameter_pack_import"]))
        for workload, expected in cases:
            with self.subTest(workload=type(workload).__name__):
                hello = DispatchHarness(self, workload).result("hello")
                self.assertEqual(hello["protocol_version"], 1)
                self.assertEqual(hello["capabilities"], expected)

    def test_the_version_comes_from_the_environment_when_asked(self):
        harness = DispatchHarness(self, rw.make({}))
        for raw, expected in (("2", 2), ("1", 1), ("", 1)):
            with self.subTest(raw=raw), mock.patch.dict(os.environ, {protocol2.VERSION_ENV: raw}):
                hello = harness.result("hello")
                self.assertEqual(hello["protocol_version"], expected)
                self.assertEqual(hello["capabilities"], ALL_CAPABILITIES)
        with mock.patch.dict(os.environ, {protocol2.VERSION_ENV: "3"}):
            harness.error("hello", None, "BURN_P2P_WORKER_PROTOCOL_VERSION must be 1 or 2, got '3'")

    def test_hello_per_workload_from_real_worker_processes(self):
        expected = {
            REFERENCE: {"protocol_version": 1, "workload_name": "reference-softmax", "capabilities": ALL_CAPABILITIES},
            ECHO: {"protocol_version": 1, "workload_name": "EchoWorkload", "capabilities": ["artifact_path_io"]},
        }
        if torch is not None:
            expected[TORCH] = {"protocol_version": 1, "workload_name": "torch-spiral-mlp", "capabilities": ALL_CAPABILITIES}
        workers = {factory: WorkerProcess(self, factory=factory, config=TINY_TORCH if factory == TORCH else {}) for factory in expected}
        for factory, answer in expected.items():
            with self.subTest(factory=factory):
                self.assertEqual(workers[factory].accept().result("hello"), answer)
        versioned = WorkerProcess(self, env={protocol2.VERSION_ENV: "2"}).accept()
        self.assertEqual(versioned.result("hello"), {**expected[REFERENCE], "protocol_version": 2})


# -- the standard-library workload's hooks, through the dispatcher -----------------------------------


class ReferenceWorkloadPackTest(unittest.TestCase):
    def setUp(self):
        self.workload = rw.make({"dataset_seed": 2})
        self.worker = DispatchHarness(self, self.workload)
        self.dir = scratch(self)
        self.model = self.worker.result("init_model", {"device": "cpu"})["model_id"]
        self.worker.result("train_window", {"model_id": self.model, "batches": [micro_epoch([0, 1])]})
        self.state = self.worker.dispatcher.models[self.model]

    def export(self, name="pack", schema="schema-1"):
        path = os.path.join(self.dir, name)
        ack = self.worker.result("export_parameter_pack",
                                 {"model_id": self.model, "parameter_pack_path": path, "model_schema_hash": schema, "state_dict_filter": NO_FILTER})
        self.assertEqual(ack, {"ok": True})
        return path

    def expected_layout(self):
        classes, features = self.workload.classes, self.workload.features
        return [{"name": "bias", "shape": [classes], "dtype": "torch.float32", "numel": classes},
                {"name": "weight", "shape": [classes, features], "dtype": "torch.float32", "numel": classes * features}]

    def test_plan_is_the_workloads_own(self):
        plan = self.worker.result("parameter_pack_plan", {"device": "cpu", "state_dict_filter": {"exclude_globs": ["bias"]}})
        self.assertEqual(plan, {
            "uses_custom_parameter_pack_hooks": True,
            "layout_hash": independent_layout_hash(self.expected_layout()),
            "included_keys": ["bias", "weight"],
            "excluded_float_keys": [],
            "ignored_non_float_keys": [],
            "parameter_count": 4 + 4 * 8,
        })
        # The plan's fresh model is dropped.
        self.assertEqual(list(self.worker.dispatcher.models), [self.model])

    def test_export_writes_the_generic_format(self):
        values, manifest = read_pack(self.export())
        flat = self.state.bias + [v for row in self.state.weight for v in row]
        self.assertEqual(values, struct.pack(f"<{len(flat)}f", *flat))
        self.assertEqual(struct_values(values), flat)
        expected = {
            "format": "burn-p2p-python-flattened-parameter-pack-v1",
            "model_schema_hash": "schema-1",
            "layout_hash": independent_layout_hash(self.expected_layout()),
            "parameter_count": len(flat),
            "values_f32_le": "values.f32le",
            "state_dict_filter": NO_FILTER,
            "included_keys": ["bias", "weight"],
            "excluded_float_keys": [],
            "ignored_non_float_keys": [],
        }
        self.assertEqual(manifest, json.dumps(expected, indent=2))
        self.assertEqual(sorted(os.listdir(os.path.join(self.dir, "pack"))), ["manifest.json", "values.f32le"])

    def test_import_round_trip_is_exact(self):
        path = self.export()
        imported = self.worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": path, "state_dict_filter": NO_FILTER})
        self.assertEqual(imported, {"model_id": "m2"})
        state = self.worker.dispatcher.models["m2"]
        self.assertIsNot(state, self.state)
        self.assertEqual((state.weight, state.bias), (self.state.weight, self.state.bias))
        metrics = self.worker.result("evaluate", {"model_id": "m2", "split": "Validation"})
        self.assertEqual(metrics, self.worker.result("evaluate", {"model_id": self.model, "split": "Validation"}))

    def test_import_checks(self):
        path = self.export()
        _, manifest_text = read_pack(path)
        manifest = json.loads(manifest_text)
        request = {"device": "cpu", "parameter_pack_path": path, "state_dict_filter": NO_FILTER}

        def rewrite(**changes):
            with open(os.path.join(path, "manifest.json"), "w") as handle:
                json.dump({**manifest, **changes}, handle)

        rewrite(format="something-else-v9")
        self.worker.error("import_parameter_pack", request, "unsupported parameter-pack format 'something-else-v9'")
        rewrite(parameter_count=manifest["parameter_count"] + 1)
        self.worker.error("import_parameter_pack", request, "byte length 144", "parameter_count 37")
        rewrite(layout_hash="torch-layout-00")
        self.worker.error("import_parameter_pack", request, "layout 'torch-layout-00' does not match")
        other = rw.make({"features": 5})
        other_path = os.path.join(self.dir, "other")
        other.export_parameter_pack_path(other.init_model("cpu"), other_path, "schema-1")
        self.worker.error("import_parameter_pack", {**request, "parameter_pack_path": other_path}, "does not match the model's layout")
        # No model was minted by any failed import.
        self.assertEqual(list(self.worker.dispatcher.models), [self.model])
        owner_manifest(path, manifest)
        self.assertEqual(self.worker.result("import_parameter_pack", request), {"model_id": "m2"})
        self.assertEqual(self.worker.dispatcher.models["m2"].weight, self.state.weight)

    def test_run_inner_loop(self):
        output = os.path.join(self.dir, "round1")
        before = [row[:] for row in self.state.weight]
        answer = self.worker.result("run_inner_loop", inner_params(self.model, output, steps=5))
        self.assertEqual(answer["steps_completed"], 5)
        self.assertEqual(answer["metrics"]["steps"], 5)
        self.assertEqual(answer["inner_optimizer_state_encoding"], "reference-softmax-momentum-json-v1")
        self.assertEqual(answer["inner_optimizer_state_path"], output + ".inner-optimizer.json")
        self.assertTrue(os.path.isfile(answer["inner_optimizer_state_path"]))
        self.assertNotEqual(self.state.weight, before)
        # The worker wrote the output pack: the model as it is now.
        values, manifest = read_pack(output)
        flat = self.state.bias + [v for row in self.state.weight for v in row]
        self.assertEqual(values, struct.pack(f"<{len(flat)}f", *flat))
        self.assertEqual(json.loads(manifest)["model_schema_hash"], "schema-1")
        # Round 2 resumes the velocity; a fresh velocity gives another result.
        twin = self.worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": output, "state_dict_filter": None})["model_id"]
        resumed = self.worker.result("run_inner_loop", inner_params(self.model, os.path.join(self.dir, "r2"), steps=4,
                                                                    optimizer_path=answer["inner_optimizer_state_path"]))
        fresh = self.worker.result("run_inner_loop", inner_params(twin, os.path.join(self.dir, "r2-fresh"), steps=4))
        self.assertNotEqual(read_pack(os.path.join(self.dir, "r2"))[0], read_pack(os.path.join(self.dir, "r2-fresh"))[0])
        self.assertTrue(os.path.isfile(resumed["inner_optimizer_state_path"]) and os.path.isfile(fresh["inner_optimizer_state_path"]))
        # Steps cycle the minibatches: 3 batches of 32 examples, 7 steps.
        self.assertEqual(self.worker.result("run_inner_loop", inner_params(self.model, os.path.join(self.dir, "r3"), steps=7,
                                                                           batches=[micro_epoch([5], examples_per_microshard=96)]))["steps_completed"], 7)

    def test_run_inner_loop_errors(self):
        output = os.path.join(self.dir, "out")
        self.worker.error("run_inner_loop", inner_params("m9", output), "UnknownModelError", "unknown model id 'm9'")
        params = inner_params(self.model, output)
        del params["num_inner_steps"]
        self.worker.error("run_inner_loop", params, "InvalidParamsError", "missing params.num_inner_steps")
        self.worker.error("run_inner_loop", {**inner_params(self.model, output), "num_inner_steps": -1}, "num_inner_steps must be in")
        self.worker.error("run_inner_loop", {**inner_params(self.model, output), "require_exact_steps": "yes"}, "require_exact_steps must be a boolean")
        self.worker.error("run_inner_loop", inner_params(self.model, output, optimizer_path=os.path.join(self.dir, "missing.json")), "missing.json")
        self.worker.error("export_parameter_pack", {"model_id": self.model, "parameter_pack_path": output}, "missing params.model_schema_hash")
        self.worker.error("import_parameter_pack", {"device": "cpu", "parameter_pack_path": os.path.join(self.dir, "nothing")}, "has no manifest.json")
        self.worker.error("export_parameter_pack", {"model_id": "m7", "parameter_pack_path": output, "model_schema_hash": "h"}, "UnknownModelError")

    def test_a_big_endian_host_swaps_the_words(self):
        with mock.patch.object(pp, "BIG_ENDIAN_HOST", True):
            path = self.export("be")
            again = self.workload.import_parameter_pack_path("cpu", path)
        flat = self.state.bias + [v for row in self.state.weight for v in row]
        self.assertEqual(read_pack(path)[0], struct.pack(f">{len(flat)}f", *flat))
        self.assertEqual((again.weight, again.bias), (self.state.weight, self.state.bias))

    def test_determinism(self):
        first, second = rw.make({"dataset_seed": 2}), rw.make({"dataset_seed": 2})
        packs = []
        for index, workload in enumerate((first, second)):
            harness = DispatchHarness(self, workload)
            model = harness.result("init_model", {"device": "cpu"})["model_id"]
            output = os.path.join(self.dir, f"det{index}")
            answer = harness.result("run_inner_loop", inner_params(model, output, steps=6))
            harness.result("run_inner_loop", inner_params(model, output + "-2", steps=6, optimizer_path=answer["inner_optimizer_state_path"]))
            packs.append(read_pack(output + "-2"))
        self.assertEqual(packs[0], packs[1])


# -- the worker's own plumbing, with hook-only workloads ---------------------------------------------------


class WorkerPlumbingTest(unittest.TestCase):
    def setUp(self):
        self.dir = scratch(self)

    def test_plan_falls_back_when_hooks_exist_and_the_generic_plan_fails(self):
        plan = DispatchHarness(self, HooksOnlyWorkload()).result("parameter_pack_plan", {"device": "cpu", "state_dict_filter": NO_FILTER})
        error = plan.pop("generic_plan_error")
        self.assertIsInstance(error, str)
        self.assertTrue(error)
        if torch is not None:
            self.assertIn("the generic parameter-pack path needs a torch module", error)
        self.assertEqual(plan, {"uses_custom_parameter_pack_hooks": True, "layout_hash": None, "included_keys": [],
                                "excluded_float_keys": [], "ignored_non_float_keys": [], "parameter_count": 0})

    def test_plan_fails_without_hooks(self):
        DispatchHarness(self, PlainWorkload()).error("parameter_pack_plan", {"device": "cpu", "state_dict_filter": None})
        DispatchHarness(self, PlainWorkload()).error("parameter_pack_plan", {"state_dict_filter": None}, "missing params.device")

    def test_exact_steps(self):
        output = os.path.join(self.dir, "out")
        for reported, exact, ok in ((None, True, True), (2, True, False), (2, False, True), (3, True, True)):
            with self.subTest(reported=reported, exact=exact):
                workload = HooksOnlyWorkload(steps_completed=reported)
                harness = DispatchHarness(self, workload)
                model = harness.result("init_model", {"device": "cpu"})["model_id"]
                response = harness.call("run_inner_loop", inner_params(model, f"{output}-{reported}-{exact}", steps=3, exact=exact))
                self.assertEqual(response["ok"], ok, response.get("error"))
                if ok:
                    self.assertEqual(response["result"], {"steps_completed": 3 if reported is None else reported, "metrics": {"inner": 1},
                                                          "inner_optimizer_state_path": None, "inner_optimizer_state_encoding": None})
                else:
                    self.assertIn("completed 2 steps, 3 were requested", response["error"])

    def test_the_workloads_own_output_pack_is_kept_and_state_replaced(self):
        workload = HooksOnlyWorkload(write_manifest=True, give_state=True)
        harness = DispatchHarness(self, workload)
        model = harness.result("init_model", {"device": "cpu"})["model_id"]
        before = harness.dispatcher.models[model]
        output = os.path.join(self.dir, "own")
        params = inner_params(model, output)
        harness.result("run_inner_loop", params)
        with open(os.path.join(output, "manifest.json")) as handle:
            self.assertEqual(handle.read(), "written by the workload")
        self.assertEqual(workload.exported, [])
        self.assertIsNot(harness.dispatcher.models[model], before)
        self.assertEqual(workload.seen_params, [params])
        # Without a pack of its own, the worker exports the replacement state through the hook.
        workload.write_manifest = False
        harness.result("run_inner_loop", inner_params(model, os.path.join(self.dir, "worker"), schema="s2"))
        self.assertEqual(workload.exported, [(harness.dispatcher.models[model], os.path.join(self.dir, "worker"), "s2")])

    def test_optimizer_state_passes_through(self):
        workload = HooksOnlyWorkload()
        state_file = os.path.join(self.dir, "opt.bin")
        open(state_file, "wb").close()
        workload.run_inner_loop = lambda state, params: {"inner_optimizer_state_path": state_file, "inner_optimizer_state_encoding": "x-v1"}
        harness = DispatchHarness(self, workload)
        model = harness.result("init_model", {"device": "cpu"})["model_id"]
        answer = harness.result("run_inner_loop", inner_params(model, os.path.join(self.dir, "o"), steps=2))
        self.assertEqual(answer, {"steps_completed": 2, "metrics": {}, "inner_optimizer_state_path": state_file,
                                  "inner_optimizer_state_encoding": "x-v1"})
        os.remove(state_file)
        harness.error("run_inner_loop", inner_params(model, os.path.join(self.dir, "o2")), "does not exist")

    def test_without_run_inner_loop_it_is_an_error(self):
        workload = HooksOnlyWorkload()
        workload.run_inner_loop = None
        harness = DispatchHarness(self, workload)
        model = harness.result("init_model", {"device": "cpu"})["model_id"]
        harness.error("run_inner_loop", inner_params(model, os.path.join(self.dir, "o")), "does not implement run_inner_loop")
        self.assertNotIn("diloco_checkpoint_job", harness.result("hello")["capabilities"])


# -- real worker processes ---------------------------------------------------------------------------------


class ReferenceWorkerProcessTest(unittest.TestCase):
    def test_every_protocol_2_method_over_a_socket(self):
        directory = scratch(self)
        worker = WorkerProcess(self, config={"dataset_seed": 4}).accept()
        plan = worker.result("parameter_pack_plan", {"device": "cpu", "state_dict_filter": NO_FILTER})
        self.assertEqual((plan["uses_custom_parameter_pack_hooks"], plan["parameter_count"]), (True, 36))
        model = worker.result("init_model", {"device": "cpu"})["model_id"]
        pack = os.path.join(directory, "pack")
        self.assertEqual(worker.result("export_parameter_pack", {"model_id": model, "parameter_pack_path": pack,
                                                                 "model_schema_hash": "h", "state_dict_filter": NO_FILTER}), {"ok": True})
        self.assertEqual(json.loads(read_pack(pack)[1])["layout_hash"], plan["layout_hash"])
        imported = worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": pack, "state_dict_filter": NO_FILTER})["model_id"]
        answers = []
        for index, model_id in enumerate((model, imported)):
            answers.append(worker.result("run_inner_loop", inner_params(model_id, os.path.join(directory, f"out{index}"), steps=4)))
            self.assertTrue(os.path.isfile(answers[-1]["inner_optimizer_state_path"]))
        # Same start, same data: the same result.
        self.assertEqual(read_pack(os.path.join(directory, "out0"))[0], read_pack(os.path.join(directory, "out1"))[0])
        self.assertEqual(answers[0]["metrics"], answers[1]["metrics"])
        failed = worker.call("run_inner_loop", inner_params("m99", os.path.join(directory, "x")))
        self.assertEqual((failed["ok"], failed["error_type"]), (False, "UnknownModelError"))
        self.assertEqual(worker.result("shutdown"), {})
        self.assertEqual(worker.wait()[0], 0)


# -- torch: the generic path ---------------------------------------------------------------------------------


class TorchCase(unittest.TestCase):
    def setUp(self):
        if torch is None:
            message = f"PyTorch is not importable by {sys.executable}: install python3-torch and use /usr/bin/python3"
            if os.environ.get("CI", "").lower() in ("true", "1"):
                self.fail(message)
            self.skipTest(message)
        self.dir = scratch(self)

    def build(self, seed=0):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def _linear_from(state):
    linear = torch.nn.Linear(len(state.weight[0]), len(state.weight))
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(state.weight))
        linear.bias.copy_(torch.tensor(state.bias))
    return linear


class GenericPackTest(TorchCase):
    def export_and_compare(self, state, state_dict_filter=None, name="pack"):
        path = os.path.join(self.dir, name)
        plan = pp.export_torch_pack(state, path, "schema-x", state_dict_filter)
        values, manifest = read_pack(path)
        expected_values, expected_manifest = reference_pack(state, "schema-x", state_dict_filter)
        self.assertEqual(values, expected_values)
        self.assertEqual(manifest, expected_manifest)
        return plan, values, json.loads(manifest)

    def test_a_module_matches_the_reference_byte_for_byte(self):
        module = self.build()
        plan, values, manifest = self.export_and_compare(module)
        self.assertEqual(manifest["ignored_non_float_keys"], ["1.num_batches_tracked"])
        self.assertEqual(manifest["included_keys"], ["0.bias", "0.weight", "1.bias", "1.running_mean", "1.running_var", "1.weight", "2.bias", "2.weight"])
        flat = []
        for key in manifest["included_keys"]:
            flat.extend(module.state_dict()[key].reshape(-1).tolist())
        self.assertEqual(struct_values(values), flat)
        self.assertEqual(plan.to_wire()["layout_hash"], manifest["layout_hash"])
        self.assertEqual(list(manifest), ["format", "model_schema_hash", "layout_hash", "parameter_count", "values_f32_le",
                                          "state_dict_filter", "included_keys", "excluded_float_keys", "ignored_non_float_keys"])

    def test_model_and_modules_states(self):
        module = self.build()
        _, values, manifest = self.export_and_compare({"model": module, "optimizer": "ignored"}, name="model")
        self.assertEqual(manifest["included_keys"][0], "0.bias")
        two = {"modules": {"head": torch.nn.Linear(2, 1), "body": self.build(1)}}
        _, _, manifest = self.export_and_compare(two, name="modules")
        self.assertEqual(manifest["included_keys"][:2], ["body.0.bias", "body.0.weight"])
        self.assertEqual(manifest["included_keys"][-2:], ["head.bias", "head.weight"])
        self.assertEqual(manifest["ignored_non_float_keys"], ["body.1.num_batches_tracked"])
        # One module under "modules" is still prefixed, as the reference does.
        _, _, manifest = self.export_and_compare({"modules": {"only": torch.nn.Linear(2, 1)}}, name="one")
        self.assertEqual(manifest["included_keys"], ["only.bias", "only.weight"])
        for bad, fragment in (({"modules": {}}, "non-empty"), ({"modules": {"a.b": module}}, "must not contain '.'"),
                              ({"modules": {"": module}}, "non-empty strings"), ({"weights": []}, "needs a torch module"),
                              (3, "needs a torch module")):
            with self.subTest(bad=bad), self.assertRaisesRegex(TypeError, fragment):
                pp.plan_for(bad, NO_FILTER)

    def test_filters(self):
        two = {"modules": {"enc": self.build(2), "dec": self.build(3)}}
        plan, _, manifest = self.export_and_compare(two, {"include_globs": ["enc.*", "dec.2.*"], "exclude_globs": ["*.bias", "*running*"]})
        self.assertEqual(manifest["included_keys"], ["dec.2.weight", "enc.0.weight", "enc.1.weight", "enc.2.weight"])
        self.assertIn("dec.0.weight", manifest["excluded_float_keys"])
        self.assertIn("enc.0.bias", manifest["excluded_float_keys"])
        self.assertEqual(manifest["ignored_non_float_keys"], ["dec.1.num_batches_tracked", "enc.1.num_batches_tracked"])
        self.assertEqual(manifest["state_dict_filter"], {"include_globs": ["enc.*", "dec.2.*"], "exclude_globs": ["*.bias", "*running*"]})
        self.assertEqual(plan.parameter_count, 4 * 2 + 3 * 4 + 4 + 2 * 4)
        # Everything excluded: an empty pack is still a pack.
        _, values, manifest = self.export_and_compare(two, {"exclude_globs": ["*"]}, name="empty")
        self.assertEqual((values, manifest["parameter_count"], manifest["included_keys"]), (b"", 0, []))

    def test_other_float_dtypes_are_cast_to_f32_and_back(self):
        module = torch.nn.Linear(3, 2)
        module.half()
        module.register_buffer("scale", torch.tensor([1.5, -2.25], dtype=torch.float64))
        plan, values, manifest = self.export_and_compare(module)
        self.assertEqual({entry["name"]: entry["dtype"] for entry in plan.layout},
                         {"bias": "torch.float16", "scale": "torch.float64", "weight": "torch.float16"})
        target = torch.nn.Linear(3, 2).half()
        target.register_buffer("scale", torch.zeros(2, dtype=torch.float64))
        pp.import_torch_pack(target, os.path.join(self.dir, "pack"), None)
        for key, value in module.state_dict().items():
            self.assertEqual(target.state_dict()[key].dtype, value.dtype)
            self.assertTrue(torch.equal(target.state_dict()[key], value), key)

    def test_import_loads_in_place_and_checks_everything_first(self):
        source, target = self.build(5), self.build(6)
        path = os.path.join(self.dir, "pack")
        pp.export_torch_pack(source, path, "h", None)
        live = list(target.parameters())
        before = {key: value.clone() for key, value in target.state_dict().items()}

        def unchanged():
            for key, value in target.state_dict().items():
                self.assertTrue(torch.equal(value, before[key]), key)

        # A different filter is a different layout.
        with self.assertRaisesRegex(pp.ParameterPackError, "does not match the model's layout"):
            pp.import_torch_pack(target, path, {"exclude_globs": ["*.bias"]})
        unchanged()
        with open(os.path.join(path, "values.f32le"), "r+b") as handle:
            handle.truncate(4 * 3)
        with self.assertRaisesRegex(pp.ParameterPackError, "byte length 12"):
            pp.import_torch_pack(target, path, None)
        unchanged()
        pp.export_torch_pack(source, path, "h", None)
        _, manifest = read_pack(path)
        owner_manifest(path, json.loads(manifest))
        pp.import_torch_pack(target, path, None)
        for key, value in source.state_dict().items():
            self.assertTrue(torch.equal(target.state_dict()[key], value), key)
        self.assertTrue(all(a is b for a, b in zip(live, target.parameters())))
        # num_batches_tracked is not packed: the target keeps its own.
        self.assertEqual(int(target.state_dict()["1.num_batches_tracked"]), int(before["1.num_batches_tracked"]))

    def test_the_standard_library_workloads_packs_fit_a_torch_linear_layer(self):
        workload = rw.make({"features": 8, "classes": 4})
        state = workload.init_model("cpu")
        workload.train_window(state, [micro_epoch([0])])
        path = os.path.join(self.dir, "softmax")
        workload.export_parameter_pack_path(state, path, "h")
        linear = torch.nn.Linear(8, 4)
        self.assertEqual(read_pack(path), reference_pack(_linear_from(state), "h"))
        pp.import_torch_pack(linear, path, None)
        self.assertEqual(linear.weight.tolist(), state.weight)
        self.assertEqual(linear.bias.tolist(), state.bias)
        pp.export_torch_pack(linear, os.path.join(self.dir, "back"), "h", None)
        self.assertEqual(read_pack(os.path.join(self.dir, "back")), read_pack(path))
        again = workload.import_parameter_pack_path("cpu", os.path.join(self.dir, "back"))
        self.assertEqual((again.weight, again.bias), (state.weight, state.bias))

    def test_state_dict_copies_are_loaded_through_load_state_dict(self):
        class Cloning(torch.nn.Linear):
            """A module whose state_dict hands out copies, not views of its parameters."""

            def state_dict(self, *args, **kwargs):
                return {key: value.clone() for key, value in super().state_dict(*args, **kwargs).items()}

        source, target = torch.nn.Linear(3, 2), Cloning(3, 2)
        path = os.path.join(self.dir, "pack")
        pp.export_torch_pack(source, path, "h", None)
        pp.import_torch_pack(target, path, None)
        self.assertTrue(torch.equal(target.weight, source.weight))
        self.assertTrue(torch.equal(target.bias, source.bias))
        # And the in-place path writes the live parameters themselves.
        plain = torch.nn.Linear(3, 2)
        weight = plain.weight
        pp.import_torch_pack(plain, path, None)
        self.assertIs(plain.weight, weight)
        self.assertTrue(torch.equal(weight, source.weight))

    def test_byteswap_path_writes_and_reads_big_endian_words(self):
        tensor = torch.tensor([1.0, -2.5, 3.25e-3, float("inf")])
        path = os.path.join(self.dir, "be.f32")
        pp.write_f32_tensors(path, [tensor], byteswap=True)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), struct.pack(">4f", *tensor.tolist()))
        self.assertTrue(torch.equal(pp.read_f32_tensor(path, 4, byteswap=True), tensor))

    def test_a_big_endian_host_writes_and_reads_the_same_little_endian_file(self):
        # Simulated: on a little-endian host, "swap because the host is big-endian" must turn
        # the file into big-endian words, and reading it back must undo exactly that.
        module, target = self.build(9), self.build(10)
        path = os.path.join(self.dir, "be")
        with mock.patch.object(pp, "BIG_ENDIAN_HOST", True):
            pp.export_torch_pack(module, path, "h", None)
            pp.import_torch_pack(target, path, None)
            workload = rw.make({})
            softmax = workload.init_model("cpu")
            workload.export_parameter_pack_path(softmax, os.path.join(self.dir, "be-softmax"), "h")
            again = workload.import_parameter_pack_path("cpu", os.path.join(self.dir, "be-softmax"))
        values, manifest = read_pack(path)
        expected, expected_manifest = reference_pack(module, "h")
        self.assertEqual(manifest, expected_manifest)
        self.assertEqual(values, struct.pack(f">{len(expected) // 4}f", *struct_values(expected)))
        for key, value in module.state_dict().items():
            self.assertTrue(torch.equal(target.state_dict()[key], value), key)
        flat = softmax.bias + [v for row in softmax.weight for v in row]
        self.assertEqual(read_pack(os.path.join(self.dir, "be-softmax"))[0], struct.pack(f">{len(flat)}f", *flat))
        self.assertEqual((again.weight, again.bias), (softmax.weight, softmax.bias))

    def test_without_numpy_the_bytes_are_the_same(self):
        module = self.build(7)
        with mock.patch.dict(sys.modules, {"numpy": None}):
            pp.export_torch_pack(module, os.path.join(self.dir, "no-numpy"), "h", None)
            target = self.build(8)
            pp.import_torch_pack(target, os.path.join(self.dir, "no-numpy"), None)
        self.assertEqual(read_pack(os.path.join(self.dir, "no-numpy")), reference_pack(module, "h"))
        for key, value in module.state_dict().items():
            self.assertTrue(torch.equal(target.state_dict()[key], value), key)

    def test_much_faster_than_lists_and_struct(self):
        import time

        def build():
            return torch.nn.Sequential(*[torch.nn.Linear(500, 500) for _ in range(4)])

        module, target = build(), build()
        path = os.path.join(self.dir, "big")

        def best(action, runs=3):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                action()
                times.append(time.perf_counter() - started)
            return min(times)

        export = best(lambda: pp.export_torch_pack(module, path, "h", None))
        load = best(lambda: pp.import_torch_pack(target, path, None))
        for key, value in module.state_dict().items():
            self.assertTrue(torch.equal(target.state_dict()[key], value), key)
        self.assertEqual(os.path.getsize(os.path.join(path, "values.f32le")), 4 * 4 * 500 * 501)

        def list_import():
            data, _ = read_pack(path)
            values = list(struct.unpack(f"<{len(data) // 4}f", data))
            offset = 0
            for _, value in sorted(target.state_dict().items()):
                value.copy_(torch.tensor(values[offset : offset + value.numel()]).reshape(value.shape))
                offset += value.numel()

        list_export = best(lambda: reference_pack(module, "h"), runs=1)
        list_load = best(list_import, runs=1)
        # About 8 MB each way: the list-and-struct way is 20-50x slower here; ask for 5x.
        self.assertLess(export * 5, list_export, (export, list_export))
        self.assertLess(load * 5, list_load, (load, list_load))


# -- torch workload: the four methods and run_inner_loop ------------------------------------------------------


class TorchWorkloadProtocol2Test(TorchCase):
    def setUp(self):
        super().setUp()
        from burn_p2p_python_runtime import torch_workload

        self.workload = torch_workload.make(TINY_TORCH)
        self.worker = DispatchHarness(self, self.workload)
        self.model = self.worker.result("init_model", {"device": "cpu"})["model_id"]

    def test_plan_export_import_through_the_dispatcher(self):
        state = self.worker.dispatcher.models[self.model]
        flt = {"include_globs": ["hidden*"], "exclude_globs": ["*.bias"]}
        plan = self.worker.result("parameter_pack_plan", {"device": "cpu", "state_dict_filter": flt})
        self.assertEqual(plan["included_keys"], ["hidden0.weight"])
        self.assertEqual(plan["excluded_float_keys"], ["hidden0.bias", "output.bias", "output.weight"])
        self.assertEqual((plan["uses_custom_parameter_pack_hooks"], plan["parameter_count"]), (False, 20))
        self.assertNotIn("generic_plan_error", plan)
        path = os.path.join(self.dir, "pack")
        self.worker.result("export_parameter_pack", {"model_id": self.model, "parameter_pack_path": path, "model_schema_hash": "s", "state_dict_filter": flt})
        self.assertEqual(read_pack(path), reference_pack(state, "s", flt))
        self.assertEqual(json.loads(read_pack(path)[1])["layout_hash"], plan["layout_hash"])
        imported = self.worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": path, "state_dict_filter": flt})["model_id"]
        self.assertTrue(torch.equal(self.worker.dispatcher.models[imported].module.hidden0.weight, state.module.hidden0.weight))
        self.worker.error("import_parameter_pack", {"device": "cpu", "parameter_pack_path": path, "state_dict_filter": NO_FILTER},
                          "does not match the model's layout")
        self.worker.error("import_parameter_pack", {"device": "cpu", "parameter_pack_path": path, "state_dict_filter": {"include_globs": "x"}},
                          "include_globs must be an array of strings")
        self.assertEqual(sorted(self.worker.dispatcher.models), [self.model, imported])

    def test_run_inner_loop(self):
        state = self.worker.dispatcher.models[self.model]
        before = {k: v.clone() for k, v in state.module.state_dict().items()}
        output = os.path.join(self.dir, "round1")
        answer = self.worker.result("run_inner_loop", inner_params(self.model, output, steps=5))
        self.assertEqual(answer["steps_completed"], 5)
        self.assertEqual(answer["inner_optimizer_state_encoding"], "torch-save-v1")
        self.assertEqual(answer["inner_optimizer_state_path"], output + ".inner-optimizer.pt")
        saved = torch.load(answer["inner_optimizer_state_path"])
        self.assertEqual(saved["format"], "torch-save-v1")
        self.assertEqual(saved["optimizer"]["state"][0]["step"].item(), 5)
        self.assertTrue(any(not torch.equal(before[k], v) for k, v in state.module.state_dict().items()))
        self.assertEqual(read_pack(output), reference_pack(state, "schema-1"))
        self.assertEqual(answer["metrics"]["steps"], 5)
        # Round 2 from the imported pack, resuming the optimiser, equals round 2 on the live model.
        twin = self.worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": output, "state_dict_filter": None})["model_id"]
        for model_id, name in ((self.model, "live"), (twin, "twin")):
            again = self.worker.result("run_inner_loop", inner_params(model_id, os.path.join(self.dir, name), steps=3,
                                                                      optimizer_path=answer["inner_optimizer_state_path"]))
            self.assertEqual(torch.load(again["inner_optimizer_state_path"])["optimizer"]["state"][0]["step"].item(), 8)
        self.assertEqual(read_pack(os.path.join(self.dir, "live")), read_pack(os.path.join(self.dir, "twin")))
        fresh = self.worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": output, "state_dict_filter": None})["model_id"]
        self.worker.result("run_inner_loop", inner_params(fresh, os.path.join(self.dir, "fresh"), steps=3))
        self.assertNotEqual(read_pack(os.path.join(self.dir, "fresh"))[0], read_pack(os.path.join(self.dir, "twin"))[0])
        # A filtered output pack.
        flt = {"include_globs": ["output.*"], "exclude_globs": []}
        self.worker.result("run_inner_loop", inner_params(self.model, os.path.join(self.dir, "filtered"), steps=1, state_dict_filter=flt))
        self.assertEqual(json.loads(read_pack(os.path.join(self.dir, "filtered"))[1])["included_keys"], ["output.bias", "output.weight"])

    def test_run_inner_loop_errors(self):
        self.worker.error("run_inner_loop", inner_params(self.model, os.path.join(self.dir, "o"), batches=[]), "non-empty list of batches")
        bogus = os.path.join(self.dir, "bogus.pt")
        torch.save({"format": "other"}, bogus)
        self.worker.error("run_inner_loop", inner_params(self.model, os.path.join(self.dir, "o"), optimizer_path=bogus), "is not a torch-save-v1 file")


def _run_two_torch_rounds(test, worker, directory):
    """Plan, export, import and two inner-loop rounds on one worker process; returns the packs it wrote."""
    plan = worker.result("parameter_pack_plan", {"device": "cpu", "state_dict_filter": NO_FILTER})
    model = worker.result("init_model", {"device": "cpu"})["model_id"]
    genesis = os.path.join(directory, "genesis")
    test.assertEqual(worker.result("export_parameter_pack", {"model_id": model, "parameter_pack_path": genesis,
                                                             "model_schema_hash": "h", "state_dict_filter": NO_FILTER}), {"ok": True})
    test.assertEqual(json.loads(read_pack(genesis)[1])["layout_hash"], plan["layout_hash"])
    _, manifest = read_pack(genesis)
    owner_manifest(genesis, json.loads(manifest))
    start = worker.result("import_parameter_pack", {"device": "cpu", "parameter_pack_path": genesis, "state_dict_filter": NO_FILTER})["model_id"]
    batches = [micro_epoch([0, 1, 2], seed=3)]
    first = worker.result("run_inner_loop", inner_params(start, os.path.join(directory, "r1"), steps=6, batches=batches))
    test.assertTrue(os.path.isfile(first["inner_optimizer_state_path"]))
    second = worker.result("run_inner_loop", inner_params(start, os.path.join(directory, "r2"), steps=6, batches=batches,
                                                          optimizer_path=first["inner_optimizer_state_path"]))
    failed = worker.call("run_inner_loop", inner_params("m42", os.path.join(directory, "never")))
    test.assertEqual((failed["ok"], failed["error_type"]), (False, "UnknownModelError"))
    return [read_pack(os.path.join(directory, name)) for name in ("r1", "r2")], (first["metrics"], second["metrics"])


class TorchWorkerProcessTest(TorchCase):
    def test_two_processes_give_identical_packs(self):
        workers = [WorkerProcess(self, factory=TORCH, config=TINY_TORCH) for _ in range(2)]
        results = []
        for index, worker in enumerate(workers):
            directory = os.path.join(self.dir, f"worker{index}")
            os.makedirs(directory)
            results.append(_run_two_torch_rounds(self, worker.accept(), directory))
        self.assertEqual(results[0], results[1])
        self.assertNotEqual(results[0][0][0], results[0][0][1])
        for worker in workers:
            self.assertEqual(worker.result("shutdown"), {})
            self.assertEqual(worker.wait()[0], 0)


if __name__ == "__main__":
    unittest.main()
