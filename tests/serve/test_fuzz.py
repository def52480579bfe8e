"""Whatever a client sends, the server answers with a 4xx and a reason, never a 500.

The generators below write request bytes, not only JSON values, so that what a JSON
encoder would never produce reaches the server too: invalid UTF-8 inside strings, NaN and
Infinity literals, integers past 64 bits and of hundreds of digits, Unicode digits where a
number belongs, deep nesting, shapes numpy cannot build, and binary-extension lengths that
do not add up. They run over every route and every header gyre reads, first in process
(hundreds of examples), then against a real `gyre serve` process, which must still answer
a good request after each. The registry is written by the control plane's routes (alias
moves and policies, sent to the control app over the same home) as it is fuzzed, so the
last test restarts the server on what the fuzzing stored.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.config import load_config
from gyre.registry import CHAMPION, Registry
from tests.conftest import ServerProcess, start_server
from tests.control.client import ControlClient
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient
from tests.serve.models import two_input_adder

ADMIN_KEY = "fuzz-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONFIG = (
    "[collect.events.clicks]\n"
    'fields = { id = "string", user = "int", score = "float?", at = "timestamp" }\n'
    'entity = ["user"]\ntime = "at"\nid = "id"\n'
    "[serve.consumers.ops]\n"
    f'key_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\nevents = ["*"]\n'
)
GOOD_V2 = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _publish(home: Path, classifier: Pipeline, rows: object) -> Path:
    registry = Registry(home)
    registry.publish("iris", classifier, rows, alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish(
        "iris", classifier, rows, alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    registry.publish_onnx("adder", two_input_adder())
    registry.close()
    config = home.parent / "gyre.toml"
    config.write_text(CONFIG)
    return config


@pytest.fixture(scope="module")
def fuzz_home(
    tmp_path_factory: pytest.TempPathFactory, iris_classifier: Pipeline, iris: tuple
) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    return home, _publish(home, iris_classifier, iris[0])


@pytest.fixture(scope="module")
def client(fuzz_home: tuple[Path, Path]) -> Iterator[AppClient]:
    home, config = fuzz_home
    app = AppClient(load_config(home=home, config_file=config))
    yield app
    app.close()


@pytest.fixture(scope="module")
def control(fuzz_home: tuple[Path, Path]) -> Iterator[ControlClient]:
    home, config = fuzz_home
    app = ControlClient(load_config(home=home, config_file=config))
    yield app
    app.close()


def _app_for(
    method: str, path: str, client: AppClient, control: ControlClient
) -> AppClient | ControlClient:
    """Registry writes go to the control plane; everything else to the model server."""
    writes = path.startswith("/v1/admin/") and not path.endswith("/shadow")
    return control if writes and method != "GET" else client


# -- hostile pieces -----------------------------------------------------------------------

unicode_digits = st.text(
    st.characters(categories=("Nd", "No", "Nl"), exclude_characters="0123456789"),
    min_size=1,
    max_size=3,
)
# Numbers as text: in a path segment, a header, or a JSON key.
number_texts = st.one_of(
    unicode_digits,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["0", "-1", "+1", " 1", "1 ", "1_0", "1e3", "0x10", "nan", "inf", "-inf", "", "9" * 400,
         "9223372036854775807", "9223372036854775808", "18446744073709551616", "1.5", "\u00b2"]
    ),
)  # fmt: skip
invalid_utf8 = st.sampled_from(
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"a\xfe"]
)


def _string(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


json_leaves = st.one_of(
    st.sampled_from(
        [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"-0", b"1" + b"0" * 400,
         b"9223372036854775808", b"-9223372036854775809", b"18446744073709551616", b"null",
         b"true", b"false", b"[]", b"{}", b'""', b"0.5", b"3.0", b"-1", b"0", b"1"]
    ),
    st.integers(-(2**80), 2**80).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.text(max_size=6).map(_string),
    unicode_digits.map(_string),
    invalid_utf8.map(lambda raw: b'"' + raw + b'"'),
)  # fmt: skip
keys = st.sampled_from(
    ["inputs", "outputs", "id", "parameters", "name", "shape", "datatype", "data", "timeout",
     "binary_data_size", "binary_data", "binary_data_output", "entity", "instances",
     "signature_name", "dataframe_split", "dataframe_records", "columns", "index", "X", "a",
     "b", "request_id", "reward", "label", "version", "reason", "kind", "params", "weights",
     "champion", "challenger", "primary", "shadow", "arms", "user", "at", "score"]
)  # fmt: skip
json_keys = st.one_of(keys.map(_string), json_leaves.filter(lambda b: b.startswith(b'"')))


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


json_bytes = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=5).map(_array)
        | st.lists(st.tuples(json_keys, inner), max_size=6).map(_object)
    ),
    max_leaves=30,
)
shapes = st.one_of(
    st.lists(st.integers(-3, 5), max_size=4),
    st.sampled_from(
        [
            [0] * 65,
            [1] * 64,
            [0, 2**62, 2**62],
            [2**63, 0],
            [2**64],
            [1, 10**30],
            [2] * 5000,
            [10**400] * 64,
        ]
    ),
).map(lambda dims: _array([str(d).encode() for d in dims]))
datatypes = st.sampled_from(["FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP16",
                             "fp32", "COMPLEX", ""]).map(_string)  # fmt: skip
maybe = st.one_of  # a slot holds a good-looking value or anything at all


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A v2 request whose every slot may be wrong, with its binary part and header length."""
    inputs, blobs = [], []
    for _ in range(draw(st.integers(0, 3))):
        parameters = None
        if draw(st.booleans()):
            size = draw(st.integers(-4, 40) | st.sampled_from([2**63, 2**64, 10**30]))
            parameters = _object([(b'"binary_data_size"', str(size).encode())])
            blobs.append(draw(st.binary(max_size=40)))
        fields = [
            (b'"name"', draw(maybe(st.sampled_from(["X", "a", "b"]).map(_string), json_leaves))),
            (b'"shape"', draw(maybe(shapes, json_bytes))),
            (b'"datatype"', draw(maybe(datatypes, json_leaves))),
        ]
        if parameters is None or draw(st.booleans()):
            fields.append((b'"data"', draw(json_bytes)))
        if parameters is not None:
            fields.append((b'"parameters"', parameters))
        inputs.append(_object(draw(st.permutations(fields))))
    body_fields = [(b'"inputs"', _array(inputs))]
    if draw(st.booleans()):
        parameters = [(b'"timeout"', draw(json_leaves)), (b'"binary_data_output"', b"true")]
        body_fields.append((b'"parameters"', _object(parameters)))
    if draw(st.booleans()):
        body_fields.append((b'"outputs"', draw(json_bytes)))
    header = _object(body_fields)
    binary = b"".join(blobs)
    if draw(st.booleans()) or not binary:
        return header + binary, None if not binary else str(len(header))
    return header + binary, draw(maybe(st.just(str(len(header))), number_texts))


bytes_elements = st.lists(st.binary(max_size=6)).map(
    lambda items: b"".join(struct.pack("<I", len(i)) + i for i in items)
)

# -- requests over every route ----------------------------------------------------------

segment = st.one_of(number_texts, st.sampled_from(["1", "2", "champion", "challenger", "nope"]))
model_names = st.sampled_from(["iris", "adder", "nope", "iris\u00b2", "ir%is"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers) for one route gyre serves, with hostile parts."""
    who = draw(st.integers(0, 9))
    headers = dict(AUTH) if who > 1 else {}
    if who == 1:  # a key that is not one
        name = draw(st.sampled_from(["Authorization", "X-Api-Key"]))
        headers[name] = draw(
            st.text(max_size=20)
            | st.sampled_from(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", f"bearer  {ADMIN_KEY}",
                               f"Bearer {ADMIN_KEY}\u00b2", f"{ADMIN_KEY} "])
        )  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        headers["Gyre-Deadline-Ms"] = draw(number_texts)
    if draw(st.integers(0, 9)) == 0:
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "x"]))
    route = draw(st.integers(0, 9))
    model = draw(model_names)
    if route <= 2:  # v2 infer, by model or by version
        body, length = draw(v2_bodies())
        if length is not None:
            headers["Inference-Header-Content-Length"] = length
        path = f"/v2/models/{model}/infer"
        if route == 2:
            path = f"/v2/models/{model}/versions/{draw(segment)}/infer"
        return "POST", path, body, headers
    if route == 3:  # v2 metadata and readiness
        version = draw(st.none() | segment)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")
        return "GET", path + draw(st.sampled_from(["", "/ready"])), b"", headers
    if route == 4:  # TF Serving
        at = draw(st.sampled_from(["", "/versions/", "/labels/"]))
        path = f"/v1/models/{model}" + (at + draw(segment) if at else "")
        if draw(st.booleans()):
            return "GET", path + draw(st.sampled_from(["", "/metadata"])), b"", headers
        instances = draw(json_bytes)
        key = draw(st.sampled_from([b'"instances"', b'"inputs"', b'"signature_name"']))
        return "POST", path + ":predict", _object([(key, instances)]), headers
    if route == 5:  # MLflow
        headers["Gyre-Model"] = draw(
            st.sampled_from(["iris", "adder", "iris@champion", "iris@", "nope"])
            | segment.map(lambda v: f"iris:{v}")
        )
        if draw(st.booleans()):
            headers["Content-Type"] = draw(
                st.sampled_from(["application/json", "text/csv", "application/json; x=1", ""])
            )
        kind = draw(st.sampled_from([b'"dataframe_split"', b'"dataframe_records"',
                                     b'"instances"', b'"inputs"']))  # fmt: skip
        return "POST", "/invocations", _object([(kind, draw(json_bytes))]), headers
    if route == 6:  # events
        event_type = draw(st.sampled_from(["clicks", "nope", "clicks\u00b2"]))
        records = draw(st.lists(json_bytes, max_size=4))
        if draw(st.booleans()):
            return "POST", f"/v1/events/{event_type}", b"\n".join(records), headers
        return "POST", f"/v1/events/{event_type}", _array(records), headers
    if route == 7:  # feedback
        request_id = draw(
            st.tuples(model_names, segment, st.text(max_size=8)).map("~".join).map(_string)
            | json_leaves
        )
        fields = [(b'"request_id"', request_id), (b'"reward"', draw(json_leaves))]
        if draw(st.booleans()):
            fields.append((b'"label"', draw(json_bytes)))
        return "POST", "/v1/feedback", _object(fields), headers
    # admin: aliases and traffic policies; what passes is stored in the registry
    alias = draw(st.sampled_from(["champion", "challenger", "x"]) | number_texts)
    if route == 8:
        method = draw(st.sampled_from(["PUT", "DELETE"]))
        fields = [(b'"version"', draw(json_leaves)), (b'"reason"', draw(json_leaves))]
        return method, f"/v1/admin/models/{model}/aliases/{alias}", _object(fields), headers
    if draw(st.integers(0, 5)) == 0:
        return "GET", f"/v1/admin/models/{model}/shadow", b"", headers
    targets = st.sampled_from(["champion", "challenger", "1", "2", "x"]).map(_string) | json_keys
    params = draw(
        st.lists(st.tuples(targets, json_leaves), max_size=3).map(
            lambda pairs: _object([(b'"weights"', _object(pairs))])
        )
        | st.lists(targets, max_size=3).map(lambda arms: _object([(b'"arms"', _array(arms))]))
        | json_bytes
    )
    kind = draw(st.sampled_from(["split", "bandit", "shadow", "champion", "x"]).map(_string))
    body = _object([(b'"kind"', kind), (b'"params"', params)])
    return "PUT", f"/v1/admin/models/{model}/policy", body, headers


def _assert_clean(status: int, body: bytes, request: object) -> None:
    assert 200 <= status < 500, (status, body, request)
    if status >= 400:
        error = json.loads(body)
        assert error.get("error") or error.get("message"), (body, request)


def _utf8(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as a client may send them: UTF-8 bytes (the server reads Latin-1)."""
    return {name: value.encode() for name, value in headers.items()}


def _send(
    client: AppClient | ControlClient, method: str, path: str, body: bytes, headers: dict
) -> httpx.Response:
    # Never a hang: every request must be answered within seconds.
    async def send() -> httpx.Response:
        request = client._client.request(method, path, content=body, headers=_utf8(headers))
        return await asyncio.wait_for(request, timeout=10)

    return client.loop.run_until_complete(send())


def _still_answers(client: AppClient) -> None:
    answer = _send(client, "POST", "/v2/models/iris/infer", json.dumps(GOOD_V2).encode(), AUTH)
    assert answer.status_code == 200, answer.text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_hostile_requests_on_every_route_get_a_4xx_with_a_reason(
    client: AppClient, control: ControlClient, request: tuple[str, str, bytes, dict[str, str]]
) -> None:
    method, path, body, headers = request
    answer = _send(_app_for(method, path, client, control), method, path, body, headers)
    _assert_clean(answer.status_code, answer.content, request)
    _still_answers(client)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=st.sampled_from(["/v2/models/iris/infer", "/v2/models/adder/infer",
                         "/v1/models/iris:predict", "/invocations", "/v1/events/clicks",
                         "/v1/feedback", "/v1/admin/models/iris/policy"]),
    body=st.binary(max_size=300) | st.tuples(json_bytes, invalid_utf8).map(b"".join),
    length=st.none() | number_texts,
    encoding=st.none() | st.sampled_from(["gzip", "deflate", "br", "identity"]),
)  # fmt: skip
def test_raw_bytes_never_cause_a_500(
    client: AppClient,
    control: ControlClient,
    url: str,
    body: bytes,
    length: str | None,
    encoding: str | None,
) -> None:
    headers = {"Gyre-Model": "iris", **AUTH}
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    method = "PUT" if "admin" in url else "POST"
    answer = _send(_app_for(method, url, client, control), method, url, body, headers)
    _assert_clean(answer.status_code, answer.content, (url, body, headers))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/v2/models/iris/infer"),
        ("POST", "/v1/models/iris:predict"),
        ("POST", "/invocations"),
        ("POST", "/v1/events/clicks"),
        ("POST", "/v1/feedback"),
        ("PUT", "/v1/admin/models/iris/policy"),
        ("PUT", "/v1/admin/models/iris/aliases/champion"),
    ],
)
def test_invalid_utf8_inside_a_json_string_is_a_400_on_every_route(
    client: AppClient, control: ControlClient, method: str, url: str
) -> None:
    app = _app_for(method, url, client, control)
    # msgspec raises UnicodeDecodeError for these, which no decode site caught (500).
    for body in (b'{"id": "\xff", "inputs": []}', b'{"id": "\xed\xa0\x80"}', b'{"id": "a\xc3"}'):
        if "events" in url:
            body = b"[" + body + b"]"
        answer = _send(app, method, url, body, {"Gyre-Model": "iris", **AUTH})
        assert answer.status_code == 400, (url, body, answer.text)
        assert "invalid UTF-8" in answer.text, answer.text
    if "events" in url:  # in NDJSON, the line is rejected on its own
        answer = _send(client, method, url, b'{"id": "\xff"}\n', AUTH)
        assert "invalid UTF-8" in answer.json()["rejected"][0]["reason"], answer.text


@pytest.mark.parametrize(
    "path",
    ["/v2/models/iris/versions/\u00b2/infer", "/v2/models/iris/versions/\u0661",
     "/v2/models/iris/versions/9223372036854775808/infer", "/v1/models/iris/versions/\uff11",
     "/v1/models/iris/versions/99999999999999999999999:predict"],
)  # fmt: skip
def test_version_path_segments_take_ascii_numbers_within_64_bits(
    client: AppClient, path: str
) -> None:
    method = "POST" if path.endswith("infer") or path.endswith("predict") else "GET"
    body = json.dumps(GOOD_V2).encode() if method == "POST" else b""
    answer = _send(client, method, path, body, AUTH)
    assert answer.status_code == 400 and "ASCII digits" in answer.text, answer.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Inference-Header-Content-Length": "\u00b2"}, "number of bytes in ASCII digits"),
        ({"Inference-Header-Content-Length": "99999999999999999999"}, "ASCII digits"),
        ({"Gyre-Deadline-Ms": "0"}, "must be a positive number of milliseconds"),
        ({"Gyre-Deadline-Ms": "-5"}, "must be a positive number of milliseconds"),
        ({"Gyre-Deadline-Ms": "nan"}, "must be a positive number of milliseconds"),
        ({"Gyre-Deadline-Ms": "1_000"}, "must be a positive number of milliseconds"),
        ({"Gyre-Deadline-Ms": "\u0663"}, "must be a positive number of milliseconds"),
    ],
)
def test_headers_that_must_be_numbers(client: AppClient, headers: dict, message: str) -> None:
    body = json.dumps(GOOD_V2).encode()
    answer = _send(client, "POST", "/v2/models/iris/infer", body, {**AUTH, **headers})
    assert answer.status_code == 400 and message in answer.text, answer.text


@pytest.mark.parametrize("timeout", [0, -1, -(10**400), 0.0])
def test_a_timeout_of_zero_or_less_is_refused_as_the_deadline_header_is(
    client: AppClient, timeout: int
) -> None:
    body = json.dumps(GOOD_V2)[:-1] + f', "parameters": {{"timeout": {timeout}}}}}'
    answer = _send(client, "POST", "/v2/models/iris/infer", body.encode(), AUTH)
    assert answer.status_code == 400, answer.text
    assert "parameters.timeout must be a positive number of microseconds" in answer.text


@pytest.mark.parametrize("timeout", ["1e400", "1" + "0" * 400, "5000000"])
def test_a_timeout_past_the_slo_means_the_slo(client: AppClient, timeout: str) -> None:
    body = json.dumps(GOOD_V2)[:-1] + f', "parameters": {{"timeout": {timeout}}}}}'
    answer = _send(client, "POST", "/v2/models/iris/infer", body.encode(), AUTH)
    # 1e400 is not a JSON number msgspec reads (out of range): a 400; the others answer.
    assert answer.status_code == (400 if "e" in timeout else 200), answer.text


@pytest.mark.parametrize(
    "shape",
    [[0] * 65, [0, 2**62, 2**62], [0, 2**64], [0, 10**30, 10**30], [-1, 4],
     # Multiplied out, these took a minute (and printing the product raised: a 500).
     [2] * 15_000, [2**62] * 100_000, [10**4000] * 64],
)  # fmt: skip
def test_shapes_numpy_cannot_build_are_a_400(client: AppClient, shape: list[int]) -> None:
    body = {"inputs": [{"name": "X", "shape": shape, "datatype": "FP32", "data": []}]}
    answer = _send(client, "POST", "/v2/models/iris/infer", json.dumps(body).encode(), AUTH)
    assert answer.status_code == 400, answer.text


def test_wrong_binary_extension_lengths_are_a_400(client: AppClient) -> None:
    header = json.dumps(
        {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                     "parameters": {"binary_data_size": 16}}]}
    ).encode()  # fmt: skip
    data = struct.pack("<4f", 1, 2, 3, 4)
    for body, length in [
        (header + data, len(header) + 1),
        (header + data, len(header) - 1),
        (header + data[:-1], len(header)),
        (header + data + b"x", len(header)),
        (header + data, 2**63),
    ]:
        headers = {**AUTH, "Inference-Header-Content-Length": str(length)}
        answer = _send(client, "POST", "/v2/models/iris/infer", body, headers)
        assert answer.status_code == 400, answer.text
    headers = {**AUTH, "Inference-Header-Content-Length": str(len(header))}
    assert _send(client, "POST", "/v2/models/iris/infer", header + data, headers).status_code == 200


@pytest.mark.parametrize(
    "url",
    ["/v2/models/iris/infer", "/v1/models/iris:predict", "/invocations", "/v1/feedback"],
)
@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_json_nested_past_the_decoder_limit_is_a_400(
    client: AppClient, url: str, depth: int
) -> None:
    nested = b"[" * depth + b"]" * depth
    headers = {"Gyre-Model": "iris", **AUTH}
    answer = _send(client, "POST", url, nested, headers)
    assert answer.status_code == 400, answer.content
    body = b'{"inputs": [{"name": "X", "data": ' + nested + b"}]}"
    answer = _send(client, "POST", url, body, headers)
    assert answer.status_code == 400, answer.content
    assert "recursion" in answer.text  # in `error`, or MLflow's `message`


@settings(max_examples=100, deadline=None)
@given(
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/:@._-\u00b2\u0661", max_size=40),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_unknown_routes_are_404(
    client: AppClient, control: ControlClient, path: str, method: str
) -> None:
    for app in (client, control):
        answer = _send(app, method, "/" + path.lstrip("/"), b"", AUTH)
        assert answer.status_code in (200, 400, 404, 405), answer.text


# -- the real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, iris_classifier: Pipeline, iris: tuple
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("fuzz-server") / "home"
    config = _publish(home, iris_classifier, iris[0])
    process = start_server(home, "--workers", "1", config=config)
    yield process
    process.stop()


@pytest.mark.integration
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_a_real_server_answers_hostile_requests_and_keeps_serving(
    server: ServerProcess, request: tuple[str, str, bytes, dict[str, str]]
) -> None:
    method, path, body, headers = request
    # http.client sends header values as given (httpx refuses some that a client may send,
    # such as a leading space); only line breaks, which would end the header, are taken out.
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, quote(path, safe="/:@~"), skip_accept_encoding=True)
        for name, value in _utf8(headers).items():
            connection.putheader(name, value.replace(b"\r", b"").replace(b"\n", b""))
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        content = answer.read()
        # uvicorn's own parser refuses some bytes (a control character in a header) first.
        if (answer.status, content) != (400, b"Invalid HTTP request received."):
            _assert_clean(answer.status, content, request)
    finally:
        connection.close()
    good = httpx.post(f"{server.url}/v2/models/iris/infer", json=GOOD_V2, headers=AUTH)
    assert good.status_code == 200, good.text
    assert server.process.poll() is None


def test_the_fuzzed_registry_still_starts_and_serves(
    client: AppClient, fuzz_home: tuple[Path, Path]
) -> None:
    """Whatever the control plane accepted while fuzzing is stored: a restart reads it."""
    home, config = fuzz_home
    restarted = AppClient(load_config(home=home, config_file=config))
    try:
        _still_answers(restarted)
    finally:
        restarted.close()
