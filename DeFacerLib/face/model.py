"""The face-feature network: an attention-gated 3D U-Net with squeeze-excitation residual blocks.

Keras 3 on TensorFlow, used only for training and for ``backend="keras"`` inference; the
shipped model runs through onnxruntime (see onnx_export.py, which rebuilds this exact graph
from the layer names used here, so keep the two in step).

Block (every level, encoder and decoder):
    conv3x3x3 -> instance norm -> ReLU -> conv3x3x3 -> squeeze-excitation -> + shortcut
    -> instance norm -> ReLU
The shortcut is the block input (1x1x1 conv when the channel count changes). Decoder levels
upsample (nearest, x2) and project with a 1x1x1 conv, gate the encoder skip with an additive
attention gate (Oktay et al. 2018) driven by that upsampled signal, concatenate, and run a
block. The head is a 1x1x1 conv and a softmax over CLASS_NAMES.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from DeFacerLib.features import FEATURES, LABEL_VALUES  # noqa: E402

CLASS_NAMES = ("background",) + tuple(sorted(FEATURES + ("brain",), key=LABEL_VALUES.get))
BASE_FILTERS = 8
LEVELS = 4
SE_RATIO = 4
INSTANCE_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="DeFacer")
class InstanceNorm(layers.Layer):
    """Per-sample, per-channel normalisation over the spatial axes, with a learned scale and
    shift: the same maths as ONNX InstanceNormalization, so it exports as one node."""

    def __init__(self, epsilon: float = INSTANCE_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        axes = tuple(range(1, len(x.shape) - 1))
        mean = ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
        return (x - mean) * ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _conv(filters, kernel, name, activation=None, use_bias=True):
    return layers.Conv3D(filters, kernel, padding="same", activation=activation, use_bias=use_bias, name=name)


def squeeze_excitation(x, filters: int, name: str):
    """Channel reweighting from the global average (Hu et al. 2018), as 1x1x1 convs."""
    s = layers.GlobalAveragePooling3D(keepdims=True, name=f"{name}_pool")(x)
    s = _conv(max(filters // SE_RATIO, 2), 1, f"{name}_reduce", activation="relu")(s)
    s = _conv(filters, 1, f"{name}_expand", activation="sigmoid")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def conv_block(x, filters: int, name: str):
    shortcut = x if x.shape[-1] == filters else _conv(filters, 1, f"{name}_proj")(x)
    y = _conv(filters, 3, f"{name}_conv1")(x)
    y = InstanceNorm(name=f"{name}_norm1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, f"{name}_conv2")(y)
    y = squeeze_excitation(y, filters, f"{name}_se")
    y = layers.Add(name=f"{name}_residual")([y, shortcut])
    y = InstanceNorm(name=f"{name}_norm2")(y)
    return layers.ReLU(name=f"{name}_relu2")(y)


def attention_gate(skip, gate, inter_filters: int, name: str):
    """skip * sigmoid(psi(relu(theta(skip) + phi(gate)))): the coarser level says where to look."""
    theta = _conv(inter_filters, 1, f"{name}_theta", use_bias=False)(skip)
    phi = _conv(inter_filters, 1, f"{name}_phi")(gate)
    f = layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    psi = _conv(1, 1, f"{name}_psi", activation="sigmoid")(f)
    return layers.Multiply(name=f"{name}_apply")([skip, psi])


def level_filters(base_filters: int = BASE_FILTERS, levels: int = LEVELS) -> list[int]:
    return [base_filters * 2 ** level for level in range(levels)]


def build_model(grid_shape=(96, 96, 96), base_filters: int = BASE_FILTERS, levels: int = LEVELS) -> keras.Model:
    """The U-Net for a (D, H, W, 1) input; outputs (D, H, W, len(CLASS_NAMES)) probabilities."""
    filters = level_filters(base_filters, levels)
    inputs = keras.Input(shape=tuple(grid_shape) + (1,), name="image")
    x = inputs
    skips = []
    for level, f in enumerate(filters):
        x = conv_block(x, f, f"enc{level}")
        if level < levels - 1:
            skips.append(x)
            x = layers.MaxPooling3D(2, name=f"enc{level}_down")(x)
    for level in reversed(range(levels - 1)):
        f = filters[level]
        up = layers.UpSampling3D(2, name=f"dec{level}_upsample")(x)
        up = _conv(f, 1, f"dec{level}_up")(up)
        gated = attention_gate(skips[level], up, max(f // 2, 4), f"att{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([gated, up])
        x = conv_block(x, f, f"dec{level}")
    logits = _conv(len(CLASS_NAMES), 1, "head_logits")(x)
    outputs = layers.Softmax(axis=-1, name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="face_unet")
