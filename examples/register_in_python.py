"""Register two clouds from Python and reuse the transform (runs on the bundled sample)."""

from pathlib import Path

import numpy as np

from register import load_transform, read_points, register
from register.metrics import tre

root = Path(__file__).resolve().parents[1] / "data_samples"
source = read_points(root / "lung_source.ply")
target = read_points(root / "lung_target.ply")

result = register(source, target, "lung", seed=0)
result.transform.save("transform.npz")
print("stage seconds:", result.metrics["stage_seconds"])

src_lm = np.loadtxt(root / "lung_source_landmarks.csv", delimiter=",", skiprows=1)
tgt_lm = np.loadtxt(root / "lung_target_landmarks.csv", delimiter=",", skiprows=1)
print("TRE before (mm):", tre(src_lm, tgt_lm))
print("TRE after  (mm):", tre(load_transform("transform.npz").apply(src_lm), tgt_lm))
