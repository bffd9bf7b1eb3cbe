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
}
save_file(tensors, "reference.safetensors", metadata={"format": "pt"})
