"""The method table: requests in, responses out, every failure an ``ok: false`` answer.

Dispatch owns the model table (ids ``m1``, ``m2``, ... minted here and never
reused), checks params before they reach the workload, and checks results
before they reach the wire. It never touches the socket.
"""

import json
import math

from . import PROTOCOL_VERSION, protocol2


class MalformedRequestError(ValueError):
    """The frame is not a JSON object with an integer ``id`` and a string ``method``."""


class UnknownMethodError(LookupError):
    pass


class UnknownModelError(KeyError):
    def __str__(self):
        # KeyError would show the message quoted, as if it were a key.
        return str(self.args[0]) if self.args else ""


class InvalidParamsError(ValueError):
    pass


class InvalidMetricError(ValueError):
    pass


class InvalidResultError(ValueError):
    """A workload returned something JSON cannot carry."""


def error_response(request_id, error, error_type=None):
    """The error answer: ``error`` is message plus traceback, as the reference sends it."""
    name = error_type or type(error).__name__
    # Imported here: traceback and its imports cost ~3 ms of every worker's start-up.
    import traceback

    formatted = "".join(traceback.format_exception(error))
    return {
        "id": request_id,
        "ok": False,
        "error": f"{name}: {error}\n{formatted}",
        "error_type": name,
        "traceback": formatted,
    }


def encode_response(response):
    return json.dumps(response, allow_nan=False, separators=(",", ":")).encode("utf-8")


class Dispatcher:
    def __init__(self, adapter):
        self.adapter = adapter
        self.models = {}
        self._next_model_number = 1
        self._methods = {
            "hello": self._hello,
            "capability_probe": self._capability_probe,
            "init_model": self._init_model,
            "train_window": self._train_window,
            "evaluate": self._evaluate,
            "apply_patch": self._apply_patch,
            "load_model_artifact": self._load_model_artifact,
            "materialize_model_artifact": self._materialize_model_artifact,
            "merge_candidate_models": self._merge_candidate_models,
            "apply_single_root_ema": self._apply_single_root_ema,
            "reconcile_canonical_model": self._reconcile_canonical_model,
            "release_model": self._release_model,
            "shutdown": self._shutdown,
            # Protocol 2 (see protocol2.py).
            "parameter_pack_plan": self._parameter_pack_plan,
            "export_parameter_pack": self._export_parameter_pack,
            "import_parameter_pack": self._import_parameter_pack,
            "run_inner_loop": self._run_inner_loop,
        }

    def handle_frame(self, body):
        """Decodes one request frame, runs it, and returns (response bytes, stop)."""
        try:
            request = json.loads(body)
        except ValueError as error:
            malformed = MalformedRequestError(f"request frame is not UTF-8 JSON: {error}")
            malformed.__cause__ = error
            return encode_response(error_response(None, malformed)), False
        response, stop = self.handle(request)
        try:
            return encode_response(response), stop
        except (TypeError, ValueError) as error:
            invalid = InvalidResultError(f"result cannot be encoded as JSON: {error}")
            invalid.__cause__ = error
            return encode_response(error_response(response.get("id"), invalid)), False

    def handle(self, request):
        """Runs one decoded request and returns (response, stop)."""
        request_id = _readable_id(request)
        try:
            if not isinstance(request, dict):
                raise MalformedRequestError(f"request must be a JSON object, got {_describe(request)}")
            if request_id is None:
                raise MalformedRequestError(f"request id must be an integer, got {_describe(request.get('id'))}")
            method = request.get("method")
            if not isinstance(method, str):
                raise MalformedRequestError(f"request method must be a string, got {_describe(method)}")
            handler = self._methods.get(method)
            if handler is None:
                raise UnknownMethodError(f"unknown method {method!r}; known methods: {', '.join(sorted(self._methods))}")
            result = handler(request.get("params"))
        except Exception as error:
            return error_response(request_id, error), False
        return {"id": request_id, "ok": True, "result": result}, method == "shutdown"

    def _hello(self, _params):
        # Version 1 (or $BURN_P2P_WORKER_PROTOCOL_VERSION) plus the capability list: protocol2.py says why.
        return {
            "protocol_version": protocol2.reported_protocol_version(PROTOCOL_VERSION),
            "workload_name": self.adapter.workload_name,
            "capabilities": protocol2.capabilities(self.adapter.workload),
        }

    def _capability_probe(self, _params):
        return {"runtime_device": self.adapter.runtime_device(), "capability": self.adapter.capability_probe()}

    def _init_model(self, params):
        device = _field(params, "device", str)
        return {"model_id": self._mint(self.adapter.init_model(device))}

    def _train_window(self, params):
        state = self._model(params, "model_id")
        batches = _field(params, "batches", list)
        return {"metrics": _checked_metrics(self.adapter.train_window(state, batches), "train_window")}

    def _evaluate(self, params):
        state = self._model(params, "model_id")
        split = _field(params, "split", (str, dict))
        return {"metrics": _checked_metrics(self.adapter.evaluate(state, split), "evaluate")}

    def _apply_patch(self, params):
        return self.adapter.apply_patch(_object(params, "params"))

    def _load_model_artifact(self, params):
        state = self._model(params, "model_id")
        updated = self.adapter.load_model_artifact(state, _field(params, "artifact_path", str))
        self._replace(params["model_id"], updated)
        return {}

    def _materialize_model_artifact(self, params):
        state = self._model(params, "model_id")
        self.adapter.materialize_model_artifact(state, _field(params, "artifact_path", str))
        return {}

    def _merge_candidate_models(self, params):
        base = self._model(params, "base_model_id")
        candidates = []
        for index, candidate in enumerate(_field(params, "candidates", list)):
            where = f"candidates[{index}]"
            _object(candidate, where)
            for name in ("peer_id", "head_id", "artifact_id"):
                _field(candidate, name, str, where)
            for name in ("sample_weight", "quality_weight"):
                _field(candidate, name, (int, float), where)
            resolved = {key: value for key, value in candidate.items() if key != "model_id"}
            resolved["model"] = self._model(candidate, "model_id", where)
            candidates.append(resolved)
        merged = self.adapter.merge_candidate_models(base, candidates, _field(params, "policy", (str, dict)))
        return {"model_id": None if merged is None else self._mint(merged)}

    def _apply_single_root_ema(self, params):
        base, merged = self._model(params, "base_model_id"), self._model(params, "merged_model_id")
        updated = self.adapter.apply_single_root_ema(base, merged, _field(params, "policy", (str, dict)))
        return {"model_id": self._replace(params["merged_model_id"], updated)}

    def _reconcile_canonical_model(self, params):
        local, canonical = self._model(params, "local_model_id"), self._model(params, "canonical_model_id")
        updated = self.adapter.reconcile_canonical_model(local, canonical, _field(params, "strategy", (str, dict)))
        return {"model_id": self._replace(params["canonical_model_id"], updated)}

    def _release_model(self, params):
        self.models.pop(_field(params, "model_id", str), None)
        return {}

    def _shutdown(self, _params):
        return {}

    # -- protocol 2: parameter packs and the inner loop --------------------------

    def _parameter_pack_plan(self, params):
        device = _field(params, "device", str)
        state_dict_filter = params.get("state_dict_filter")
        # A fresh model, dropped afterwards, as the reference does.
        return protocol2.parameter_pack_plan(self.adapter.workload, self.adapter.init_model(device), state_dict_filter)

    def _export_parameter_pack(self, params):
        state = self._model(params, "model_id")
        path = _field(params, "parameter_pack_path", str)
        schema_hash = _field(params, "model_schema_hash", str)
        protocol2.export_parameter_pack(self.adapter.workload, state, path, schema_hash, params.get("state_dict_filter"))
        return {"ok": True}

    def _import_parameter_pack(self, params):
        device = _field(params, "device", str)
        path = _field(params, "parameter_pack_path", str)
        state = protocol2.import_parameter_pack(
            self.adapter.workload, self.adapter.init_model, device, path, params.get("state_dict_filter")
        )
        return {"model_id": self._mint(state)}

    def _run_inner_loop(self, params):
        state = self._model(params, "model_id")
        _field(params, "batches", list)
        steps = _field(params, "num_inner_steps", int)
        if not 0 <= steps < 2**32:
            raise InvalidParamsError(f"params.num_inner_steps must be in 0..2^32-1, got {steps}")
        _field(params, "output_parameter_pack_path", str)
        _field(params, "model_schema_hash", str)
        if params.get("inner_optimizer_state_path") is not None:
            _field(params, "inner_optimizer_state_path", str)
        if not isinstance(params.get("require_exact_steps", False), bool):
            raise InvalidParamsError(f"params.require_exact_steps must be a boolean, got {_describe(params['require_exact_steps'])}")
        replacement, answer = protocol2.run_inner_loop(
            self.adapter.workload, state, params, lambda metrics: _checked_metrics(metrics, "run_inner_loop")
        )
        self._replace(params["model_id"], replacement)
        return answer

    def _replace(self, model_id, updated):
        """Points ``model_id`` at ``updated`` and returns the id; None means the workload changed the state in place."""
        if updated is not None:
            self.models[model_id] = updated
        return model_id

    def _mint(self, state):
        model_id = f"m{self._next_model_number}"
        self._next_model_number += 1
        self.models[model_id] = state
        return model_id

    def _model(self, params, name, where="params"):
        model_id = _field(params, name, str, where)
        try:
            return self.models[model_id]
        except KeyError:
            live = ", ".join(self.models) or "none"
            field = name if where == "params" else f"{where}.{name}"
            raise UnknownModelError(f"unknown model id {model_id!r} in {field}; live models: {live}") from None


def _readable_id(request):
    if isinstance(request, dict):
        request_id = request.get("id")
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            return request_id
    return None


_KIND_NAMES = {str: "a string", list: "an array", dict: "an object", int: "an integer", float: "a number"}


def _object(value, where):
    if not isinstance(value, dict):
        raise InvalidParamsError(f"{where} must be an object, got {_describe(value)}")
    return value


def _field(params, name, kinds, where="params"):
    _object(params, where)
    if name not in params:
        raise InvalidParamsError(f"missing {where}.{name}")
    value = params[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = " or ".join(_KIND_NAMES[kind] for kind in kinds)
        raise InvalidParamsError(f"{where}.{name} must be {expected}, got {_describe(value)}")
    return value


def _describe(value):
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def _checked_metrics(metrics, method):
    if not isinstance(metrics, dict):
        raise InvalidMetricError(f"{method} returned {_describe(metrics)}, expected a dict of metrics")
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise InvalidMetricError(f"metric name {name!r} is not a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMetricError(f"metric {name!r} is {value!r}, which JSON cannot carry")
        if not isinstance(value, (bool, int, float, str)):
            raise InvalidMetricError(
                f"metric {name!r} has a {type(value).__name__} value; metric values must be bool, int, float or str"
            )
    return metrics
