"""Source of chapter C5 "Modelling is compression: entropy coding", written as Python and turned into a notebook.

    python tools/chapters/c5_source.py   # writes book/compression/c5_entropy_coding.ipynb

Cells are separated by ``# %% [markdown]`` / ``# %%`` markers (the "percent" format);
a ``# tags: a, b`` first line sets cell tags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from percent import build, write  # noqa: E402,F401  (build is used by the guard test)

SOURCE = r'''
# %%
# tags: remove-cell
# Colab setup: install the course's companion package (does nothing outside Colab).
import sys
if "google.colab" in sys.modules:
    %pip install -q "git+https://github.com/remember-compress-generalize/course@main"

# %% [markdown]
# # Modelling is compression: entropy coding
#
# A probability model and a lossless compressor are the same object seen from two
# sides. If a model gives the message $x_1, \dots, x_n$ probability
# $\prod_i p(x_i \mid x_{<i})$, an entropy coder turns it into about
# $\sum_i -\log_2 p(x_i \mid x_{<i})$ bits, the model's log-loss, and back again
# without losing a bit. Conversely, a code of length $\ell(x)$ defines the model
# $p(x) \propto 2^{-\ell(x)}$. So "which model is better?" can be settled by counting
# bytes on disk, and a training loss measured in bits is a file size.
#
# This chapter builds the two halves and puts them together:
#
# | step | what it does | companion |
# |---|---|---|
# | entropy coder | rANS: integer arithmetic that spends $-\log_2 p$ bits per symbol | `rans_encode`, `rans_decode`, `quantize_probabilities` |
# | tractable models | exact probabilities of binarized digits: independent pixels, a Chow-Liu tree, a mixture (a tiny probabilistic circuit) | `IndependentModel`, `ChowLiuTree`, `MixtureModel` |
# | model classes | prequential code length: bits to send the data while learning it | `prequential_code_length` |
#
# The models follow "Lossless Compression with Probabilistic Circuits" {cite}`liu2022pclossless`
# in miniature, and the last section follows the argument of "In-context learning and
# Occam's razor" {cite}`elmoznino2024occam`.

# %%
# tags: parameters
SMOKE = False          # True: a quick run for the test suite (weaker, labelled bounds)
SEED = 0               # the one seed every random draw of this chapter comes from
THREADS = None         # torch/BLAS threads; None takes OMP_NUM_THREADS or the default

# %%
N_TRAIN = 400 if SMOKE else 1200            # binarized digits the models are fitted on (the rest is held out)
RANDOM_TRIALS = 200 if SMOKE else 2000      # random messages for the exactness test
EM_ITERS = 15 if SMOKE else 50              # EM iterations of the mixtures
N_ORDERS = 1 if SMOKE else 5                # random transmission orders for the prequential code length
OVERHEAD_SYMBOLS = 20_000 if SMOKE else 200_000  # message length for the overhead-vs-precision curve

# %%
import inspect
import os
import time

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from scipy.stats import kendalltau
from sklearn.datasets import load_digits

import companion
from companion import backend, claims, viz
from companion.compression import (
    ChowLiuTree,
    IndependentModel,
    MixtureModel,
    cross_entropy_bits,
    prequential_code_length,
    quantize_probabilities,
    quantized_code_length_bits,
    rans_decode,
    rans_encode,
    rans_overhead_bound_bits,
)
from companion.compression import entropy_coding

rng = np.random.default_rng(SEED)          # every random draw below comes from here
if THREADS or os.environ.get("OMP_NUM_THREADS"):
    import threadpoolctl
    threadpoolctl.threadpool_limits(int(THREADS or os.environ["OMP_NUM_THREADS"]))
viz.enable_offline_renderer()
chapter_start = time.perf_counter()
print(f"companion {companion.__version__}, backends {backend.available_backends()}")

def seed():
    """A fresh integer seed drawn from the chapter's generator."""
    return int(rng.integers(2**31))

# %% [markdown]
# ## From probabilities to bits
#
# Shannon's source coding theorem says that no lossless code can spend fewer than
# $H(p) = \sum_x -p(x) \log_2 p(x)$ bits per symbol on average on a source $p$, and that
# codes exist that come arbitrarily close. If the data really come from $q$ but we code
# with a model $p$, the average cost is the **cross-entropy**
# $\mathbb E_q[-\log_2 p(x)] = H(q) + \mathrm{KL}(q \,\|\, p)$: every bit of model error is
# a bit of file size.
#
# Huffman codes give each symbol a whole number of bits, which wastes up to a bit per
# symbol, badly so when one symbol has probability 0.99 (the ideal cost is 0.015 bits).
# **Asymmetric numeral systems** {cite}`duda2013ans` (ANS) instead carry the whole message
# in one integer state $x$ and add fractional bits to it. Quantize the model's
# probabilities to integer frequencies $f_s$ that sum to $M = 2^{\text{precision}}$, with
# cumulative starts $c_s = \sum_{t<s} f_t$. To push symbol $s$:
#
# $$x \;\mapsto\; \Big\lfloor \frac{x}{f_s} \Big\rfloor M + (x \bmod f_s) + c_s .$$
#
# The new state is about $x \cdot M / f_s$, so it grows by $\log_2(M/f_s) \approx -\log_2 p(s)$
# bits. To pop: the slot $x \bmod M$ falls in exactly one interval $[c_s, c_s + f_s)$, which
# names the symbol, and $x \mapsto f_s \lfloor x / M \rfloor + (x \bmod M) - c_s$ restores the
# old state. Two details make it practical:
#
# * **Renormalization.** The state lives in $[2^{23}, 2^{31})$. Before a push that would
#   leave that range the encoder writes the low byte out and shifts; the decoder reads the
#   bytes back in the mirror-image places. All arithmetic fits in 64-bit integers.
# * **Last in, first out.** The decoder pops symbols in the reverse of the order they were
#   pushed, so the encoder walks the message *backwards*. Then the decoder runs forwards,
#   which is what an adaptive model needs: when it decodes $x_i$ it already knows $x_{<i}$
#   and can compute $p(\cdot \mid x_{<i})$.
#
# Quantization must never give a symbol that occurs a zero frequency (it could not be
# coded at all). `quantize_probabilities` gives every symbol $1 + \lfloor p_s (M-K) \rfloor$
# and hands the leftover slots to the largest fractional parts, so $f_s \ge p_s (M-K)$ and a
# symbol never costs more than $-\log_2 p_s + \log_2 \frac{M}{M-K}$ bits. Here is the
# reference coder, plain Python integers:

# %%
print(inspect.getsource(entropy_coding._encode_numpy))
print(inspect.getsource(entropy_coding._decode_numpy))

# %% [markdown]
# A short message under a skewed model. Nine of ten symbols are the likely one, so the
# whole message costs a few bits plus the 4 bytes of the final state:

# %%
p_small = np.array([0.9, 0.05, 0.05])
message = np.array([0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
code = rans_encode(message, p_small)
print("frequencies (M = 2**16):", quantize_probabilities(p_small).tolist())
print(f"ideal cost {cross_entropy_bits(message, p_small):.2f} bits; code {code.size} bytes = {8 * code.size} bits "
      f"(4 of them are the flushed state): {code.tolist()}")
print("decoded:", rans_decode(code, p_small, len(message)).tolist())

# %% [markdown]
# ## Exact, every time
#
# An entropy coder is only useful if decoding is *exact*. The test below draws random
# messages with random alphabets (1 to 64 symbols), random per-symbol tables (some nearly
# deterministic, some with symbols the model calls impossible), random precisions and
# lengths from 1 symbol up, and checks that both the reference and the numba coder give
# back every symbol and write the same bytes.

# %%
def random_case(r):
    k = int(r.integers(1, 65))
    n = int(r.integers(1, 600))
    per_symbol = bool(r.integers(2))
    conc = float(r.choice([0.02, 0.3, 3.0]))
    p = r.dirichlet(np.full(k, conc), size=n if per_symbol else 1)      # (n or 1, K)
    if r.random() < 0.2:                                                 # zero out some entries
        p = np.where(r.random(p.shape) < 0.3, 0.0, p) + 1e-300
        p /= p.sum(1, keepdims=True)
    x = r.integers(0, k, n) if r.random() < 0.3 else (r.random((n, 1)) > np.cumsum(p, 1)).sum(1).clip(0, k - 1)
    prec = int(r.integers(max(1, int(np.ceil(np.log2(k)))), 17))
    return x.astype(np.int64), (p if per_symbol else p[0]), prec

trial_rng = np.random.default_rng(seed())
exact = same_bytes = 0
t0 = time.perf_counter()
for _ in range(RANDOM_TRIALS):
    x, p, prec = random_case(trial_rng)
    c_fast = rans_encode(x, p, precision=prec, backend="numba")
    ok_fast = np.array_equal(rans_decode(c_fast, p, len(x), precision=prec, backend="numba"), x)
    c_ref = rans_encode(x, p, precision=prec, backend="numpy")
    ok_ref = np.array_equal(rans_decode(c_ref, p, len(x), precision=prec, backend="numpy"), x)
    exact += ok_fast and ok_ref
    same_bytes += np.array_equal(c_fast, c_ref)
print(f"{exact}/{RANDOM_TRIALS} random messages decoded exactly by both coders; "
      f"{same_bytes}/{RANDOM_TRIALS} identical codes ({time.perf_counter() - t0:.1f} s)")

# %% [markdown]
# The reference is for reading; the numba coder is for work. On one core:

# %%
p_speed = np.array([0.1, 0.2, 0.3, 0.4])
x_speed = rng.choice(4, p=p_speed, size=200_000)
timings = {}
for name in ("numba", "numpy"):
    n_sym = len(x_speed) if name == "numba" else 20_000
    t0 = time.perf_counter()
    c = rans_encode(x_speed[:n_sym], p_speed, backend=name)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    rans_decode(c, p_speed, n_sym, backend=name)
    t_dec = time.perf_counter() - t0
    timings[name] = {"encode (Msymbols/s)": n_sym / t_enc / 1e6, "decode (Msymbols/s)": n_sym / t_dec / 1e6}
display(pd.DataFrame(timings).T.round(2))

# %% [markdown]
# ## How close to the cross-entropy?
#
# Three things separate the bytes written from the model's cross-entropy
# $\sum_i -\log_2 p_i(x_i)$: quantizing probabilities to multiples of $1/M$, the integer
# rounding inside each push (at most $\log_2(1 + 2^{\text{precision}-23})$ bits a symbol,
# because after renormalization $x/f_s \ge 2^{23-\text{precision}}$), and the 32 bits of the
# flushed state. `rans_overhead_bound_bits` adds the three up; the chart measures the
# actual overhead per symbol on a skewed binary source as the precision varies. Low
# precision hurts most when a probability is small, because the rare symbol's
# frequency cannot go below $1/M$ of the total and the common one pays for it.

# %%
rows = []
for p1 in (0.3, 0.05, 0.005):
    p_src = np.array([1 - p1, p1])
    x_src = (rng.random(OVERHEAD_SYMBOLS) < p1).astype(np.int64)
    ce = cross_entropy_bits(x_src, p_src)
    for prec in range(4, 17):
        bits = 8 * rans_encode(x_src, p_src, precision=prec).size
        bound = ce + rans_overhead_bound_bits(len(x_src), 2, precision=prec)
        assert bits <= bound
        rows.append({"precision (bits)": prec, "overhead (bits per symbol)": (bits - ce) / len(x_src),
                     "p(rare symbol)": str(p1), "bound holds": bits <= bound})
overhead = pd.DataFrame(rows)
viz.line_chart(overhead, "precision (bits)", "overhead (bits per symbol)", "p(rare symbol)", log_y=False,
               title="rANS overhead over the cross-entropy vs probability precision")

# %% [markdown]
# ### Explore by hand
#
# Pick the probability of the rare symbol and the precision; the widget shows the integer
# frequencies the coder uses, the ideal cost of a 10,000-symbol message drawn from that
# source, and the bytes rANS actually wrote. (In the static book it shows its saved state;
# on Colab or Jupyter it is live.)

# %%
p_slider = widgets.FloatLogSlider(value=0.01, base=10, min=-4, max=-0.31, step=0.05, description="p(rare)")
prec_slider = widgets.IntSlider(value=8, min=2, max=16, description="precision")
explore_out = widgets.HTML()
explore_rng = np.random.default_rng(seed())
explore_u = explore_rng.random(10_000)

def _explore(change=None):
    p1 = p_slider.value
    p_src = np.array([1 - p1, p1])
    x_src = (explore_u < p1).astype(np.int64)
    f = quantize_probabilities(p_src, prec_slider.value)
    ce = cross_entropy_bits(x_src, p_src)
    bits = 8 * rans_encode(x_src, p_src, precision=prec_slider.value).size
    explore_out.value = (f"frequencies {f.tolist()} of {2 ** prec_slider.value} "
                         f"(the coder's p(rare) = {f[1] / 2 ** prec_slider.value:.5f})<br>"
                         f"{int(x_src.sum())} rare symbols in 10,000; ideal {ce:,.0f} bits, rANS wrote {bits:,} bits "
                         f"(+{100 * (bits - ce) / max(ce, 1):.1f}%)")

p_slider.observe(_explore, names="value")
prec_slider.observe(_explore, names="value")
_explore()
widgets.VBox([p_slider, prec_slider, explore_out])

# %% [markdown]
# ## Models with exact probabilities
#
# The coder needs, for every pixel, the exact probability of its value given what the
# decoder already knows. Models that deliver this are called *tractable*; we use three on
# scikit-learn's 8x8 handwritten digits, binarized (ink where the grey level is at least 8
# of 16), so each image is 64 bits raw.
#
# * **Independent pixels**: $p(x) = \prod_j \theta_j^{x_j} (1-\theta_j)^{1-x_j}$. It knows where
#   ink usually is, nothing about strokes.
# * **Chow-Liu tree** {cite}`chow1968trees`: $p(x) = p(x_r) \prod_{j \ne r} p(x_j \mid x_{\mathrm{pa}(j)})$,
#   each pixel conditioned on one other. Among all tree-shaped models the best (highest
#   likelihood) one takes for its edges a maximum spanning tree of the pairwise mutual
#   information $I(X_i; X_j)$, because the log-likelihood of a tree is a constant plus the
#   sum of $I$ over its edges. Decoding in tree order (root first) means every parent is
#   known before its child.
# * **Mixture of independent models**: $p(x) = \sum_c w_c \prod_j p_c(x_j)$, fitted by EM. As a
#   circuit it is one sum node over $C$ product nodes, the smallest *probabilistic circuit*.
#   What makes circuits useful for compression {cite}`liu2022pclossless` is that marginals
#   are cheap, so the conditionals $p(x_j \mid x_{<j}) = p(x_{\le j}) / p(x_{<j})$ the coder needs
#   are cheap too; for the mixture they come from the posterior over components, updated one
#   pixel at a time (the numba coder does exactly this while it decodes).

# %%
digits = load_digits()
images = (digits.data >= 8).astype(np.int64)                  # (1797, 64) in {0, 1}
perm = rng.permutation(len(images))
train, test = images[perm[:N_TRAIN]], images[perm[N_TRAIN:]]
print(f"train {train.shape}, held out {test.shape}; ink fraction {images.mean():.3f}")

model_classes = {
    "independent": lambda: IndependentModel(),
    "Chow-Liu tree": lambda: ChowLiuTree(),
    "mixture, 5 components": lambda: MixtureModel(n_components=5, n_iter=EM_ITERS, seed=1),
    "mixture, 20 components": lambda: MixtureModel(n_components=20, n_iter=EM_ITERS, seed=1),
    "mixture, 100 components": lambda: MixtureModel(n_components=100, n_iter=EM_ITERS, seed=1),
}

# %% [markdown]
# The Chow-Liu tree fitted on the training images, drawn on the pixel grid: each line links
# a pixel to its parent, darker for more mutual information. Most edges join neighbouring
# pixels (diagonal neighbours included), because strokes are continuous; the pixels that
# are (almost) never inked carry no information and hang off anywhere.

# %%
tree = ChowLiuTree().fit(train)
edge_rows = []
for v, par in enumerate(tree.parent_):
    if par >= 0:
        edge_rows.append({"row": v // 8, "col": v % 8, "row2": par // 8, "col2": par % 8,
                          "mutual information (bits)": float(tree.mutual_information_[v, par])})
edges = pd.DataFrame(edge_rows)
ink = pd.DataFrame({"row": np.arange(64) // 8, "col": np.arange(64) % 8, "ink": train.mean(0)})
tree_chart = alt.layer(
    alt.Chart(ink).mark_rect(opacity=0.35).encode(
        x=alt.X("col:O", title="column"), y=alt.Y("row:O", title="row"),
        color=alt.Color("ink:Q", scale=alt.Scale(scheme="greys"), title="p(ink)")),
    alt.Chart(edges).mark_rule(strokeWidth=3).encode(
        x=alt.X("col:O"), y=alt.Y("row:O"), x2="col2:O", y2="row2:O",
        color=alt.Color("mutual information (bits):Q", scale=alt.Scale(scheme="blues")),
        tooltip=["row", "col", "row2", "col2", alt.Tooltip("mutual information (bits):Q", format=".3f")]),
).properties(width=320, height=320, title="Chow-Liu tree of binarized digits (edges: pixel to parent)")
tree_chart

# %% [markdown]
# ## Bits on disk
#
# Each model is fitted on the training images and then **compresses the held-out images
# for real**: `compress` runs the numba rANS coder with the model's conditional tables and
# returns bytes; `decompress` rebuilds the images from those bytes and the model alone. We
# report bits per pixel from the byte count, next to the model's cross-entropy.

# %%
results = []
fitted = {}
for name, make in model_classes.items():
    t0 = time.perf_counter()
    model = make().fit(train)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    code = model.compress(test)
    t_code = time.perf_counter() - t0
    decoded = model.decompress(code, len(test))
    fitted[name] = model
    results.append({"model": name,
                    "bytes": code.size,
                    "bits per pixel (real code)": 8 * code.size / test.size,
                    "bits per pixel (cross-entropy)": model.bits_per_symbol(test),
                    "decoded exactly": bool(np.array_equal(decoded, test)),
                    "fit + code time (s)": round(t_fit + t_code, 2)})
results = pd.DataFrame(results).set_index("model")
display(results.round(4))
print(f"raw bits: {test.size} ({test.size // 8} bytes); zlib level 9 of the packed bits: "
      f"{len(__import__('zlib').compress(np.packbits(test).tobytes(), 9))} bytes")

# %%
alt.Chart(results.reset_index()).mark_bar().encode(
    x=alt.X("bits per pixel (real code):Q", title="bits per pixel (held-out digits, real rANS bytes)"),
    y=alt.Y("model:N", sort="-x", title=None),
    tooltip=["model", alt.Tooltip("bits per pixel (real code):Q", format=".4f"), "bytes"],
).properties(width=420, height=160, title="Better model, smaller file")

# %% [markdown]
# The real codes sit within a fraction of a percent of the cross-entropy, so the ranking
# by file size is the ranking by log-loss. The tree beats independent pixels by modelling
# which neighbour a stroke continues into; the larger mixtures do better still by knowing
# which *kind* of digit is being drawn (five components are too few for that), at the
# price of more parameters to learn.
#
# ## Which model *class*? The prequential code length
#
# The numbers above compare models fitted on 1,200 images. A different question is which
# model *class* explains the data best, counting the cost of learning. The
# **prequential** (predictive-sequential) code length answers it by an actual
# transmission: send the images one block at a time, each block coded by a model fitted
# on all the blocks sent before; the receiver refits the same model after each block, so
# no parameters are ever sent. The first block goes uncompressed (1 bit a pixel).
#
# $$L_{\text{preq}}(x_{1:n}) = \sum_{b} -\log_2 p_{\hat\theta(x_{<b})}(x_b).$$
#
# A flexible class pays in the early blocks, when it has little data and predicts badly;
# a rigid one pays in every block because it never predicts well. The total is the area
# under the learning curve, and it behaves like "training error plus model complexity".
# {cite}`elmoznino2024occam` argue that next-token training of a sequence model is
# exactly minimizing this quantity over the data in its context, which is why in-context
# learners prefer simple explanations. The claim we test is milder: the classes come out
# in the same order by prequential code length as by held-out loss.

# %%
block_ends = [e for e in (10, 20, 40, 80, 160, 320, 640, 1200) if e < N_TRAIN] + [N_TRAIN]
curves, totals = [], {name: [] for name in model_classes}
t0 = time.perf_counter()
for order_id in range(N_ORDERS):
    order = np.random.default_rng(seed()).permutation(N_TRAIN)
    for name, make in model_classes.items():
        bits = prequential_code_length(make, train[order], block_ends)
        totals[name].append(bits.sum() / train.size)
        starts = [0] + block_ends[:-1]
        for s, e, b in zip(starts, block_ends, bits):
            curves.append({"images seen": max(s, 1), "bits per pixel": b / ((e - s) * 64),
                           "model class": name, "order": order_id})
print(f"prequential code lengths: {N_ORDERS} orders x {len(model_classes)} classes in {time.perf_counter() - t0:.1f} s")
curves = pd.DataFrame(curves)
viz.line_chart(curves.groupby(["model class", "images seen"], as_index=False)["bits per pixel"].mean(),
               "images seen", "bits per pixel", "model class", log_x=True,
               title="Learning curves: bits per pixel of each block given the images before it")

# %%
ranking = pd.DataFrame({
    "prequential (bits per pixel)": {n: float(np.mean(v)) for n, v in totals.items()},
    "held-out (bits per pixel)": results["bits per pixel (cross-entropy)"],
})
ranking["rank by prequential"] = ranking["prequential (bits per pixel)"].rank().astype(int)
ranking["rank by held-out"] = ranking["held-out (bits per pixel)"].rank().astype(int)
tau = kendalltau(ranking["prequential (bits per pixel)"], ranking["held-out (bits per pixel)"]).statistic
display(ranking.sort_values("rank by held-out").round(4))
print(f"Kendall's tau between the two rankings: {tau:.2f} (1 = same order)")

# %% [markdown]
# The two orders agree at the ends and disagree in the middle. Independent pixels are
# worst by both measures and the 5-component mixture next to worst. But the held-out loss
# looks only at the *end* of each learning curve, and there the 100-component mixture
# wins; the prequential length is the area under the whole curve, and the 100-component
# mixture pays for its slow start (in our full run it came third, behind the 20-component
# mixture and the tree, which learn faster). This is the Occam effect the prequential
# view is built to show: a class is charged for the data it needs before it predicts
# well. When the curves cross, "which class is best" depends on how much data you have,
# and the two criteria answer different questions.
#
# The cell below makes the effect extreme on purpose: 300 components with almost no
# smoothing, a class that memorizes prototypes. Fitted on all training images its
# held-out loss is respectable; learning it from the first few dozen images is very
# costly, and the prequential code length says so.

# %%
make_memorizer = lambda: MixtureModel(n_components=300, n_iter=EM_ITERS, alpha=0.01, seed=1)
memorizer_heldout = make_memorizer().fit(train).bits_per_symbol(test)
memorizer_preq = prequential_code_length(make_memorizer, train[order], block_ends).sum() / train.size
both = ranking[["prequential (bits per pixel)", "held-out (bits per pixel)"]].copy()
both.loc["mixture, 300 components, alpha 0.01"] = [memorizer_preq, memorizer_heldout]
tau_with_memorizer = kendalltau(both.iloc[:, 0], both.iloc[:, 1]).statistic
display(both.round(4))
print(f"Kendall's tau with the memorizer added: {tau_with_memorizer:.2f}")

# %% [markdown]
# ## Lossy codes and what a model chooses to ignore
#
# Everything here is lossless. "Variational Lossy Autoencoder" {cite}`chen2017vlae` looks
# at the same accounting for a latent-variable model: a VAE's loss is the bits to send a
# latent code plus the bits to send the data given the code. When the decoder is a
# powerful autoregressive model it can describe local texture by itself, and the
# cheapest total code leaves the texture out of the latent, which then holds only global
# structure: a lossy summary chosen by the bit accounting. Restricting what the decoder
# can see (for example a small receptive field) decides which information goes into the
# latent. We discuss it only; the chapter's models have no latent code to send.

# %% [markdown]
# ## Claim checks
#
# The first two claims are asserted. The third does not fully reproduce at our scale: the
# prequential order and the held-out order agree only partly (Kendall's tau is printed
# above; 1 would mean the same order), for the reason explained in the previous section.
# It is recorded with its measured value and not asserted in the full run; the smoke run
# asserts only that the two orders are positively associated.

# %%
n_exact_models = int(results["decoded exactly"].sum())
exact_fraction = (exact + n_exact_models) / (RANDOM_TRIALS + len(results))
claims.check(
    "rANS decoding is exact: decode(encode(x)) == x",
    measured=exact_fraction, threshold=1.0, comparison=">=",
    paper="Lossless Compression with Probabilistic Circuits",
    chapter="C5", smoke=SMOKE,
    note=(f"fraction of exact round trips over {RANDOM_TRIALS} random messages (both coders) and the "
          f"{len(results)} model codes of the held-out digits; {same_bytes}/{RANDOM_TRIALS} identical codes "
          "from the reference and numba coders. Exactness is asserted in smoke mode too."),
)

# %%
bpp = results["bits per pixel (real code)"]
gain = bpp["independent"] - bpp["Chow-Liu tree"]
claims.check(
    "A structured model (Chow-Liu tree) compresses binarized digits to fewer bits per pixel than the independent-pixel model, in real encoded bytes",
    measured=gain, threshold=(0.02 if SMOKE else 0.07), comparison=">=",
    paper="Lossless Compression with Probabilistic Circuits",
    chapter="C5", smoke=SMOKE,
    note=("smoke-mode sanity bound: 0.02 bits per pixel with 400 training images" if SMOKE else
          f"held-out bits per pixel from the rANS byte count: independent {bpp['independent']:.4f}, "
          f"Chow-Liu {bpp['Chow-Liu tree']:.4f}, best mixture {bpp.min():.4f}. "
          "Calibration (full mode, SEED 0): gain 0.0928 bits per pixel (0.5693 vs 0.4765)."),
)

# %%
claims.check(
    "Prequential code length ranks model classes as the held-out loss does",
    measured=tau, threshold=(0.0 if SMOKE else 1.0), comparison=(">" if SMOKE else ">="),
    paper="In-context learning and Occam's razor",
    chapter="C5", smoke=SMOKE,
    note=(f"smoke-mode sanity bound: the two orders are positively associated (tau > 0) with {N_TRAIN} "
          f"training images and {N_ORDERS} order" if SMOKE else
          f"Kendall's tau between the orders of the five standard classes (independent, Chow-Liu, mixtures of "
          f"5/20/100), prequential over {N_ORDERS} random orders of {N_TRAIN} images vs held-out loss; "
          f"with the deliberately memorizing 300-component mixture added tau = {tau_with_memorizer:.2f}. "
          "Does NOT fully reproduce at this scale (tau = 1 would be the same order): calibration run "
          "(full mode, SEED 0, 5 orders) gave tau = 0.60; the prequential length puts the 100-component "
          "mixture, best on held-out loss, behind the faster-learning 20-component mixture and Chow-Liu tree."),
    asserts=SMOKE,
)

# %%
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. Code the held-out digits with the independent model but in a *random* pixel order
#    instead of row by row. Does the file size change? Would it for the mixture?
# 2. The coder keeps its state in $[2^{23}, 2^{31})$ and writes bytes. What goes wrong if the
#    precision were 24 bits? Read the renormalization condition in `_encode_numpy`.
# 3. Use the Chow-Liu tree as a *generator*: sample the root from its table, then each
#    child given its parent, in `tree.order_`. Do the samples look like digits?
#
# ```{admonition} Solution to 1
# :class: dropdown
# No change for the independent model: its cost is a sum of per-pixel terms that do not
# depend on each other, so the order is irrelevant (up to the few bytes of flush and
# rounding). For the mixture the *total* is also unchanged in exact arithmetic, because
# $p(x) = \prod_j p(x_{\pi(j)} \mid x_{\pi(<j)})$ holds for any order $\pi$: the chain rule does not
# care. Only the individual conditionals differ.
# ```
#
# ```{admonition} Solution to 2
# :class: dropdown
# The encoder's threshold is $x_{\max} = (2^{23-\text{precision}} \cdot 2^8) f$. With precision 24
# the shift $2^{23} \gg 24$ is 0, so $x_{\max} = 0$ and the loop would write bytes forever (here
# precision is capped at 16). Generally the state must keep at least 8 more bits than the
# precision, or a push could overflow the 31-bit range after renormalization.
# ```
#
# ```{admonition} Solution to 3
# :class: dropdown
# They look like blotchy strokes: local continuity is right (neighbours agree) but there is
# no global shape, because a tree only links pairs of pixels. The cell below draws 8 samples.
# ```

# %%
# tags: hide-cell
# Solution to exercise 3, run: ancestral sampling from the Chow-Liu tree.
sample_rng = np.random.default_rng(seed())
samples = np.zeros((8, 64), dtype=np.int64)
for v in tree.order_:
    par = tree.parent_[v]
    ctx = samples[:, par] if par >= 0 else np.zeros(8, dtype=np.int64)
    samples[:, v] = sample_rng.random(8) < tree.conditional_[v, ctx, 1]
for row in range(8):
    print("   ".join("".join("#" if samples[s, row * 8 + c] else "." for c in range(8)) for s in range(8)))

# %% [markdown]
# ## References
#
# The papers this chapter draws on are listed in the {doc}`../back/bibliography`:
# {cite}`liu2022pclossless`, {cite}`elmoznino2024occam`, {cite}`chen2017vlae`,
# {cite}`duda2013ans` and {cite}`chow1968trees`.
'''


if __name__ == "__main__":
    write(SOURCE, "book/compression/c5_entropy_coding.ipynb")
