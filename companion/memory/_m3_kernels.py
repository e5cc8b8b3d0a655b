"""Code selection of the competitive-module sparse memory (chapter M3); private to :mod:`companion.memory.sdm`.

One call encodes a batch of binary inputs, one input after the other (storage
must be sequential: each input's learning changes the next input's code). For
every input ``x`` with ``a`` active bits:

1. match of every coding unit ``i``: with ``u_i = sum_j x_j F[j, i]`` the active
   bits it is connected to and ``n_i`` all its connections,
   ``U_i = max(u_i - mu * (n_i - u_i), 0) / a``: the fraction of the input the
   unit has seen, minus a penalty ``mu`` for each connection the input does not
   use (a unit that has absorbed many different inputs should not match everything);
2. familiarity ``G`` = mean over the ``Q`` modules of the largest ``U`` in the module;
3. inverse temperature ``beta = beta_max * clip((G - g_floor) / (g_ceiling - g_floor), 0, 1)``;
4. in each module one winner, drawn with probability proportional to
   ``exp(beta * (U_i - max U))`` using the pre-drawn uniform ``uniforms[t, q]``
   (``beta = 0``: uniform, a fresh random code; large ``beta``: the best match).
   Deterministic mode (recall) takes the best match, ties split by the same uniform;
5. if learning: ``F[j, winner] = 1`` for every active input bit ``j``.

All three versions (NumPy reference, numba kernel, CuPy RawKernel) draw the same
winners from the same uniforms.
"""

from __future__ import annotations

import numba
import numpy as np

_TIE = 1e-9  # units whose U is within this of the module maximum count as tied


def _beta(g: float, beta_max: float, g_floor: float, g_ceiling: float) -> float:
    level = min(max((g - g_floor) / (g_ceiling - g_floor), 0.0), 1.0)
    return beta_max * level


# ------------------------------------------------------------ NumPy reference
def encode_numpy(inputs, weights, n_modules, module_size, uniforms, params, learn, deterministic):
    """Reference: the five steps above, vectorised over the units of one input at a time.

    ``inputs`` (n, n_in) uint8 0/1, ``weights`` (n_in, Q*K) uint8 0/1 (updated in place
    when ``learn``), ``uniforms`` (n, Q) in [0, 1), ``params`` = (beta_max, g_floor,
    g_ceiling, mu). Returns codes (n, Q) int64 (winner inside each module) and familiarity (n,).
    """
    beta_max, g_floor, g_ceiling, mu = params
    n = inputs.shape[0]
    codes = np.zeros((n, n_modules), dtype=np.int64)
    familiarity = np.zeros(n)
    offsets = np.arange(n_modules) * module_size
    for t in range(n):
        active = np.flatnonzero(inputs[t])
        fan_in = weights.sum(axis=0, dtype=np.int64)  # (Q*K,) connections of each unit
        hits = weights[active].sum(axis=0, dtype=np.int64)  # (Q*K,) active bits each unit sees
        U = (np.maximum(hits - mu * (fan_in - hits), 0.0) * (1.0 / max(len(active), 1))).reshape(n_modules, module_size)
        top = U.max(axis=1)  # (Q,)
        g = float(top.mean())
        familiarity[t] = g
        beta = _beta(g, beta_max, g_floor, g_ceiling)
        for q in range(n_modules):
            if deterministic:
                tied = np.flatnonzero(U[q] >= top[q] - _TIE)
                codes[t, q] = tied[min(int(uniforms[t, q] * len(tied)), len(tied) - 1)]
            else:
                cdf = np.cumsum(np.exp(beta * (U[q] - top[q])))  # (K,)
                codes[t, q] = min(int(np.searchsorted(cdf, uniforms[t, q] * cdf[-1], side="right")), module_size - 1)
        if learn and len(active):
            weights[np.ix_(active, offsets + codes[t])] = 1
    return codes, familiarity


# --------------------------------------------------------------- numba kernel
@numba.njit(cache=True)
def _encode_kernel(inputs, weights, n_modules, module_size, uniforms, beta_max, g_floor, g_ceiling, mu,
                   learn, deterministic, codes, familiarity):  # pragma: no cover - jitted
    n, n_in = inputs.shape
    n_units = n_modules * module_size
    active = np.empty(n_in, dtype=np.int64)
    hits = np.empty(n_units, dtype=np.int64)
    U = np.empty(n_units)
    top = np.empty(n_modules)
    fan_in = np.zeros(n_units, dtype=np.int64)  # connections per unit, kept up to date while learning
    for j in range(n_in):
        for i in range(n_units):
            fan_in[i] += weights[j, i]
    for t in range(n):
        a = 0
        for j in range(n_in):
            if inputs[t, j]:
                active[a] = j
                a += 1
        hits[:] = 0
        for s in range(a):
            row = active[s]
            for i in range(n_units):
                hits[i] += weights[row, i]
        inv_a = 1.0 / max(a, 1)
        g = 0.0
        for q in range(n_modules):
            best = -1.0
            for k in range(module_size):
                i = q * module_size + k
                v = max(hits[i] - mu * (fan_in[i] - hits[i]), 0.0) * inv_a
                U[i] = v
                if v > best:
                    best = v
            top[q] = best
            g += best
        g /= n_modules
        familiarity[t] = g
        beta = beta_max * min(max((g - g_floor) / (g_ceiling - g_floor), 0.0), 1.0)
        for q in range(n_modules):
            base = q * module_size
            chosen = module_size - 1
            if deterministic:
                n_tied = 0
                for k in range(module_size):
                    if U[base + k] >= top[q] - 1e-9:
                        n_tied += 1
                pick = min(int(uniforms[t, q] * n_tied), n_tied - 1)
                for k in range(module_size):
                    if U[base + k] >= top[q] - 1e-9:
                        if pick == 0:
                            chosen = k
                            break
                        pick -= 1
            else:
                total = 0.0
                for k in range(module_size):
                    total += np.exp(beta * (U[base + k] - top[q]))
                target = uniforms[t, q] * total
                running = 0.0
                for k in range(module_size):
                    running += np.exp(beta * (U[base + k] - top[q]))
                    if running > target:
                        chosen = k
                        break
            codes[t, q] = chosen
        if learn:
            for s in range(a):
                for q in range(n_modules):
                    unit = q * module_size + codes[t, q]
                    if weights[active[s], unit] == 0:
                        weights[active[s], unit] = 1
                        fan_in[unit] += 1


def encode_numba(inputs, weights, n_modules, module_size, uniforms, params, learn, deterministic):
    """numba kernel: one pass per input, no temporaries beyond a few vectors."""
    beta_max, g_floor, g_ceiling, mu = params
    n = inputs.shape[0]
    codes = np.zeros((n, n_modules), dtype=np.int64)
    familiarity = np.zeros(n)
    _encode_kernel(np.ascontiguousarray(inputs, dtype=np.uint8), weights, n_modules, module_size,
                   np.ascontiguousarray(uniforms, dtype=np.float64), float(beta_max), float(g_floor),
                   float(g_ceiling), float(mu), bool(learn), bool(deterministic), codes, familiarity)
    return codes, familiarity


# ----------------------------------------------------------------- CuPy kernel
_ENCODE_CUDA = r"""
__device__ double match(const unsigned char* x, const unsigned char* weights, const int n_in, const int n_units,
                        const int unit, const int a, const double mu)
{
    // U = max(hits - mu * (connections - hits), 0) / active bits
    int hits = 0, fan_in = 0;
    for (int j = 0; j < n_in; ++j) {
        const int w = weights[(long long)j * n_units + unit];
        fan_in += w;
        if (x[j]) hits += w;
    }
    return fmax(hits - mu * (fan_in - hits), 0.0) * (1.0 / (a > 0 ? a : 1));
}

extern "C" __global__ void csa_encode(
    const unsigned char* __restrict__ inputs, unsigned char* __restrict__ weights,
    const double* __restrict__ uniforms, const int n_in, const int n_modules, const int module_size,
    const int item0, const double beta_max, const double g_floor, const double g_ceiling, const double mu,
    const int learn, const int deterministic, long long* __restrict__ codes, double* __restrict__ familiarity)
{
    // one block per input, one thread per module; blockDim.x >= n_modules
    extern __shared__ double shared[];            // best match per module, then G
    const int t = item0 + blockIdx.x;
    const int q = threadIdx.x;
    const unsigned char* x = inputs + (long long)t * n_in;
    const int n_units = n_modules * module_size;
    int a = 0;
    for (int j = 0; j < n_in; ++j) a += x[j] != 0;
    double best = -1.0;
    if (q < n_modules) {
        for (int k = 0; k < module_size; ++k) {
            const double u = match(x, weights, n_in, n_units, q * module_size + k, a, mu);
            if (u > best) best = u;
        }
        shared[q] = best;
    }
    __syncthreads();
    if (q == 0) {
        double g = 0.0;
        for (int m = 0; m < n_modules; ++m) g += shared[m];
        shared[n_modules] = g / n_modules;
        familiarity[t] = g / n_modules;
    }
    __syncthreads();
    if (q < n_modules) {
        const double g = shared[n_modules];
        const double beta = beta_max * fmin(fmax((g - g_floor) / (g_ceiling - g_floor), 0.0), 1.0);
        const double r = uniforms[(long long)t * n_modules + q];
        int chosen = module_size - 1;
        if (deterministic) {
            int n_tied = 0;
            for (int k = 0; k < module_size; ++k)
                if (match(x, weights, n_in, n_units, q * module_size + k, a, mu) >= best - 1e-9) ++n_tied;
            int pick = min((int)(r * n_tied), n_tied - 1);
            for (int k = 0; k < module_size; ++k) {
                if (match(x, weights, n_in, n_units, q * module_size + k, a, mu) >= best - 1e-9) {
                    if (pick == 0) { chosen = k; break; }
                    --pick;
                }
            }
        } else {
            double total = 0.0;
            for (int k = 0; k < module_size; ++k)
                total += exp(beta * (match(x, weights, n_in, n_units, q * module_size + k, a, mu) - best));
            const double target = r * total;
            double running = 0.0;
            for (int k = 0; k < module_size; ++k) {
                running += exp(beta * (match(x, weights, n_in, n_units, q * module_size + k, a, mu) - best));
                if (running > target) { chosen = k; break; }
            }
        }
        codes[(long long)t * n_modules + q] = chosen;
    }
    // learning happens after every module has read the old weights
    __syncthreads();
    if (learn && q < n_modules) {
        const int chosen = (int)codes[(long long)t * n_modules + q];
        for (int j = 0; j < n_in; ++j) if (x[j]) weights[(long long)j * n_units + q * module_size + chosen] = 1;
    }
}
"""

_CUDA_CACHE: dict = {}


def _cuda_kernel():
    import cupy

    if "encode" not in _CUDA_CACHE:
        _CUDA_CACHE["encode"] = cupy.RawKernel(_ENCODE_CUDA, "csa_encode")
    return _CUDA_CACHE["encode"]


def encode_cupy(inputs, weights, n_modules, module_size, uniforms, params, learn, deterministic):
    """CuPy RawKernel: one block per input and one thread per module.

    Storage (``learn``) launches one block per input in order, so each input sees
    the weights its predecessors wrote; recall launches all inputs at once.
    """
    import cupy

    beta_max, g_floor, g_ceiling, mu = params
    x = cupy.ascontiguousarray(inputs, dtype=cupy.uint8)
    r = cupy.ascontiguousarray(uniforms, dtype=cupy.float64)
    n, n_in = x.shape
    codes = cupy.zeros((n, n_modules), dtype=cupy.int64)
    familiarity = cupy.zeros(n, dtype=cupy.float64)
    threads = max(32, ((n_modules + 31) // 32) * 32)
    kernel = _cuda_kernel()
    shared = (n_modules + 1) * 8
    tail = (np.float64(beta_max), np.float64(g_floor), np.float64(g_ceiling), np.float64(mu),
            np.int32(bool(learn)), np.int32(bool(deterministic)), codes, familiarity)
    head = (x, weights, r, np.int32(n_in), np.int32(n_modules), np.int32(module_size))
    if learn:
        for t in range(n):
            kernel((1,), (threads,), head + (np.int32(t),) + tail, shared_mem=shared)
    elif n:
        kernel((n,), (threads,), head + (np.int32(0),) + tail, shared_mem=shared)
    return codes, familiarity


ENCODE = {"numpy": encode_numpy, "numba": encode_numba, "cupy": encode_cupy}
