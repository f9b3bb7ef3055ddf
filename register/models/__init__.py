"""The point-flow network of stage 2: architecture, checkpoints, shipped weights, training.

* :mod:`register.models.pointpwc` - the network (:class:`~register.models.pointpwc.FlowNet`).
* :mod:`register.models.knn`, :mod:`register.models.sampling`, :mod:`register.models.layers` -
  its building blocks.
* :mod:`register.models.normalise` - how clouds in data units become model units and back.
* :mod:`register.models.checkpoint` - the checkpoint format and :class:`FlowModel`, a network
  with its normalisation, ready to predict in data units.
* :mod:`register.models.registry` - the models shipped in ``register/models/weights/`` and
  :func:`load_model` (a shipped name or a path).
* :mod:`register.app.train` - supervised training on synthetic pairs.
* :mod:`register.models.card` - the model card written next to every trained model.

This package reads no user data and never prints; the CLI drives it.
"""
