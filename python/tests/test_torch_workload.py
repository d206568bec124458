"""Tests for the PyTorch workload (burn_p2p_python_runtime.torch_workload).

Without torch these tests are skipped, except under CI (env CI=true or 1), where
they fail: install Debian's python3-torch and run them with /usr/bin/python3.
"""

import importlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import micro_epoch

try:
    import torch
except ImportError:
    torch = None

if torch is not None:
    from burn_p2p_python_runtime import safetensors

    tw = importlib.import_module("burn_p2p_python_runtime.torch_workload")

PYTHON_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_MISSING = (
    "PyTorch is not importable by this interpreter ({}): install it with "
    "`apt-get install python3-torch`, then run the tests with /usr/bin/python3"
)
# A tiny model whose 7 parameters can be checked by hand: 2 -> 1 -> 2.
TINY = {"features": 2, "classes": 2, "hidden": [1]}
FAST = {"probe_seconds": 0.02, "eval_examples": 512}


class TorchTestCase(unittest.TestCase):
    def setUp(self):
        if torch is None:
            message = TORCH_MISSING.format(sys.executable)
            if os.environ.get("CI", "").lower() in ("true", "1"):
                self.fail(message)
            self.skipTest(message)

    def make(self, **config):
        return tw.make({**FAST, **config})


def parameters(state):
    return {name: value.detach().clone() for name, value in state.module.state_dict().items()}


def filled(workload, *values):
    """A model whose flattened parameters (in sorted key order) cycle through ``values``."""
    state = workload.init_model("cpu")
    tensors = {}
    offset = 0
    for name, value in sorted(state.module.state_dict().items()):
        count = value.numel()
        flat = [values[(offset + i) % len(values)] for i in range(count)]
        tensors[name] = torch.tensor(flat, dtype=torch.float32).reshape(value.shape)
        offset += count
    state.assign(tensors)
    return state


def flat(state):
    return torch.cat([value.flatten() for _, value in sorted(state.module.state_dict().items())]).tolist()


def candidate(state, sample_weight=1.0, quality_weight=1.0, peer="p"):
    return {
        "peer_id": peer,
        "head_id": f"head-{peer}",
        "artifact_id": f"artifact-{peer}",
        "sample_weight": sample_weight,
        "quality_weight": quality_weight,
        "model": state,
    }


class DeviceAndProbeTest(TorchTestCase):
    def test_auto_picks_the_best_available_device(self):
        workload = self.make()
        state = workload.init_model("auto")
        expected = "cuda" if torch.cuda.is_available() else "mps" if tw._mps_available() else "cpu"
        self.assertEqual(state.device.type, expected)
        self.assertEqual(workload.runtime_device(), str(state.device))

    def test_explicit_cpu_is_honoured(self):
        workload = self.make()
        state = workload.init_model("cpu")
        self.assertEqual(workload.runtime_device(), "cpu")
        self.assertTrue(all(p.device.type == "cpu" for p in state.module.parameters()))

    def test_unavailable_or_unknown_device_is_a_clear_error(self):
        workload = self.make()
        if not torch.cuda.is_available():
            with self.assertRaisesRegex(ValueError, "CUDA is not available"):
                workload.init_model("cuda")
        if not tw._mps_available():
            with self.assertRaisesRegex(ValueError, "MPS is not available"):
                workload.init_model("mps")
        with self.assertRaisesRegex(ValueError, "'tpu'"):
            workload.init_model("tpu")

    def test_capability_probe_measures_examples_per_second(self):
        workload = self.make(target_window_seconds=7)
        estimate = workload.capability_probe()
        self.assertEqual(set(estimate), {"preferred_backends", "work_units_per_second", "target_window_seconds"})
        self.assertEqual(estimate["preferred_backends"], [torch.device(workload.runtime_device()).type])
        self.assertIsInstance(estimate["work_units_per_second"], float)
        self.assertGreater(estimate["work_units_per_second"], 0)
        self.assertEqual(estimate["target_window_seconds"], 7)

    def test_workload_name(self):
        self.assertEqual(self.make().workload_name, "torch-spiral-mlp")


class TrainingTest(TorchTestCase):
    def test_window_metrics(self):
        workload = self.make()
        state = workload.init_model("cpu")
        metrics = workload.train_window(state, [micro_epoch([0, 1]), micro_epoch([2, 3])])
        self.assertEqual(metrics["examples"], 4 * 128)
        # Two local epochs of 512 examples in batches of 32.
        self.assertEqual(metrics["steps"], 2 * 16)
        self.assertEqual(metrics["total_steps"], 32)
        self.assertEqual(metrics["learning_rate"], 0.01)
        self.assertIsInstance(metrics["loss"], float)
        self.assertTrue(math.isfinite(metrics["loss"]))
        self.assertTrue(0 <= metrics["accuracy"] <= 1)
        for value in metrics.values():
            self.assertIsInstance(value, (bool, int, float, str))
        self.assertEqual(workload.train_window(state, [micro_epoch([4])])["total_steps"], 32 + 2 * 4)

    def test_payload_may_override_examples_and_carry_padding(self):
        workload = self.make()
        state = workload.init_model("cpu")
        metrics = workload.train_window(state, [micro_epoch([0, 1], examples_per_microshard=10, padding="x" * 1000)])
        self.assertEqual(metrics["examples"], 20)

    def test_same_seed_same_result(self):
        batches = [micro_epoch([0, 1, 2, 3], seed=5)]
        results = []
        for _ in range(2):
            workload = self.make(seed=3, dataset_seed=9)
            state = workload.init_model("cpu")
            metrics = [workload.train_window(state, batches) for _ in range(2)]
            results.append((parameters(state), metrics))
        (first, first_metrics), (second, second_metrics) = results
        self.assertEqual(first_metrics, second_metrics)
        for name in first:
            self.assertTrue(torch.equal(first[name], second[name]), name)

    def test_init_depends_on_seed_only(self):
        first, second = parameters(self.make(seed=1).init_model("cpu")), parameters(self.make(seed=1).init_model("cpu"))
        other = parameters(self.make(seed=2).init_model("cpu"))
        self.assertTrue(all(torch.equal(first[name], second[name]) for name in first))
        self.assertFalse(all(torch.equal(first[name], other[name]) for name in first))

    def test_loss_goes_down_and_accuracy_rises(self):
        workload = self.make()
        state = workload.init_model("cpu")
        before = workload.evaluate(state, "Validation")
        losses = [workload.train_window(state, [micro_epoch(range(4 * w, 4 * w + 4))])["loss"] for w in range(12)]
        after = workload.evaluate(state, "Validation")
        self.assertLess(losses[-1], losses[0] * 0.7)
        self.assertLess(after["loss"], before["loss"] * 0.7)
        self.assertLess(before["accuracy"], 0.3)
        self.assertGreater(after["accuracy"], 0.6)

    def test_bad_batches_are_clear_errors(self):
        workload = self.make()
        state = workload.init_model("cpu")
        with self.assertRaisesRegex(ValueError, "'indexed-dataset'"):
            workload.train_window(state, [{**micro_epoch([0]), "pipeline_kind": "indexed-dataset"}])
        with self.assertRaisesRegex(ValueError, "'surprise'"):
            workload.train_window(state, [{"kind": "surprise"}])
        with self.assertRaisesRegex(ValueError, "payload seed"):
            workload.train_window(state, [{**micro_epoch([0]), "payload": {"padding": ""}}])
        with self.assertRaisesRegex(ValueError, "non-empty"):
            workload.train_window(state, [])
        with self.assertRaisesRegex(ValueError, "no examples"):
            workload.train_window(state, [micro_epoch([])])


class DataTest(TorchTestCase):
    def test_microshards_are_deterministic_and_disjoint(self):
        workload = self.make()
        x0, y0 = workload._batch_data(micro_epoch([0]))[0]
        again, _ = self.make()._batch_data(micro_epoch([0]))[0]
        x1, _ = workload._batch_data(micro_epoch([1]))[0]
        other_seed, _ = workload._batch_data(micro_epoch([0], seed=2))[0]
        other_dataset, _ = self.make(dataset_seed=1)._batch_data(micro_epoch([0]))[0]
        self.assertEqual(tuple(x0.shape), (128, 32))
        self.assertEqual(tuple(y0.shape), (128,))
        self.assertTrue(torch.equal(x0, again))
        for different in (x1, other_seed, other_dataset):
            self.assertFalse(torch.equal(x0, different))

    def test_every_class_appears_and_the_plane_is_rotated(self):
        x, y = self.make()._generate(4096, "check")
        self.assertEqual(sorted(set(y.tolist())), list(range(8)))
        # The rotation spreads the spiral plane over many coordinates.
        spread = x.var(dim=0)
        self.assertGreater(int((spread > 0.1).sum()), 2)

    def test_written_shards_train_exactly_like_generated_batches(self):
        with tempfile.TemporaryDirectory() as directory:
            paths = tw.write_shards(directory, {**FAST, "dataset_seed": 4}, [3, 5], seed=7)
            self.assertEqual(len(paths), 2)
            tensors, metadata = safetensors.load_file(paths[0])
            self.assertEqual(tensors["x"][:2], ("F32", [128, 32]))
            self.assertEqual(tensors["y"][:2], ("I64", [128]))
            self.assertEqual(metadata["ordinal"], "3")
            cached = {"kind": "cached_microshard_group", "shard_paths": paths, "microshard_ids": ["a", "b"], "ordinals": [3, 5], "bytes_len": 0}
            results = []
            for batch in (cached, micro_epoch([3, 5], seed=7)):
                workload = self.make(dataset_seed=4)
                state = workload.init_model("cpu")
                results.append((workload.train_window(state, [batch]), parameters(state)))
        (cached_metrics, cached_params), (generated_metrics, generated_params) = results
        self.assertEqual(cached_metrics, generated_metrics)
        self.assertTrue(all(torch.equal(cached_params[name], generated_params[name]) for name in cached_params))

    def test_malformed_shard_is_rejected(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "bad.safetensors")
            safetensors.save_file(path, {"x": ("F32", [1, 3], safetensors.f32_bytes([0, 0, 0])), "y": ("I64", [1], bytes(8))})
            workload = self.make()
            batch = {"kind": "cached_microshard_group", "shard_paths": [path], "microshard_ids": ["a"], "ordinals": [0], "bytes_len": 0}
            with self.assertRaisesRegex(ValueError, r"x must be F32 \[n, 32\]"):
                workload.train_window(workload.init_model("cpu"), [batch])

    def test_write_shards_cli(self):
        with tempfile.TemporaryDirectory() as directory:
            env = {**os.environ, "PYTHONPATH": PYTHON_ROOT}
            completed = subprocess.run(
                [sys.executable, "-m", "burn_p2p_python_runtime.torch_workload", "write-shards", "--out", directory,
                 "--config-json", json.dumps({"examples_per_microshard": 16}), "--ordinals", "0,2", "--seed", "3"],
                env=env, capture_output=True, text=True, timeout=120, check=True,
            )
            paths = json.loads(completed.stdout)
            self.assertEqual([os.path.basename(p) for p in paths], ["microshard-s3-o000000.safetensors", "microshard-s3-o000002.safetensors"])
            tensors, _ = safetensors.load_file(paths[1])
            self.assertEqual(tensors["x"][1], [16, 32])
            x, _ = self.make(examples_per_microshard=16)._batch_data(micro_epoch([2], seed=3))[0]
            self.assertEqual(tensors["x"][2], tw._f32_bytes(x))


class EvaluateTest(TorchTestCase):
    def test_each_split(self):
        workload = self.make()
        state = workload.init_model("cpu")
        for split in ("Train", "Validation", "Test"):
            metrics = workload.evaluate(state, split)
            self.assertEqual(metrics["split"], split)
            self.assertEqual(metrics["examples"], 512)
            self.assertTrue(math.isfinite(metrics["loss"]))
            self.assertTrue(0 <= metrics["accuracy"] <= 1)

    def test_held_out_data_differs_from_training_data(self):
        workload = self.make()
        workload.evaluate(workload.init_model("cpu"), "Train")
        workload.evaluate(workload.init_model("cpu"), "Validation")
        workload.evaluate(workload.init_model("cpu"), "Test")
        train, validation, test = (workload._eval_data[s][0] for s in ("Train", "Validation", "Test"))
        # Train evaluates on microshards 0.. of payload seed 0; the held-out splits have their own streams.
        self.assertTrue(torch.equal(train[:128], workload._batch_data(micro_epoch([0], seed=0))[0][0]))
        self.assertFalse(torch.equal(validation, test))
        self.assertFalse(torch.equal(validation[:128], train[:128]))

    def test_custom_and_unknown_splits_are_rejected(self):
        workload = self.make()
        state = workload.init_model("cpu")
        with self.assertRaisesRegex(ValueError, r"Custom\(holdout\)"):
            workload.evaluate(state, {"Custom": "holdout"})
        with self.assertRaisesRegex(ValueError, "'Dev'"):
            workload.evaluate(state, "Dev")


class ArtifactTest(TorchTestCase):
    def test_round_trip_is_bit_for_bit(self):
        workload = self.make()
        state = workload.init_model("cpu")
        workload.train_window(state, [micro_epoch([0, 1])])
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.safetensors")
            workload.materialize_model_artifact_path(state, path)
            self.assertEqual(os.listdir(directory), ["model.safetensors"])
            tensors, metadata = safetensors.load_file(path)
            expected = parameters(state)
            self.assertEqual(sorted(tensors), sorted(expected))
            self.assertEqual(metadata["workload"], "torch-spiral-mlp")
            with open(path, "rb") as handle:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_len))
            self.assertEqual([name for name in header if name != "__metadata__"], sorted(expected))
            for name, (dtype, shape, data) in tensors.items():
                self.assertEqual(dtype, "F32")
                self.assertEqual(shape, list(expected[name].shape))
                self.assertEqual(data, expected[name].numpy().tobytes())

            fresh = self.make(seed=99).init_model("cpu")
            live = list(fresh.module.parameters())
            self.assertIs(workload.load_model_artifact_path(fresh, path), fresh)
            loaded = parameters(fresh)
            for name in expected:
                self.assertEqual(loaded[name].numpy().tobytes(), expected[name].numpy().tobytes(), name)
            # Loaded in place: the optimizer still drives the same tensors.
            self.assertTrue(all(a is b for a, b in zip(live, fresh.module.parameters())))
            again = os.path.join(directory, "again.safetensors")
            workload.materialize_model_artifact_path(fresh, again)
            with open(path, "rb") as first, open(again, "rb") as second:
                self.assertEqual(first.read(), second.read())

    def test_artifact_of_another_architecture_is_rejected(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "tiny.safetensors")
            tiny = self.make(**TINY)
            tiny.materialize_model_artifact_path(tiny.init_model("cpu"), path)
            workload = self.make()
            with self.assertRaisesRegex(ValueError, "does not fit this model"):
                workload.load_model_artifact_path(workload.init_model("cpu"), path)


class MergeTest(TorchTestCase):
    def assertFlat(self, state, expected):
        for got, want in zip(flat(state), expected * (7 // len(expected) + 1)):
            self.assertAlmostEqual(got, want, delta=1e-6)

    def test_tiny_model_has_seven_parameters(self):
        self.assertEqual(len(flat(self.make(**TINY).init_model("cpu"))), 7)

    def test_weighted_mean(self):
        workload = self.make(**TINY)
        base = filled(workload, 100.0)
        one, three = filled(workload, 1.0), filled(workload, 3.0)
        merged = workload.merge_candidate_models(base, [candidate(one, 1), candidate(three, 3)], "WeightedMean")
        self.assertFlat(merged, [2.5])
        # Weight is sample_weight x quality_weight: 2 x 0.5 = 1 against 1 x 2 = 2.
        merged = workload.merge_candidate_models(base, [candidate(one, 2, 0.5), candidate(three, 1, 2)], "WeightedMean")
        self.assertFlat(merged, [7 / 3])

    def test_merge_returns_a_new_state_and_leaves_inputs_alone(self):
        workload = self.make(**TINY)
        base, one, two = filled(workload, 0.0), filled(workload, 1.0, 2.0), filled(workload, 3.0, 4.0)
        snapshots = [flat(state) for state in (base, one, two)]
        for policy in tw.MERGE_POLICIES:
            merged = workload.merge_candidate_models(base, [candidate(one), candidate(two)], policy)
            self.assertNotIn(merged, (base, one, two))
            self.assertEqual([flat(state) for state in (base, one, two)], snapshots)
            # The merged model is a full model: it trains.
            metrics = workload.train_window(merged, [micro_epoch([0])])
            self.assertEqual(metrics["examples"], 128)

    def test_no_candidates_or_zero_weights_give_none(self):
        workload = self.make(**TINY)
        base = filled(workload, 1.0)
        self.assertIsNone(workload.merge_candidate_models(base, [], "WeightedMean"))
        zero = [candidate(filled(workload, 2.0), 0, 0), candidate(filled(workload, 3.0), 5, 0)]
        for policy in tw.MERGE_POLICIES:
            self.assertIsNone(workload.merge_candidate_models(base, zero, policy), policy)
        # QualityWeightedEma weighs by quality alone, so a zero sample weight does not exclude.
        no_samples = [candidate(filled(workload, 2.0), 0, 1)]
        self.assertIsNone(workload.merge_candidate_models(base, no_samples, "Ema"))
        self.assertFlat(workload.merge_candidate_models(base, no_samples, "QualityWeightedEma"), [1.5])

    def test_norm_clipped_weighted_mean_defaults_to_the_median_norm(self):
        workload = self.make(**TINY)
        base = filled(workload, 1.0)
        # Deltas of 1, 3 and -2 per coordinate: norms sqrt(7) x (1, 3, 2), median 2 sqrt(7),
        # so only the second is clipped, to 2 per coordinate.
        candidates = [candidate(filled(workload, v)) for v in (2.0, 4.0, -1.0)]
        merged = workload.merge_candidate_models(base, candidates, "NormClippedWeightedMean")
        self.assertFlat(merged, [1.0 + (1 + 2 - 2) / 3])

    def test_norm_clipped_weighted_mean_with_fixed_clip_norm(self):
        workload = self.make(**TINY, clip_norm=math.sqrt(7) / 2)
        base = filled(workload, 1.0)
        candidates = [candidate(filled(workload, 2.0), 1), candidate(filled(workload, 4.0), 1), candidate(filled(workload, -1.0), 2)]
        merged = workload.merge_candidate_models(base, candidates, "NormClippedWeightedMean")
        # Every delta is clipped to 0.5 per coordinate in its own direction; weights 1/4, 1/4, 1/2.
        self.assertFlat(merged, [1.0 + 0.25 * 0.5 + 0.25 * 0.5 - 0.5 * 0.5])

    def test_trimmed_mean_drops_extremes_per_coordinate(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        # Five candidates, trim 0.2 -> one dropped from each end, per coordinate.
        rows = [(10.0, -7.0), (-5.0, 1.0), (1.0, 2.0), (2.0, 30.0), (3.0, 3.0)]
        candidates = [candidate(filled(workload, *row), sample_weight=i + 1) for i, row in enumerate(rows)]
        merged = workload.merge_candidate_models(base, candidates, "TrimmedMean")
        self.assertFlat(merged, [2.0, 2.0])

    def test_trimmed_mean_trims_at_least_one_from_three_and_none_from_two(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        three = [candidate(filled(workload, v)) for v in (1.0, 9.0, 2.0)]
        self.assertFlat(workload.merge_candidate_models(base, three, "TrimmedMean"), [2.0])
        two = [candidate(filled(workload, v), w) for v, w in ((1.0, 1), (9.0, 100))]
        self.assertFlat(workload.merge_candidate_models(base, two, "TrimmedMean"), [5.0])

    def test_trimmed_mean_ignores_zero_weight_candidates(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        candidates = [candidate(filled(workload, 1.0)), candidate(filled(workload, 3.0)), candidate(filled(workload, 1000.0), 0)]
        self.assertFlat(workload.merge_candidate_models(base, candidates, "TrimmedMean"), [2.0])

    def test_ema(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        candidates = [candidate(filled(workload, 2.0), 100, 1), candidate(filled(workload, 4.0), 1, 3)]
        # Weights 100 and 3: mean (200 + 12) / 103, half of it from alpha 0.5.
        self.assertFlat(workload.merge_candidate_models(base, candidates, "Ema"), [0.5 * 212 / 103])
        slow = self.make(**TINY, ema_alpha=0.25)
        self.assertFlat(slow.merge_candidate_models(base, candidates, "Ema"), [0.25 * 212 / 103])

    def test_quality_weighted_ema_ignores_sample_weight(self):
        workload = self.make(**TINY)
        base = filled(workload, 1.0)
        candidates = [candidate(filled(workload, 2.0), 100, 1), candidate(filled(workload, 4.0), 1, 3)]
        # Quality weights 1 and 3: mean 3.5; base 1 -> 0.5 x 1 + 0.5 x 3.5.
        self.assertFlat(workload.merge_candidate_models(base, candidates, "QualityWeightedEma"), [2.25])

    def test_custom_and_unknown_policies_are_rejected(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        candidates = [candidate(filled(workload, 1.0))]
        with self.assertRaisesRegex(ValueError, r"unknown merge policy Custom\(fedprox\)"):
            workload.merge_candidate_models(base, candidates, {"Custom": "fedprox"})
        with self.assertRaisesRegex(ValueError, r"unknown merge policy Custom\(fedprox\)"):
            workload.merge_candidate_models(base, [], {"Custom": "fedprox"})
        with self.assertRaisesRegex(ValueError, "'Median'"):
            workload.merge_candidate_models(base, candidates, "Median")

    def test_invalid_weights_and_layouts_are_rejected(self):
        workload = self.make(**TINY)
        base = filled(workload, 0.0)
        with self.assertRaisesRegex(ValueError, "sample_weight"):
            workload.merge_candidate_models(base, [candidate(filled(workload, 1.0), -1)], "WeightedMean")
        other = self.make(**{**TINY, "hidden": [2]}).init_model("cpu")
        with self.assertRaisesRegex(ValueError, "peer 'p'"):
            workload.merge_candidate_models(base, [candidate(other)], "WeightedMean")


class EmaAndReconcileTest(TorchTestCase):
    def test_single_root_ema_updates_the_merged_model(self):
        workload = self.make(**TINY)
        base, merged = filled(workload, 2.0), filled(workload, 4.0)
        self.assertIs(workload.apply_single_root_ema(base, merged, "WeightedMean"), merged)
        self.assertEqual(flat(merged), [3.0] * 7)
        self.assertEqual(flat(base), [2.0] * 7)
        tuned = self.make(**TINY, root_ema_beta=0.25)
        merged = filled(tuned, 4.0)
        tuned.apply_single_root_ema(filled(tuned, 2.0), merged, "Ema")
        self.assertEqual(flat(merged), [3.5] * 7)
        with self.assertRaisesRegex(ValueError, r"Custom\(x\)"):
            workload.apply_single_root_ema(base, merged, {"Custom": "x"})

    def test_replace_keeps_the_canonical_model(self):
        workload = self.make(**TINY)
        local, canonical = filled(workload, 1.0), filled(workload, 5.0)
        self.assertIs(workload.reconcile_canonical_model(local, canonical, "Replace"), canonical)
        self.assertEqual(flat(canonical), [5.0] * 7)
        self.assertEqual(flat(local), [1.0] * 7)

    def test_root_ema_blends_into_the_canonical_model(self):
        workload = self.make(**TINY)
        local, canonical = filled(workload, 0.0), filled(workload, 4.0)
        strategy = {"RootEma": {"canonical_weight": 0.25}}
        self.assertIs(workload.reconcile_canonical_model(local, canonical, strategy), canonical)
        self.assertEqual(flat(canonical), [1.0] * 7)
        self.assertEqual(flat(local), [0.0] * 7)

    def test_bad_strategies_are_rejected(self):
        workload = self.make(**TINY)
        local, canonical = filled(workload, 0.0), filled(workload, 4.0)
        with self.assertRaisesRegex(ValueError, "canonical_weight"):
            workload.reconcile_canonical_model(local, canonical, {"RootEma": {"canonical_weight": 1.5}})
        with self.assertRaisesRegex(ValueError, "unknown reconcile strategy"):
            workload.reconcile_canonical_model(local, canonical, "Average")


class PatchTest(TorchTestCase):
    @staticmethod
    def patch(**values):
        return {"patch_id": "p1", "class": "Hot", "summary": "tune", "values": values, "required_client_capabilities": []}

    def test_learning_rate_applies_to_live_and_new_models(self):
        workload = self.make()
        state = workload.init_model("cpu")
        self.assertEqual(workload.apply_patch(self.patch(learning_rate=1)), "Applied")
        self.assertEqual(state.optimizer.param_groups[0]["lr"], 1.0)
        self.assertEqual(workload.apply_patch(self.patch(learning_rate=0.002)), "Applied")
        self.assertEqual(workload.train_window(state, [micro_epoch([0])])["learning_rate"], 0.002)
        self.assertEqual(workload.init_model("cpu").optimizer.param_groups[0]["lr"], 0.002)

    def test_other_patches_are_rejected_with_a_reason(self):
        workload = self.make()
        state = workload.init_model("cpu")
        for values, reason in (
            ({"learning_rate": "0.1"}, "learning_rate must be a number"),
            ({"learning_rate": True}, "learning_rate must be a number"),
            ({"learning_rate": -0.1}, "learning_rate must be finite and positive"),
            ({"momentum": 0.9}, "momentum"),
            ({}, "no learning_rate"),
        ):
            outcome = workload.apply_patch(self.patch(**values))
            self.assertIsInstance(outcome, dict, values)
            self.assertIn(reason, outcome["Rejected"])
        self.assertEqual(state.optimizer.param_groups[0]["lr"], 0.01)


class ConfigTest(TorchTestCase):
    def test_bad_config_values_are_named(self):
        for config, name in (({"hidden": 64}, "hidden"), ({"batch_size": 0}, "batch_size"), ({"label_noise": 2}, "label_noise")):
            with self.assertRaisesRegex(ValueError, name):
                tw.make(config)

    def test_integral_floats_count_as_integers(self):
        self.assertEqual(tw.make({"batch_size": 16.0}).settings["batch_size"], 16)


if __name__ == "__main__":
    unittest.main()
