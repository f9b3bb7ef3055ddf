"""The computational floor: kernel sums and log-sum-exp reductions.

Used by ``register.ot`` (Sinkhorn) and by ``register.core.transforms`` (kernel fields)
alike, so that neither has to import the other. Pure tensor functions, no state.
"""

from register.kernels.dense import gaussian_kernel, kernel_product, softmin_dense, squared_distances
from register.kernels.select import choose_backend

__all__ = ["choose_backend", "gaussian_kernel", "kernel_product", "softmin_dense", "squared_distances"]
