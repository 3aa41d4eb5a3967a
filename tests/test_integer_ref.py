"""The integer reference (deploy.integer_ref) against the Keras quantized model, and `optsearch verify`.

Result folders are written directly (quantized.keras + a minimal formats.json) from uniform formats,
so no search runs here (``make_result_dir`` and ``tiny_model`` are in conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images, make_result_dir, randomize_batchnorm, tiny_model
from hypothesis import given
from hypothesis import strategies as st

from optsearch.cli.main import cli
from optsearch.core.fixedpoint import Format, quantize
from optsearch.core.netlist import FixedArray, Node, grids, real_inputs
from optsearch.deploy import integer_ref
from optsearch.deploy.integer_ref import Value, compare_logits, quantize_value, round_shift

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    x = images(64)
    np.savez(root / "data.npz", x=x.astype(np.uint8), y=np.zeros(64, dtype=np.int64))
    return make_result_dir(tiny_model(), x, root / "result", bw=6, data_spec=str(root / "data.npz"))


# --- integer arithmetic --------------------------------------------------------------------------


@given(st.integers(-(2**40), 2**40), st.integers(-8, 20))
def test_round_shift_is_round_half_to_even(v: int, shift: int) -> None:
    got = int(round_shift(np.array([v], dtype=np.int64), shift)[0])
    assert got == int(np.rint(np.ldexp(float(v), -shift)))


@given(
    st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=20),
    st.integers(-4, 12),
    st.integers(1, 12),
    st.integers(-6, 10),
)
def test_quantizing_codes_equals_quantizing_values(codes: list[int], f_in: int, bw: int, f: int) -> None:
    """The shift-and-clip on integers is exactly Q (eq. 1-2) on the values they stand for."""
    fmt = Format(bw, f)
    values = np.ldexp(np.array(codes, dtype=np.float64), -f_in)
    got = quantize_value(Value(np.array(codes, dtype=np.int64), f_in), fmt)
    assert np.array_equal(got.real(), quantize(values, fmt))
    assert np.array_equal(quantize_value(Value(values, None), fmt).real(), quantize(values, fmt))


# --- against the Keras quantized model ------------------------------------------------------------


def test_tiny_model_integer_layers_are_bit_exact(tiny_result: Path) -> None:
    from optsearch.run.deployed import load_result, verify

    result = load_result(tiny_result)
    static = grids(result.netlist)
    integer = [n.name for n in result.netlist.weighted() if static[n.inputs[0]] is not None]
    assert integer == ["c2", "out"]  # c1 reads the real-valued Rescaling output
    assert {layer: node.name for layer, node in real_inputs(result.netlist).items()} == {"c1": "scale"}
    agreement = verify(result, images(64), batch_size=32)
    assert agreement.ok
    by_name = {layer.name: layer for layer in agreement.layers}
    # Integer-only layers: identical codes. c1 (real input, Keras in float32): at most rounding ties.
    assert by_name["c2_act_quant"].differ == by_name["out_act_quant"].differ == 0
    assert by_name["c1_act_quant"].explained
    assert agreement.end_to_end.argmax_equal == agreement.samples == 64
    assert agreement.layer_logits.identical == 64  # the logits layer is integer-only


def test_branched_zoo_model_with_random_weights(tmp_path: Path) -> None:
    """The Inception-style model (concat of four branches, bilinear resize, global average)."""
    from optsearch.model import zoo
    from optsearch.run.deployed import load_result, verify

    keras.utils.set_random_seed(3)
    model = zoo.build("branched")
    randomize_batchnorm(model, np.random.default_rng(3))
    x = images(6, (28, 28, 1), seed=3)
    result = load_result(make_result_dir(model, x, tmp_path / "branched"))
    assert {n.op for n in result.netlist.nodes} >= {"concat", "resize", "global_avg", "maxpool"}
    agreement = verify(result, x, batch_size=6)
    assert agreement.layers_explained, [layer for layer in agreement.layers if not layer.explained]
    assert agreement.ok and agreement.end_to_end.argmax_equal == agreement.samples
    assert len(agreement.layers) == 23
    # Every layer reads a float: the stem the bilinear resize, the logits the global average, every
    # other conv a BatchNorm's output (the paper's Conv-ReLU-Q-BN blocks).
    causes = {layer: node.source for layer, node in real_inputs(result.netlist).items()}
    assert len(causes) == 23 and causes.pop("stem") == "Resizing"
    assert causes.pop("logits") == "GlobalAveragePooling2D"
    assert set(causes.values()) == {"BatchNormalization"}


def test_verify_command(tiny_result: Path, tmp_path: Path) -> None:
    report = tmp_path / "agreement.json"
    out = CliRunner().invoke(cli, ["verify", str(tiny_result), "--json", str(report)])
    assert out.exit_code == 0, out.output
    assert "verify: OK" in out.output
    assert "2 of 3 weighted layers have a fixed-point input (integer-only), the others read the float " in (
        out.output
    )
    assert "output of: Rescaling (1)\n" in out.output
    assert "layer by layer, logits: argmax identical on 64/64 samples" in out.output
    assert "end to end (the reference alone from the input): argmax identical on 64/64" in out.output
    assert "top-1 accuracy on these samples: integer reference" in out.output
    data = json.loads(report.read_text())
    assert data["ok"] and data["samples"] == 64 and len(data["layers"]) == 3
    reference_correct, model_correct = data["end_to_end"]["correct"]  # same argmax everywhere
    assert reference_correct == model_correct
    assert f"{100 * model_correct / 64:.2f}%" in out.output


def test_verify_parts_are_the_runs_search_and_held_out_samples(tiny_result: Path, tmp_path: Path) -> None:
    """``--part`` redoes the run's split: the two parts partition the data, in the run's sizes."""
    result = tmp_path / "result"
    result.mkdir()
    (result / "quantized.keras").write_bytes((tiny_result / "quantized.keras").read_bytes())
    x = np.load(json.loads((tiny_result / "formats.json").read_text())["data"]["spec"])["x"]
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(len(x)) % 10)
    formats = json.loads((tiny_result / "formats.json").read_text())
    formats["data"] = {"spec": str(tmp_path / "data.npz"), "search_fraction": 0.5, "seed": 0}
    # Per class, round(n / 2) searched: classes 0-3 have 7 samples (4 searched), 4-9 have 6 (3).
    formats["data"] |= {"search_samples": 34, "held_out_samples": 30}
    (result / "formats.json").write_text(json.dumps(formats))
    runner = CliRunner()

    correct = {}
    for part in ("all", "search", "held-out"):
        report = tmp_path / f"{part}.json"
        out = runner.invoke(cli, ["verify", str(result), "--part", part, "--json", str(report)])
        assert out.exit_code == 0, out.output
        data = json.loads(report.read_text())
        assert data["samples"] == {"all": 64, "search": 34, "held-out": 30}[part]
        correct[part] = data["end_to_end"]["correct"]
        assert (f"({part} part);" in out.output) == (part != "all")
    assert [s + h for s, h in zip(correct["search"], correct["held-out"], strict=True)] == correct["all"]

    out = runner.invoke(
        cli, ["verify", str(result), "--part", "held-out", "--data", str(tmp_path / "data.npz")]
    )
    assert out.exit_code == 2 and "leave out --data" in out.output, out.output
    formats["data"]["held_out_samples"] = 40
    (result / "formats.json").write_text(json.dumps(formats))
    out = runner.invoke(cli, ["verify", str(result), "--part", "held-out"])
    assert out.exit_code == 2 and "30 samples here but 40 in the run" in out.output, out.output
    out = runner.invoke(cli, ["verify", str(tiny_result), "--part", "search"])  # searched on all data
    assert out.exit_code == 2 and "has no search part" in out.output, out.output


def test_compare_logits_counts_each_sides_correct_predictions() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    model = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    logits = compare_logits(reference, model, labels=np.array([0, 1, 0]))
    assert logits.argmax_equal == 2 and logits.identical == 2
    assert logits.correct == (2, 1)  # sample 1: only the reference is right; sample 2: neither
    assert logits.merge(logits).correct == (4, 2)
    assert compare_logits(reference, model).correct is None


def test_verify_and_export_refuse_bad_folders(tiny_result: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (["verify"], ["export", "--to", "c"], ["export", "--to", "hls4ml"]):
        out = runner.invoke(cli, [*command, str(tmp_path / "missing")])
        assert out.exit_code == 2 and "result folder not found" in out.output, out.output
        out = runner.invoke(cli, [*command, str(tmp_path)])
        assert out.exit_code == 2 and "no formats.json" in out.output, out.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "quantized.keras").write_bytes((tiny_result / "quantized.keras").read_bytes())
    data = json.loads((tiny_result / "formats.json").read_text())
    data["layers"][0]["tensors"]["W"]["f"] += 3
    (broken / "formats.json").write_text(json.dumps(data))
    out = runner.invoke(cli, ["verify", str(broken)])
    assert out.exit_code == 2 and "do not belong together" in out.output and "'c1'" in out.output


def test_layers_without_a_reference_are_named(tmp_path: Path) -> None:
    inputs = keras.Input((6, 6, 1))
    x = L.Cropping2D(1, name="crop")(inputs)
    x = L.Conv2D(2, 3, name="conv")(x)
    outputs = L.Dense(2, name="dense")(L.Flatten()(x))
    result = make_result_dir(keras.Model(inputs, outputs), images(4, (6, 6, 1)), tmp_path / "r")
    out = CliRunner().invoke(cli, ["verify", str(result)])
    assert out.exit_code == 2
    assert "layer 'crop' (Cropping2D)" in out.output and "no implementation" in out.output


def test_scores_node_is_the_logits_quantizer(tiny_result: Path) -> None:
    from optsearch.run.deployed import load_result

    netlist = load_result(tiny_result).netlist
    assert integer_ref.scores_node(netlist) == "out_act_quant"
    assert netlist.output == "out_softmax"


# --- float32's error bound: what explains a differing code ------------------------------------------


def _conv_after(
    source: str,
    codes: np.ndarray,
    fmt: Format,
    out_shape: tuple[int, ...],
    activation: str = "linear",
    bias: FixedArray | None = None,
) -> Node:
    """A valid-padded Conv2D node reading ``source``, with ``codes`` as its kernel in ``fmt``."""
    attrs = {"padding": "valid", "activation": activation}
    return Node(
        "c", "conv", (source,), "Conv2D", out_shape, attrs, weights=(FixedArray(codes, fmt),), bias=bias
    )


def test_float32_bound_covers_keras_float32_batchnorm_then_conv() -> None:
    """BatchNorm then a 3x3x64 conv, as Keras computes them in float32, stay within the propagated
    bound of the exact values everywhere; and the bound is tight enough to mean something."""
    rng = np.random.default_rng(5)
    x32 = (rng.normal(0, 3, size=(4, 9, 9, 64)) + 1).astype(np.float32)
    arrays = {
        "gamma": rng.uniform(0.2, 3, 64).astype(np.float32),
        "beta": rng.normal(0, 1, 64).astype(np.float32),
        "mean": rng.normal(1, 1, 64).astype(np.float32),
        "variance": rng.uniform(0.5, 9, 64).astype(np.float32),
    }
    bn = Node("bn", "batchnorm", ("x",), "BatchNormalization", (9, 9, 64), {"epsilon": 1e-3}, arrays=arrays)
    kernel_codes = rng.integers(-127, 128, (3, 3, 64, 16))
    bias = FixedArray(rng.integers(-127, 128, 16), Format(8, 5))
    conv = _conv_after("bn", kernel_codes, Format(8, 9), (7, 7, 16), activation="relu", bias=bias)
    x = Value(x32.astype(np.float64), None)
    normed = Value(integer_ref._batchnorm(bn, x.data), None, integer_ref.float32_bound(bn, [x], None))
    exact = integer_ref._weighted(conv, normed, None).data
    bound = integer_ref.float32_bound(conv, [normed], None)

    keras_bn = keras.ops.batch_normalization(
        x32,
        arrays["mean"],
        arrays["variance"],
        axis=-1,
        offset=arrays["beta"],
        scale=arrays["gamma"],
        epsilon=1e-3,
    )
    kernel = conv.weights[0].values().astype(np.float32)
    assert conv.bias is not None
    keras_out = keras.ops.relu(keras.ops.conv(keras_bn, kernel) + conv.bias.values().astype(np.float32))
    error = np.abs(keras.ops.convert_to_numpy(keras_out).astype(np.float64) - exact)
    assert error.max() > 0  # float32 did round
    assert np.all(error <= bound)
    # A worst-case bound (here about 160 times the largest error seen), yet small against the values.
    assert bound.max() < 1e-3 * np.abs(exact).max()


def test_a_difference_float32_cannot_explain_is_flagged() -> None:
    """One LSB off where the exact value sits 0.3 LSB from a rounding boundary: float32 explains it
    only if its bound reaches that far."""
    fmt = Format(8, 4)
    pre = np.array([[1.0 / 16 * 5 + 0.2 / 16, 1.0 / 16 * 3]])  # 5.2 and 3.0 LSB: 0.3 and 0.5 from a boundary
    reference = quantize_value(Value(pre, None), fmt)
    assert reference.data.tolist() == [[5, 3]]
    model = np.array([[6 / 16, 3 / 16]])  # the first code one LSB up
    tight = integer_ref.layer_agreement("q", reference, model, Value(pre, None, 1e-6), fmt)
    assert (tight.differ, tight.beyond_bound, tight.explained) == (1, 1, False)
    assert tight.max_boundary_distance == pytest.approx(0.3)
    loose = integer_ref.layer_agreement("q", reference, model, Value(pre, None, 0.31 / 16), fmt)
    assert (loose.beyond_bound, loose.explained) == (0, True)
    assert tight.merge(loose).beyond_bound == 1
    from optsearch.cli.deploy import _unexplained

    assert _unexplained(loose) == ""
    assert "1 lie farther from a rounding boundary than float32" in _unexplained(tight)


def test_gamma_is_highams() -> None:
    u = 2.0**-24
    assert integer_ref.gamma(1) == pytest.approx(u / (1 - u))
    assert integer_ref.gamma(1000) == pytest.approx(1000 * u, rel=1e-4)


def test_float32_bound_covers_keras_float32_resize_then_conv() -> None:
    """A bilinear resize (28 -> 96, as the branched zoo models' stem reads) then a conv, as Keras
    computes them in float32 on MNIST-like images (mostly zeros): within the propagated bound."""
    rng = np.random.default_rng(7)
    x32 = np.where(rng.random((4, 28, 28, 1)) < 0.7, 0, rng.random((4, 28, 28, 1))).astype(np.float32)
    resize = Node("r", "resize", ("x",), "Resizing", (96, 96, 1), {"size": (96, 96)})
    conv = _conv_after("r", rng.integers(-127, 128, (3, 3, 1, 8)), Format(8, 7), (94, 94, 8))
    x = Value(x32.astype(np.float64), None)
    resized = Value(
        integer_ref._resize_bilinear(x.data, (96, 96)), None, integer_ref.float32_bound(resize, [x], None)
    )
    exact = integer_ref._weighted(conv, resized, None).data
    bound = integer_ref.float32_bound(conv, [resized], None)

    keras_resized = keras.ops.image.resize(x32, (96, 96), interpolation="bilinear")
    keras_out = keras.ops.conv(keras_resized, conv.weights[0].values().astype(np.float32))
    resize_error = np.abs(keras.ops.convert_to_numpy(keras_resized).astype(np.float64) - resized.data)
    assert resize_error.max() > 0 and np.all(resize_error <= resized.bound)
    error = np.abs(keras.ops.convert_to_numpy(keras_out).astype(np.float64) - exact)
    assert np.all(error <= bound)
    assert bound.max() < 1e-4 * np.abs(exact).max()
