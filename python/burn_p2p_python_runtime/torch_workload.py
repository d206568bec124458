"""PyTorch workload: an MLP classifier on a generated many-armed spiral.

The dataset (fixed by ``dataset_seed``): ``classes`` spiral arms in a 2-D plane,
each arm turning ``spiral_turns`` times, with angular jitter; the plane is
padded with zeros to ``features`` dimensions, Gaussian noise is added to every
dimension and the result is rotated by a random orthogonal matrix, so no input
coordinate is informative on its own. A fraction ``label_noise`` of the labels
is resampled uniformly. A linear model stays near 1/4 accuracy on the default
geometry; the default MLP reaches about 0.8.

Factory: ``burn_p2p_python_runtime.torch_workload:make(config)``.

Config keys (all optional; defaults in ``DEFAULTS``):

- ``dataset_seed`` (int): identity of the dataset geometry (rotation).
- ``seed`` (int): model initialisation; every ``init_model`` starts from the
  same parameters, so peers share a genesis model.
- ``learning_rate`` (float): Adam step size.
- ``examples_per_microshard`` (int): examples per generated microshard.
- ``features``, ``classes`` (int), ``spiral_turns``, ``angle_noise``,
  ``feature_noise``, ``label_noise`` (float): dataset shape.
- ``hidden`` (list of int): hidden layer widths (ReLU between layers).
- ``batch_size`` (int), ``local_epochs`` (int): a training window makes
  ``local_epochs`` passes over its examples in minibatches of ``batch_size``.
- ``threads`` (int): ``torch.set_num_threads``, as workers share few cores.
- ``device`` (str): device reported before ``init_model`` picks one.
- ``eval_examples`` (int): examples per evaluation split.
- ``probe_seconds`` (float): length of the timed run in ``capability_probe``;
  ``target_window_seconds`` (int): what the probe reports as the target.
- ``clip_norm`` (float or null): L2 bound for ``NormClippedWeightedMean``;
  null means the median of the candidates' delta norms.
- ``trim_fraction`` (float), ``ema_alpha`` (float), ``root_ema_beta`` (float):
  see ``merge_candidate_models`` and ``apply_single_root_ema``.
- ``inner_learning_rate`` (float or null: ``learning_rate``), ``inner_betas``
  ([float, float]), ``inner_weight_decay`` (float): the AdamW of
  ``run_inner_loop`` (DiLoCo's inner optimiser).

Parameter packs (protocol 2): a model state is the dict ``{"model": module}``
(``TorchModelState``), so the worker's generic pack path exports and imports
it; ``run_inner_loop`` is the workload's own.

Data addressing: microshard ``o`` of payload seed ``s`` is generated from
(dataset_seed, s, o) and is the same whether it arrives as a ``micro_epoch``
batch (``pipeline_kind: "generated-dataset"``, payload ``{"seed": s,
"examples_per_microshard": n?}``) or as a shard file written by
``write_shards(..., seed=s)``. ``Validation`` and ``Test`` use their own seed
streams, which no training microshard can name; ``Train`` evaluates on
microshards 0, 1, ... of payload seed 0.

CLI: ``python -m burn_p2p_python_runtime.torch_workload write-shards --out DIR
--config-json JSON --ordinals 0,1,2 [--seed S] [--examples-per-shard N]``
prints the written paths as a JSON list.
"""

import collections
import hashlib
import math
import os
import statistics
import sys
import time
import weakref

import numpy
import torch

from . import safetensors, shards

WORKLOAD_NAME = "torch-spiral-mlp"

DEFAULTS = {
    "dataset_seed": 0,
    "seed": 0,
    "learning_rate": 0.01,
    "examples_per_microshard": 128,
    "features": 32,
    "classes": 8,
    "spiral_turns": 0.5,
    "angle_noise": 0.15,
    "feature_noise": 0.1,
    "label_noise": 0.03,
    "hidden": [128, 128],
    "batch_size": 32,
    "local_epochs": 2,
    "threads": 1,
    "device": "auto",
    "eval_examples": 2048,
    "probe_seconds": 0.2,
    "target_window_seconds": 10,
    "clip_norm": None,
    "trim_fraction": 0.2,
    "ema_alpha": 0.5,
    "root_ema_beta": 0.5,
    "inner_learning_rate": None,
    "inner_betas": [0.9, 0.999],
    "inner_weight_decay": 0.01,
}

INNER_OPTIMIZER_ENCODING = "torch-save-v1"

MERGE_POLICIES = ("WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma")
SPLITS = ("Train", "Validation", "Test")
# A payload may override the microshard size; bound it so one bad request cannot exhaust memory.
MAX_EXAMPLES_PER_MICROSHARD = 1 << 20


def make(config=None):
    return TorchWorkload(config)


class TorchModelState(dict):
    """One model held by the worker: the module, its optimizer and counters.

    It is the dict ``{"model": module}`` as well, so the worker's generic
    parameter-pack path (``parameter_pack.py``) reads and writes it; the
    optimizer and counters stay attributes, out of the packs. Equality and
    hashing are by identity, as for any object (the live-model WeakSet needs that).
    """

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def __init__(self, module, device, learning_rate):
        super().__init__(model=module)
        self.module = module
        self.device = device
        self.optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
        self.steps = 0

    def tensors(self):
        return {name: value.detach() for name, value in self.module.state_dict().items()}

    def assign(self, tensors):
        """Copies ``tensors`` into the live parameters, so the optimizer keeps tracking them."""
        own = self.module.state_dict()
        _check_same_layout(own, tensors, "assigned state")
        with torch.no_grad():
            for name, value in own.items():
                value.copy_(tensors[name].to(value.device))


class TorchWorkload:
    workload_name = WORKLOAD_NAME

    def __init__(self, config=None):
        self.settings = _settings(config)
        torch.set_num_threads(self.settings["threads"])
        self._device = _resolve_device(self.settings["device"])
        self._learning_rate = self.settings["learning_rate"]
        self._rotation = _rotation(self.settings)
        self._eval_data = {}
        # apply_patch retunes every model still alive; the worker's table owns them.
        self._live = weakref.WeakSet()

    # -- device and capability ------------------------------------------------

    def runtime_device(self):
        return str(self._device)

    def capability_probe(self):
        """Times forward+backward steps of a throwaway model on the runtime device.

        ``work_units_per_second`` is training examples per second.
        """
        settings = self.settings
        module = _build_module(settings, self._device)
        optimizer = torch.optim.Adam(module.parameters(), lr=self._learning_rate)
        x, y = self._generate(settings["batch_size"], "probe")
        x, y = x.to(self._device), y.to(self._device)

        def step():
            loss = torch.nn.functional.cross_entropy(module(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # .item() waits for the device, so the clock measures finished work.
            loss.item()

        step()
        steps = 0
        start = time.perf_counter()
        while True:
            step()
            steps += 1
            elapsed = time.perf_counter() - start
            if steps >= 3 and elapsed >= settings["probe_seconds"]:
                break
        return {
            "preferred_backends": [self._device.type],
            "work_units_per_second": steps * settings["batch_size"] / elapsed,
            "target_window_seconds": settings["target_window_seconds"],
        }

    # -- models ---------------------------------------------------------------

    def init_model(self, device="auto"):
        self._device = _resolve_device(self.settings["device"] if device is None else device)
        return self._new_state(self._device)

    def _new_state(self, device, tensors=None):
        state = TorchModelState(_build_module(self.settings, device), device, self._learning_rate)
        if tensors is not None:
            state.assign(tensors)
        self._live.add(state)
        return state

    def train_window(self, state, batches):
        state = _model(state)
        x, y = self._window_data(batches)
        x, y = x.to(state.device), y.to(state.device)
        settings = self.settings
        module, optimizer = state.module, state.optimizer
        module.train()
        losses = []
        correct = torch.zeros((), dtype=torch.int64, device=state.device)
        for _ in range(settings["local_epochs"]):
            for begin in range(0, len(y), settings["batch_size"]):
                xb, yb = x[begin : begin + settings["batch_size"]], y[begin : begin + settings["batch_size"]]
                loss, hits = _sgd_step(module, optimizer, xb, yb)
                losses.append(loss)
                correct += hits
        state.steps += len(losses)
        return {
            "loss": float(torch.stack(losses).mean().item()),
            # Over every forward pass of the window, before each step's update.
            "accuracy": float(correct.item()) / (len(y) * settings["local_epochs"]),
            "examples": int(len(y)),
            "learning_rate": float(optimizer.param_groups[0]["lr"]),
            "steps": len(losses),
            "epochs": settings["local_epochs"],
            "total_steps": state.steps,
            "device": str(state.device),
        }

    def evaluate(self, state, split):
        state = _model(state)
        name = _split_name(split)
        if name not in self._eval_data:
            self._eval_data[name] = self._split_data(name)
        x, y = self._eval_data[name]
        x, y = x.to(state.device), y.to(state.device)
        module = state.module
        was_training = module.training
        module.eval()
        with torch.no_grad():
            logits = module(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            correct = (logits.argmax(dim=1) == y).sum()
        module.train(was_training)
        return {
            "loss": float(loss.item()),
            "accuracy": float(correct.item()) / len(y),
            "examples": int(len(y)),
            "split": name,
        }

    def apply_patch(self, patch):
        values = patch.get("values") if isinstance(patch, dict) else None
        if not isinstance(values, dict):
            return {"Rejected": "patch carries no values object"}
        unknown = sorted(key for key in values if key != "learning_rate")
        if unknown:
            return {"Rejected": f"unsupported patch value(s) {', '.join(unknown)}: only learning_rate can be patched"}
        if "learning_rate" not in values:
            return {"Rejected": "patch sets no learning_rate"}
        rate = values["learning_rate"]
        # JSON from JavaScript sends 1.0 as 1, so integers count as numbers; bools do not.
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            return {"Rejected": f"learning_rate must be a number, got {type(rate).__name__}"}
        if not math.isfinite(rate) or rate <= 0:
            return {"Rejected": f"learning_rate must be finite and positive, got {rate}"}
        self._learning_rate = float(rate)
        for state in list(self._live):
            for group in state.optimizer.param_groups:
                group["lr"] = self._learning_rate
        return "Applied"

    # -- artifacts --------------------------------------------------------------

    def materialize_model_artifact_path(self, state, path):
        state = _model(state)
        tensors = {name: ("F32", list(value.shape), _f32_bytes(value)) for name, value in state.tensors().items()}
        # Write beside the target and rename, so a concurrent reader never sees half a file.
        partial = f"{path}.partial-{os.getpid()}"
        try:
            safetensors.save_file(partial, tensors, {"workload": WORKLOAD_NAME, "format": "pt"})
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    def load_model_artifact_path(self, state, path):
        state = _model(state)
        stored, _ = safetensors.load_file(path)
        tensors = {}
        for name, (dtype, shape, data) in stored.items():
            if dtype != "F32":
                raise ValueError(f"artifact {path}: tensor {name!r} is {dtype}, expected F32")
            tensors[name] = _tensor_from_f32(data, shape)
        try:
            state.assign(tensors)
        except ValueError as error:
            raise ValueError(f"artifact {path} does not fit this model: {error}") from error
        return state

    # -- DiLoCo inner loop -------------------------------------------------------

    def run_inner_loop(self, state, params):
        """DiLoCo's inner loop: ``num_inner_steps`` AdamW steps on the model, in place.

        One step is one minibatch of ``batch_size`` examples; the minibatches
        of the batches (in the order given) are cycled until the step count is
        reached, so a short batch list still yields an exact step budget. The
        optimiser is ``torch.optim.AdamW`` with ``inner_learning_rate`` (null:
        the current ``learning_rate``), ``inner_betas`` and
        ``inner_weight_decay``; nothing is random, so a fixed seed and the same
        inputs give the same parameters in any process.

        The optimiser state comes from ``inner_optimizer_state_path`` when the
        request names one (none on the first round) and is saved, after the
        steps, to a new file beside the output pack
        (``<output_parameter_pack_path>.inner-optimizer.pt``, written with
        ``torch.save``, encoding ``"torch-save-v1"``), whose path the answer
        returns. The input file is only read, so a round can be retried. It
        is read with ``torch.load`` (pickle: torch 1.13's ``weights_only``
        cannot read optimizer state), so it must come from the owner.
        """
        state = _model(state)
        settings = self.settings
        steps = _integer(params.get("num_inner_steps"), "num_inner_steps", minimum=0)
        x, y = self._window_data(params.get("batches"))
        x, y = x.to(state.device), y.to(state.device)
        module = state.module
        rate = self._learning_rate if settings["inner_learning_rate"] is None else settings["inner_learning_rate"]
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=rate, betas=tuple(settings["inner_betas"]), weight_decay=settings["inner_weight_decay"]
        )
        source = params.get("inner_optimizer_state_path")
        if source is not None:
            saved = torch.load(source, map_location=state.device)
            if not isinstance(saved, dict) or saved.get("format") != INNER_OPTIMIZER_ENCODING:
                raise ValueError(f"inner optimizer state {source!r} is not a {INNER_OPTIMIZER_ENCODING} file")
            optimizer.load_state_dict(saved["optimizer"])
            # The configuration of this call wins over the saved hyperparameters.
            for group in optimizer.param_groups:
                group.update(lr=rate, betas=tuple(settings["inner_betas"]), weight_decay=settings["inner_weight_decay"])
        batch_size = settings["batch_size"]
        starts = list(range(0, len(y), batch_size))
        module.train()
        losses = []
        correct = torch.zeros((), dtype=torch.int64, device=state.device)
        seen = 0
        for step in range(steps):
            begin = starts[step % len(starts)]
            xb, yb = x[begin : begin + batch_size], y[begin : begin + batch_size]
            loss, hits = _sgd_step(module, optimizer, xb, yb)
            losses.append(loss)
            correct += hits
            seen += len(yb)
        state.steps += steps
        target = os.path.normpath(params["output_parameter_pack_path"]) + ".inner-optimizer.pt"
        partial = f"{target}.partial-{os.getpid()}"
        try:
            torch.save({"format": INNER_OPTIMIZER_ENCODING, "optimizer": optimizer.state_dict(), "steps": state.steps}, partial)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        metrics = {"steps": steps, "examples": int(len(y)), "learning_rate": float(rate), "total_steps": state.steps}
        if losses:
            stacked = torch.stack(losses)
            metrics.update(loss=float(stacked.mean().item()), final_loss=float(stacked[-1].item()),
                           accuracy=float(correct.item()) / seen)
        return {
            "steps_completed": steps,
            "metrics": metrics,
            "inner_optimizer_state_path": target,
            "inner_optimizer_state_encoding": INNER_OPTIMIZER_ENCODING,
        }

    # -- merging and reconciliation ---------------------------------------------

    def merge_candidate_models(self, base_state, candidates, policy):
        """Merges candidate models into a NEW state; inputs are left untouched.

        Weights are sample_weight x quality_weight (quality_weight alone for
        QualityWeightedEma), normalised over the candidates. Returns None when
        there are no candidates or every weight is zero.

        - WeightedMean: weighted mean of the candidates.
        - NormClippedWeightedMean: each candidate's delta from the base is
          scaled down to L2 norm (over all parameters) at most ``clip_norm``,
          or, when that is null, the median of the delta norms of the
          candidates with a positive weight; result = base + weighted mean of
          the clipped deltas.
        - TrimmedMean: among candidates with a positive weight, per coordinate,
          drop the floor(trim_fraction x n) lowest and highest values (at
          least one each when n >= 3, always keeping one) and take the
          unweighted mean of the rest.
        - Ema: base x (1 - ema_alpha) + ema_alpha x weighted mean.
        - QualityWeightedEma: as Ema, weighting by quality_weight only.
        """
        name = _policy_name(policy)
        base_state = _model(base_state)
        if not candidates:
            return None
        weights = [_candidate_weight(candidate, quality_only=name == "QualityWeightedEma") for candidate in candidates]
        total = sum(weights)
        if total <= 0:
            return None
        base = base_state.tensors()
        device = base_state.device
        models = []
        for candidate in candidates:
            tensors = _model(candidate.get("model")).tensors()
            _check_same_layout(base, tensors, f"candidate from peer {candidate.get('peer_id')!r}")
            models.append({key: value.to(device) for key, value in tensors.items()})
        weights = [weight / total for weight in weights]
        settings = self.settings

        if name == "WeightedMean":
            merged = _weighted_sum(models, weights)
        elif name == "NormClippedWeightedMean":
            deltas = [{key: model[key] - base[key] for key in base} for model in models]
            norms = [_l2_norm(delta) for delta in deltas]
            clip = settings["clip_norm"]
            if clip is None:
                clip = statistics.median(norm for norm, weight in zip(norms, weights) if weight > 0)
            scales = [min(1.0, clip / norm) if norm > 0 else 1.0 for norm in norms]
            step = _weighted_sum(deltas, [weight * scale for weight, scale in zip(weights, scales)])
            merged = {key: base[key] + step[key] for key in base}
        elif name == "TrimmedMean":
            kept = [model for model, weight in zip(models, weights) if weight > 0]
            count = len(kept)
            trim = int(settings["trim_fraction"] * count)
            if count >= 3:
                trim = max(trim, 1)
            trim = min(trim, (count - 1) // 2)
            merged = {}
            for key in base:
                ordered, _ = torch.sort(torch.stack([model[key] for model in kept]), dim=0)
                merged[key] = ordered[trim : count - trim].mean(dim=0)
        else:
            alpha = settings["ema_alpha"]
            mean = _weighted_sum(models, weights)
            merged = {key: (1 - alpha) * base[key] + alpha * mean[key] for key in base}
        return self._new_state(device, merged)

    def apply_single_root_ema(self, base_state, merged_state, policy):
        """merged <- beta x base + (1 - beta) x merged, beta = ``root_ema_beta``, for every known policy."""
        _policy_name(policy)
        base, merged = _model(base_state), _model(merged_state)
        beta = self.settings["root_ema_beta"]
        _blend_into(merged, base, keep=1 - beta)
        return merged

    def reconcile_canonical_model(self, local_state, canonical_state, strategy):
        local, canonical = _model(local_state), _model(canonical_state)
        if strategy == "Replace":
            return canonical
        if isinstance(strategy, dict) and set(strategy) == {"RootEma"} and isinstance(strategy["RootEma"], dict):
            weight = strategy["RootEma"].get("canonical_weight")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
                raise ValueError(f"RootEma canonical_weight must be a number in [0, 1], got {weight!r}")
            _blend_into(canonical, local, keep=float(weight))
            return canonical
        raise ValueError(f"unknown reconcile strategy {strategy!r}; expected \"Replace\" or {{\"RootEma\": {{\"canonical_weight\": w}}}}")

    # -- data -------------------------------------------------------------------

    def _generate(self, count, stream):
        return _generate(self.settings, self._rotation, count, stream)

    def _window_data(self, batches):
        if not isinstance(batches, list) or not batches:
            raise ValueError("train_window needs a non-empty list of batches")
        xs, ys = [], []
        for batch in batches:
            for x, y in self._batch_data(batch):
                xs.append(x)
                ys.append(y)
        if not ys or sum(len(y) for y in ys) == 0:
            raise ValueError("train_window batches hold no examples")
        return torch.cat(xs), torch.cat(ys)

    def _batch_data(self, batch):
        kind = batch.get("kind") if isinstance(batch, dict) else None
        if kind == "micro_epoch":
            pipeline = batch.get("pipeline_kind")
            if pipeline != "generated-dataset":
                raise ValueError(
                    f"micro_epoch pipeline_kind {pipeline!r} is not supported: this workload generates its data ('generated-dataset')"
                )
            payload = batch.get("payload")
            if not isinstance(payload, dict):
                raise ValueError(f"generated-dataset payload must be an object with a seed, got {payload!r}")
            seed = _integer(payload.get("seed"), "payload seed")
            count = payload.get("examples_per_microshard", self.settings["examples_per_microshard"])
            count = _integer(count, "payload examples_per_microshard", minimum=1, maximum=MAX_EXAMPLES_PER_MICROSHARD)
            return [
                _microshard(self.settings, self._rotation, seed, _integer(ordinal, "ordinal", minimum=0), count)
                for ordinal in _list(batch.get("ordinals"), "ordinals")
            ]
        if kind == "cached_microshard_group":
            return [self._read_shard(path) for path in _list(batch.get("shard_paths"), "shard_paths")]
        raise ValueError(f"unsupported batch kind {kind!r}; expected 'micro_epoch' or 'cached_microshard_group'")

    def _read_shard(self, path):
        stored, _ = safetensors.load_file(path)
        features, classes = self.settings["features"], self.settings["classes"]
        if set(stored) != {"x", "y"}:
            raise ValueError(f"shard {path} must hold exactly tensors x and y, found {sorted(stored)}")
        (x_dtype, x_shape, x_data), (y_dtype, y_shape, y_data) = stored["x"], stored["y"]
        if x_dtype != "F32" or len(x_shape) != 2 or x_shape[1] != features:
            raise ValueError(f"shard {path}: x must be F32 [n, {features}], found {x_dtype} {x_shape}")
        if y_dtype != "I64" or y_shape != x_shape[:1]:
            raise ValueError(f"shard {path}: y must be I64 [{x_shape[0]}], found {y_dtype} {y_shape}")
        y = torch.from_numpy(numpy.frombuffer(y_data, dtype="<i8").astype(numpy.int64))
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(f"shard {path}: labels fall outside 0..{classes - 1}")
        return _tensor_from_f32(x_data, x_shape), y

    def _split_data(self, name):
        count = self.settings["eval_examples"]
        if name == "Train":
            per_shard = self.settings["examples_per_microshard"]
            shards = [
                _microshard(self.settings, self._rotation, 0, ordinal, per_shard)
                for ordinal in range(math.ceil(count / per_shard))
            ]
            return torch.cat([x for x, _ in shards])[:count], torch.cat([y for _, y in shards])[:count]
        # Training streams are named "train/..."; these names cannot collide with them.
        return self._generate(count, f"eval/{name}")


# -- dataset ---------------------------------------------------------------------


def _stream_generator(settings, stream):
    digest = hashlib.sha256(f"{WORKLOAD_NAME}/{settings['dataset_seed']}/{stream}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return generator


def _rotation(settings):
    generator = _stream_generator(settings, "geometry")
    size = settings["features"]
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    # Fix column signs so the rotation is a function of the draw alone.
    return (q * torch.sign(torch.diagonal(r))).to(torch.float32)


def _generate(settings, rotation, count, stream):
    generator = _stream_generator(settings, stream)
    classes, features = settings["classes"], settings["features"]
    labels = torch.randint(0, classes, (count,), generator=generator)
    position = torch.rand(count, generator=generator)
    angle = (
        2 * math.pi * labels / classes
        + 2 * math.pi * settings["spiral_turns"] * position
        + settings["angle_noise"] * torch.randn(count, generator=generator)
    )
    radius = 0.4 + 2.0 * position
    latent = torch.zeros(count, features)
    latent[:, 0] = radius * torch.cos(angle)
    latent[:, 1] = radius * torch.sin(angle)
    latent += settings["feature_noise"] * torch.randn(count, features, generator=generator)
    flip = torch.rand(count, generator=generator) < settings["label_noise"]
    labels = torch.where(flip, torch.randint(0, classes, (count,), generator=generator), labels)
    return latent @ rotation.T, labels


def _microshard(settings, rotation, seed, ordinal, count):
    return _generate(settings, rotation, count, f"train/{seed}/{ordinal}")


def write_shards(directory, config, ordinals, examples_per_shard=None, seed=0):
    """Writes microshards ``ordinals`` of payload seed ``seed`` as safetensors files; returns their paths."""
    settings = _settings(config)
    count = settings["examples_per_microshard"] if examples_per_shard is None else examples_per_shard
    count = _integer(count, "examples_per_shard", minimum=1, maximum=MAX_EXAMPLES_PER_MICROSHARD)
    seed = _integer(seed, "seed")
    rotation = _rotation(settings)

    def shard(ordinal):
        x, y = _microshard(settings, rotation, seed, ordinal, count)
        metadata = {"workload": WORKLOAD_NAME, "dataset_seed": settings["dataset_seed"], "seed": seed, "ordinal": ordinal}
        return _f32_bytes(x), y.numpy().astype("<i8", copy=False).tobytes(), metadata

    checked = (_integer(ordinal, "ordinal", minimum=0) for ordinal in ordinals)
    return shards.write(directory, seed, checked, settings["features"], shard)


# -- model -----------------------------------------------------------------------


def _build_module(settings, device):
    widths = [settings["features"], *settings["hidden"], settings["classes"]]
    layers = collections.OrderedDict()
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        last = index == len(widths) - 2
        # skip_init leaves the global RNG alone; the parameters are drawn below from our own generator.
        layers["output" if last else f"hidden{index}"] = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out)
        if not last:
            layers[f"relu{index}"] = torch.nn.ReLU()
    module = torch.nn.Sequential(layers)
    generator = _seeded_generator(settings["seed"])
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            # torch.nn.Linear's own default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            fan_in = module.get_submodule(name.rsplit(".", 1)[0]).in_features
            bound = 1 / math.sqrt(fan_in)
            parameter.uniform_(-bound, bound, generator=generator)
    return module.to(device)


def _sgd_step(module, optimizer, xb, yb):
    """One optimizer step on a batch: its loss (detached) and how many it classified right, as tensors."""
    logits = module(xb)
    loss = torch.nn.functional.cross_entropy(logits, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == yb).sum()


def _seeded_generator(seed):
    generator = torch.Generator()
    generator.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def _model(state):
    if not isinstance(state, TorchModelState):
        raise TypeError(f"expected a model state of this workload, got {type(state).__name__}")
    return state


def _check_same_layout(expected, actual, what):
    if set(expected) != set(actual):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        raise ValueError(f"{what} has different tensors (missing {missing}, unexpected {extra})")
    for name, value in expected.items():
        if tuple(actual[name].shape) != tuple(value.shape):
            raise ValueError(f"{what}: tensor {name!r} has shape {list(actual[name].shape)}, expected {list(value.shape)}")


def _weighted_sum(tensor_sets, weights):
    return {key: sum(weight * tensors[key] for tensors, weight in zip(tensor_sets, weights)) for key in tensor_sets[0]}


def _l2_norm(tensors):
    return math.sqrt(sum(float(value.double().pow(2).sum()) for value in tensors.values()))


def _blend_into(target, other, keep):
    """target <- keep x target + (1 - keep) x other, in place."""
    own, theirs = target.tensors(), other.tensors()
    _check_same_layout(own, theirs, "model to blend")
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(keep * value + (1 - keep) * theirs[name].to(value.device))


def _f32_bytes(tensor):
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()


def _tensor_from_f32(data, shape):
    return torch.from_numpy(numpy.frombuffer(data, dtype="<f4").astype(numpy.float32)).reshape(shape)


# -- protocol values ---------------------------------------------------------------


def _policy_name(policy):
    if isinstance(policy, dict) and set(policy) == {"Custom"}:
        raise ValueError(f"unknown merge policy Custom({policy['Custom']})")
    if policy not in MERGE_POLICIES:
        raise ValueError(f"unknown merge policy {policy!r}; expected one of {', '.join(MERGE_POLICIES)}")
    return policy


def _split_name(split):
    if isinstance(split, dict) and set(split) == {"Custom"}:
        raise ValueError(f"unsupported evaluation split Custom({split['Custom']}): this workload evaluates Train, Validation and Test")
    if split not in SPLITS:
        raise ValueError(f"unknown evaluation split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def _candidate_weight(candidate, quality_only):
    if not isinstance(candidate, dict):
        raise ValueError(f"merge candidate must be an object, got {type(candidate).__name__}")
    factors = ["quality_weight"] if quality_only else ["sample_weight", "quality_weight"]
    weight = 1.0
    for key in factors:
        value = candidate.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"candidate from peer {candidate.get('peer_id')!r}: {key} must be a finite number >= 0, got {value!r}")
        weight *= value
    return weight


# -- config ----------------------------------------------------------------------


def _settings(config):
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValueError(f"workload config must be a JSON object, got {type(config).__name__}")
    settings = dict(DEFAULTS)
    settings.update({key: value for key, value in config.items() if key in DEFAULTS})
    for key in ("dataset_seed", "seed"):
        settings[key] = _integer(settings[key], key)
    for key in ("examples_per_microshard", "batch_size", "local_epochs", "threads", "eval_examples", "target_window_seconds"):
        settings[key] = _integer(settings[key], key, minimum=1)
    for key in ("features", "classes"):
        settings[key] = _integer(settings[key], key, minimum=2)
    for key in ("learning_rate", "spiral_turns", "angle_noise", "feature_noise", "probe_seconds"):
        settings[key] = _number(settings[key], key, minimum=0)
    for key in ("label_noise", "ema_alpha", "root_ema_beta"):
        settings[key] = _number(settings[key], key, minimum=0, maximum=1)
    settings["trim_fraction"] = _number(settings["trim_fraction"], "trim_fraction", minimum=0, maximum=0.5)
    if settings["clip_norm"] is not None:
        settings["clip_norm"] = _number(settings["clip_norm"], "clip_norm", minimum=0)
    if settings["inner_learning_rate"] is not None:
        settings["inner_learning_rate"] = _number(settings["inner_learning_rate"], "inner_learning_rate", minimum=0)
    settings["inner_weight_decay"] = _number(settings["inner_weight_decay"], "inner_weight_decay", minimum=0)
    betas = _list(settings["inner_betas"], "inner_betas")
    if len(betas) != 2:
        raise ValueError(f"inner_betas must be a list of two numbers, got {betas!r}")
    settings["inner_betas"] = [_number(beta, "inner_betas entry", minimum=0, maximum=1) for beta in betas]
    hidden = _list(settings["hidden"], "hidden")
    settings["hidden"] = [_integer(width, "hidden width", minimum=1) for width in hidden]
    if not isinstance(settings["device"], str):
        raise ValueError(f"device must be a string, got {settings['device']!r}")
    return settings


def _integer(value, what, minimum=None, maximum=None):
    # Accept 3.0 too: a JavaScript caller cannot tell it from 3.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{what} must be in [{minimum}, {maximum if maximum is not None else 'inf'}], got {value}")
    return value


def _number(value, what, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{what} must be in [{minimum}, {maximum if maximum is not None else 'inf'}], got {value}")
    return float(value)


def _list(value, what):
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {value!r}")
    return value


# -- devices -----------------------------------------------------------------------


def _mps_available():
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def _resolve_device(requested):
    """"auto" picks cuda, then mps, then cpu; an explicit device must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if not isinstance(requested, str):
        raise ValueError(f"device must be a string, got {requested!r}")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ValueError(f"unknown device {requested!r}; expected auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available to this PyTorch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {requested!r} requested but MPS is not available to this PyTorch")
        return device
    raise ValueError(f"unsupported device {requested!r}; expected auto, cpu, cuda, cuda:N or mps")


# -- CLI ---------------------------------------------------------------------------


def main(argv=None):
    return shards.main("python -m burn_p2p_python_runtime.torch_workload", write_shards, argv)


if __name__ == "__main__":
    sys.exit(main())
