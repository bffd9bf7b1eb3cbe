"""Writes reference.h5 in mla-convert's HDF5 layout with h5py (an independent writer).

F16 uses numpy float16 (HDF5's IEEE half as h5py defines it); BF16 is stored as uint16 bit patterns
with the dataset attribute dtype="bfloat16"; config_json and format are variable-length UTF-8 strings.
Run: pip install h5py numpy && python3 make_fixtures.py
"""
import json
import h5py
import numpy as np

config = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
          "intermediate_size": 16, "vocab_size": 10, "rms_norm_eps": 1e-05}
with h5py.File("reference.h5", "w") as f:
    f.attrs["format"] = "mla-convert-hdf5"
    f.attrs["format_version"] = "1"
    f.attrs["config_json"] = json.dumps(config)
    f["w.f32"] = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    f["w.f16"] = np.array([0.5, -1.0, 65504.0, 2.0 ** -24], dtype=np.float16)
    bf = f.create_dataset("w.bf16", data=np.array([0x3F80, 0xC000, 0x7F80], dtype=np.uint16))  # 1, -2, inf
    bf.attrs["dtype"] = "bfloat16"
    f["w.i32"] = np.array([[1, -2], [3, -4]], dtype=np.int32)
    f.create_dataset("w.deflated", data=np.linspace(0, 1, 64, dtype=np.float64).reshape(8, 8),
                     chunks=(2, 8), compression="gzip", shuffle=True)
    f.create_dataset("files/tokenizer.json", data=np.frombuffer(b'{"x": 1}', dtype=np.uint8))
