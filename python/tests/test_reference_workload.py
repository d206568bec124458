"""The standard-library reference workload, called directly."""

import copy
import os
import tempfile
import time
import unittest
from pathlib import Path

from burn_p2p_python_runtime import safetensors
from burn_p2p_python_runtime.reference_workload import SoftmaxState, make, write_shards
from tests.helpers import micro_epoch


def constant_state(value, classes=4, features=8):
    return SoftmaxState([[float(value)] * features for _ in range(classes)], [float(value)] * classes)


def candidate(state, sample_weight, quality_weight=1.0):
    return {"peer_id": "p", "head_id": "h", "artifact_id": "a", "sample_weight": sample_weight,
            "quality_weight": quality_weight, "model": state}


def train_rounds(workload, state, rounds):
    return [workload.train_window(state, [micro_epoch([4 * r + i for i in range(4)])]) for r in range(rounds)]


class TrainingTest(unittest.TestCase):
    def test_loss_goes_down(self):
        workload = make({"seed": 1, "dataset_seed": 2})
        state = workload.init_model("cpu")
        before = workload.evaluate(state, "Validation")
        windows = train_rounds(workload, state, 5)
        after = workload.evaluate(state, "Validation")
        self.assertLess(windows[-1]["loss"], windows[0]["loss"])
        self.assertLess(after["loss"], before["loss"])
        self.assertGreater(after["accuracy"], before["accuracy"])
        self.assertLess(after["accuracy"], 1.0)
        self.assertEqual(windows[0], {**windows[0], "examples": 256, "steps": 8, "learning_rate": 0.2})

    def test_training_is_deterministic(self):
        runs = []
        for _ in range(2):
            workload = make({"seed": 4, "dataset_seed": 9})
            state = workload.init_model("auto")
            runs.append((train_rounds(workload, state, 3), state.weight, state.bias))
        self.assertEqual(runs[0], runs[1])
        other = make({"seed": 4, "dataset_seed": 10})
        other_state = other.init_model("cpu")
        self.assertNotEqual(train_rounds(other, other_state, 3), runs[0][0])

    def test_disjoint_ordinals_are_disjoint_data(self):
        workload = make({})
        first, second = workload.microshard(1, 0), workload.microshard(1, 1)
        self.assertEqual(workload.microshard(1, 0), first)
        self.assertFalse(set(map(tuple, first[0])) & set(map(tuple, second[0])))
        self.assertNotEqual(workload.microshard(2, 0), first)
        self.assertEqual(len(workload.microshard(1, 0, 10)[0]), 10)

    def test_a_window_of_four_microshards_is_fast(self):
        workload = make({})
        state = workload.init_model("cpu")
        started = time.perf_counter()
        workload.train_window(state, [micro_epoch([0, 1, 2, 3])])
        self.assertLess(time.perf_counter() - started, 0.1)

    def test_payload_controls_the_microshard_size_and_ignores_padding(self):
        workload = make({})
        metrics = workload.train_window(workload.init_model("cpu"), [micro_epoch([0, 1], examples_per_microshard=5, padding="x" * 1000)])
        self.assertEqual((metrics["examples"], metrics["steps"]), (10, 1))

    def test_bad_batches_are_refused_by_name(self):
        workload = make({})
        state = workload.init_model("cpu")
        cases = [
            ({**micro_epoch([0]), "pipeline_kind": "indexed-dataset"}, "'indexed-dataset'"),
            ({**micro_epoch([0]), "payload": {"echo": 1}}, "payload.seed"),
            ({**micro_epoch([0]), "ordinals": [-1]}, "ordinals"),
            ({"kind": "tape"}, "'tape'"),
        ]
        for batch, fragment in cases:
            with self.subTest(fragment=fragment), self.assertRaises(ValueError) as caught:
                workload.train_window(state, [batch])
            self.assertIn(fragment, str(caught.exception))
        with self.assertRaises(ValueError):
            workload.train_window(state, [])

    def test_devices(self):
        workload = make({})
        self.assertEqual(workload.runtime_device(), "cpu")
        with self.assertRaises(ValueError) as caught:
            workload.init_model("cuda")
        self.assertIn("'cuda'", str(caught.exception))

    def test_capability_probe_measures_throughput(self):
        capability = make({"probe_examples": 64, "target_window_seconds": 3}).capability_probe()
        self.assertEqual(capability["preferred_backends"], ["cpu"])
        self.assertEqual(capability["target_window_seconds"], 3)
        self.assertGreater(capability["work_units_per_second"], 100)

    def test_bad_config_is_refused_by_key(self):
        for config, key in (({"learning_rate": "fast"}, "learning_rate"), ({"features": 0}, "features"), ({"root_ema_beta": 2}, "root_ema_beta")):
            with self.subTest(key=key), self.assertRaises(ValueError) as caught:
                make(config)
            self.assertIn(key, str(caught.exception))


class EvaluationTest(unittest.TestCase):
    def test_splits(self):
        workload = make({"eval_examples": 100, "train_eval_microshards": 2, "examples_per_microshard": 16})
        state = workload.init_model("cpu")
        validation, test = workload.evaluate(state, "Validation"), workload.evaluate(state, "Test")
        self.assertEqual((validation["examples"], validation["split"]), (100, "Validation"))
        self.assertEqual(test["split"], "Test")
        self.assertNotEqual(validation["loss"], test["loss"])
        self.assertEqual(workload.evaluate(state, "Train")["examples"], 32)

    def test_custom_split_is_rejected(self):
        workload = make({})
        with self.assertRaises(ValueError) as caught:
            workload.evaluate(workload.init_model("cpu"), {"Custom": "holdout"})
        self.assertIn("'holdout'", str(caught.exception))


class ArtifactTest(unittest.TestCase):
    def test_round_trip_is_bit_for_bit(self):
        workload = make({"seed": 2})
        state = workload.init_model("cpu")
        train_rounds(workload, state, 2)
        with tempfile.TemporaryDirectory() as directory:
            first, second = os.path.join(directory, "a.safetensors"), os.path.join(directory, "b.safetensors")
            workload.materialize_model_artifact_path(state, first)
            loaded = workload.load_model_artifact_path(workload.init_model("cpu"), first)
            workload.materialize_model_artifact_path(loaded, second)
            self.assertEqual(Path(first).read_bytes(), Path(second).read_bytes())
            tensors, metadata = safetensors.load_file(first)
        self.assertEqual((loaded.weight, loaded.bias), (state.weight, state.bias))
        self.assertEqual({name: tensor[:2] for name, tensor in tensors.items()}, {"weight": ("F32", [4, 8]), "bias": ("F32", [4])})
        self.assertEqual(metadata["format"], "burn-p2p-reference-softmax-v1")

    def test_a_mismatched_artifact_is_refused(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "small.safetensors")
            small = make({"features": 3})
            small.materialize_model_artifact_path(small.init_model("cpu"), path)
            with self.assertRaises(ValueError) as caught:
                make({}).load_model_artifact_path(None, path)
        self.assertIn("'weight'", str(caught.exception))


class MergeTest(unittest.TestCase):
    def test_weighted_mean_by_sample_and_quality(self):
        workload = make({})
        one, three = constant_state(1), constant_state(3)
        originals = copy.deepcopy((one.weight, three.weight))
        for policy in ("WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma"):
            with self.subTest(policy=policy):
                # weights 2 x 0.5 = 1 and 1 x 3 = 3: (1 * 1 + 3 * 3) / 4 = 2.5
                merged = workload.merge_candidate_models(constant_state(0), [candidate(one, 2.0, 0.5), candidate(three, 1, 3)], policy)
                self.assertEqual(merged.weight, [[2.5] * 8] * 4)
                self.assertEqual(merged.bias, [2.5] * 4)
        self.assertEqual((one.weight, three.weight), originals)
        self.assertIsNot(workload.merge_candidate_models(one, [candidate(one, 1)], "WeightedMean"), one)

    def test_nothing_to_merge(self):
        workload = make({})
        self.assertIsNone(workload.merge_candidate_models(constant_state(0), [], "WeightedMean"))
        self.assertIsNone(workload.merge_candidate_models(constant_state(0), [candidate(constant_state(1), 0.0)], "WeightedMean"))

    def test_custom_and_unknown_policies_are_errors(self):
        workload = make({})
        for policy, fragment in (({"Custom": "krum"}, "'krum'"), ("Median", "'Median'")):
            with self.subTest(policy=policy), self.assertRaises(ValueError) as caught:
                workload.merge_candidate_models(constant_state(0), [candidate(constant_state(1), 1)], policy)
            self.assertIn(fragment, str(caught.exception))

    def test_single_root_ema(self):
        base, merged = constant_state(4), constant_state(8)
        updated = make({"root_ema_beta": 0.25}).apply_single_root_ema(base, merged, "Ema")
        self.assertEqual(updated.weight, [[7.0] * 8] * 4)
        self.assertEqual(updated.bias, [7.0] * 4)
        self.assertEqual(merged.bias, [8.0] * 4)
        self.assertEqual(make({}).apply_single_root_ema(base, merged, "Ema").bias, [6.0] * 4)

    def test_reconcile_strategies(self):
        workload = make({})
        local, canonical = constant_state(2), constant_state(10)
        self.assertIs(workload.reconcile_canonical_model(local, canonical, "Replace"), canonical)
        blended = workload.reconcile_canonical_model(local, canonical, {"RootEma": {"canonical_weight": 0.25}})
        self.assertEqual(blended.weight, [[4.0] * 8] * 4)
        self.assertEqual(blended.bias, [4.0] * 4)
        for strategy in ("Keep", {"RootEma": {"canonical_weight": 1.5}}):
            with self.subTest(strategy=strategy), self.assertRaises(ValueError):
                workload.reconcile_canonical_model(local, canonical, strategy)


class PatchTest(unittest.TestCase):
    def patch(self, values):
        return {"patch_id": "p", "class": "Hot", "summary": "", "values": values, "required_client_capabilities": []}

    def test_learning_rate_is_applied(self):
        workload = make({})
        self.assertEqual(workload.apply_patch(self.patch({"learning_rate": 1})), "Applied")
        self.assertEqual(workload.learning_rate, 1.0)
        self.assertIsInstance(workload.learning_rate, float)
        self.assertEqual(workload.apply_patch(self.patch({"learning_rate": 0.05})), "Applied")
        state = workload.init_model("cpu")
        self.assertEqual(workload.train_window(state, [micro_epoch([0])])["learning_rate"], 0.05)

    def test_anything_else_is_rejected_by_key(self):
        workload = make({})
        for values, fragment in (({"momentum": 0.9}, "'momentum'"), ({"learning_rate": "0.1"}, "learning_rate"),
                                 ({"learning_rate": True}, "learning_rate"), ({"learning_rate": -1}, "learning_rate"),
                                 ({"learning_rate": 0.1, "warmup": 3}, "'warmup'"), ({}, "learning_rate")):
            with self.subTest(values=values):
                outcome = workload.apply_patch(self.patch(values))
                self.assertIn(fragment, outcome["Rejected"])
        self.assertEqual(workload.learning_rate, 0.2)


class ShardTest(unittest.TestCase):
    def test_shards_train_like_the_generated_microshards(self):
        config = {"dataset_seed": 6, "seed": 3}
        with tempfile.TemporaryDirectory() as directory:
            paths = write_shards(os.path.join(directory, "shards"), config, [2, 5], seed=4)
            self.assertTrue(all(os.path.isabs(path) and os.path.exists(path) for path in paths))
            tensors, _ = safetensors.load_file(paths[0])
            self.assertEqual((tensors["x"][:2], tensors["y"][:2]), (("F32", [64, 8]), ("I64", [64])))
            workload = make(config)
            from_shards, generated = workload.init_model("cpu"), workload.init_model("cpu")
            shard_metrics = workload.train_window(from_shards, [{"kind": "cached_microshard_group", "shard_paths": paths,
                                                                 "microshard_ids": [], "ordinals": [2, 5], "bytes_len": 0}])
            generated_metrics = workload.train_window(generated, [micro_epoch([2, 5], seed=4)])
        self.assertEqual(shard_metrics, generated_metrics)
        self.assertEqual((from_shards.weight, from_shards.bias), (generated.weight, generated.bias))

    def test_a_shard_of_the_wrong_width_is_refused(self):
        with tempfile.TemporaryDirectory() as directory:
            paths = write_shards(directory, {"features": 3}, [0], examples_per_shard=4)
            workload = make({})
            with self.assertRaises(ValueError) as caught:
                workload.train_window(workload.init_model("cpu"), [{"kind": "cached_microshard_group", "shard_paths": paths}])
        self.assertIn("[4, 3]", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
