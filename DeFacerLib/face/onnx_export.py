"""Write the trained Keras U-Net as an ONNX graph, built node by node with the ``onnx`` helper API.

Why not ``model.export(format="onnx")``/tf2onnx: the converter lags behind TensorFlow and
NumPy releases and adds a heavy training-only dependency for a graph of a dozen op types.
This exporter mirrors model.py's construction by layer name (Conv, InstanceNormalization,
Relu, Sigmoid, GlobalAveragePool, Mul, Add, MaxPool, Resize, Concat, Softmax), converts the
weights from channels-last to ONNX's channels-first layout, and is checked against Keras in
the tests (argmax agreement on a real head). ONNX layout: input ``image`` (N, 1, D, H, W),
output ``probabilities`` (N, classes, D, H, W).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from DeFacerLib.face.model import CLASS_NAMES, INSTANCE_NORM_EPSILON, level_filters

OPSET = 17


class _Graph:
    def __init__(self, model):
        self.model = model
        self.nodes: list = []
        self.initializers: list = []

    def weights(self, name):
        return self.model.get_layer(name).get_weights()

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x, name):
        layer = self.model.get_layer(name)
        weights = layer.get_weights()
        kernel = np.transpose(weights[0], (4, 3, 0, 1, 2)).astype(np.float32)
        inputs = [x, self.const(f"{name}/W", kernel)]
        if layer.use_bias:
            inputs.append(self.const(f"{name}/B", weights[1].astype(np.float32)))
        pad = kernel.shape[2] // 2
        y = self.op("Conv", inputs, f"{name}/conv", kernel_shape=list(kernel.shape[2:]), pads=[pad] * 6)
        activation = layer.activation.__name__
        if activation == "relu":
            return self.op("Relu", [y], f"{name}/relu")
        if activation == "sigmoid":
            return self.op("Sigmoid", [y], f"{name}/sigmoid")
        if activation != "linear":
            raise ValueError(f"layer {name}: activation {activation} has no ONNX mapping here")
        return y

    def instance_norm(self, x, name):
        gamma, beta = self.weights(name)
        return self.op("InstanceNormalization",
                       [x, self.const(f"{name}/scale", gamma.astype(np.float32)),
                        self.const(f"{name}/bias", beta.astype(np.float32))],
                       name, epsilon=INSTANCE_NORM_EPSILON)

    def squeeze_excitation(self, x, name):
        s = self.op("GlobalAveragePool", [x], f"{name}_pool")
        s = self.conv(s, f"{name}_reduce")
        s = self.conv(s, f"{name}_expand")
        return self.op("Mul", [x, s], f"{name}_scale")

    def conv_block(self, x, in_channels, filters, name):
        shortcut = x if in_channels == filters else self.conv(x, f"{name}_proj")
        y = self.conv(x, f"{name}_conv1")
        y = self.op("Relu", [self.instance_norm(y, f"{name}_norm1")], f"{name}_relu1")
        y = self.conv(y, f"{name}_conv2")
        y = self.squeeze_excitation(y, f"{name}_se")
        y = self.op("Add", [y, shortcut], f"{name}_residual")
        return self.op("Relu", [self.instance_norm(y, f"{name}_norm2")], f"{name}_relu2")

    def attention_gate(self, skip, gate, name):
        theta = self.conv(skip, f"{name}_theta")
        phi = self.conv(gate, f"{name}_phi")
        f = self.op("Relu", [self.op("Add", [theta, phi], f"{name}_add")], f"{name}_relu")
        psi = self.conv(f, f"{name}_psi")
        return self.op("Mul", [skip, psi], f"{name}_apply")


def _infer_filters(model) -> list[int]:
    filters = []
    while True:
        try:
            layer = model.get_layer(f"enc{len(filters)}_conv1")
        except ValueError:
            return filters
        filters.append(int(layer.filters))


def export_onnx(model, path: str | Path) -> Path:
    """Write ``model`` (built by model.build_model) to ``path`` as ONNX; returns the path."""
    filters = _infer_filters(model)
    levels = len(filters)
    assert filters == level_filters(filters[0], levels), f"unexpected filter layout {filters}"
    spatial = [int(n) for n in model.input.shape[1:4]]
    g = _Graph(model)
    x, channels, skips = "image", 1, []
    for level, f in enumerate(filters):
        x = g.conv_block(x, channels, f, f"enc{level}")
        channels = f
        if level < levels - 1:
            skips.append(x)
            x = g.op("MaxPool", [x], f"enc{level}_down", kernel_shape=[2, 2, 2], strides=[2, 2, 2])
    scales = g.const("upsample/scales", np.array([1, 1, 2, 2, 2], dtype=np.float32))
    for level in reversed(range(levels - 1)):
        f = filters[level]
        up = g.op("Resize", [x, "", scales], f"dec{level}_upsample", mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        up = g.conv(up, f"dec{level}_up")
        gated = g.attention_gate(skips[level], up, f"att{level}")
        x = g.op("Concat", [gated, up], f"dec{level}_concat", axis=1)
        x = g.conv_block(x, 2 * f, f, f"dec{level}")
    logits = g.conv(x, "head_logits")
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="probabilities", axis=1))

    graph = helper.make_graph(
        g.nodes, "face_unet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1] + spatial)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASS_NAMES)] + spatial)],
        g.initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="DeFacer", doc_string="classes: " + ",".join(CLASS_NAMES))
    onnx_model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(onnx_model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))
    return path
