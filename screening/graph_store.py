"""Many crystal graphs packed into flat arrays, and their collation into model batches.

Featurising or training on tens of thousands of crystals needs the graphs in memory without a
Python object per crystal: one store holds every graph as concatenated atom and neighbour arrays
plus offsets, saves to a single ``.npz``, and slices batches out of it with no copying beyond the
batch itself. ``collate`` turns a list of graphs into the PyG batch the CGCNN consumes, with
neighbour indices offset per crystal exactly as the original ``collate_pool`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from screening.graphs import CrystalGraph


def collate(graphs: Sequence[CrystalGraph]) -> Batch:
    """Concatenate crystal graphs into one PyG batch (edges: neighbour j -> centre i)."""
    sizes = np.fromiter((g.num_atoms for g in graphs), dtype=np.int64, count=len(graphs))
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    z = np.concatenate([g.atomic_numbers for g in graphs])
    nbr_idx = np.concatenate([g.nbr_idx + off for g, off in zip(graphs, offsets)])
    nbr_dist = np.concatenate([g.nbr_dist for g in graphs])
    return _batch_from_arrays(z, nbr_idx, nbr_dist, sizes)


def _batch_from_arrays(z: np.ndarray, nbr_idx: np.ndarray, nbr_dist: np.ndarray, sizes: np.ndarray) -> Batch:
    n, m = nbr_idx.shape
    centre = np.repeat(np.arange(n, dtype=np.int64), m)
    nbr = torch.from_numpy(np.ascontiguousarray(nbr_idx, dtype=np.int64))
    data = Batch(
        z=torch.from_numpy(np.ascontiguousarray(z, dtype=np.int64)),
        nbr_idx=nbr,  # (N, M): lets the model use the dense fixed-degree path
        edge_index=torch.stack([nbr.reshape(-1), torch.from_numpy(centre)]),
        edge_dist=torch.from_numpy(np.ascontiguousarray(nbr_dist, dtype=np.float64).reshape(-1)),
        batch=torch.from_numpy(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)),
        num_nodes=n,
    )
    data._num_graphs = len(sizes)
    return data


@dataclass
class GraphStore:
    """Graphs of many crystals in flat arrays; ``atom_offsets[k]:atom_offsets[k+1]`` is crystal k."""

    ids: np.ndarray  # (n_crystals,) str
    atomic_numbers: np.ndarray  # (n_atoms,) int16 / int64
    nbr_idx: np.ndarray  # (n_atoms, m) int32, local to each crystal
    nbr_dist: np.ndarray  # (n_atoms, m) float64
    atom_offsets: np.ndarray  # (n_crystals + 1,) int64

    @classmethod
    def from_graphs(cls, ids: Sequence[str], graphs: Sequence[CrystalGraph]) -> GraphStore:
        sizes = np.fromiter((g.num_atoms for g in graphs), dtype=np.int64, count=len(graphs))
        m = graphs[0].nbr_idx.shape[1] if graphs else 12
        return cls(
            ids=np.asarray(ids, dtype=str),
            atomic_numbers=np.concatenate([g.atomic_numbers for g in graphs]).astype(np.int16)
            if graphs
            else np.zeros(0, np.int16),
            nbr_idx=np.concatenate([g.nbr_idx for g in graphs]).astype(np.int32)
            if graphs
            else np.zeros((0, m), np.int32),
            nbr_dist=np.concatenate([g.nbr_dist for g in graphs]) if graphs else np.zeros((0, m)),
            atom_offsets=np.concatenate(([0], np.cumsum(sizes))),
        )

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def graph(self, k: int) -> CrystalGraph:
        a, b = self.atom_offsets[k], self.atom_offsets[k + 1]
        return CrystalGraph(
            atomic_numbers=self.atomic_numbers[a:b].astype(np.int64),
            nbr_idx=self.nbr_idx[a:b].astype(np.int64),
            nbr_dist=self.nbr_dist[a:b],
        )

    def atom_rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows of crystals ``indices``' atoms in the flat per-atom arrays, crystal by crystal
        in the order given: where a batch of them finds its atoms (and anything kept per atom in
        store order, such as a frozen network's atom features)."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, ends = self.atom_offsets[indices], self.atom_offsets[indices + 1]
        return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """Collate crystals ``indices`` (any order) into one batch, vectorised."""
        indices = np.asarray(indices, dtype=np.int64)
        sizes = self.atom_offsets[indices + 1] - self.atom_offsets[indices]
        atom_rows = self.atom_rows(indices)
        new_offsets = np.repeat(np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
        nbr_idx = self.nbr_idx[atom_rows].astype(np.int64) + new_offsets[:, None]
        return _batch_from_arrays(self.atomic_numbers[atom_rows], nbr_idx, self.nbr_dist[atom_rows], sizes)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            ids=self.ids,
            atomic_numbers=self.atomic_numbers,
            nbr_idx=self.nbr_idx,
            nbr_dist=self.nbr_dist,
            atom_offsets=self.atom_offsets,
        )

    @classmethod
    def load(cls, path: str | Path) -> GraphStore:
        with np.load(path, allow_pickle=False) as f:
            return cls(**{k: f[k] for k in ("ids", "atomic_numbers", "nbr_idx", "nbr_dist", "atom_offsets")})
