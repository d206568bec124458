"""A standard-library workload: softmax regression trained by minibatch SGD on Gaussian blobs.

Factory: ``burn_p2p_python_runtime.reference_workload:make``.

Data. ``classes`` Gaussian blobs in ``features`` dimensions; the class centres
come from ``dataset_seed`` (centre coordinates ~ N(0, class_separation^2),
unit noise), so the classes overlap and accuracy stays below 100%. A
*microshard* is ``examples_per_microshard`` examples drawn from the stream
named by (dataset_seed, payload seed, ordinal): disjoint ordinals give
disjoint data. Inputs are rounded to f32 when generated, so a microshard
written to a shard file and the same microshard generated in memory train
identically. Validation and Test are ``eval_examples`` examples each from
their own streams, disjoint from every training stream; Train evaluates on
microshards 0 .. train_eval_microshards-1 of payload seed 0.

Config keys (all optional; unknown keys are ignored so one config can serve
both workloads):
- ``dataset_seed`` (int, 0): identity of the dataset (class geometry and all streams)
- ``seed`` (int, 0): model initialisation
- ``learning_rate`` (float, 0.2): SGD step size; ``apply_patch`` can change it
- ``examples_per_microshard`` (int, 64)
- ``features`` (int, 8), ``classes`` (int, 4)
- ``class_separation`` (float, 1.0): spread of the class centres
- ``batch_size`` (int, 32): examples per SGD step
- ``eval_examples`` (int, 512), ``train_eval_microshards`` (int, 4)
- ``root_ema_beta`` (float in [0, 1], 0.5): weight of the base model in ``apply_single_root_ema``
- ``probe_examples`` (int, 512): size of the timed run in ``capability_probe``
- ``target_window_seconds`` (int, 1): reported in the capability estimate
- ``inner_learning_rate`` (float or null: ``learning_rate``), ``inner_momentum``
  (float in [0, 1), 0.9): the momentum SGD of ``run_inner_loop``

Batches for ``train_window`` (examples are consumed in the order given):
- ``{"kind": "micro_epoch", "pipeline_kind": "generated-dataset", "ordinals": [o, ...],
  "payload": {"seed": int, "examples_per_microshard": int (optional)}, ...}``:
  other payload keys are ignored; other pipeline kinds are refused.
- ``{"kind": "cached_microshard_group", "shard_paths": [path, ...], ...}``: safetensors
  files holding ``x`` (F32, [n, features]) and ``y`` (I64, [n]), as ``write_shards`` writes them.

Metrics: ``train_window`` -> loss (mean cross-entropy over the window, each
example scored before its step's update), accuracy, examples, learning_rate,
steps. ``evaluate`` -> loss, accuracy, examples, split. Capability work units
are training examples per second.

Artifacts are safetensors files with ``weight`` (F32, [classes, features]) and
``bias`` (F32, [classes]). Parameters are kept f32-representable, so a
materialised artifact loads back bit for bit.

Parameter packs (protocol 2): the workload brings its own hooks, so
everything runs without torch. ``export_parameter_pack_path`` /
``import_parameter_pack_path`` use the worker's pack format (values through
``array('f')``, byte-swapped on a big-endian host) with the layout ``bias``
[classes], ``weight`` [classes, features], both ``"torch.float32"``: the same
names, shapes and so layout hash as a torch state_dict of that shape would
have. ``parameter_pack_plan`` reports that layout (both tensors are always
packed; the hooks see no filter). ``run_inner_loop`` runs momentum SGD and
keeps the velocity in a JSON file.

Shard CLI:
    python -m burn_p2p_python_runtime.reference_workload write-shards \
        --out DIR --config-json JSON --ordinals 0,1,2 [--seed N] [--examples-per-shard N]
prints the written paths as a JSON list.
"""

import json
import math
import os
import struct
import sys
import time
from array import array
from operator import mul
from random import Random

from . import parameter_pack, safetensors, shards

MERGE_POLICIES = ("WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma")
SPLITS = ("Train", "Validation", "Test")
ARTIFACT_FORMAT = "burn-p2p-reference-softmax-v1"
PACK_DTYPE = "torch.float32"
INNER_STATE_ENCODING = "reference-softmax-momentum-json-v1"


class SoftmaxState:
    """One model: ``weight[c]`` is class c's row of ``features`` floats, ``bias[c]`` its bias."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight, bias):
        self.weight = weight
        self.bias = bias

    def __repr__(self):
        return f"SoftmaxState(weight={self.weight!r}, bias={self.bias!r})"


class ReferenceWorkload:
    workload_name = "reference-softmax"

    def __init__(self, config=None):
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise TypeError(f"workload config must be a JSON object, got {type(config).__name__}")
        self.dataset_seed = _int(config, "dataset_seed", 0)
        self.seed = _int(config, "seed", 0)
        self.learning_rate = _float(config, "learning_rate", 0.2, positive=True)
        self.examples_per_microshard = _int(config, "examples_per_microshard", 64, minimum=1)
        self.features = _int(config, "features", 8, minimum=1)
        self.classes = _int(config, "classes", 4, minimum=2)
        self.class_separation = _float(config, "class_separation", 1.0, positive=True)
        self.batch_size = _int(config, "batch_size", 32, minimum=1)
        self.eval_examples = _int(config, "eval_examples", 512, minimum=1)
        self.train_eval_microshards = _int(config, "train_eval_microshards", 4, minimum=1)
        self.root_ema_beta = _float(config, "root_ema_beta", 0.5)
        if not 0.0 <= self.root_ema_beta <= 1.0:
            raise ValueError(f"config root_ema_beta must be within [0, 1], got {self.root_ema_beta}")
        self.probe_examples = _int(config, "probe_examples", 512, minimum=1)
        self.target_window_seconds = _int(config, "target_window_seconds", 1, minimum=1)
        self.inner_learning_rate = None if config.get("inner_learning_rate") is None else _float(config, "inner_learning_rate", None, positive=True)
        self.inner_momentum = _float(config, "inner_momentum", 0.9)
        if not 0.0 <= self.inner_momentum < 1.0:
            raise ValueError(f"config inner_momentum must be within [0, 1), got {self.inner_momentum}")
        centres = self._stream("centres")
        self._centres = [[centres.gauss(0.0, self.class_separation) for _ in range(self.features)] for _ in range(self.classes)]
        self._eval_sets = {}

    def runtime_device(self):
        return "cpu"

    def capability_probe(self):
        state = self.init_model("cpu")
        xs, ys = self._examples(self._stream("probe"), self.probe_examples)
        started = time.perf_counter()
        self._sgd(state, xs, ys)
        elapsed = time.perf_counter() - started
        return {
            "preferred_backends": ["cpu"],
            "work_units_per_second": len(xs) / max(elapsed, 1e-9),
            "target_window_seconds": self.target_window_seconds,
        }

    def init_model(self, device):
        if device not in ("cpu", "auto"):
            raise ValueError(f"the reference workload runs on the CPU only: device {device!r} is not supported (use 'cpu' or 'auto')")
        rng = self._stream("init", self.seed)
        weight = [_round_f32([rng.gauss(0.0, 0.1) for _ in range(self.features)]) for _ in range(self.classes)]
        return SoftmaxState(weight, [0.0] * self.classes)

    def train_window(self, state, batches):
        self._check_state(state, "model")
        xs, ys = [], []
        for index, batch in enumerate(batches):
            batch_xs, batch_ys = self._batch_examples(batch, f"batches[{index}]")
            xs.extend(batch_xs)
            ys.extend(batch_ys)
        if not xs:
            raise ValueError("train_window got no examples: batches is empty")
        loss, accuracy, steps = self._sgd(state, xs, ys)
        return {"loss": loss, "accuracy": accuracy, "examples": len(xs), "learning_rate": self.learning_rate, "steps": steps}

    def evaluate(self, state, split):
        self._check_state(state, "model")
        if isinstance(split, dict) and set(split) == {"Custom"}:
            raise ValueError(f"custom evaluation split {split['Custom']!r} is not supported by the reference workload (supported: {', '.join(SPLITS)})")
        if split not in SPLITS:
            raise ValueError(f"unknown evaluation split {split!r} (supported: {', '.join(SPLITS)})")
        xs, ys = self._eval_set(split)
        loss_sum, correct = 0.0, 0
        for x, y in zip(xs, ys):
            logits = _logits(state, x)
            top = max(logits)
            loss_sum += math.log(sum(math.exp(value - top) for value in logits)) + top - logits[y]
            correct += logits.index(top) == y
        return {"loss": loss_sum / len(xs), "accuracy": correct / len(xs), "examples": len(xs), "split": split}

    def apply_patch(self, patch):
        values = patch.get("values") if isinstance(patch, dict) else None
        if not isinstance(values, dict) or not values:
            return {"Rejected": "patch carries no values; the reference workload patches only learning_rate"}
        for key in sorted(values):
            if key != "learning_rate":
                return {"Rejected": f"unsupported patch value {key!r}: the reference workload patches only learning_rate"}
        rate = values["learning_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            return {"Rejected": f"learning_rate must be a positive number, got {rate!r}"}
        self.learning_rate = float(rate)
        return "Applied"

    def materialize_model_artifact_path(self, state, path):
        self._check_state(state, "model")
        safetensors.save_file(
            path,
            {
                "weight": ("F32", [self.classes, self.features], safetensors.f32_bytes(v for row in state.weight for v in row)),
                "bias": ("F32", [self.classes], safetensors.f32_bytes(state.bias)),
            },
            {"format": ARTIFACT_FORMAT, "features": self.features, "classes": self.classes},
        )

    def load_model_artifact_path(self, state, path):
        tensors, _metadata = safetensors.load_file(path)
        expected = {"weight": [self.classes, self.features], "bias": [self.classes]}
        for name, shape in expected.items():
            if name not in tensors:
                raise ValueError(f"artifact {path} has no tensor {name!r}")
            dtype, found, _ = tensors[name]
            if dtype != "F32" or found != shape:
                raise ValueError(f"artifact {path} tensor {name!r} is {dtype} {found}, expected F32 {shape}")
        flat = safetensors.f32_values(tensors["weight"][2])
        weight = [flat[row * self.features : (row + 1) * self.features] for row in range(self.classes)]
        return SoftmaxState(weight, safetensors.f32_values(tensors["bias"][2]))

    # -- protocol 2: parameter packs and the inner loop ------------------------------

    def parameter_pack_layout(self):
        """The pack layout: ``bias`` then ``weight`` (sorted names, as a torch state_dict would give), float32."""
        return [
            parameter_pack.layout_entry("bias", [self.classes], PACK_DTYPE, self.classes),
            parameter_pack.layout_entry("weight", [self.classes, self.features], PACK_DTYPE, self.classes * self.features),
        ]

    def parameter_pack_plan(self, state, state_dict_filter):
        """The plan the pack hooks follow (an extension the worker honours; see protocol2.py).

        Both tensors are always packed: the hooks' signatures carry no filter,
        so the plan reports the same whatever ``state_dict_filter`` says.
        """
        self._check_state(state, "model")
        layout = self.parameter_pack_layout()
        return {
            "layout_hash": parameter_pack.layout_hash(layout),
            "included_keys": [entry["name"] for entry in layout],
            "excluded_float_keys": [],
            "ignored_non_float_keys": [],
            "parameter_count": sum(entry["numel"] for entry in layout),
        }

    def export_parameter_pack_path(self, state, path, model_schema_hash):
        """Writes the model as a parameter pack (the generic format, values through ``array('f')``)."""
        self._check_state(state, "model")
        values = [array("f", state.bias), array("f", [v for row in state.weight for v in row])]
        parameter_pack.write_pack_from_f32_arrays(path, model_schema_hash, self.parameter_pack_layout(), values)

    def import_parameter_pack_path(self, device, path):
        """A new model from a parameter pack; the layout hash must be this model's."""
        self.init_model(device)  # the same device check
        values = parameter_pack.read_pack_f32_array(path, self.parameter_pack_layout())
        bias = values[: self.classes].tolist()
        flat = values[self.classes :].tolist()
        weight = [flat[row * self.features : (row + 1) * self.features] for row in range(self.classes)]
        return SoftmaxState(weight, bias)

    def run_inner_loop(self, state, params):
        """``num_inner_steps`` steps of SGD with heavy-ball momentum, the model updated in place.

        One step is one minibatch of ``batch_size`` examples; the batches'
        minibatches are cycled in order until the step count is reached.
        Update: ``v <- inner_momentum * v + g``, ``w <- w - inner_learning_rate * v``
        (``inner_learning_rate`` null: ``learning_rate``). The velocity is the
        optimiser state: read from ``inner_optimizer_state_path`` when given,
        zero on the first round, and written as JSON to
        ``<output_parameter_pack_path>.inner-optimizer.json`` (encoding
        ``"reference-softmax-momentum-json-v1"``), whose path the answer returns.
        """
        self._check_state(state, "model")
        steps = params.get("num_inner_steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"num_inner_steps must be a non-negative integer, got {steps!r}")
        xs, ys = [], []
        for index, batch in enumerate(params.get("batches") or []):
            batch_xs, batch_ys = self._batch_examples(batch, f"batches[{index}]")
            xs.extend(batch_xs)
            ys.extend(batch_ys)
        if not xs:
            raise ValueError("run_inner_loop got no examples: batches is empty")
        velocity_w, velocity_b = self._read_velocity(params.get("inner_optimizer_state_path"))
        rate = self.learning_rate if self.inner_learning_rate is None else self.inner_learning_rate
        momentum = self.inner_momentum
        weight, bias = state.weight, state.bias
        starts = list(range(0, len(xs), self.batch_size))
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps):
            start = starts[step % len(starts)]
            batch_x, batch_y = xs[start : start + self.batch_size], ys[start : start + self.batch_size]
            grad_w, grad_b, batch_loss, batch_correct = self._gradients(weight, bias, batch_x, batch_y)
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(batch_x)
            scale = 1.0 / len(batch_x)
            for c in range(self.classes):
                velocity_w[c] = [momentum * v + scale * g for v, g in zip(velocity_w[c], grad_w[c])]
                velocity_b[c] = momentum * velocity_b[c] + scale * grad_b[c]
                weight[c] = [w - rate * v for w, v in zip(weight[c], velocity_w[c])]
                bias[c] -= rate * velocity_b[c]
        state.weight = [_round_f32(row) for row in weight]
        state.bias = _round_f32(bias)
        target = os.path.normpath(params["output_parameter_pack_path"]) + ".inner-optimizer.json"
        record = {"format": INNER_STATE_ENCODING, "classes": self.classes, "features": self.features,
                  "momentum": momentum, "velocity_weight": velocity_w, "velocity_bias": velocity_b}
        partial = f"{target}.partial-{os.getpid()}"
        try:
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        metrics = {"steps": steps, "examples": len(xs), "learning_rate": rate}
        if seen:
            metrics.update(loss=loss_sum / seen, accuracy=correct / seen)
        return {
            "steps_completed": steps,
            "metrics": metrics,
            "inner_optimizer_state_path": target,
            "inner_optimizer_state_encoding": INNER_STATE_ENCODING,
        }

    def _read_velocity(self, path):
        if path is None:
            return [[0.0] * self.features for _ in range(self.classes)], [0.0] * self.classes
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        if not isinstance(record, dict) or record.get("format") != INNER_STATE_ENCODING:
            raise ValueError(f"inner optimizer state {path!r} is not a {INNER_STATE_ENCODING} file")
        velocity_w, velocity_b = record.get("velocity_weight"), record.get("velocity_bias")
        if (
            record.get("classes") != self.classes or record.get("features") != self.features
            or not isinstance(velocity_w, list) or len(velocity_w) != self.classes
            or any(not isinstance(row, list) or len(row) != self.features for row in velocity_w)
            or not isinstance(velocity_b, list) or len(velocity_b) != self.classes
        ):
            raise ValueError(f"inner optimizer state {path!r} does not fit {self.classes} classes x {self.features} features")
        return [[float(v) for v in row] for row in velocity_w], [float(v) for v in velocity_b]

    def _gradients(self, weight, bias, batch_x, batch_y):
        """Summed cross-entropy gradients over one minibatch: (grad_w, grad_b, loss sum, correct)."""
        classes, exp, log = range(self.classes), math.exp, math.log
        grad_w = [[0.0] * self.features for _ in classes]
        grad_b = [0.0] * self.classes
        loss_sum, correct = 0.0, 0
        for x, y in zip(batch_x, batch_y):
            logits = [b + sum(map(mul, row, x)) for row, b in zip(weight, bias)]
            top = max(logits)
            exps = [exp(value - top) for value in logits]
            total = sum(exps)
            loss_sum += log(total) + top - logits[y]
            correct += logits.index(top) == y
            for c in classes:
                g = exps[c] / total - (c == y)
                grad_b[c] += g
                grad_w[c] = [acc + g * xi for acc, xi in zip(grad_w[c], x)]
        return grad_w, grad_b, loss_sum, correct

    def merge_candidate_models(self, base_state, candidates, policy):
        """Weighted mean of the candidates, weight = sample_weight x quality_weight.

        Every built-in policy uses the weighted mean here; ``{"Custom": name}``
        is refused. The base model does not take part.
        """
        self._check_state(base_state, "base model")
        _check_policy(policy)
        terms = []
        for index, candidate in enumerate(candidates):
            weight = candidate["sample_weight"] * candidate["quality_weight"]
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"candidate {index} ({candidate.get('peer_id')!r}) has an invalid merge weight {weight!r}")
            self._check_state(candidate["model"], f"candidates[{index}].model")
            terms.append((weight, candidate["model"]))
        total = sum(weight for weight, _ in terms)
        if total == 0:
            return None
        return _linear_combination([(weight / total, state) for weight, state in terms])

    def apply_single_root_ema(self, base_state, merged_state, policy):
        self._check_state(base_state, "base model")
        self._check_state(merged_state, "merged model")
        _check_policy(policy)
        beta = self.root_ema_beta
        return _linear_combination([(beta, base_state), (1.0 - beta, merged_state)])

    def reconcile_canonical_model(self, local_state, canonical_state, strategy):
        self._check_state(local_state, "local model")
        self._check_state(canonical_state, "canonical model")
        if strategy == "Replace":
            return canonical_state
        root_ema = strategy.get("RootEma") if isinstance(strategy, dict) and len(strategy) == 1 else None
        if not isinstance(root_ema, dict):
            raise ValueError(f"unknown reconcile strategy {strategy!r} (expected \"Replace\" or {{\"RootEma\": {{\"canonical_weight\": w}}}})")
        weight = root_ema.get("canonical_weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"RootEma canonical_weight must be a number within [0, 1], got {weight!r}")
        return _linear_combination([(weight, canonical_state), (1.0 - weight, local_state)])

    def microshard(self, seed, ordinal, examples=None):
        """The examples of one microshard: (xs, ys)."""
        count = self.examples_per_microshard if examples is None else examples
        return self._examples(self._stream("train", seed, ordinal), count)

    def _sgd(self, state, xs, ys):
        """Minibatch SGD over the examples in order; updates ``state`` in place."""
        weight, bias, classes = state.weight, state.bias, range(self.classes)
        rate = self.learning_rate
        loss_sum, correct, steps = 0.0, 0, 0
        for start in range(0, len(xs), self.batch_size):
            batch_x = xs[start : start + self.batch_size]
            batch_y = ys[start : start + self.batch_size]
            grad_w, grad_b, batch_loss, batch_correct = self._gradients(weight, bias, batch_x, batch_y)
            loss_sum += batch_loss
            correct += batch_correct
            scale = rate / len(batch_x)
            for c in classes:
                weight[c] = [w - scale * g for w, g in zip(weight[c], grad_w[c])]
                bias[c] -= scale * grad_b[c]
            steps += 1
        state.weight = [_round_f32(row) for row in weight]
        state.bias = _round_f32(bias)
        return loss_sum / len(xs), correct / len(xs), steps

    def _batch_examples(self, batch, where):
        if not isinstance(batch, dict):
            raise ValueError(f"{where} must be an object, got {type(batch).__name__}")
        kind = batch.get("kind")
        if kind == "micro_epoch":
            pipeline = batch.get("pipeline_kind")
            if pipeline != "generated-dataset":
                raise ValueError(f"{where}: micro_epoch pipeline_kind {pipeline!r} is not supported by the reference workload (it generates its data: use 'generated-dataset')")
            payload = batch.get("payload")
            if not isinstance(payload, dict):
                raise ValueError(f"{where}.payload must be an object with an integer seed, got {payload!r}")
            seed = payload.get("seed")
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"{where}.payload.seed must be an integer, got {seed!r}")
            count = payload.get("examples_per_microshard", self.examples_per_microshard)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{where}.payload.examples_per_microshard must be a positive integer, got {count!r}")
            xs, ys = [], []
            for ordinal in _ordinals(batch, where):
                shard_xs, shard_ys = self.microshard(seed, ordinal, count)
                xs.extend(shard_xs)
                ys.extend(shard_ys)
            return xs, ys
        if kind == "cached_microshard_group":
            paths = batch.get("shard_paths")
            if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
                raise ValueError(f"{where}.shard_paths must be an array of strings")
            xs, ys = [], []
            for path in paths:
                shard_xs, shard_ys = self._read_shard(path)
                xs.extend(shard_xs)
                ys.extend(shard_ys)
            return xs, ys
        raise ValueError(f"{where}: unknown batch kind {kind!r} (expected 'micro_epoch' or 'cached_microshard_group')")

    def _read_shard(self, path):
        tensors, _metadata = safetensors.load_file(path)
        if "x" not in tensors or "y" not in tensors:
            raise ValueError(f"shard {path} must hold tensors 'x' and 'y', found {sorted(tensors)}")
        (x_dtype, x_shape, x_data), (y_dtype, y_shape, y_data) = tensors["x"], tensors["y"]
        if x_dtype != "F32" or len(x_shape) != 2 or x_shape[1] != self.features:
            raise ValueError(f"shard {path}: x is {x_dtype} {x_shape}, expected F32 [n, {self.features}]")
        count = x_shape[0]
        if y_dtype != "I64" or y_shape != [count]:
            raise ValueError(f"shard {path}: y is {y_dtype} {y_shape}, expected I64 [{count}]")
        flat = safetensors.f32_values(x_data)
        xs = [flat[i * self.features : (i + 1) * self.features] for i in range(count)]
        ys = list(struct.unpack(f"<{count}q", y_data))
        for label in ys:
            if not 0 <= label < self.classes:
                raise ValueError(f"shard {path}: label {label} is outside 0..{self.classes - 1}")
        return xs, ys

    def _eval_set(self, split):
        if split not in self._eval_sets:
            if split == "Train":
                xs, ys = [], []
                for ordinal in range(self.train_eval_microshards):
                    shard_xs, shard_ys = self.microshard(0, ordinal)
                    xs.extend(shard_xs)
                    ys.extend(shard_ys)
                self._eval_sets[split] = (xs, ys)
            else:
                self._eval_sets[split] = self._examples(self._stream(split.lower()), self.eval_examples)
        return self._eval_sets[split]

    def _stream(self, name, *parts):
        # A str seed goes through SHA-512: the same numbers in every process, whatever PYTHONHASHSEED says.
        return Random("/".join(["burn-p2p-reference", name, str(self.dataset_seed), *map(str, parts)]))

    def _examples(self, rng, count):
        ys = [rng.randrange(self.classes) for _ in range(count)]
        flat = _round_f32([value + rng.gauss(0.0, 1.0) for y in ys for value in self._centres[y]])
        return [flat[i * self.features : (i + 1) * self.features] for i in range(count)], ys

    def _check_state(self, state, role):
        if not isinstance(state, SoftmaxState):
            raise TypeError(f"{role} is a {type(state).__name__}, not a reference workload model")
        if len(state.weight) != self.classes or any(len(row) != self.features for row in state.weight) or len(state.bias) != self.classes:
            raise ValueError(f"{role} does not have {self.classes} classes x {self.features} features")


def make(config=None):
    return ReferenceWorkload(config)


def write_shards(directory, config, ordinals, examples_per_shard=None, seed=0):
    """Writes one safetensors shard per ordinal (the microshards of payload seed ``seed``); returns their paths."""
    workload = ReferenceWorkload(config)

    def shard(ordinal):
        xs, ys = workload.microshard(seed, ordinal, examples_per_shard)
        metadata = {"dataset_seed": workload.dataset_seed, "seed": seed, "ordinal": ordinal}
        return safetensors.f32_bytes(v for x in xs for v in x), struct.pack(f"<{len(ys)}q", *ys), metadata

    return shards.write(directory, seed, ordinals, workload.features, shard)


def _linear_combination(terms):
    """A new state: the sum of coefficient x state, rounded to f32."""
    first = terms[0][1]
    weight = [
        _round_f32([sum(coef * state.weight[c][i] for coef, state in terms) for i in range(len(first.weight[c]))])
        for c in range(len(first.weight))
    ]
    bias = _round_f32([sum(coef * state.bias[c] for coef, state in terms) for c in range(len(first.bias))])
    return SoftmaxState(weight, bias)


def _logits(state, x):
    return [b + sum(map(mul, row, x)) for row, b in zip(state.weight, state.bias)]


def _round_f32(values):
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def _check_policy(policy):
    if isinstance(policy, dict) and set(policy) == {"Custom"}:
        raise ValueError(f"custom merge policy {policy['Custom']!r} is not supported by the reference workload (supported: {', '.join(MERGE_POLICIES)})")
    if policy not in MERGE_POLICIES:
        raise ValueError(f"unknown merge policy {policy!r} (supported: {', '.join(MERGE_POLICIES)})")


def _ordinals(batch, where):
    ordinals = batch.get("ordinals")
    if not isinstance(ordinals, list) or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in ordinals):
        raise ValueError(f"{where}.ordinals must be an array of non-negative integers, got {ordinals!r}")
    return ordinals


def _int(config, key, default, minimum=None):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"config {key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"config {key} must be at least {minimum}, got {value}")
    return value


def _float(config, key, default, positive=False):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"config {key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"config {key} must be positive, got {value}")
    return float(value)


def main(argv=None):
    return shards.main("python -m burn_p2p_python_runtime.reference_workload", write_shards, argv)


if __name__ == "__main__":
    sys.exit(main())
