#!/usr/bin/env python3
"""Independent numpy reference of the EfficientNet-Lite0 forward pass (inference), for tests.

It shares no code with the Rust implementation: its own safetensors reader, its own convolutions (strided
views + tensordot), its own TF "SAME" padding and BatchNorm. Input and output are raw little-endian float32.

Usage: efficientnet_lite_numpy.py WEIGHTS.safetensors INPUT.f32 H W OUTPUT.f32
       (INPUT is one normalised image, 3 x H x W; OUTPUT receives the 1000 logits)
"""
import sys

import numpy as np

import safetensors_np

# Lite0 stages: repeats, kernel, stride, expand, c_in, c_out.
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def read_safetensors(path):
    return {k: v.astype(np.float64) for k, v in safetensors_np.load(path)[0].items()}


def same_pad(x, k, s):
    _, h, w = x.shape
    def amount(i):
        o = -(-i // s)
        t = max((o - 1) * s + k - i, 0)
        return t // 2, t - t // 2
    return np.pad(x, ((0, 0), amount(h), amount(w)))


def windows(x, k, s):
    """(C, Ho, Wo, k, k) view of k x k windows with stride s of an already padded (C, H, W) array."""
    c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    cs, hs, ws = x.strides
    return np.lib.stride_tricks.as_strided(x, (c, ho, wo, k, k), (cs, hs * s, ws * s, hs, ws))


def conv_full(x, wt, s):
    k = wt.shape[-1]
    win = windows(same_pad(x, k, s), k, s)  # C, Ho, Wo, k, k
    return np.einsum("chwij,ocij->ohw", win, wt, optimize=True)


def conv_depthwise(x, wt, s):
    k = wt.shape[-1]
    win = windows(same_pad(x, k, s), k, s)
    return np.einsum("chwij,cij->chw", win, wt[:, 0], optimize=True)


def conv1x1(x, wt):
    return np.tensordot(wt[:, :, 0, 0], x, axes=([1], [0]))


def batchnorm(x, p, name):
    g, b = p[name + ".weight"], p[name + ".bias"]
    m, v = p[name + ".running_mean"], p[name + ".running_var"]
    scale = g / np.sqrt(v + 1e-3)
    return x * scale[:, None, None] + (b - m * scale)[:, None, None]


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def forward(p, x):
    x = relu6(batchnorm(conv_full(x, p["_conv_stem.weight"], 2), p, "_bn0"))
    i = 0
    for repeats, k, stride, expand, c_in, c_out in STAGES:
        for r in range(repeats):
            pre = f"_blocks.{i}."
            s = stride if r == 0 else 1
            inp = x
            if expand != 1:
                x = relu6(batchnorm(conv1x1(x, p[pre + "_expand_conv.weight"]), p, pre + "_bn0"))
            x = relu6(batchnorm(conv_depthwise(x, p[pre + "_depthwise_conv.weight"], s), p, pre + "_bn1"))
            x = batchnorm(conv1x1(x, p[pre + "_project_conv.weight"]), p, pre + "_bn2")
            if s == 1 and inp.shape[0] == x.shape[0]:
                x = x + inp
            i += 1
    x = relu6(batchnorm(conv1x1(x, p["_conv_head.weight"]), p, "_bn1"))
    pooled = x.mean(axis=(1, 2))
    return p["_fc.weight"] @ pooled + p["_fc.bias"]


def main(argv):
    weights, inp, h, w, out = argv
    p = read_safetensors(weights)
    x = np.fromfile(inp, dtype="<f4").astype(np.float64).reshape(3, int(h), int(w))
    forward(p, x).astype("<f4").tofile(out)


if __name__ == "__main__":
    main(sys.argv[1:])
