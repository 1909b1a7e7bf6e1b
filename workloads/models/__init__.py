"""Models: configs and presets, the one Transformer (dense / L3 / DeepSpeed-MoE blocks from a per-layer
spec), parameter accounting (L3_SPEC §5) and iso-sparse matching. Import the submodules directly;
`config`, `accounting`, `isosparse` and `presets` do not import torch."""
