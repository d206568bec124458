"""The method table: requests in, responses out, every failure an ``ok: false`` answer.

Dispatch owns the model table (ids ``m1``, ``m2``, ... minted here and never
reused), checks params before they reach the workload, and checks results
before they reach the wire. It never touches the socket.

Nothing a frame holds can kill the worker: a body that cannot be decoded (not
UTF-8, not JSON, nested past ``limits.MAX_JSON_DEPTH``, out of memory) and a
result that cannot be encoded (not JSON-able, too deep, larger than the frame
limit) each get an ``ok: false`` answer, and the model table is untouched.
Every error answer quotes values and formats tracebacks within the bounds of
``limits``, and is shrunk to fit in the frame limit.
"""

import json
import math

from . import PROTOCOL_VERSION, protocol2
from .limits import (
    ID_SCAN_BYTES,
    MAX_ERROR_CHARS,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    QUOTE_CHARS,
    clip_head,
    clip_middle,
    nests_deeper_than,
    quote,
)
from .transport import DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_ENV


class MalformedRequestError(ValueError):
    """The frame is not a JSON object with an integer ``id`` and a string ``method``."""


class RequestDecodeError(MalformedRequestError):
    """The frame body cannot be decoded: not UTF-8, not JSON, or too big for memory.

    ``request_id`` is the id read from the frame's ``{"id":N`` prefix, or None.
    """

    def __init__(self, message, request_id=None):
        super().__init__(message)
        self.request_id = request_id


class RequestTooDeepError(RequestDecodeError):
    """The request nests deeper than ``MAX_JSON_DEPTH`` (see ``limits``)."""


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


class ResultEncodeError(InvalidResultError):
    """The result cannot be encoded as JSON (not JSON-able, NaN, circular, out of memory)."""


class ResultTooDeepError(ResultEncodeError):
    """The result nests deeper than ``MAX_JSON_DEPTH`` (see ``limits``)."""


class ResultTooLargeError(InvalidResultError):
    """The encoded answer is larger than the frame limit the client reads."""


def error_response(request_id, error, error_type=None):
    """The error answer: ``error`` is message plus traceback, as the reference sends it.

    Bounded whatever the exception holds: see ``limits`` for the sizes.
    """
    name = clip_head(error_type or type(error).__name__, QUOTE_CHARS)
    message = clip_head(_safe_str(error), MAX_MESSAGE_CHARS)
    formatted = format_traceback(error)
    return {
        "id": request_id,
        "ok": False,
        "error": clip_middle(f"{name}: {message}\n{formatted}", MAX_ERROR_CHARS),
        "error_type": name,
        "traceback": formatted,
    }


def format_traceback(error):
    """``traceback.format_exception(error)``, each piece (a frame, an exception line) and the whole bounded."""
    # Imported here: traceback and its imports cost ~3 ms of every worker's start-up.
    import traceback

    try:
        pieces = traceback.TracebackException.from_exception(error).format()
        text = "".join(_clip_piece(piece) for piece in pieces)
    except Exception as failure:  # a hostile __str__ or __notes__, or no memory left
        text = f"Traceback unavailable: {type(failure).__name__} while formatting {type(error).__name__}\n"
    return clip_middle(text, MAX_TRACEBACK_CHARS)


def _clip_piece(piece):
    if len(piece) <= MAX_MESSAGE_CHARS:
        return piece
    return clip_head(piece, MAX_MESSAGE_CHARS - 1) + "\n"


def _safe_str(error):
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}.__str__ failed>"


def encode_response(response):
    return json.dumps(response, allow_nan=False, separators=(",", ":")).encode("utf-8")


def encode_error_response(response, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
    """Encodes an error answer, shrinking its ``error`` and ``traceback`` until the frame fits ``max_frame_bytes``.

    The smallest it gets is ``{"id":N,"ok":false,"error":"Type"}`` (the
    reference's own shape); a limit smaller than that is not met.
    """
    payload = encode_response(response)
    error, traceback_text = response.get("error", ""), response.get("traceback", "")
    error_chars, traceback_chars = len(error), len(traceback_text)
    while len(payload) > max_frame_bytes and (error_chars > 0 or traceback_chars > 0):
        # Halve both; text escaped as \uXXXX takes up to 12 bytes a character.
        error_chars, traceback_chars = error_chars // 2, traceback_chars // 2
        if error_chars < 32:
            error_chars = traceback_chars = 0
        smaller = dict(response, traceback=clip_middle(traceback_text, traceback_chars))
        smaller["error"] = clip_middle(error, error_chars) if error_chars else smaller.get("error_type", "")
        payload = encode_response(smaller)
    if len(payload) > max_frame_bytes:
        payload = encode_response({"id": response.get("id"), "ok": False, "error": response.get("error_type", "")})
    return payload


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

    def handle_frame(self, body, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        """Decodes one request frame, runs it, and returns (response bytes, stop).

        The response bytes never exceed ``max_frame_bytes`` (short of a limit
        too small for a bare error answer): a larger result is answered with a
        ``ResultTooLargeError`` instead.
        """
        try:
            request = decode_request(body)
        except RequestDecodeError as error:
            return encode_error_response(error_response(error.request_id, error), max_frame_bytes), False
        response, stop = self.handle(request)
        try:
            payload = encode_result_response(response)
        except ResultEncodeError as error:
            return encode_error_response(error_response(response.get("id"), error), max_frame_bytes), False
        if len(payload) <= max_frame_bytes:
            return payload, stop
        if not response.get("ok"):
            return encode_error_response(response, max_frame_bytes), stop
        method = request.get("method") if isinstance(request, dict) else None
        size = len(payload)
        del payload, response["result"]
        try:
            raise ResultTooLargeError(
                f"the answer to {quote(method)} encodes to {size} bytes, above the frame limit of "
                f"{max_frame_bytes} bytes ({MAX_FRAME_ENV}, the client's maxFrameBytes); nothing was sent, "
                "the worker keeps serving and its models are unchanged"
            )
        except ResultTooLargeError as too_large:
            return encode_error_response(error_response(response.get("id"), too_large), max_frame_bytes), False

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
                raise UnknownMethodError(f"unknown method {quote(method)}; known methods: {', '.join(sorted(self._methods))}")
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
            field = name if where == "params" else f"{where}.{name}"
            raise UnknownModelError(f"unknown model id {quote(model_id)} in {field}; live models: {_live(self.models)}") from None


def _live(models, shown=20):
    """The live model ids for an error message: the first ``shown``, then how many there are."""
    if not models:
        return "none"
    ids = [quote(model_id) if len(model_id) > QUOTE_CHARS else model_id for model_id, _ in zip(models, range(shown))]
    return ", ".join(ids) + (f", ... ({len(models)} in all)" if len(models) > shown else "")


# How our client (and serde, field order id then method) starts every request frame.
_ID_PREFIX = rb'\s*\{\s*"id"\s*:\s*(-?(?:0|[1-9][0-9]{0,19}))\s*[,}]'


def recover_request_id(body):
    """The id of a request whose body cannot be decoded, from its ``{"id":N,`` prefix; None when there is none."""
    import re  # Only for broken frames: compiling at import would slow every start.

    match = re.match(_ID_PREFIX, bytes(body[:ID_SCAN_BYTES]))
    return int(match.group(1)) if match else None


def decode_request(body):
    """``json.loads(body)``, every failure a ``RequestDecodeError`` carrying the id read from the raw prefix.

    The body must be UTF-8, strictly: ``json.loads`` of bytes would also take
    UTF-16 or UTF-32, and UTF-8-encoded surrogates. Decoding here costs
    nothing more, since ``json.loads`` decodes bytes to a str first anyway.
    """
    try:
        request = json.loads(body.decode("utf-8"))
    except RecursionError as error:
        raise RequestTooDeepError(
            f"request frame of {len(body)} bytes nests deeper than the JSON depth limit of {MAX_JSON_DEPTH}",
            recover_request_id(body),
        ) from error
    except MemoryError as error:
        raise RequestDecodeError(f"out of memory decoding a request frame of {len(body)} bytes", recover_request_id(body)) from error
    except Exception as error:  # ValueError: bad UTF-8, bad JSON, an integer too long to convert
        raise RequestDecodeError(
            f"request frame of {len(body)} bytes is not UTF-8 JSON: {clip_head(_safe_str(error), MAX_MESSAGE_CHARS // 2)}",
            recover_request_id(body),
        ) from error
    # The envelope is one level; params may use MAX_JSON_DEPTH more. Each
    # level takes two bytes at least ("[]"), so a short frame needs no walk.
    if len(body) > 2 * (MAX_JSON_DEPTH + 1) and nests_deeper_than(request, MAX_JSON_DEPTH + 1):
        raise RequestTooDeepError(
            f"request params nest deeper than the JSON depth limit of {MAX_JSON_DEPTH}", _readable_id(request)
        )
    return request


def encode_result_response(response):
    """``encode_response``, every failure a ``ResultEncodeError``; an ok answer's result must be at most MAX_JSON_DEPTH deep."""
    try:
        payload = encode_response(response)
        deep = (
            len(payload) > 2 * (MAX_JSON_DEPTH + 1)
            and response.get("ok")
            and nests_deeper_than(response.get("result"), MAX_JSON_DEPTH, exact=False)
        )
    except RecursionError as error:
        raise ResultTooDeepError(f"result nests deeper than the JSON depth limit of {MAX_JSON_DEPTH}") from error
    except MemoryError as error:
        raise ResultEncodeError("out of memory encoding the result as JSON") from error
    except Exception as error:  # TypeError: not JSON-able; ValueError: NaN, a circular reference, a huge int
        raise ResultEncodeError(f"result cannot be encoded as JSON: {clip_head(_safe_str(error), MAX_MESSAGE_CHARS // 2)}") from error
    if deep:
        raise ResultTooDeepError(f"result nests deeper than the JSON depth limit of {MAX_JSON_DEPTH}")
    return payload


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
    return f"{clip_head(type(value).__name__, QUOTE_CHARS)} {quote(value)}"


def _checked_metrics(metrics, method):
    if not isinstance(metrics, dict):
        raise InvalidMetricError(f"{method} returned {_describe(metrics)}, expected a dict of metrics")
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise InvalidMetricError(f"metric name {quote(name)} is not a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMetricError(f"metric {quote(name)} is {value!r}, which JSON cannot carry")
        if not isinstance(value, (bool, int, float, str)):
            raise InvalidMetricError(
                f"metric {quote(name)} has a {clip_head(type(value).__name__, QUOTE_CHARS)} value; "
                "metric values must be bool, int, float or str"
            )
    return metrics
