"""The paper/study layer: the experiment registry, tables, figures, ``reproduce``, the demo and
notebook parameters. The top of the library: may import every lower layer (not ``cli``).
"""
