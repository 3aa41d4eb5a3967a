"""The QONNX export (deploy.export_qonnx), executed by qonnx's own executor.

One ``Quant`` node, as the export builds every quantizer, is ``fixedpoint.quantize`` exactly (ties,
saturation, negative F, F > BW, BW = 1). Exported networks, executed node by node by qonnx, agree with
the integer reference as ``optsearch verify`` checks the Keras model: every quantizer's codes identical
up to float32 rounding-boundary cases, logits within one LSB layer by layer, the same argmax end to end.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from conftest import images, make_result_dir, randomize_batchnorm, tiny_model
from hypothesis import example, given
from hypothesis import strategies as st

from optsearch.core.fixedpoint import Format, quantize
from optsearch.core.netlist import DeployError, Netlist
from optsearch.deploy import export_qonnx, integer_ref
from optsearch.deploy.export_qonnx import QUANT_DOMAIN, QonnxExport, export, quant_model

onnx = pytest.importorskip("onnx", reason="the QONNX export needs onnx: pip install -e '.[qonnx]'")
pytest.importorskip("qonnx", reason="qonnx's executor checks the export: pip install -e '.[qonnx]'")

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402

L = keras.layers


def run_quant(fmt: Format, x: np.ndarray, **attributes: int) -> np.ndarray:
    """qonnx's execution of the export's one-``Quant`` model at ``fmt`` (attributes overridden if given)."""
    model = quant_model(fmt, x.shape)
    for attribute in model.graph.node[0].attribute:
        if attribute.name in attributes:
            attribute.i = attributes[attribute.name]
    out: np.ndarray = execute_onnx(ModelWrapper(model), {"x": x})["y"]
    return out


# --- one Quant node ------------------------------------------------------------------------------


@given(bw=st.integers(1, 24), f=st.integers(-30, 60), data=st.data())
@example(bw=6, f=2, data=None)  # the paper's example, ties, saturation: see the literal values below
@example(bw=1, f=0, data=None)
@example(bw=3, f=9, data=None)
@example(bw=4, f=-3, data=None)
def test_one_quant_node_is_the_quantizer(bw: int, f: int, data: Any) -> None:
    """qonnx's Quant (scale 2^-F, zero point 0, signed, narrow, ROUND) is Q (eq. 1-2) bit for bit."""
    fmt = Format(bw, f)
    t = max(fmt.max_code, 1)
    literal = [-83.5625, 83.5625, 0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9, 0.0, -0.0, math.inf, -math.inf]
    literal += [math.ldexp(c + 0.5, -f) for c in (-t - 1, -t, -1, 0, t - 1, t)]  # ties and the range's edges
    if data is None:
        values = literal
    else:
        code = st.integers(-2 * t - 2, 2 * t + 2)
        values = data.draw(
            st.lists(
                st.one_of(
                    code.map(lambda c: math.ldexp(c, -f)),  # on the grid
                    code.map(lambda c: math.ldexp(c + 0.5, -f)),  # halfway: round half to even
                    st.floats(width=32, allow_nan=False),  # anything, infinities and subnormals included
                    st.sampled_from(literal),
                ),
                min_size=1,
                max_size=40,
            )
        )
    x = np.asarray(values, dtype=np.float32)
    y = run_quant(fmt, x)
    expected = quantize(x, fmt)
    assert y.dtype == np.float32 and expected.dtype == np.float32
    assert np.array_equal(y, expected), (fmt, x[y != expected], y[y != expected], expected[y != expected])
    # The sign of a zero too, except where x * 2^F is itself a zero (-0 or an underflow): qonnx adds the
    # zero point (+0) before rounding, so it gives +0 where Q gives -0; equal values. (Pruned: +0 here.)
    with np.errstate(over="ignore", under="ignore"):
        scaled = np.ldexp(x, f) != 0
    if not fmt.pruned:
        assert np.array_equal(np.signbit(y)[scaled], np.signbit(expected)[scaled])
    if data is None and (bw, f) == (6, 2):
        assert y[0] == -7.75  # the paper: Q(-83.5625) at (6, 2)


def test_a_pruned_tensor_is_an_unsigned_narrow_one_bit_quant() -> None:
    """BW = 1 is {0}. qonnx executes a *signed* 1-bit Quant as bipolar {-1, +1} (its int_quant special
    case), so the export writes a pruned activation as unsigned, narrow, 1 bit: range [0, 2^1 - 2]."""
    x = np.array([-3.0, -0.4, 0.0, 0.4, 3.0], dtype=np.float32)
    assert export_qonnx.quant_attributes(Format(1, 0))["signed"] == 0
    assert np.array_equal(run_quant(Format(1, 0), x), np.zeros(5))
    assert set(run_quant(Format(1, 0), x, signed=1).tolist()) == {-1.0, 1.0}


# --- exported networks against the integer reference ---------------------------------------------


def wide_model() -> keras.Model:
    """Every other operation the export maps: rescale with offset, bilinear resize, dilated, grouped,
    depthwise and separable convs, add, concat, BatchNorm, average and global pooling, biases."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 2), name="img")
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    x = L.Resizing(10, 10, name="resize")(x)
    a = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2, activation="relu", name="dw")(x)
    b = L.SeparableConv2D(4, 3, padding="same", strides=2, name="sep")(x)
    c = L.Conv2D(4, 3, padding="same", dilation_rate=2, name="dil")(x)
    c = L.Conv2D(4, 2, strides=2, groups=2, name="grp")(c)
    k = L.Concatenate(name="cat")([L.Add(name="add")([a, b]), c])
    k = L.BatchNormalization(name="bn")(k)
    k = L.AveragePooling2D(2, padding="same", name="avg")(k)
    h = L.Concatenate(name="cat2")(
        [L.GlobalAveragePooling2D(name="gavg")(k), L.GlobalMaxPooling2D(name="gmax")(k)]
    )
    model = keras.Model(inputs, L.Dense(3, name="out")(h), name="wide")
    rng = np.random.default_rng(2)
    randomize_batchnorm(model, rng)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape))
    return model


def sequence_model() -> keras.Model:
    """1-D: Conv1D (dilated, same), MaxPooling1D, SeparableConv1D on raw inputs (negative F)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 2), name="seq")
    x = L.Conv1D(4, 3, dilation_rate=2, padding="same", activation="relu", name="c1")(inputs)
    x = L.MaxPooling1D(2, name="p")(x)
    x = L.SeparableConv1D(4, 3, name="s1")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(L.Flatten(name="flat")(x))
    return keras.Model(inputs, outputs, name="sequence")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Netlist, np.ndarray]]:
    from optsearch.run.deployed import load_result

    root = tmp_path_factory.mktemp("qonnx")
    out = {}
    for name, model, shape, bw in (
        ("tiny", tiny_model(), (8, 8, 1), 6),
        ("wide", wide_model(), (12, 12, 2), 7),
        ("sequence", sequence_model(), (16, 2), 7),
    ):
        x = images(48, shape)
        out[name] = (load_result(make_result_dir(model, x, root / name, bw=bw)).netlist, x)
    return out


def execute(exported: QonnxExport, folder: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Write the export, run the file with qonnx; every netlist node's value, channels last."""
    exported.write(folder)
    context = execute_onnx(ModelWrapper(str(folder / "model.onnx")), {"x_input": x}, True)
    values = {}
    for node, (tensor, layout) in exported.tensors.items():
        value = context[tensor]
        values[node] = np.moveaxis(value, 1, -1) if layout == "first" and value.ndim > 2 else value
    return values


def agreement(netlist: Netlist, values: dict[str, np.ndarray], x: np.ndarray) -> integer_ref.Agreement:
    """As ``optsearch verify`` compares the Keras model: each quantizer from qonnx's own inputs."""
    quantizers = [n for n in netlist.nodes if n.op == "quantize"]
    forced = integer_ref.run(
        netlist,
        x,
        teacher={q.name: values[q.name] for q in quantizers},
        keep=[q.inputs[0] for q in quantizers],
    )
    alone = integer_ref.run(netlist, x)
    scores = integer_ref.scores_node(netlist)
    scores_node = netlist.node(scores)
    return integer_ref.Agreement(
        layers=tuple(
            integer_ref.layer_agreement(
                q.name, forced[q.name], values[q.name], forced[q.inputs[0]], q.attrs["format"]
            )
            for q in quantizers
        ),
        layer_logits=integer_ref.compare_logits(forced[scores].real(), values[scores]),
        end_to_end=integer_ref.compare_logits(alone[scores].real(), values[scores]),
        logit_lsb=scores_node.attrs["format"].lsb if scores_node.op == "quantize" else None,
    )


def rename(netlist: Netlist, old: str, new: str) -> Netlist:
    """The same netlist with node ``old`` called ``new``."""
    nodes = [
        dataclasses.replace(
            n, name=new if n.name == old else n.name, inputs=tuple(new if i == old else i for i in n.inputs)
        )
        for n in netlist.nodes
    ]
    return Netlist(netlist.name, tuple(nodes), new if netlist.output == old else netlist.output)


def rename_input(netlist: Netlist) -> Netlist:
    """The same netlist with its input called ``x_input`` (so that ``execute`` feeds every model)."""
    return rename(netlist, netlist.input.name, "x_input")


@pytest.mark.parametrize("name", ["tiny", "wide", "sequence"])
def test_exported_network_agrees_with_the_integer_reference(
    name: str, results: dict[str, tuple[Netlist, np.ndarray]], tmp_path: Path
) -> None:
    netlist, x = results[name]
    netlist = rename_input(netlist)
    values = execute(export(netlist, name, batch=len(x)), tmp_path / "batch", x)
    result = agreement(netlist, values, x)
    assert result.ok, result
    assert result.end_to_end.argmax_equal == len(x)
    # The file as the exporter writes it (batch 1) computes the same, sample by sample.
    single = export(netlist, name)
    for i in range(2):
        one = execute(single, tmp_path / f"single{i}", x[i : i + 1])
        assert np.array_equal(one[netlist.output], values[netlist.output][i : i + 1])


def test_a_quant_node_on_every_tensor_at_its_format(results: dict[str, tuple[Netlist, np.ndarray]]) -> None:
    """Every unpruned weight, bias and activation has its Quant node, at exactly its (BW, F)."""
    netlist = results["wide"][0]
    model = export(netlist, "wide").model
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    initial = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    quants = {n.output[0]: n for n in model.graph.node if n.op_type == "Quant"}
    expected: dict[str, Format] = {}
    for node in netlist.nodes:
        if node.op == "quantize":
            expected[node.name] = node.attrs["format"]
        for i, w in enumerate(node.weights):
            suffix = "W" if len(node.weights) == 1 else ("W_depthwise", "W_pointwise")[i]
            expected[f"{node.name}_{suffix}_quant"] = w.fmt
        if node.bias is not None and not node.bias.fmt.pruned:
            expected[f"{node.name}_B_quant"] = node.bias.fmt
    assert set(quants) == set(expected)
    for name, fmt in expected.items():
        q = quants[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in q.attribute}
        assert q.domain == QUANT_DOMAIN
        assert attrs == {"signed": 1, "narrow": 1, "rounding_mode": b"ROUND"}
        scale, zeropt, bitwidth = (initial[i] for i in q.input[1:])
        assert scale == math.ldexp(1.0, -fmt.f) and zeropt == 0 and bitwidth == fmt.bw
    inputs, outputs = model.graph.input, model.graph.output
    assert [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] == [1, 12, 12, 2]  # channels last
    assert [d.dim_value for d in outputs[0].type.tensor_type.shape.dim] == [1, 3]


def test_qonnx_channels_last_conversion_leaves_no_transpose(
    results: dict[str, tuple[Netlist, np.ndarray]],
) -> None:
    """What hls4ml needs first (docs/qonnx.md): qonnx's clean-up and channels-last conversion, after
    which a plain CNN is channels last throughout, with no Transpose left, and computes the same."""
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    netlist, x = results["tiny"]
    model = ModelWrapper(export(netlist, "tiny").model.SerializeToString())
    before = execute_onnx(model, {netlist.input.name: x[:1]})
    converted = cleanup_model(cleanup_model(model).transform(ConvertToChannelsLastAndClean()))
    assert "Transpose" not in {n.op_type for n in converted.graph.node}
    after = execute_onnx(converted, {converted.graph.input[0].name: x[:1]})
    assert np.array_equal(next(iter(after.values())), next(iter(before.values())))


def test_a_pruned_activation_is_all_zeros(
    results: dict[str, tuple[Netlist, np.ndarray]], tmp_path: Path
) -> None:
    netlist, x = results["tiny"]
    nodes = tuple(
        dataclasses.replace(n, attrs={**n.attrs, "format": Format(1, 0)}) if n.name == "c2_act_quant" else n
        for n in rename_input(netlist).nodes
    )
    pruned = Netlist(netlist.name, nodes, netlist.output)
    exported = export(pruned, "tiny", batch=len(x))
    assert any("c2:A" in note and "unsigned narrow 1-bit" in note for note in exported.notes)
    values = execute(exported, tmp_path, x)
    assert not values["c2_act_quant"].any()
    reference = integer_ref.run(pruned, x)
    scores = integer_ref.scores_node(pruned)
    assert np.array_equal(values[scores], reference[scores].real())


# --- refusals ------------------------------------------------------------------------------------


def replace_node(netlist: Netlist, name: str, **changes: Any) -> Netlist:
    nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in netlist.nodes)
    return Netlist(netlist.name, nodes, netlist.output)


def test_what_cannot_be_mapped_is_refused_in_one_line(
    results: dict[str, tuple[Netlist, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    netlist = results["tiny"][0]
    c1 = netlist.node("c1")
    cases = {
        "layer 'c1' (Conv2D): padding 'causal'": replace_node(
            netlist, "c1", attrs={**c1.attrs, "padding": "causal"}
        ),
        "layer 'c1_act_quant' (FixedPointQuantizer): format (30, 10) has more than 24 bits": replace_node(
            netlist, "c1_act_quant", attrs={"format": Format(30, 10), "owner": "c1"}
        ),
        "layer 'c2' (Conv2D): its weights: format (8, 200)": replace_node(
            netlist, "c2", weights=(dataclasses.replace(netlist.node("c2").weights[0], fmt=Format(8, 200)),)
        ),
    }
    cases["tensor name 'c1_W' is used twice in the QONNX graph"] = rename(netlist, "scale", "c1_W")
    for message, broken in cases.items():
        with pytest.raises(DeployError) as err:
            export(broken)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    monkeypatch.setattr(
        export_qonnx, "QONNX_OPS", tuple(op for op in export_qonnx.QONNX_OPS if op != "maxpool")
    )
    with pytest.raises(DeployError, match=r"^layer 'p' \(MaxPooling2D\): the QONNX export has no mapping "):
        export(netlist)


def test_without_onnx_it_says_what_to_install(
    results: dict[str, tuple[Netlist, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(DeployError, match=r"^the QONNX export needs the onnx package: pip install"):
        export(results["tiny"][0])


@pytest.mark.slow
def test_zoo_sequential_model_agrees_with_the_integer_reference(tmp_path: Path) -> None:
    """models/sequential_mnist.keras at uniform 8-bit formats on 100 shipped images (a float BatchNorm
    after every quantizer: codes may differ by one LSB at rounding boundaries, as in `verify`)."""
    from optsearch.model.loading import load_model
    from optsearch.run.deployed import load_result

    root = Path(__file__).resolve().parents[1]
    x = np.load(root / "models" / "default_data.npz")["x"][:100].astype(np.float32)
    model = load_model(root / "models" / "sequential_mnist.keras")
    result_dir = make_result_dir(model, x, tmp_path / "zoo", name="sequential_mnist")
    netlist = rename_input(load_result(result_dir).netlist)
    values = execute(export(netlist, "sequential_mnist", batch=len(x)), tmp_path / "qonnx", x)
    result = agreement(netlist, values, x)
    assert result.ok, result
    assert result.end_to_end.argmax_equal == len(x)
