"""torch models and training loops of chapter C4 (re-exported by :mod:`companion.compression.sparse_coding`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from .._validation import check_array, check_float, check_int
from ..backend import to_numpy

__all__ = ["TopKSparseAutoencoder", "train_sparse_autoencoder", "train_embedding_encoder", "nearest_neighbor_accuracy"]


def _torch():
    import torch

    return torch


def _module_base():
    return _torch().nn.Module


class TopKSparseAutoencoder(_module_base()):
    """Top-k sparse autoencoder: ``z = topk_k(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = z W_dec + b_dec``.

    Exactly ``k`` latents (at most) are non-zero for every input, so the code's cost
    is fixed by ``k`` rather than tuned through an L1 weight.

    Parameters
    ----------
    d_in : int
        Input dimension ``d``.
    n_latents : int
        Dictionary size (latents), usually several times ``d``.
    k : int
        Active latents per input, ``1 <= k <= n_latents``.

    References
    ----------
    Makhzani and Frey, "k-Sparse Autoencoders", 2014; Wen et al., "Beyond Matryoshka:
    Revisiting Sparse Coding for Adaptive Representation", 2025.

    Examples
    --------
    >>> import torch
    >>> from companion.compression import TopKSparseAutoencoder
    >>> sae = TopKSparseAutoencoder(8, 32, k=3)
    >>> x_hat, z = sae(torch.randn(5, 8))
    >>> x_hat.shape, int((z != 0).sum(1).max()) <= 3
    (torch.Size([5, 8]), True)
    """

    def __init__(self, d_in: int, n_latents: int, k: int):
        super().__init__()
        torch = _torch()
        self.d_in = check_int(d_in, "d_in", minimum=1)
        self.n_latents = check_int(n_latents, "n_latents", minimum=1)
        self.k = check_int(k, "k", minimum=1, maximum=self.n_latents)
        self.encoder = torch.nn.Linear(self.d_in, self.n_latents)
        self.decoder = torch.nn.Linear(self.n_latents, self.d_in)
        with torch.no_grad():  # tied initialization, unit-norm atoms
            w = self.encoder.weight / self.encoder.weight.norm(dim=1, keepdim=True)
            self.encoder.weight.copy_(w)
            self.decoder.weight.copy_(w.T)
            self.decoder.bias.zero_()

    def codes(self, x):
        """Sparse codes (n, n_latents) with at most ``k`` non-zeros per row."""
        torch = _torch()
        pre = torch.relu(self.encoder(x - self.decoder.bias))  # (n, n_latents)
        values, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, values)

    def forward(self, x):
        z = self.codes(x)
        return self.decoder(z), z

    @property
    def dictionary(self):
        """Atoms as rows, (n_latents, d_in): ``x_hat = z @ dictionary + b_dec``."""
        return self.decoder.weight.T


def _as_float_tensor(x: Any, name: str):
    torch = _torch()
    check_array(x, name, ndim=2, dtype_kind="f")
    return torch.as_tensor(np.asarray(to_numpy(x), dtype=np.float32))


def train_sparse_autoencoder(x: Any, n_latents: int, k: int, *, epochs: int = 100, batch_size: int = 64,
                             lr: float = 1e-3, seed: int = 0, progress: bool = False, device: Any = None):
    """Fit a :class:`TopKSparseAutoencoder` to the rows of ``x`` by mean squared error (Adam).

    Parameters
    ----------
    x : array of shape (n, d)
        Training vectors (e.g. frozen embeddings).
    n_latents, k : int
        Dictionary size and active latents.
    epochs, batch_size : int
        Passes over the data and mini-batch size.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the initialization and the batch order.
    progress : bool
        Show a ``tqdm`` bar over epochs.
    device : torch.device or str, optional
        Where to train (default CPU); the model is returned on the CPU.

    Returns
    -------
    model : TopKSparseAutoencoder
        In eval mode, on the CPU.
    losses : numpy.ndarray of shape (epochs,)
        Mean training reconstruction error of each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import train_sparse_autoencoder
    >>> x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    >>> model, losses = train_sparse_autoencoder(x, 24, 3, epochs=5)
    >>> bool(losses[-1] < losses[0])
    True
    """
    torch = _torch()
    xt = _as_float_tensor(x, "x")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    torch.manual_seed(seed)
    model = TopKSparseAutoencoder(xt.shape[1], n_latents, k)
    dev = torch.device("cpu") if device is None else torch.device(device)
    model, xt = model.to(dev), xt.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = np.empty(epochs)
    for epoch in tqdm(range(epochs), disable=not progress, desc="sparse autoencoder"):
        order = torch.randperm(len(xt), generator=gen).to(dev)
        total = 0.0
        for start in range(0, len(xt), batch_size):
            batch = xt[order[start:start + batch_size]]
            x_hat, _ = model(batch)
            loss = ((x_hat - batch) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # keep atoms on the unit sphere
                model.decoder.weight /= model.decoder.weight.norm(dim=0, keepdim=True).clamp_min(1e-8)
            total += loss.item() * len(batch)
        losses[epoch] = total / len(xt)
    return model.cpu().eval(), losses


def train_embedding_encoder(x: Any, labels: Any, dim: int, *, prefixes: Sequence[int] | None = None,
                            hidden: int = 256, epochs: int = 60, batch_size: int = 64, lr: float = 1e-3,
                            seed: int = 0, progress: bool = False, device: Any = None):
    """Train an MLP embedding ``x -> R^dim`` with a classification loss; with ``prefixes``, Matryoshka-style.

    Plain training puts one linear classifier on the whole embedding. Matryoshka
    training puts one classifier on each prefix ``e[:m]`` for ``m`` in ``prefixes``
    and sums their cross-entropies, so that every prefix is a usable embedding on
    its own ("Matryoshka Representation Learning").

    Parameters
    ----------
    x : array of shape (n, d)
        Inputs.
    labels : integer array of shape (n,)
        Classes ``0 .. C-1``.
    dim : int
        Embedding dimension.
    prefixes : sequence of int, optional
        Nested prefix sizes, each in ``[1, dim]``; ``None`` for plain training.
    hidden, epochs, batch_size : int
        Hidden width, passes over the data, mini-batch size.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the initialization and the batch order.
    progress : bool
        Show a ``tqdm`` bar over epochs.
    device : torch.device or str, optional
        Where to train (default CPU); the encoder is returned on the CPU.

    Returns
    -------
    torch.nn.Module
        The encoder (eval mode, CPU); call it on a float32 tensor (n, d).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from companion.compression import train_embedding_encoder
    >>> x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    >>> enc = train_embedding_encoder(x, (x[:, 0] > 0).astype(int), 4, prefixes=[1, 2, 4], epochs=2)
    >>> enc(torch.as_tensor(x)).shape
    torch.Size([40, 4])
    """
    torch = _torch()
    xt = _as_float_tensor(x, "x")
    check_array(labels, "labels", ndim=1, dtype_kind="iu")
    yt = torch.as_tensor(np.asarray(to_numpy(labels), dtype=np.int64))
    if len(yt) != len(xt):
        raise ValueError(f"labels must have one entry per row of x ({len(xt)}); got {len(yt)}")
    dim = check_int(dim, "dim", minimum=1)
    sizes = [dim] if prefixes is None else [check_int(m, "prefix", minimum=1, maximum=dim) for m in prefixes]
    if not sizes:
        raise ValueError("prefixes must not be empty (use None for plain training)")
    n_classes = int(yt.max()) + 1
    torch.manual_seed(check_int(seed, "seed", minimum=0))
    gen = torch.Generator().manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim))
    heads = torch.nn.ModuleList(torch.nn.Linear(m, n_classes) for m in sizes)
    dev = torch.device("cpu") if device is None else torch.device(device)
    encoder, heads, xt, yt = encoder.to(dev), heads.to(dev), xt.to(dev), yt.to(dev)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(heads.parameters()), lr=lr)
    for _ in tqdm(range(check_int(epochs, "epochs", minimum=1)), disable=not progress, desc="encoder"):
        order = torch.randperm(len(xt), generator=gen).to(dev)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            emb = encoder(xt[idx])  # (batch, dim)
            loss = sum(torch.nn.functional.cross_entropy(head(emb[:, :m]), yt[idx]) for head, m in zip(heads, sizes))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return encoder.cpu().eval()


def nearest_neighbor_accuracy(database: Any, database_labels: Any, queries: Any, query_labels: Any) -> float:
    """Retrieval accuracy: fraction of queries whose cosine-nearest database vector has the query's label.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import nearest_neighbor_accuracy
    >>> db = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> nearest_neighbor_accuracy(db, np.array([0, 1]), np.array([[0.9, 0.2], [0.1, 0.5]]), np.array([0, 0]))
    0.5
    """
    check_array(database, "database", ndim=2, dtype_kind="f")
    check_array(queries, "queries", ndim=2, dtype_kind="f")
    db = np.asarray(to_numpy(database), dtype=np.float64)
    q = np.asarray(to_numpy(queries), dtype=np.float64)
    if db.shape[1] != q.shape[1]:
        raise ValueError(f"queries must have {db.shape[1]} columns like database; got shape {q.shape}")
    db_lab = np.asarray(to_numpy(database_labels))
    q_lab = np.asarray(to_numpy(query_labels))
    if db_lab.shape != (len(db),) or q_lab.shape != (len(q),):
        raise ValueError(f"labels must have one entry per row: database {len(db)}, queries {len(q)}; "
                         f"got shapes {db_lab.shape} and {q_lab.shape}")
    db = db / np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(q @ db.T, axis=1)
    return float(np.mean(db_lab[nearest] == q_lab))
