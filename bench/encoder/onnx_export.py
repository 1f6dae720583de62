#!/usr/bin/env python3
"""ONNX models of the benchmark's BERT for ONNX Runtime: the plain torch.nn model of torch_bench.py exported with
Debian's torch.onnx.export (fp32), and its dynamic-int8 variant as ONNX Runtime's quantize_dynamic builds it
(built here with Debian's python3-onnx, since the onnxruntime Python package is not in Debian): every MatMul
with a constant [K, N] weight becomes DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, 0) -> Cast ->
Mul(x_scale * w_scale); weights symmetric s8 per tensor, activations u8 per tensor (quantize_dynamic's defaults:
QInt8 weights, per_channel=False). ONNX Runtime fuses that pattern into its MatMulIntegerToFloat kernels at load.
usage: onnx_export.py MODEL_DIR OUT_DIR   (writes OUT_DIR/fp32.onnx and OUT_DIR/int8.onnx once)"""
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper, TensorProto

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import Bert, load_safetensors  # noqa: E402


def export_fp32(model_dir, path):
    cfg = json.load(open(model_dir + "/config.json"))
    m = Bert(cfg).eval()
    m.load(load_safetensors(model_dir + "/model.safetensors"))
    ids = torch.ones(2, 16, dtype=torch.int64)
    mask = torch.ones(2, 16, dtype=torch.int64)
    with torch.inference_mode():
        torch.onnx.export(m, (ids, mask), path, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                        "logits": {0: "b"}},
                          opset_version=14, do_constant_folding=True)


def quantize_dynamic(src, dst):
    model = onnx.load(src)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, n_q = [], 0
    for node in g.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        wf = numpy_helper.to_array(w)
        scale = float(np.abs(wf).max()) / 127.0 or 1.0
        wq = np.clip(np.rint(wf / scale), -127, 127).astype(np.int8)
        p = f"q{n_q}_"
        n_q += 1
        g.initializer.extend([numpy_helper.from_array(wq, p + "W"),
                              numpy_helper.from_array(np.array(0, dtype=np.int8), p + "Wzp"),
                              numpy_helper.from_array(np.array(scale, dtype=np.float32), p + "Ws")])
        x = node.input[0]
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [p + "xq", p + "xs", p + "xzp"]),
            helper.make_node("MatMulInteger", [p + "xq", p + "W", p + "xzp", p + "Wzp"], [p + "acc"]),
            helper.make_node("Cast", [p + "acc"], [p + "accf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "xs", p + "Ws"], [p + "s"]),
            helper.make_node("Mul", [p + "accf", p + "s"], [node.output[0]]),
        ]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    return n_q


def main():
    model_dir, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    fp32, int8 = out + "/fp32.onnx", out + "/int8.onnx"
    if not os.path.exists(fp32):
        export_fp32(model_dir, fp32)
    if not os.path.exists(int8):
        n = quantize_dynamic(fp32, int8)
        print(f"onnx_export: {n} MatMuls quantised into {int8}", file=sys.stderr)


if __name__ == "__main__":
    main()
