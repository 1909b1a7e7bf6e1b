"""The MLP sublayer of a decoder block at decode (a few positions): `reference.py` is the spec, `cpu.py` the
fused CPU kernel that serving blocks run (`Block.serve`)."""
