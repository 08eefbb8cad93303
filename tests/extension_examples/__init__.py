"""The worked examples of docs/extending.md, each a plug-in registered without editing the core.

- :mod:`.toy_source`: a data source (``[source] kind = "toy"``): a study generated in memory;
- :mod:`.thumbnail`: a third decoder target, ``thumb``, a 16 x 16 grey thumbnail of each image;
- ``tests/method_plugins.py``: a reconstruction method, ``z_plus_c_half``;
- ``tests/splittable_stage.py``: a stage that splits itself into tasks, ``squares``.

:mod:`.register` registers all four: a run config names it in ``plugins = ["extension_examples.register"]``
(the tests folder on ``PYTHONPATH``), and ``tests/test_extension_examples.py`` runs them with
``brain2image run``, in one process and on a local Ray.
"""
