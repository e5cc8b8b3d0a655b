"""Source of chapter P1 "Positions in attention", written as Python and turned into a notebook.

    python tools/chapters/p1_source.py   # writes book/positional/p1_positions_in_attention.ipynb

Cells are separated by ``# %% [markdown]`` / ``# %%`` markers (the "percent" format);
a ``# tags: a, b`` first line sets cell tags. Editing this file and regenerating keeps
the notebook diff-friendly; the notebook is what the book and Colab use.
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
# # Positions in attention
#
# Attention compares every query with every key and mixes the values by those
# similarities. Nothing in that computation knows *where* a token sits: shuffle
# the tokens and the outputs are shuffled the same way. Everything a transformer
# knows about order it learns from a **positional encoding**. This chapter builds
# the classic ones from scratch, checks the property each is designed to have,
# and trains the course's tiny transformer with each of them on two tasks that
# need position in different ways.
#
# The encodings are the baselines that the paper
# *Rethinking Addressing in Language Models via Contexualized Equivariant Positional Encoding*
# {cite}`zhu2025tape` starts from when it separates *content-based* addressing (find the
# key that looks like the query) from *position-based* addressing (find the key that
# sits at a given place).
#
# | encoding | where position enters | depends on | paper |
# |---|---|---|---|
# | sinusoidal | added to the token embedding | absolute position | {cite}`vaswani2017attention` |
# | learned absolute | added to the token embedding | absolute position | {cite}`vaswani2017attention` |
# | relative bias | added to the attention scores | offset (bucketed) | {cite}`shaw2018relative`, {cite}`raffel2020t5` |
# | RoPE | rotates queries and keys | offset, exactly | {cite}`su2024roformer` |
# | ALiBi | added to the attention scores | offset, linearly | {cite}`press2022alibi` |
# | none (causal) | only the causal mask | whatever the model infers | {cite}`kazemnejad2023nope` |

# %%
# tags: parameters
SMOKE = False          # True: a quick run for the test suite (weaker, labelled bounds)
SEED = 0               # the one seed every random draw of this chapter comes from
THREADS = None         # torch threads; None takes OMP_NUM_THREADS or torch's default

# %%
STEPS = 60 if SMOKE else 600           # training steps per (encoding, task)
SEQ_LEN = 24 if SMOKE else 48          # training sequence length
D_MODEL = 32 if SMOKE else 64          # width of the tiny transformer
N_LAYERS = 2
N_HEADS = 4
BATCH = 32 if SMOKE else 64
VOCAB = 16                             # content tokens of the synthetic tasks
OFFSET = 5                             # the lookback task copies the token OFFSET places back
ANCHOR = 3                             # the anchor task copies the token at position ANCHOR
EVAL_BATCH = 256 if SMOKE else 1024

# %%
import inspect
import os
import time

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

import companion
from companion import backend, claims, viz
from companion.positional import (
    RelativePositionBias,
    alibi_attention_scores,
    alibi_bias,
    alibi_slopes,
    relative_position_bucket,
    rope_apply,
    sinusoidal_table,
)

rng = np.random.default_rng(SEED)          # every random draw below comes from here
torch.manual_seed(int(rng.integers(2**31)))
if THREADS or os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(int(THREADS or os.environ["OMP_NUM_THREADS"]))
device = backend.torch_device()            # CUDA on a GPU runtime, else CPU
viz.enable_offline_renderer()
print(f"companion {companion.__version__}, backends {backend.available_backends()}, torch device {device}")

# %% [markdown]
# ## Attention cannot see order
#
# For queries $Q = XW_Q$, keys $K = XW_K$ and values $V = XW_V$ built from token
# vectors $X \in \mathbb{R}^{n \times d}$, attention returns
#
# $$\mathrm{Attn}(X) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d}}\right) V .$$
#
# If $P$ permutes the rows of $X$, every term permutes with it:
# $\mathrm{Attn}(PX) = P\,\mathrm{Attn}(X)$. The layer is *permutation equivariant*;
# a bag of words goes in and a bag of words comes out. We check this on random
# numbers before adding anything.

# %%
n, d = 6, 8
X = rng.standard_normal((n, d))
W_q, W_k, W_v = (rng.standard_normal((d, d)) for _ in range(3))

def attention(X):
    scores = (X @ W_q) @ (X @ W_k).T / np.sqrt(d)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ (X @ W_v)

perm = rng.permutation(n)
equivariance_gap = np.abs(attention(X[perm]) - attention(X)[perm]).max()
print(f"max |Attn(PX) - P Attn(X)| = {equivariance_gap:.2e}")

# %% [markdown]
# ## Absolute encodings: a vector per position
#
# The original transformer adds to the token at position $p$ a fixed vector whose
# coordinates are sines and cosines at geometrically spaced frequencies
# $\omega_i = 10000^{-2i/d}$:
#
# $$\mathrm{PE}(p)_{2i} = \sin(\omega_i p), \qquad \mathrm{PE}(p)_{2i+1} = \cos(\omega_i p).$$
#
# Fast coordinates tell neighbours apart, slow ones tell the beginning from the end.
# Each (sin, cos) pair is a point on a circle, so moving by an offset $k$ rotates
# every pair by $\omega_i k$, and the dot product of two rows depends only on their
# offset: $\mathrm{PE}(p)\cdot\mathrm{PE}(p+k) = \sum_i \cos(\omega_i k)$. A
# *learned* absolute encoding replaces the table by a trained matrix with one row
# per position; it has no such structure and no row for positions never trained.

# %%
table = sinusoidal_table(64, 32)                               # (positions, dim)
heat = pd.DataFrame(
    [(p, j, float(table[p, j])) for p in range(table.shape[0]) for j in range(table.shape[1])],
    columns=["position", "coordinate", "value"],
)
sims = table @ table.T                                          # (positions, positions)
offset_profile = pd.DataFrame({
    "offset": np.arange(48),
    "similarity": [float(sims[10, 10 + k]) for k in range(48)],
})
(viz.heatmap(heat, "coordinate", "position", "value", title="Sinusoidal table (64 positions x 32 dims)")
 | alt.Chart(offset_profile, title="PE(10) . PE(10 + offset)").mark_line(point=True).encode(
     x="offset:Q", y="similarity:Q"))

# %% [markdown]
# ## Relative encodings: a bias per offset
#
# Relative schemes leave the token vectors alone and instead change the attention
# score between positions $i$ and $j$ by a learned amount that depends on $i-j$
# {cite}`shaw2018relative`. T5 {cite}`raffel2020t5` shares one scalar per head and
# *bucket* of offsets: small offsets get a bucket each, larger ones share
# logarithmically wider buckets, and everything beyond a maximum distance falls in
# the last bucket. `companion.positional.relative_position_bucket` computes the
# buckets; `RelativePositionBias` is the torch module with one learned scalar per
# (bucket, head).

# %%
offsets = np.arange(-200, 201)
buckets = pd.DataFrame({
    "offset j - i": np.concatenate([offsets, offsets]),
    "bucket": np.concatenate([
        relative_position_bucket(offsets, bidirectional=True, num_buckets=32, max_distance=128),
        relative_position_bucket(offsets, bidirectional=False, num_buckets=32, max_distance=128),
    ]),
    "variant": ["bidirectional"] * len(offsets) + ["causal"] * len(offsets),
})
viz.line_chart(buckets, "offset j - i", "bucket", "variant",
               title="T5 buckets of the offset key minus query (32 buckets, max distance 128)")

# %% [markdown]
# ## RoPE: rotate queries and keys
#
# Rotary position embedding {cite}`su2024roformer` splits each query and key into
# $d/2$ pairs of coordinates and rotates pair $i$ of the vector at position $m$ by
# the angle $m\theta_i$, with $\theta_i = b^{-2i/d}$ and base $b = 10000$. Writing a
# pair as a complex number $z$, the rotation is $z \mapsto z\,e^{\mathrm{i} m\theta_i}$, so
#
# $$\langle R_m q, R_n k\rangle = \mathrm{Re}\sum_i q_i \bar k_i\, e^{\mathrm{i}(m-n)\theta_i},$$
#
# which depends on the positions only through the offset $m-n$. Unlike a relative
# bias, the offset enters *inside* the content comparison: the model can ask for
# "a key like this one, three tokens back".
#
# Two layouts of the pairs are in use. The RoFormer paper pairs adjacent
# coordinates $(2i, 2i+1)$ (`layout="interleaved"`); GPT-NeoX and Llama pair
# coordinate $i$ with $i + d/2$ (`layout="half"`, the "rotate half" code). They are
# the same rotation up to a fixed permutation of coordinates, but weights trained
# with one layout are wrong under the other. The NumPy reference that
# `rope_apply(..., backend="numpy")` runs is short:

# %%
from companion.positional import rope as _rope_module
print(inspect.getsource(_rope_module._rope_numpy))

# %% [markdown]
# The fast path is the numba kernel on CPU and the CuPy kernel on a GPU
# (`backend="auto"` picks one from where the input lives). We check that both
# agree with the reference and then measure the claim: for random queries and keys
# placed at many pairs of positions with the same offset, the scores must be equal
# up to floating-point rounding.

# %%
dim = 64
q = rng.standard_normal(dim).astype(np.float64)
k = rng.standard_normal(dim).astype(np.float64)
x_check = rng.standard_normal((2, 4, 33, dim)).astype(np.float32)
kernel_gap = max(
    float(np.abs(rope_apply(x_check, backend=name) - rope_apply(x_check, backend="numpy")).max())
    for name in backend.available_backends()
)
print(f"largest difference between backends and the NumPy reference: {kernel_gap:.2e}")

def rope_score(m, n, layout="half"):
    """<R_m q, R_n k> for the fixed random q, k."""
    qm = rope_apply(q[None, :], np.array([m]), layout=layout)[0]
    kn = rope_apply(k[None, :], np.array([n]), layout=layout)[0]
    return float(qm @ kn)

starts = rng.integers(0, 2000, size=16)            # 16 absolute start positions
rows = []
for offset in range(0, 40):
    for layout in ("half", "interleaved"):
        scores = [rope_score(s + offset, s, layout) for s in starts]
        rows.append({"offset": offset, "layout": layout, "score": scores[0], "spread": float(np.ptp(scores))})
rope_table = pd.DataFrame(rows)
relative_spread = float(rope_table["spread"].max() / np.abs(rope_table["score"]).max())
print(f"largest spread of scores at a fixed offset, relative to the largest score: {relative_spread:.2e}")
viz.line_chart(rope_table, "offset", "score", "layout",
               title="RoPE score of a fixed (q, k) pair: one value per offset, whatever the absolute positions")

# %% [markdown]
# RoPE also makes the *typical* score fall with distance: for a query equal to its
# key the score is $\sum_i |q_i|^2\cos((m-n)\theta_i)$, a sum of cosines at many
# frequencies that stays near its maximum only for small offsets. The base $b$
# sets the spread of frequencies. Move the slider (in a live notebook) to see how a
# larger base makes the decay slower; the static page keeps the chart for each base.

# %%
decay_rows = []
for base in (100.0, 1000.0, 10000.0, 100000.0):
    theta = base ** (-np.arange(0, dim, 2) / dim)
    for offset in range(0, 512, 4):
        decay_rows.append({"offset": offset, "base": base, "mean cosine": float(np.cos(offset * theta).mean())})
decay = pd.DataFrame(decay_rows)
viz.slider_chart(decay, "offset", "mean cosine", "base", title="RoPE: mean of cos(offset * theta_i) for one base")

# %% [markdown]
# ## ALiBi: a straight-line penalty on distance
#
# ALiBi {cite}`press2022alibi` adds nothing to the tokens and nothing learned. Head
# $h$ subtracts $s_h \cdot |i-j|$ from the score of query $i$ against key $j$, with
# slopes forming a geometric sequence: for 8 heads $s_h = 2^{-h}$, $h = 1..8$ (for
# other head counts, the paper interleaves two such sequences). Steep heads look
# locally, shallow heads look far. `alibi_attention_scores` adds the bias inside the
# score kernel without building the $(heads, n, n)$ bias tensor.

# %%
slopes = alibi_slopes(8)
bias = alibi_bias(8, 32, 32)                                      # (heads, q_len, k_len)
alibi_rows = pd.DataFrame(
    [(h, i, j, float(bias[h, i, j])) for h in (0, 3, 7) for i in range(32) for j in range(32) if j <= i],
    columns=["head", "query", "key", "bias"],
)
display(Markdown("slopes: " + ", ".join(f"1/{1/s:.0f}" for s in slopes)))
viz.heatmap(alibi_rows, "key", "query", "bias", facet="head", title="ALiBi bias (causal part) for heads 0, 3 and 7")

# %%
q_heads = rng.standard_normal((1, 8, 32, 16)).astype(np.float32)
k_heads = rng.standard_normal((1, 8, 32, 16)).astype(np.float32)
scores_fast = alibi_attention_scores(q_heads, k_heads, causal=True)            # numba kernel
scores_ref = alibi_attention_scores(q_heads, k_heads, causal=True, backend="numpy")
finite = np.isfinite(scores_ref)
print("kernel vs reference:", float(np.abs(scores_fast[finite] - scores_ref[finite]).max()),
      "| masked entries agree:", bool((np.isfinite(scores_fast) == finite).all()))

# The claim: along each head the bias is an exact straight line in the distance,
# with the head's slope. Fit a line per head and keep the worst residual and slope error.
distance = np.arange(32)
line_errors = []
for h in range(8):
    row = bias[h, 31, ::-1]                       # query 31 against keys 31, 30, ..., 0
    fitted_slope, intercept = np.polyfit(distance, row, 1)
    line_errors.append(max(abs(fitted_slope + slopes[h]), np.abs(row - (fitted_slope * distance + intercept)).max()))
alibi_linearity_error = float(max(line_errors))
print(f"worst deviation from a line of slope -s_h: {alibi_linearity_error:.2e}")

# %% [markdown]
# ## Experiment: which encoding can find what?
#
# Two synthetic tasks ask for position-based addressing of different kinds:
#
# - **lookback** (relative): at every position output the token that sat
#   `OFFSET` places earlier. The rule is the same at every position, so an
#   encoding that exposes offsets should learn it quickly.
# - **anchor** (absolute): at every position output the token at position
#   `ANCHOR`. The target sits at a fixed *absolute* place, a growing distance back.
#
# We train the course's tiny transformer (`companion.nn.TinyTransformer`, the same
# model later chapters use) with each encoding on each task, with the same seed,
# width and number of steps, and measure token accuracy on fresh sequences.

# %%
from companion.data import absolute_position_task, lookback_task, task_vocab_size
from companion.nn import TinyTransformer, TrainConfig, TransformerConfig, evaluate_accuracy, train

ENCODINGS = ["none", "sinusoidal", "learned", "relative", "rope", "alibi"]
TASKS = {
    "lookback": lambda r, b: lookback_task(r, b, SEQ_LEN, vocab_size=VOCAB, offset=OFFSET),
    "anchor": lambda r, b: absolute_position_task(r, b, SEQ_LEN, vocab_size=VOCAB, position=ANCHOR),
}
results, curves, models = [], [], {}
start = time.perf_counter()
for task_name, make_batch in TASKS.items():
    eval_inputs, eval_targets, eval_mask = make_batch(np.random.default_rng(rng.integers(2**31)), EVAL_BATCH)
    for encoding in ENCODINGS:
        config = TransformerConfig(vocab_size=task_vocab_size(VOCAB), d_model=D_MODEL, n_heads=N_HEADS,
                                   n_layers=N_LAYERS, max_len=128, positional=encoding)
        model = TinyTransformer(config, seed=int(rng.integers(2**31)))
        history = train(model, make_batch,
                        TrainConfig(steps=STEPS, lr=3e-3, batch_size=BATCH, seed=int(rng.integers(2**31))),
                        device=device, progress=False)
        acc = evaluate_accuracy(model, eval_inputs, eval_targets, eval_mask, device=device)
        results.append({"task": task_name, "encoding": encoding, "accuracy": acc["token_accuracy"]})
        curves += [{"task": task_name, "encoding": encoding, "step": s, "loss": l}
                   for s, l in zip(history.steps, history.losses) if s % 10 == 0]
        models[(task_name, encoding)] = model
print(f"trained {len(results)} models in {time.perf_counter() - start:.0f} s")
accuracy = pd.DataFrame(results).pivot(index="encoding", columns="task", values="accuracy").loc[ENCODINGS]
display(accuracy.style.format("{:.3f}"))

# %%
chance = 1.0 / VOCAB
bars = alt.Chart(pd.DataFrame(results), title=f"Token accuracy after {STEPS} steps (chance = {chance:.3f})").mark_bar().encode(
    x=alt.X("encoding:N", sort=ENCODINGS), y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
    color="encoding:N", column="task:N", tooltip=["task", "encoding", alt.Tooltip("accuracy:Q", format=".3f")])
bars

# %%
viz.line_chart(pd.DataFrame(curves).query("task == 'lookback'"), "step", "loss", "encoding",
               title="Training loss on the lookback task (click a legend entry)", log_y=True)

# %% [markdown]
# What to look for. Absolute encodings (sinusoidal, learned) and RoPE solve both
# tasks at this size. The T5 relative bias solves the lookback task but is slower
# on the anchor task: its buckets grow wider with distance, so "exactly position 3"
# is blurred for far-away queries. ALiBi is the instructive failure: its penalty
# grows with distance in every head, so a query far from the anchor can hardly
# attend to it, and even the lookback task is only partly learned in this budget.
# The model without any encoding must infer positions from the causal mask alone
# and stays far behind on both. (Calibration run, 600 steps: anchor / lookback
# accuracy 0.27 / 0.23 without encoding, 0.30 / 0.57 for ALiBi, 0.75 / 1.00 for
# the relative bias, 0.98 or more for sinusoidal, learned and RoPE.)
#
# Where does the RoPE model look? Averaging the last layer's attention over a
# batch shows a stripe at the offset it learned to read from.

# %%
model = models[("lookback", "rope")].eval()
inputs, _, _ = TASKS["lookback"](np.random.default_rng(rng.integers(2**31)), 64)
with torch.no_grad():
    _, attn = model(torch.as_tensor(inputs, device=device), return_attention=True)
mean_attn = attn[-1].mean(dim=(0, 1)).cpu().numpy()                 # (seq, seq)
attn_df = pd.DataFrame([(i, j, float(mean_attn[i, j])) for i in range(SEQ_LEN) for j in range(SEQ_LEN)],
                       columns=["query", "key", "weight"])
viz.heatmap(attn_df, "key", "query", "weight", title="RoPE model, lookback task: last-layer attention (mean over heads)")

# %% [markdown]
# ### Explore by hand
#
# The widget below shows the trained models' accuracy for one task at a time. (In
# the static book it shows its saved state; on Colab or Jupyter it is live.)

# %%
task_picker = widgets.ToggleButtons(options=list(TASKS), description="task")
table_out = widgets.HTML()

def _show(change=None):
    part = accuracy[task_picker.value]
    table_out.value = "<br>".join(f"<code>{enc:>10}</code> {'#' * int(40 * a)} {a:.2f}" for enc, a in part.items())

task_picker.observe(_show, names="value")
_show()
widgets.VBox([task_picker, table_out])

# %% [markdown]
# ## Claim checks
#
# The two properties the encodings are designed to have are exact, so their checks
# use tight numerical bounds. The experiment's check asks only what held on our
# calibration runs.

# %%
claims.check(
    "Without positional information, attention is permutation equivariant",
    measured=equivariance_gap, threshold=1e-9, comparison="<=",
    paper="Rethinking Addressing in Language Models via Contexualized Equivariant Positional Encoding",
    chapter="P1", smoke=SMOKE,
    note="max |Attn(PX) - P Attn(X)| in float64",
)

# %%
claims.check(
    "RoPE attention scores depend only on the relative offset (both layouts)",
    measured=relative_spread, threshold=1e-12, comparison="<=",
    paper="RoFormer: Enhanced Transformer with Rotary Position Embedding",
    chapter="P1", smoke=SMOKE,
    note="largest spread of <R_m q, R_n k> over 16 start positions at a fixed offset, relative to the largest score (float64)",
)

# %%
claims.check(
    "ALiBi's bias decays linearly with distance, with the head's slope",
    measured=alibi_linearity_error, threshold=1e-5, comparison="<=",
    paper="Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation",
    chapter="P1", smoke=SMOKE,
    note="worst slope error or residual of a straight-line fit per head, 8 heads, float32 bias",
)

# %%
rope_lookback = float(accuracy.loc["rope", "lookback"])
claims.check(
    "A RoPE transformer learns relative (fixed-offset) addressing",
    measured=rope_lookback, threshold=(1.5 * chance if SMOKE else 0.9), comparison=">=",
    paper="Rethinking Addressing in Language Models via Contexualized Equivariant Positional Encoding",
    chapter="P1", smoke=SMOKE,
    note=("smoke-mode sanity bound: above 1.5 x chance after 60 steps" if SMOKE
          else f"token accuracy on the lookback task after {STEPS} steps (calibration run: 1.000); chance is {chance:.3f}"),
)

# %% [markdown]
# ## Exercises
#
# 1. Shift every position by the same constant $c$ before applying RoPE to both
#    queries and keys. Predict what happens to the scores, then check it with
#    `rope_apply`.
# 2. Compute the ALiBi slopes for 12 heads by hand from the rule in the paper and
#    compare with `alibi_slopes(12)`.
# 3. The causal model without any positional encoding still does better than chance
#    on the anchor task. Where can position information come from in a causal model?
#
# ```{admonition} Solution to 1
# :class: dropdown
# Nothing changes: the scores depend only on the offset $m-n$, which a common
# shift leaves untouched. `rope_apply(x, positions + c)` gives different vectors
# but the same $q\cdot k$ for every pair, up to rounding.
# ```
#
# ```{admonition} Solution to 2
# :class: dropdown
# 12 is not a power of two. Take the slopes for 8 heads, $2^{-1}, \dots, 2^{-8}$,
# then add every other slope of the 16-head sequence $2^{-0.5}, 2^{-1.5}, \dots$
# until there are 12: $2^{-0.5}, 2^{-1.5}, 2^{-2.5}, 2^{-3.5}$.
# ```
#
# ```{admonition} Solution to 3
# :class: dropdown
# The causal mask itself: the query at position $t$ averages over exactly $t+1$
# keys, so quantities like the mean of a constant direction shrink as $1/(t+1)$ and
# reveal $t$. {cite}`kazemnejad2023nope` studies how far such implicit positions go.
# ```

# %%
# tags: hide-cell
# Solution to exercise 1, run: a common shift of all positions leaves the scores unchanged.
x = rng.standard_normal((10, 32))
pos = np.arange(10)
scores_0 = rope_apply(x, pos) @ rope_apply(x, pos).T
scores_c = rope_apply(x, pos + 1000) @ rope_apply(x, pos + 1000).T
print("max change of the scores:", float(np.abs(scores_0 - scores_c).max()))
print("slopes for 12 heads:", np.round(alibi_slopes(12), 4))

# %% [markdown]
# ## References
#
# The papers this chapter draws on are listed in the {doc}`../back/bibliography`:
# {cite}`vaswani2017attention`, {cite}`shaw2018relative`, {cite}`raffel2020t5`,
# {cite}`su2024roformer`, {cite}`press2022alibi`, {cite}`kazemnejad2023nope` and
# {cite}`zhu2025tape`.
'''


if __name__ == "__main__":
    write(SOURCE, "book/positional/p1_positions_in_attention.ipynb")
