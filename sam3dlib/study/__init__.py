"""The paper/study layer: the experiment registry, tables, figures, ``reproduce``, the demo and
notebook parameters. The top of the library: may import every lower layer (not ``cli``). One
experiment end to end (any dataset) is :mod:`sam3dlib.pipeline`, below this layer.

``registry`` (which config makes which table),
``report`` / ``report_figures`` (tables and figures next to the paper's numbers),
``notebook_params`` (the notebooks' parameters), ``inputs`` (data and checkpoint checks),
``phantom_data``, ``seed_runs`` (one experiment x seed), ``table_run`` / ``table_figures`` (what a
table notebook calls), ``run_folders`` / ``reproduce`` (``sam3d reproduce N``), ``demo``.
"""
