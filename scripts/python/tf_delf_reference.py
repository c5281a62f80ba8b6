#!/usr/bin/env python3
"""TensorFlow reference networks for the DELF/DELG converter's parity tests (crates/delf-model/tests/tf_parity.rs).

Builds one published architecture in TensorFlow with the release's variable names and seeded random weights, saves
it in the release's format, runs TensorFlow's own forward pass on a given input, and writes what it computed:

    tf_delf_reference.py --arch resnet50-delf --input input.safetensors --out DIR [--seed 1]

- `resnet50-delf`: TF-slim `resnet_v1_50` to `block3` (stride on each block's last unit, "SAME" max pool, BatchNorm
  epsilon 1e-5) and DELF's attention (`attention_block/attention/compute/conv{1,2}`), as `delf_v1.py` builds them,
  saved as a TF1 SavedModel (`DIR/model`) with a PCA in `DIR/pca/{mean,pca_proj_mat}.datum`, as
  `delf_gld_20190411` ships.
- `resnet50-delg`, `resnet101-delg`: the Keras layout of DELG's TF2 code (`resnet50.py`: stride on the first 1x1
  convolution, "SAME" stem convolution, `block3_strides`; BatchNorm epsilon 1e-3, convolution biases), its
  attention, autoencoder (128-d) and global branch (GeM p = 3, `embedding_layer`), under the object paths
  `export_local_and_global_model.py` saves (`_model/backbone/l4a/conv2a/kernel`, ...), saved with
  `tf.saved_model.save` (`DIR/model`), and the same variables under Keras layer names (`res4a_branch2a`, ...)
  in a TF1 checkpoint (`DIR/model-layer-names`). ResNet101 continues the stage-4 letters (`l4a` .. `l4w`).

The input is a `[1, 3, H, W]` normalised image (`image`, written by the Rust test). `DIR/reference.safetensors`
holds NCHW `conv4` (the conv4 / `block3` map local features come from), `features` (the backbone's output: conv4,
or the autoencoder's reduced map), `scores` (`[1, h, w]`, softplus), `descriptors` (`[h*w, D]`, row-major cells:
L2, PCA, L2 for DELF; L2 for DELG) and, for DELG, `global` (`[1, 2048]`, L2-normalised).
Nothing here is imported by the delf binary.
"""

import argparse
import os

import numpy as np

import safetensors_np
from datum_io import write_datum

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

UNITS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


class Weights:
    """Seeded random weights of plausible scale (He-normal kernels, BatchNorm statistics near identity)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def kernel(self, k, c_in, c_out):
        return (self.rng.standard_normal((k, k, c_in, c_out)) * np.sqrt(2.0 / (k * k * c_in))).astype(np.float32)

    def vec(self, n, lo, hi):
        return self.rng.uniform(lo, hi, n).astype(np.float32)

    def normal(self, n, std):
        return (self.rng.standard_normal(n) * std).astype(np.float32)

    def bn(self, c):
        return {
            "gamma": self.vec(c, 0.6, 1.0),
            "beta": self.normal(c, 0.1),
            "moving_mean": self.normal(c, 0.2),
            "moving_variance": self.vec(c, 1.0, 2.0),
        }


def nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------
# DELF: TF-slim resnet_v1_50 + attention, TF1 graph and SavedModel.


def delf_variables(w):
    v = {}
    root = "resnet_v1_50"

    def conv_bn(name, k, c_in, c_out):
        v[f"{name}/weights"] = w.kernel(k, c_in, c_out)
        for key, val in w.bn(c_out).items():
            v[f"{name}/BatchNorm/{key}"] = val

    conv_bn(f"{root}/conv1", 7, 3, 64)
    c_in = 64
    for b, (n, depth) in enumerate(zip(UNITS[50][:3], [64, 128, 256]), start=1):
        for u in range(1, n + 1):
            unit = f"{root}/block{b}/unit_{u}/bottleneck_v1"
            if c_in != depth * 4:
                conv_bn(f"{unit}/shortcut", 1, c_in, depth * 4)
            conv_bn(f"{unit}/conv1", 1, c_in, depth)
            conv_bn(f"{unit}/conv2", 3, depth, depth)
            conv_bn(f"{unit}/conv3", 1, depth, depth * 4)
            c_in = depth * 4
    att = "attention_block/attention/compute"
    conv_bn(f"{att}/conv1", 1, 1024, 512)
    v[f"{att}/conv2/weights"] = w.kernel(1, 512, 1)
    v[f"{att}/conv2/biases"] = w.normal(1, 0.5)
    # Training-only variables a release carries (the classifier); the converter must skip them.
    v["attention_block/logits/weights"] = w.kernel(1, 1024, 10)
    v["attention_block/logits/biases"] = w.normal(10, 0.1)
    return v


def delf_forward(v, x):
    eps = 1e-5

    def bn(t, name):
        return tf.nn.batch_normalization(
            t, v[f"{name}/moving_mean"], v[f"{name}/moving_variance"], v[f"{name}/beta"], v[f"{name}/gamma"], eps
        )

    def conv2d_same(t, kernel, stride):  # resnet_utils.conv2d_same
        if stride == 1:
            return tf.nn.conv2d(t, kernel, 1, "SAME")
        k = int(kernel.shape[0])
        beg = (k - 1) // 2
        t = tf.pad(t, [[0, 0], [beg, k - 1 - beg], [beg, k - 1 - beg], [0, 0]])
        return tf.nn.conv2d(t, kernel, stride, "VALID")

    root = "resnet_v1_50"
    net = tf.nn.relu(bn(conv2d_same(x, v[f"{root}/conv1/weights"], 2), f"{root}/conv1/BatchNorm"))
    net = tf.nn.max_pool2d(net, 3, 2, "SAME")
    for b, (n, depth) in enumerate(zip(UNITS[50][:3], [64, 128, 256]), start=1):
        for u in range(1, n + 1):
            stride = 2 if u == n else 1  # resnet_v1_block: the block's stride on its last unit
            unit = f"{root}/block{b}/unit_{u}/bottleneck_v1"
            if int(net.shape[-1]) == depth * 4:
                shortcut = tf.nn.max_pool2d(net, 1, stride, "SAME") if stride > 1 else net
            else:
                sc = tf.nn.conv2d(net, v[f"{unit}/shortcut/weights"], stride, "SAME")
                shortcut = bn(sc, f"{unit}/shortcut/BatchNorm")
            r = tf.nn.relu(bn(tf.nn.conv2d(net, v[f"{unit}/conv1/weights"], 1, "SAME"), f"{unit}/conv1/BatchNorm"))
            r = tf.nn.relu(bn(conv2d_same(r, v[f"{unit}/conv2/weights"], stride), f"{unit}/conv2/BatchNorm"))
            r = bn(tf.nn.conv2d(r, v[f"{unit}/conv3/weights"], 1, "SAME"), f"{unit}/conv3/BatchNorm")
            net = tf.nn.relu(shortcut + r)
    att = "attention_block/attention/compute"
    a = tf.nn.relu(bn(tf.nn.conv2d(net, v[f"{att}/conv1/weights"], 1, "SAME"), f"{att}/conv1/BatchNorm"))
    score = tf.nn.conv2d(a, v[f"{att}/conv2/weights"], 1, "SAME") + v[f"{att}/conv2/biases"]
    return net, tf.nn.softplus(score)


def build_delf(w, x, out):
    values = delf_variables(w)
    pca_mean = w.normal(1024, 0.02)
    q, _ = np.linalg.qr(w.rng.standard_normal((1024, 1024)))
    pca_proj = q.T.astype(np.float32)  # rows: orthonormal directions, as pca_proj_mat.datum
    graph = tf.Graph()
    with graph.as_default():
        variables = {n: tf.compat.v1.get_variable(n, shape=a.shape, dtype=tf.float32) for n, a in values.items()}
        image = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="input_image")
        feature_map, prob = delf_forward(variables, image)
        placeholders = {n: tf.compat.v1.placeholder(tf.float32, a.shape) for n, a in values.items()}
        assigns = [variables[n].assign(placeholders[n]) for n in values]
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(assigns, {placeholders[n]: a for n, a in values.items()})
            fmap, scores = sess.run([feature_map, prob], {image: x})
            builder = tf.compat.v1.saved_model.Builder(os.path.join(out, "model"))
            sig = tf.compat.v1.saved_model.predict_signature_def({"input_image": image}, {"attention": prob})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    os.makedirs(os.path.join(out, "pca"), exist_ok=True)
    write_datum(os.path.join(out, "pca", "mean.datum"), pca_mean)
    write_datum(os.path.join(out, "pca", "pca_proj_mat.datum"), pca_proj)
    # feature_extractor.DelfFeaturePostProcessing: L2, PCA (first 128 rows), L2.
    d = fmap.reshape(-1, 1024)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    d = (d - pca_mean) @ pca_proj[:128].T
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return {"conv4": nchw(fmap), "features": nchw(fmap), "scores": scores[..., 0], "descriptors": d}


# ---------------------------------------------------------------------------------------------------------------
# DELG: the Keras layout of DELG's TF2 code, saved with tf.saved_model.save.


class Layer(tf.Module):
    """A Keras layer's variables under Keras' attribute names."""

    def __init__(self, **arrays):
        super().__init__()
        for name, a in arrays.items():
            setattr(self, name, tf.Variable(a, name=name))


class Node(tf.Module):
    pass


def delg_model(w, depth):
    def conv(k, c_in, c_out):
        return Layer(kernel=w.kernel(k, c_in, c_out), bias=w.normal(c_out, 0.05))

    def bn(c):
        return Layer(**w.bn(c))

    model = Node()
    bb = model.backbone = Node()
    bb.conv1, bb.bn_conv1 = conv(7, 3, 64), bn(64)
    c_in = 64
    for s, (n, width) in enumerate(zip(UNITS[depth], [64, 128, 256, 512]), start=2):
        for i in range(n):
            unit = Node()
            unit.conv2a, unit.bn2a = conv(1, c_in, width), bn(width)
            unit.conv2b, unit.bn2b = conv(3, width, width), bn(width)
            unit.conv2c, unit.bn2c = conv(1, width, width * 4), bn(width * 4)
            if i == 0:
                unit.conv_shortcut, unit.bn_shortcut = conv(1, c_in, width * 4), bn(width * 4)
            setattr(bb, f"l{s}{chr(ord('a') + i)}", unit)
            c_in = width * 4
    bb.embedding_layer = Layer(kernel=w.kernel(1, 2048, 2048)[0, 0], bias=w.normal(2048, 0.05))
    att = model.attention = Node()
    att.conv1, att.bn_conv1 = conv(1, 1024, 512), bn(512)
    att.conv2 = Layer(kernel=w.kernel(1, 512, 1), bias=w.normal(1, 0.5))
    ae = model.autoencoder = Node()
    ae.conv1, ae.conv2 = conv(1, 1024, 128), conv(1, 128, 1024)
    # Training-only (delg_model.Delg's cosine classifier); the converter must skip it.
    model.cosine_weights = tf.Variable(w.normal(2048 * 4, 0.05).reshape(2048, 4), name="cosine_weights")
    return model


def delg_forward(model, x, depth):
    eps = 1e-3  # Keras BatchNormalization's default

    def bn(t, layer):
        return tf.nn.batch_normalization(t, layer.moving_mean, layer.moving_variance, layer.beta, layer.gamma, eps)

    def conv(t, layer, stride=1, padding="VALID"):
        return tf.nn.conv2d(t, layer.kernel, stride, padding) + layer.bias

    bb = model.backbone
    net = tf.nn.relu(bn(conv(x, bb.conv1, 2, "SAME"), bb.bn_conv1))
    net = tf.nn.max_pool2d(net, 3, 2, "VALID")
    block3 = None
    for s, n in enumerate(UNITS[depth], start=2):
        for i in range(n):
            unit = getattr(bb, f"l{s}{chr(ord('a') + i)}")
            stride = 2 if i == 0 and s in (3, 4) else 1  # conv_block strides; l5a (1, 1) with block3_strides
            r = tf.nn.relu(bn(conv(net, unit.conv2a, stride), unit.bn2a))
            r = tf.nn.relu(bn(conv(r, unit.conv2b, 1, "SAME"), unit.bn2b))
            r = bn(conv(r, unit.conv2c), unit.bn2c)
            shortcut = bn(conv(net, unit.conv_shortcut, stride), unit.bn_shortcut) if i == 0 else net
            net = tf.nn.relu(r + shortcut)
        if s == 4:
            net = tf.nn.max_pool2d(net, 1, 2, "VALID")  # block3_strides' subsampling layer
            block3 = net
    gem = tf.pow(tf.reduce_mean(tf.pow(tf.maximum(net, 1e-6), 3.0), axis=[1, 2]), 1.0 / 3.0)
    emb = tf.matmul(gem, bb.embedding_layer.kernel) + bb.embedding_layer.bias
    reduced = conv(block3, model.autoencoder.conv1, 1, "SAME")
    expanded = tf.nn.relu(conv(reduced, model.autoencoder.conv2, 1, "SAME"))
    a = tf.nn.relu(bn(conv(expanded, model.attention.conv1, 1, "SAME"), model.attention.bn_conv1))
    prob = tf.nn.softplus(conv(a, model.attention.conv2, 1, "SAME"))
    return block3, reduced, prob, tf.nn.l2_normalize(emb, axis=1)


def layer_name(path):
    """The Keras layer name of an attribute path of `delg_model` (`backbone/l4a/conv2a/kernel` ->
    `DELG/backbone/res4a_branch2a/kernel`), as a TF1 graph built from DELG's Keras code scopes its variables."""
    parts = path.split("/")
    if parts[0] == "backbone" and len(parts) == 4:
        unit, layer, var = parts[1:]
        stage, block = unit[1], unit[2]
        branch = {"conv2a": ("res", "2a"), "conv2b": ("res", "2b"), "conv2c": ("res", "2c"), "conv_shortcut": ("res", "1"),
                  "bn2a": ("bn", "2a"), "bn2b": ("bn", "2b"), "bn2c": ("bn", "2c"), "bn_shortcut": ("bn", "1")}[layer]
        return f"DELG/backbone/{branch[0]}{stage}{block}_branch{branch[1]}/{var}"
    renames = {"attention/conv1": "attention/attn_conv1", "attention/conv2": "attention/attn_conv2",
               "autoencoder/conv1": "autoencoder/autoenc_conv1", "autoencoder/conv2": "autoencoder/autoenc_conv2"}
    head = "/".join(parts[:2])
    return "DELG/" + (renames[head] + "/" + "/".join(parts[2:]) if head in renames else path)


def save_with_layer_names(module, out):
    """The same variables in a TF1 checkpoint under Keras layer names (`out/variables/variables`)."""
    values = {}
    stack = [("", module._model)]
    while stack:
        prefix, node = stack.pop()
        for attr, child in vars(node).items():
            if attr.startswith("_"):
                continue
            if isinstance(child, tf.Variable):
                values[layer_name(prefix + attr)] = child.numpy()
            elif isinstance(child, tf.Module):
                stack.append((prefix + attr + "/", child))
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(a, name=n) for n, a in values.items()]
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            os.makedirs(os.path.join(out, "variables"), exist_ok=True)
            tf.compat.v1.train.Saver(variables).save(sess, os.path.join(out, "variables", "variables"), write_meta_graph=False)


def build_delg(w, x, out, depth):
    module = tf.Module()
    module._model = delg_model(w, depth)
    block3, reduced, prob, emb = (t.numpy() for t in delg_forward(module._model, tf.constant(x), depth))
    tf.saved_model.save(module, os.path.join(out, "model"))
    save_with_layer_names(module, os.path.join(out, "model-layer-names"))
    d = reduced.reshape(-1, reduced.shape[-1])
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return {"conv4": nchw(block3), "features": nchw(reduced), "scores": prob[..., 0], "descriptors": d, "global": emb}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=["resnet50-delf", "resnet50-delg", "resnet101-delg"])
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    tensors, _ = safetensors_np.load(a.input)
    x = np.ascontiguousarray(np.transpose(tensors["image"], (0, 2, 3, 1)))
    os.makedirs(a.out, exist_ok=True)
    w = Weights(a.seed)
    if a.arch == "resnet50-delf":
        ref = build_delf(w, x, a.out)
    else:
        ref = build_delg(w, x, a.out, 50 if a.arch == "resnet50-delg" else 101)
    ref = {k: np.asarray(v, np.float32) for k, v in ref.items()}
    safetensors_np.save(os.path.join(a.out, "reference.safetensors"), ref, {"architecture": a.arch})


if __name__ == "__main__":
    main()
