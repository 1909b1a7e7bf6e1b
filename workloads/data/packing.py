"""Packing a token stream into fixed-length (input, target) windows for next-token training (GPT-style).
Details: docs/workloads.md#workloadsdatapacking."""

from collections.abc import Iterator

import numpy as np
import torch


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length training windows over a (memmapped) token stream."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int = 0, shuffle: bool = True) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
        self.n_windows = (int(tokens.shape[0]) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(
                f"a stream of {tokens.shape[0]} tokens holds no window of seq_len={seq_len} (+1 target)"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle

    def __len__(self) -> int:
        return self.n_windows

    def _windows(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        starts = indices.astype(np.int64) * self.seq_len  # (B,)
        rows = self.tokens[starts[:, None] + np.arange(self.seq_len + 1)]  # (B, T + 1)
        rows = torch.from_numpy(rows.astype(np.int64))
        return rows[:, :-1], rows[:, 1:]  # (B, T), (B, T)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window i in stream order: (input, target), each (T,) int64."""
        if not -self.n_windows <= i < self.n_windows:
            raise IndexError(f"window {i} out of range ({self.n_windows} windows)")
        x, y = self._windows(np.array([i % self.n_windows]))
        return x[0], y[0]

    def order(self, epoch: int = 0) -> np.ndarray:
        """The window indices of `epoch` in visiting order: a permutation fixed by (seed, epoch)."""
        if not self.shuffle:
            return np.arange(self.n_windows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def batches(
        self, batch_size: int, epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input, target) batches, each (B, T) int64, over one epoch. Rank r of `world_size` takes every
        world_size-th window from r on (the order cut to a multiple of world_size, so all ranks see the same
        number of batches and never share a window)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        order = self.order(epoch)
        mine = order[: len(order) - len(order) % world_size][rank::world_size]
        stop = len(mine) - len(mine) % batch_size if drop_last else len(mine)
        for start in range(0, stop, batch_size):
            yield self._windows(mine[start : start + batch_size])
