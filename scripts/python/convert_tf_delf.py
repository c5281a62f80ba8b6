#!/usr/bin/env python3
"""Converts a published DELF or DELG TensorFlow release to delf-rs weights (docs/models.md).

    .cache/venv/bin/python scripts/python/convert_tf_delf.py delf_gld_20190411 \
        --out delf-r50.safetensors --pca-out delf-r50-pca.safetensors
    .cache/venv/bin/python scripts/python/convert_tf_delf.py r50delg_gldv2clean_20200914 --out delg-r50.safetensors

SOURCE is a release folder (a SavedModel with `variables/`, directly or in `model/`; DELF's `pca/` beside it), a
SavedModel folder, or a checkpoint prefix. Only the variables are read, with TensorFlow's checkpoint reader: no graph
is run. Two families of names are understood:

- TF-slim `resnet_v1_{50,101}/...` with DELF's attention (`attention_block/attention/compute/conv{1,2}`): the DELF
  release `delf_gld_20190411`, written as `resnet50-delf` (layout `tf-slim`, BatchNorm epsilon 1e-5).
- Keras object paths of DELG's TF2 code (`.../backbone/l4a/conv2a/kernel`, `attention/...`, `autoencoder/...`,
  `backbone/embedding_layer`), written as `resnet50-delg` or `resnet101-delg` (layout `keras`, epsilon 1e-3);
  or the same network under its Keras *layer* names, as a TF1 graph built from that code names its variables
  (`.../res4a_branch2a/kernel`, `bn4a_branch1/gamma`, `attn_conv1`, `autoenc_conv1`, ...).

Kernels go from TF's `[kh, kw, in, out]` to `[out, in, kh, kw]`; every BatchNorm is rewritten for epsilon 1e-5 (the
difference is added to the moving variance) and a convolution bias before a BatchNorm is subtracted from its moving
mean, both exact, so the Rust network needs no per-family arithmetic. Variables that belong to training only
(classifiers, optimizer slots, step counters) are listed and skipped; a backbone variable that maps nowhere, or a
missing one, is an error that names it.
"""

import argparse
import os
import re
import sys

import numpy as np

import safetensors_np
from datum_io import read_datum

TARGET_EPS = 1e-5
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class ConversionError(Exception):
    pass


def checkpoint_prefix(source):
    """The checkpoint prefix inside a release folder, a SavedModel or a prefix given directly."""
    for cand in (
        os.path.join(source, "model", "variables", "variables"),
        os.path.join(source, "variables", "variables"),
        source,
    ):
        if os.path.exists(cand + ".index"):
            return cand
    raise ConversionError(f"{source}: no TensorFlow checkpoint (looked for model/variables/, variables/, a prefix)")


def read_variables(prefix):
    import tensorflow as tf  # imported here so that --help works without it

    reader = tf.train.load_checkpoint(prefix)
    out = {}
    for key in reader.get_variable_to_shape_map():
        name = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
        if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH") or name == "save_counter":
            continue
        out[name] = np.asarray(reader.get_tensor(key), dtype=np.float32)
    return out


def conv_weight(kernel):
    return np.transpose(kernel, (3, 2, 0, 1))


class Writer:
    """Collects converted tensors; remembers which source variables were used."""

    def __init__(self, variables, bn_eps):
        self.vars = variables
        self.used = set()
        self.out = {}
        self.bn_eps = bn_eps

    def take(self, name, required=True):
        if name not in self.vars:
            if required:
                raise ConversionError(f"the checkpoint has no variable {name}")
            return None
        self.used.add(name)
        return self.vars[name]

    def conv(self, src_kernel, dst, src_bias=None, bias=False):
        self.out[f"{dst}.weight"] = conv_weight(self.take(src_kernel))
        b = self.take(src_bias, required=False) if src_bias else None
        if bias:
            self.out[f"{dst}.bias"] = b if b is not None else np.zeros(self.out[f"{dst}.weight"].shape[0], np.float32)
        return b

    def bn(self, src, dst, conv_bias=None):
        """BatchNorm `src` (TF-slim and Keras both name its variables gamma, beta, moving_mean, moving_variance) as
        `dst`, for epsilon 1e-5, absorbing a preceding convolution's bias."""
        mean = self.take(f"{src}/moving_mean").copy()
        var = self.take(f"{src}/moving_variance") + (self.bn_eps - TARGET_EPS)
        gamma = self.take(f"{src}/gamma", required=False)
        beta = self.take(f"{src}/beta", required=False)
        if conv_bias is not None:
            mean = mean - conv_bias
        self.out[f"{dst}.weight"] = gamma if gamma is not None else np.ones_like(mean)
        self.out[f"{dst}.bias"] = beta if beta is not None else np.zeros_like(mean)
        self.out[f"{dst}.running_mean"] = mean
        self.out[f"{dst}.running_var"] = var.astype(np.float32)


def convert_slim(variables, bn_eps):
    """TF-slim resnet_v1 (DELF release)."""
    roots = {m.group(1): m.group(2) for k in variables if (m := re.match(r"^(.*?)(resnet_v1_(?:50|101))/conv1/weights$", k))}
    if len(roots) != 1:
        raise ConversionError(f"expected one resnet_v1 network, found {sorted(roots.values()) or 'none'}")
    prefix, net = next(iter(roots.items()))
    if net != "resnet_v1_50":
        raise ConversionError(f"{net}: DELF releases are ResNet50; a TF-slim {net} has no delf-rs architecture")
    root = prefix + net
    w = Writer(variables, bn_eps)
    w.conv(f"{root}/conv1/weights", "conv1")
    w.bn(f"{root}/conv1/BatchNorm", "bn1")
    units = {}
    for k in variables:
        m = re.match(rf"^{re.escape(root)}/block(\d)/unit_(\d+)/bottleneck_v1/", k)
        if m:
            b, u = int(m.group(1)), int(m.group(2))
            units[b] = max(units.get(b, 0), u)
    expected = [3, 4, 6]
    if [units.get(b, 0) for b in (1, 2, 3)] != expected:
        raise ConversionError(f"{root}: units per block {units}, expected {expected} in blocks 1-3")
    for b in (1, 2, 3):
        for u in range(1, units[b] + 1):
            src = f"{root}/block{b}/unit_{u}/bottleneck_v1"
            dst = f"layer{b}.{u - 1}"
            for c in (1, 2, 3):
                w.conv(f"{src}/conv{c}/weights", f"{dst}.conv{c}")
                w.bn(f"{src}/conv{c}/BatchNorm", f"{dst}.bn{c}")
            if f"{src}/shortcut/weights" in variables:
                w.conv(f"{src}/shortcut/weights", f"{dst}.downsample.0")
                w.bn(f"{src}/shortcut/BatchNorm", f"{dst}.downsample.1")
    att = f"{prefix}attention_block/attention/compute"
    if f"{att}/conv1/weights" in variables:
        w.conv(f"{att}/conv1/weights", "attention.conv1", bias=True)
        w.bn(f"{att}/conv1/BatchNorm", "attention.bn")
        w.conv(f"{att}/conv2/weights", "attention.conv2", src_bias=f"{att}/conv2/biases", bias=True)
    leftover_backbone = [k for k in variables if k.startswith(root + "/block") and k not in w.used]
    block4 = [k for k in leftover_backbone if k.startswith(root + "/block4")]
    unknown = [k for k in leftover_backbone if k not in block4]
    if unknown:
        raise ConversionError(f"backbone variables that map nowhere: {unknown[:5]}")
    return w, "resnet50-delf", "tf-slim"


def convert_keras(variables, bn_eps):
    """Keras object paths of DELG's TF2 code (`delf_model.Delf` / `delg_model.Delg`)."""
    roots = {m.group(1) for k in variables if (m := re.match(r"^(.*?)backbone/conv1/kernel$", k))}
    if len(roots) != 1:
        raise ConversionError(f"expected one Keras backbone, found {sorted(roots) or 'none'}")
    prefix = next(iter(roots))
    bb = prefix + "backbone"
    w = Writer(variables, bn_eps)
    bias = w.conv(f"{bb}/conv1/kernel", "conv1", src_bias=f"{bb}/conv1/bias")
    w.bn(f"{bb}/bn_conv1", "bn1", conv_bias=bias)
    blocks = {}
    for k in variables:
        m = re.match(rf"^{re.escape(bb)}/l([2-5])([a-z])/", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
    counts = [len(blocks.get(s, ())) for s in (2, 3, 4, 5)]
    depth = {(3, 4, 6): 50, (3, 4, 23): 101}.get(tuple(counts[:3]))
    if depth is None:
        raise ConversionError(f"units per stage {counts}: not ResNet50 or ResNet101")
    has_global = f"{bb}/embedding_layer/kernel" in variables
    stages = (2, 3, 4, 5) if has_global else (2, 3, 4)
    for s in stages:
        for i in range(counts[s - 2]):
            src = f"{bb}/l{s}{chr(ord('a') + i)}"
            dst = f"layer{s - 1}.{i}"
            for c, part in ((1, "2a"), (2, "2b"), (3, "2c")):
                b = w.conv(f"{src}/conv{part}/kernel", f"{dst}.conv{c}", src_bias=f"{src}/conv{part}/bias")
                w.bn(f"{src}/bn{part}", f"{dst}.bn{c}", conv_bias=b)
            if f"{src}/conv_shortcut/kernel" in variables:
                b = w.conv(f"{src}/conv_shortcut/kernel", f"{dst}.downsample.0", src_bias=f"{src}/conv_shortcut/bias")
                w.bn(f"{src}/bn_shortcut", f"{dst}.downsample.1", conv_bias=b)
    if has_global:
        w.out["whiten.weight"] = w.take(f"{bb}/embedding_layer/kernel").T.copy()
        w.out["whiten.bias"] = w.take(f"{bb}/embedding_layer/bias")
    att = prefix + "attention"
    if f"{att}/conv1/kernel" in variables:
        w.conv(f"{att}/conv1/kernel", "attention.conv1", src_bias=f"{att}/conv1/bias", bias=True)
        w.bn(f"{att}/bn_conv1", "attention.bn")
        w.conv(f"{att}/conv2/kernel", "attention.conv2", src_bias=f"{att}/conv2/bias", bias=True)
    ae = prefix + "autoencoder"
    if f"{ae}/conv1/kernel" in variables:
        w.conv(f"{ae}/conv1/kernel", "autoencoder.encoder", src_bias=f"{ae}/conv1/bias", bias=True)
        w.conv(f"{ae}/conv2/kernel", "attention.decoder", src_bias=f"{ae}/conv2/bias", bias=True)
    unknown = [k for k in variables if k.startswith(bb + "/") and k not in w.used]
    if not has_global:
        unknown = [k for k in unknown if not re.match(rf"^{re.escape(bb)}/l5", k)]
    if unknown:
        raise ConversionError(f"backbone variables that map nowhere: {unknown[:5]}")
    return w, f"resnet{depth}-delg", "keras"


HEAD_LAYERS = {
    "attn_conv1": "attention/conv1/",
    "attn_conv2": "attention/conv2/",
    "autoenc_conv1": "autoencoder/conv1/",
    "autoenc_conv2": "autoencoder/conv2/",
}


def keras_layer_names_to_paths(variables):
    """Keras *layer* names (a TF1 graph built from DELG's Keras code names variables by layer:
    `res4a_branch2a`, `bn4a_branch1`, `attn_conv1`, `autoenc_conv1`, ...) rewritten as the attribute paths
    `convert_keras` reads (`backbone/l4a/conv2a`, `backbone/l4a/bn_shortcut`, `attention/conv1`, ...).
    Returns None when the names are not of that form."""
    roots = {m.group(1) for k in variables if (m := re.match(r"^(.*?)res2a_branch2a/kernel$", k))}
    att = {m.group(1) for k in variables if (m := re.match(r"^(.*?)attn_conv1/kernel$", k))}
    if len(roots) != 1:
        return None
    bb = next(iter(roots))
    out = {}
    for k, v in variables.items():
        name = None
        if k.startswith(bb):
            rest = k[len(bb) :]
            m = re.match(r"^(res|bn)(\d)([a-z])_branch(2[abc]|1)/(.*)$", rest)
            if m:
                kind, stage, block, branch, var = m.groups()
                layer = {"res": {"1": "conv_shortcut"}, "bn": {"1": "bn_shortcut"}}[kind].get(branch)
                layer = layer or ("conv" if kind == "res" else "bn") + branch
                name = f"backbone/l{stage}{block}/{layer}/{var}"
            elif re.match(r"^(conv1|bn_conv1|embedding_layer)/", rest):
                name = "backbone/" + rest
        if name is None:
            m = re.match(r"^.*?(attn_conv1|attn_conv2|autoenc_conv1|autoenc_conv2)/(.*)$", k)
            if m:
                name = HEAD_LAYERS[m.group(1)] + m.group(2)
            elif any(a != bb and k.startswith(a + "bn_conv1/") for a in att):
                name = "attention/bn_conv1/" + k.rsplit("bn_conv1/", 1)[1]
        out[name or k] = v
    return out


def convert(source, out, pca_out=None, pca_dim=128, bn_eps=None, whiten=False, quiet=False):
    variables = read_variables(checkpoint_prefix(source))
    if any(re.search(r"(^|/)resnet_v1_(50|101)/conv1/weights$", k) for k in variables):
        w, arch, layout = convert_slim(variables, 1e-5 if bn_eps is None else bn_eps)
    elif (renamed := keras_layer_names_to_paths(variables)) is not None:
        w, arch, layout = convert_keras(renamed, 1e-3 if bn_eps is None else bn_eps)
        variables = renamed
    elif any(re.search(r"(^|/)backbone/conv1/kernel$", k) for k in variables):
        w, arch, layout = convert_keras(variables, 1e-3 if bn_eps is None else bn_eps)
    else:
        sample = sorted(variables)[:5]
        raise ConversionError(f"neither TF-slim resnet_v1 nor Keras DELG names (first variables: {sample})")
    if "attention.conv1.weight" not in w.out:
        raise ConversionError("the checkpoint has no attention head (DELF attention_block or DELG attention)")
    skipped = sorted(k for k in variables if k not in w.used)
    meta = {
        "format": "delf-rs/resnet-tf/1",
        "architecture": arch,
        "layout": layout,
        "source": os.path.basename(os.path.normpath(source)),
        "global": "true" if "whiten.weight" in w.out else "false",
    }
    safetensors_np.save(out, {k: np.asarray(v, np.float32) for k, v in w.out.items()}, meta)
    if not quiet:
        print(f"{out}: {arch} ({layout}), {len(w.out)} tensors from {len(w.used)} variables", file=sys.stderr)
        if skipped:
            print(f"skipped {len(skipped)} training-only variables, e.g. {skipped[:3]}", file=sys.stderr)
    if pca_out:
        pca_dir = os.path.join(source, "pca")
        mean = read_datum(os.path.join(pca_dir, "mean.datum")).reshape(-1)
        proj = read_datum(os.path.join(pca_dir, "pca_proj_mat.datum"))
        if proj.ndim != 2 or proj.shape[1] != mean.size or not 0 < pca_dim <= proj.shape[0]:
            raise ConversionError(f"PCA shapes: mean {mean.shape}, projection {proj.shape}, {pca_dim} dimensions asked")
        feature = "conv4.autoencoder" if "autoencoder.encoder.weight" in w.out else "conv4"
        # DELF's optional whitening divides by the square roots of pca_variances (`pca/pca_vars.datum`).
        vars_path = os.path.join(pca_dir, "pca_vars.datum")
        if whiten and not os.path.exists(vars_path):
            raise ConversionError(f"--pca-whiten needs {vars_path}")
        variances = read_datum(vars_path).reshape(-1)[:pca_dim] if whiten else np.ones(pca_dim, np.float32)
        safetensors_np.save(
            pca_out,
            {"mean": mean, "components": np.ascontiguousarray(proj[:pca_dim]), "eigenvalues": variances},
            {"format": "delf-pca/1", "whiten": "true" if whiten else "false", "source": f"{arch}:{feature}"},
        )
        if not quiet:
            print(f"{pca_out}: PCA {mean.size} -> {pca_dim}", file=sys.stderr)
    return arch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("--out", required=True, help="weights file to write (safetensors)")
    p.add_argument("--pca-out", help="also convert the release's pca/*.datum to a delf-rs PCA file")
    p.add_argument("--pca-dim", type=int, default=128, help="PCA dimensions kept (the DELF release config: 128)")
    p.add_argument("--pca-whiten", action="store_true", help="whiten with pca/pca_vars.datum (the release: no)")
    p.add_argument("--bn-epsilon", type=float, help="BatchNorm epsilon of the source (default 1e-5 slim, 1e-3 Keras)")
    a = p.parse_args()
    try:
        arch = convert(a.source, a.out, a.pca_out, a.pca_dim, a.bn_epsilon, a.pca_whiten)
    except (ConversionError, ValueError, OSError) as e:  # bad input: a clear line, exit 2, nothing written over
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(arch)


if __name__ == "__main__":
    main()
