"""Writes reference.safetensors with the reference implementation (pip package `safetensors`).

The Swift tests read it back and check that our writer produces the same bytes for the same tensors.
Values are small integers/halves so they are exact in every dtype. Run: python3 make_fixtures.py
"""
import numpy as np
from safetensors.numpy import save_file

tensors = {
    "a.f32": (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5),
    "b.f16": (np.arange(4, dtype=np.float16) * 0.5),
    "c.i64": np.array([1, -2, 3], dtype=np.int64),
    "d.u8": np.array([[1, 2], [3, 4]], dtype=np.uint8),
    "e.f64": np.array(3.25, dtype=np.float64),
    "f.empty": np.zeros((0, 4), dtype=np.float32),
    "g.u64": np.array([7], dtype=np.uint64),
    "h.i32": np.array([-9, 9], dtype=np.int32),
    "i.bf16": np.array([0x3F80], dtype=np.uint16),  # stored as U16 here: numpy has no bfloat16
    "j.i8": np.array([-1, 2], dtype=np.int8),
}
save_file(tensors, "reference.safetensors", metadata={"format": "pt"})
