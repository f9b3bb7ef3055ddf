"""The application around the library: what serves a person or a job.

The command line (:mod:`register.app.cli`), one registration run from files to an output folder
(:mod:`register.app.run`, :mod:`register.app.outputs`), batches (:mod:`register.app.batch`),
the HTML report and QA pictures (:mod:`register.app.report`, :mod:`register.app.viz`) and the
training of the flow networks (:mod:`register.app.train`, :mod:`register.app.finetune`).

The library (every other package of ``register``) never imports this package; ``tests/test_layers.py``
checks it with a scan of every import, module-level and in functions.
"""

# The distribution name (pip install register-ot); the import name and the command are register.
DISTRIBUTION = "register-ot"
