"""tristream: turn videos into RGB, TV-L1 flow and pose shards for action recognition.

Layers (see DESIGN.md): ``transforms`` and ``models`` hold the algorithms,
``shards`` the on-disk contract and the trainer-side reader, ``pipeline`` the
Apache Beam wiring and ``cli`` the ``tristream`` command. Importing this package
imports none of them, so a trainer can use ``tristream.shards`` alone.
"""

__version__ = "0.1.0"
