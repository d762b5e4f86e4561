"""A third-party evalsuite plugin, laid out as an installed package would be.

Nothing in evalsuite names it: its entry points (``evalsuite_toy-0.1.0.dist-info/entry_points.txt``) do, and
evalsuite imports a module only when a run asks for a name it does not know. Importing the module runs its
``register_*`` calls. ``tests/test_registry.py`` puts this folder on a subprocess's ``PYTHONPATH``.
"""
