"""Writes copies of a fixture folder whose weights come in the other forms the Hub has, from its model.safetensors
(read here with numpy, no safetensors package): OUT/bin (pytorch_model.bin, torch.save zip format), OUT/bin-views
(every tensor a view into one shared storage at an offset, plus a second name for the first tensor: tied
weights), OUT/bin-half and OUT/st-half (the same float16 weights as
.bin and as safetensors), OUT/sharded (model.safetensors split in 3 shards +
model.safetensors.index.json), OUT/bin-sharded (pytorch_model.bin.index.json over 2 .bin shards), OUT/bin-legacy
(torch's pre-1.6 format, of the views), and the bad ones: OUT/bad-global (a pickle that would call os.system),
OUT/bad-strided (a transposed, non-contiguous tensor).
Usage: /usr/bin/python3 make_torch_bin.py FIXTURE_DIR OUT_DIR   (needs Debian's python3-torch and python3-numpy)"""
import collections
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

src, out = sys.argv[1], sys.argv[2]
DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    data = b[8 + n:]
    sd = collections.OrderedDict()
    for k in sorted(h):
        v = h[k]
        s, e = v["data_offsets"]
        a = np.frombuffer(data[s:e], dtype=DT[v["dtype"]]).reshape(v["shape"]).copy()
        sd[k] = torch.from_numpy(a)
    return sd


def write_safetensors(path, sd):
    header, blobs, off = {}, [], 0
    for k, t in sd.items():
        a = t.numpy()
        name = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}[a.dtype]
        b = a.tobytes()
        header[k] = {"dtype": name, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def folder(name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(src):
        if f not in ("model.safetensors", "golden.json", "pipeline_golden.json"):
            shutil.copy(os.path.join(src, f), d)
    return d


sd = read_safetensors(os.path.join(src, "model.safetensors"))
names = list(sd)

torch.save(sd, os.path.join(folder("bin"), "pytorch_model.bin"))

# one float32 storage holding every float tensor, each a view at its own offset; int tensors stay separate
flat = torch.cat([t.reshape(-1) for t in sd.values() if t.dtype == torch.float32])
views, off = collections.OrderedDict(), 0
for k, t in sd.items():
    if t.dtype == torch.float32:
        views[k] = flat[off:off + t.numel()].view(t.shape)
        off += t.numel()
    else:
        views[k] = t
views["extra.tied.copy"] = views[names[0]]
torch.save(views, os.path.join(folder("bin-views"), "pytorch_model.bin"))

half = collections.OrderedDict((k, t.half() if t.dtype == torch.float32 else t) for k, t in sd.items())
torch.save(half, os.path.join(folder("bin-half"), "pytorch_model.bin"))
write_safetensors(os.path.join(folder("st-half"), "model.safetensors"), half)

d = folder("sharded")
wm = {}
for i in range(3):
    part = collections.OrderedDict((k, sd[k]) for k in names[i::3])
    fn = "model-%05d-of-00003.safetensors" % (i + 1)
    write_safetensors(os.path.join(d, fn), part)
    wm.update({k: fn for k in part})
json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))

d = folder("bin-sharded")
wm = {}
for i in range(2):
    part = collections.OrderedDict((k, sd[k]) for k in names[i::2])
    fn = "pytorch_model-%05d-of-00002.bin" % (i + 1)
    torch.save(part, os.path.join(d, fn))
    wm.update({k: fn for k in part})
json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, open(os.path.join(d, "pytorch_model.bin.index.json"), "w"))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "PWNED"),))


bad = collections.OrderedDict(sd)
bad[names[0]] = Evil()
torch.save(bad, os.path.join(folder("bad-global"), "pytorch_model.bin"))
torch.save(views, os.path.join(folder("bin-legacy"), "pytorch_model.bin"), _use_new_zipfile_serialization=False)
strided = collections.OrderedDict(sd)
w = next(k for k in names if sd[k].dim() == 2 and sd[k].shape[0] == sd[k].shape[1])
strided[w] = sd[w].t().contiguous().t()  # same values, column-major storage
torch.save(strided, os.path.join(folder("bad-strided"), "pytorch_model.bin"))
