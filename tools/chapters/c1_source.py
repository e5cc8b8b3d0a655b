"""Source of chapter C1 "KV cache eviction and merging", written as Python and turned into a notebook.

    python tools/chapters/c1_source.py   # writes book/compression/c1_kv_eviction.ipynb

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
# # KV cache eviction and merging
#
# A transformer that generates text one token at a time keeps, in every layer and every
# head, the key and the value of every token it has seen: the **KV cache**. Without it each
# new token would recompute the whole prefix; with it each new token costs one query
# against the cache. The price is memory that grows with the context:
#
# $$\text{bytes per token} = 2 \times \text{layers} \times \text{KV heads} \times \text{head dim} \times \text{bytes per number}.$$
#
# For a model shaped like Llama-3-8B (32 layers, 8 KV heads of width 128, 16-bit numbers)
# that is 128 KiB per token, 16 GiB for a 128k-token context: more than the weights.
#
# This chapter keeps the cache at a fixed **budget** of entries per head and asks which
# entries to keep, drop or merge when a new token arrives. One class,
# `companion.compression.KVCache`, plugs a policy into the course's token-by-token decoder;
# the same evaluation compares them all.
#
# | policy | keeps | paper |
# |---|---|---|
# | `window` | the newest tokens | baseline |
# | `sinks_window` | the first few tokens (attention sinks) and the newest | {cite}`xiao2024streamingllm` |
# | `heavy_hitter` | the newest and the most-attended tokens so far | {cite}`zhang2023h2o` |
# | `adaptive` | a profile per head, chosen from the prompt's attention | {cite}`ge2024fastgen` |
# | `evict_merge` | like `heavy_hitter`, but evicted tokens are merged into similar kept ones | {cite}`wan2024d2o`, {cite}`li2024ems` |
# | `subgen` | the newest tokens and a sampled summary of clusters of older keys | {cite}`zandieh2024subgen` |
#
# The experiment runs in two settings, because which policy wins depends on how the model
# attends: (a) a tiny character model of Python source code, (b) a key-value recall task
# whose answer lies far outside any recent window.

# %%
# tags: parameters
SMOKE = False          # True: a quick run for the test suite (weaker, labelled bounds)
SEED = 0               # the one seed every random draw of this chapter comes from
THREADS = None         # torch threads; None takes OMP_NUM_THREADS or torch's default

# %%
# (a) character model of standard-library source
CHAR_STEPS = 40 if SMOKE else 300           # training steps of the character model
CHAR_WIDTH = 64 if SMOKE else 96            # d_model (4 heads)
CHAR_LAYERS = 2 if SMOKE else 3             # decoder blocks
CONTEXT = 128 if SMOKE else 256             # evaluated sequence length (and training length)
PROMPT = CONTEXT // 4                       # tokens read with full attention before decoding
N_EVAL = 4 if SMOKE else 16                 # held-out sequences decoded per policy and budget
BUDGETS = [8, 16] if SMOKE else [8, 16, 32]  # cache entries per head (3-12.5% of the full context)
# (b) key-value recall
RECALL_STEPS = 60 if SMOKE else 1200        # training steps of the recall model
N_PAIRS, N_SYMBOLS = 4, 8                   # pairs stored; keys = values = 8 symbols (chance 1/8)
TRAIN_FILLER, FILLER = 8, 48                # filler tokens in training / in the evaluated sequences
N_QUERIES = 4                               # questions at the end of each sequence
RECALL_BUDGETS = [8, 16, 32]                # cache entries per head in setting (b)
N_RECALL_EVAL = 32 if SMOKE else 96         # recall sequences decoded per policy and budget
POLICIES = ["window", "sinks_window", "heavy_hitter", "adaptive", "evict_merge", "subgen"]
RECOVERIES = [0.9, 0.99] if SMOKE else [0.9, 0.95, 0.98, 0.99]   # recovery targets of the adaptive profile

# %%
import functools
import inspect
import os
import time

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

import companion
from companion import backend, claims, viz
from companion.compression import ADAPTIVE_PROFILES, KV_POLICIES, KVCache, kv_bytes_per_token
from companion.data import char_lm_task, key_value_recall_task, kv_recall_vocab_size, stdlib_corpus
from companion.data.kv_recall import kv_recall_answer_positions
from companion.kernels import eviction, merge_evicted, select_keep
from companion.nn import FullKVStore, TinyTransformer, TrainConfig, TransformerConfig, cached_nll, decode_step, prefill, train

rng = np.random.default_rng(SEED)          # every random draw below comes from here
torch.manual_seed(int(rng.integers(2**31)))
if THREADS or os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(int(THREADS or os.environ["OMP_NUM_THREADS"]))
device = backend.torch_device()            # CUDA on a GPU runtime, else CPU
viz.enable_offline_renderer()
chapter_start = time.perf_counter()
print(f"companion {companion.__version__}, backends {backend.available_backends()}, torch device {device}")

def seed():
    """A fresh integer seed drawn from the chapter's generator."""
    return int(rng.integers(2**31))

# %% [markdown]
# ## How much memory is at stake
#
# `kv_bytes_per_token` is the formula above. Two ways to shrink it change the *model*: fewer
# KV heads than query heads (grouped-query attention), or caching fewer layers. The
# decoder-decoder of {cite}`sun2024yoco` goes furthest on the second axis: its lower half
# uses attention with a constant-size state, and its upper half attends to **one** global
# KV cache produced once and shared by all upper layers, so the cache costs one layer's
# worth of bytes per token instead of one per layer. This chapter instead keeps the model
# and limits **how many tokens** each head keeps, which composes with both.

# %%
shapes = {"Llama-3-8B-like (32 layers, 8 KV heads x 128)": (32, 8, 128),
          "same, one shared cache (decoder-decoder)": (32, 8, 128, 1),
          f"this chapter's character model ({CHAR_LAYERS} layers, 4 heads x {CHAR_WIDTH // 4}, fp32)": (CHAR_LAYERS, 4, CHAR_WIDTH // 4)}
rows = []
for name, shape in shapes.items():
    per_token = kv_bytes_per_token(*shape[:3], bytes_per_value=4 if "character" in name else 2,
                                   cached_layers=shape[3] if len(shape) > 3 else None)
    rows.append({"model": name, "KiB per token": per_token / 1024, "GiB at 128k tokens": per_token * 131072 / 2**30})
display(pd.DataFrame(rows).round(3))

# %% [markdown]
# ## Three operations: score, select, merge
#
# Every budgeted policy repeats three steps, which live in `companion.kernels.eviction`:
#
# 1. **Score.** After each new query $q_t$ attends over the cached keys, entry $j$ has
#    received the weight $a_{tj}$. H2O keeps the running sum $s_j = \sum_t a_{tj}$: tokens
#    that many queries looked at are "heavy hitters" {cite}`zhang2023h2o`.
# 2. **Select.** Keep the first $n_{\text{sink}}$ entries, the newest $n_{\text{recent}}$ and
#    the rest of the budget by highest score. A window is $n_{\text{recent}} = $ budget;
#    StreamingLLM adds four sinks {cite}`xiao2024streamingllm`; H2O splits the budget between
#    recent and heavy entries.
# 3. **Merge** (optional). Instead of dropping an evicted entry $e$, add it to the kept
#    entry $t$ whose key is most similar (cosine), if the similarity passes a threshold
#    {cite}`wan2024d2o`. The kept entry becomes a weighted mean and remembers how many
#    tokens $c_t$ it stands for:
#
# $$k_t \leftarrow \frac{c_t k_t + c_e k_e}{c_t + c_e}, \qquad v_t \leftarrow \frac{c_t v_t + c_e v_e}{c_t + c_e}, \qquad c_t \leftarrow c_t + c_e .$$
#
# Attention then adds $\log c_t$ to the merged entry's logit. If the $c_t$ members had
# nearly the same key $k$, their total weight was $c_t\, e^{q\cdot k/\sqrt d}
# = e^{q \cdot k/\sqrt d + \log c_t}$: the bias restores the mass the merge would otherwise
# lose, and the value is their average. EMS {cite}`li2024ems` applies the same evict-then-merge
# idea head by head with an importance that mixes accumulated (global) and recent (local)
# attention.
#
# The NumPy references of the selection and the merge, as the library runs them with
# `backend="numpy"`:

# %%
print(inspect.getsource(eviction._select_numpy))
print(inspect.getsource(eviction._merge_numpy))

# %% [markdown]
# The numba kernels make one pass per row of `batch x heads` (the merge computes the
# similarity of each evicted entry to the kept ones without building the full matrix). On
# a cache the size of a long-context model's layer:

# %%
n_tokens = 2048 if SMOKE else 8192
K = rng.standard_normal((1, 8, n_tokens, 128)).astype(np.float32)    # (batch, kv heads, tokens, head dim)
scores = rng.random((1, 8, n_tokens)).astype(np.float32)
timing = []
for name in ("numpy", "numba"):
    select_keep(scores, n_tokens // 2, n_sinks=4, n_recent=64, backend=name)  # compile / warm up
    t0 = time.perf_counter()
    keep = select_keep(scores, n_tokens // 2, n_sinks=4, n_recent=64, backend=name)
    t_select = time.perf_counter() - t0
    counts = np.ones(scores.shape, dtype=np.float32)
    small = slice(0, 1024)
    keep_small = select_keep(scores[..., small], 512, n_recent=64)
    merge_evicted(K[..., small, :], K[..., small, :], counts[..., small], keep_small, backend=name)
    t0 = time.perf_counter()
    merge_evicted(K[..., small, :], K[..., small, :], counts[..., small], keep_small, backend=name)
    t_merge = time.perf_counter() - t0
    timing.append({"backend": name, f"select half of {n_tokens} (ms)": 1e3 * t_select,
                   "merge 512 of 1024 (ms)": 1e3 * t_merge})
display(pd.DataFrame(timing).round(2))

# %% [markdown]
# ## The evaluation: decode with the policy in the loop
#
# A policy acts while the model generates, so it is measured that way:
# `companion.nn.cached_nll` reads a prompt with full attention, hands its keys, values and
# attention weights to the cache (`load`), then feeds the rest of the sequence one token at
# a time (teacher forcing). At every step each layer appends the new key and value, attends
# over what the cache returns, reports the attention weights back (`observe`), and the
# cache enforces its budget (`end_step`). The result is the negative log-likelihood of every
# decoded token. With the full cache this equals a normal forward pass; the unit tests
# check that for every policy whose budget covers the context.
#
# ## (a) A character model of Python source
#
# A small RoPE transformer (3 layers of width 96 in full mode) reads the Python standard
# library's own source, character by character, for a couple of minutes of CPU time.

# %%
corpus = stdlib_corpus(400_000 if SMOKE else 1_000_000, 60_000)
char_model = TinyTransformer(TransformerConfig(vocab_size=corpus.vocab_size, d_model=CHAR_WIDTH, n_heads=4,
                                               n_layers=CHAR_LAYERS, max_len=CONTEXT, positional="rope")).to(device)
t0 = time.perf_counter()
history = train(char_model, functools.partial(char_lm_task, ids=corpus.train, seq_len=CONTEXT),
                TrainConfig(steps=CHAR_STEPS, lr=2e-3, batch_size=16, warmup_steps=min(50, CHAR_STEPS // 4),
                            seed=seed(), threads=THREADS), progress=True)
char_model.eval()
print(f"{char_model.n_parameters():,} parameters, trained {CHAR_STEPS} steps in {time.perf_counter() - t0:.0f} s, "
      f"final training loss {history.final_loss:.3f} nats per character")

# %% [markdown]
# Every policy decodes the same held-out sequences at budgets of a few percent of the
# context. The loss increase is the mean NLL of the decoded characters minus that of the
# full cache on the same characters; the memory saving compares `bytes_held()` (keys,
# values and the policy's per-entry bookkeeping) at the end of decoding with the full cache.

# %%
eval_x, _, _ = char_lm_task(np.random.default_rng(seed()), N_EVAL, ids=corpus.validation, seq_len=CONTEXT)
full_store = FullKVStore()
full_nll = cached_nll(char_model, eval_x, full_store, prefill_len=PROMPT)          # (N_EVAL, CONTEXT - PROMPT)
full_bytes = full_store.bytes_held()
noise = full_nll.mean(1).std(ddof=1) / np.sqrt(N_EVAL)   # standard error of the full cache's mean loss
budgets = BUDGETS
results = []
t0 = time.perf_counter()
for budget in budgets:
    for policy in POLICIES:
        cache = KVCache(budget, policy)
        nll = cached_nll(char_model, eval_x, cache, prefill_len=PROMPT)
        results.append({"policy": policy, "budget": budget, "budget (% of context)": 100 * budget / CONTEXT,
                        "loss increase (nats)": float((nll - full_nll).mean()),
                        "memory saving (%)": 100 * (1 - cache.bytes_held() / full_bytes)})
results = pd.DataFrame(results)
print(f"full cache: {full_nll.mean():.4f} nats per character (standard error {noise:.4f}); "
      f"{len(results)} policy runs in {time.perf_counter() - t0:.0f} s")
display(results.pivot(index="policy", columns="budget", values="loss increase (nats)").round(4))
print("memory saving (% of the full cache's bytes) at the end of decoding:")
display(results.pivot(index="policy", columns="budget", values="memory saving (%)").round(1))

# %%
viz.line_chart(results, "budget (% of context)", "loss increase (nats)", "policy", log_x=True,
               tooltip=["policy", "budget", "loss increase (nats)", "memory saving (%)"],
               title="(a) Character model: loss increase over the full cache vs budget")

# %% [markdown]
# Which policy loses least here? The ordering we measured at each budget:

# %%
order = {b: list(results[results.budget == b].sort_values("loss increase (nats)").policy) for b in budgets}
for b, names in order.items():
    print(f"budget {b:4d} ({100 * b / CONTEXT:4.1f}%): " + " < ".join(names))

# %% [markdown]
# ### Why: where the character model looks
#
# The heatmap shows the prompt's attention for every head of every layer: the mean weight
# that the last 16 prompt queries give each key position (mean over the evaluated
# sequences). Large language models put a large share of every head's attention on the
# first token, an *attention sink* that has little to do with its content
# {cite}`xiao2024streamingllm`; keeping it is what makes `sinks_window` work there. A sink
# would be a bright first column.

# %%
first = prefill(char_model, eval_x[:, :PROMPT].copy(), return_attention=True)
att_rows = []
for layer, att in enumerate(first.attention):
    mean_att = att[:, :, -16:, :].mean(dim=(0, 2)).cpu().numpy()   # (heads, PROMPT): last 16 queries
    for head, row in enumerate(mean_att):
        att_rows += [{"key position": key, "layer, head": f"L{layer} H{head}", "weight": float(w)}
                     for key, w in enumerate(row)]
viz.heatmap(pd.DataFrame(att_rows), "key position", "layer, head", "weight",
            title=f"(a) Attention of the last 16 prompt queries (positions {PROMPT - 16}-{PROMPT - 1})")

# %%
mass = pd.DataFrame([
    {"layer": layer, "first 4 tokens": float(a[..., 4:, :4].sum(-1).mean()),
     "newest 8 tokens": float(np.mean([a[..., i, max(0, i - 7):i + 1].sum(-1).mean() for i in range(8, PROMPT)]))}
    for layer, a in enumerate(x.cpu().numpy() for x in first.attention)])
display(mass.round(3))
display(Markdown(
    f"Mean share of a query's attention on the first 4 tokens: **{mass['first 4 tokens'].mean():.2f}**; "
    f"on the newest 8: **{mass['newest 8 tokens'].mean():.2f}** (4 of {PROMPT // 2} earlier tokens on average "
    f"would get {4 / (PROMPT / 2):.2f} under uniform attention)."))

# %% [markdown]
# Read the ordering above together with these numbers. A sink is worth keeping only if the
# model built one; a character model of source code mostly needs the last few characters
# (the current identifier, indentation, the open bracket), so a window already holds most
# of what it uses. H2O's accumulated score favours old tokens, which every query since the
# start could attend to, and spends half the budget on them; merging folds the evicted keys
# into the kept old ones, which can give back part of the mass H2O drops. The per-head profile picks, for each head, the compressed
# layout that keeps the most of its attention, or keeps the head whole when none keeps enough;
# so it is not compared at equal memory: the heads it keeps whole cost their full price (see
# the saving table above).

# %%
budget_a = budgets[-1]
profile_rows, adaptive_runs = [], {}
for recovery in RECOVERIES:
    cache = KVCache(budget_a, "adaptive", recovery=recovery)
    diff = cached_nll(char_model, eval_x, cache, prefill_len=PROMPT) - full_nll    # (N_EVAL, decoded)
    modes = np.stack([cache.policy.modes[layer].numpy() for layer in range(CHAR_LAYERS)])  # (layers, B, H)
    adaptive_runs[recovery] = diff
    profile_rows.append({"recovery": recovery, "loss increase (nats)": diff.mean(),
                         "paired standard error": diff.mean(1).std(ddof=1) / np.sqrt(N_EVAL),
                         "memory saving (%)": 100 * (1 - cache.bytes_held() / full_bytes),
                         **{f"{p} heads (%)": 100 * float((modes == i).mean()) for i, p in enumerate(ADAPTIVE_PROFILES)}})
profiles = pd.DataFrame(profile_rows)
profiles["within noise"] = profiles["loss increase (nats)"] <= 2 * profiles["paired standard error"]
display(profiles.round(4))
quiet = profiles[profiles["within noise"]]
best = quiet.loc[quiet["memory saving (%)"].idxmax()] if len(quiet) else None
adaptive_saving = float(best["memory saving (%)"]) if best is not None else 0.0
if best is not None:
    print(f"largest saving within noise: recovery {best['recovery']}, loss increase {best['loss increase (nats)']:+.4f} "
          f"+- {best['paired standard error']:.4f}, memory saving {adaptive_saving:.1f}%")
else:
    print("no recovery target keeps the adaptive cache within noise of the full cache at this budget")

# %% [markdown]
# A lower recovery target lets more heads compress: more memory saved, more loss. The
# "paired standard error" is that of the per-sequence loss difference from the full cache:
# an increase within two of them cannot be told apart from zero on these sequences. (The
# recovery target is picked on the same sequences it is judged on, so the saving reported
# below is slightly optimistic.)

# %% [markdown]
# ## (b) Recall from far back
#
# The second setting is built so that the needed tokens are *not* recent. A sequence stores
# key-value pairs at its start, then a long stretch of filler, then asks for the values of
# some keys:
#
# `k1 v1 k2 v2 ... | filler ... | SEP q1 a1 SEP q2 a2 ...`
#
# A 2-layer RoPE model learns to answer (an induction-style lookup: find the query's key,
# copy the token after it). It trains on sequences with a short filler of
# 8 tokens, which is quick; the lookup is by content, so it still works, less reliably, when
# the evaluated sequences carry 48 filler tokens. The prompt ends in the
# middle of the filler; the rest is decoded through the cache, so by the time the questions
# arrive a window holds only filler.

# %%
recall_kw = dict(n_pairs=N_PAIRS, n_keys=N_SYMBOLS, n_values=N_SYMBOLS, n_filler=8, n_queries=N_QUERIES)
recall_model = TinyTransformer(TransformerConfig(vocab_size=kv_recall_vocab_size(N_SYMBOLS, N_SYMBOLS, 8), d_model=64,
                                                 n_heads=4, n_layers=2, max_len=256, positional="rope")).to(device)
t0 = time.perf_counter()
train(recall_model, functools.partial(key_value_recall_task, filler_len=TRAIN_FILLER, **recall_kw),
      TrainConfig(steps=RECALL_STEPS, lr=3e-3, batch_size=64, warmup_steps=50, seed=seed(), threads=THREADS),
      progress=True)
recall_model.eval()
print(f"trained the recall model {RECALL_STEPS} steps in {time.perf_counter() - t0:.0f} s")

# %%
recall_x, recall_y, _ = key_value_recall_task(np.random.default_rng(seed()), N_RECALL_EVAL, filler_len=FILLER, **recall_kw)
answer_at = kv_recall_answer_positions(N_PAIRS, FILLER, N_QUERIES)     # input positions of the queries
recall_prompt = 2 * N_PAIRS + FILLER // 2                              # prompt: the pairs and half the filler

@torch.no_grad()
def recall_decode(store, x, stop=None):
    """Prefill the prompt, decode ``x`` through ``store`` up to ``stop``; the answers predicted at the queries."""
    x = torch.as_tensor(x, device=device)
    store.reset(recall_model.config.n_layers)
    first = prefill(recall_model, x[:, :recall_prompt], return_attention=True)
    for layer in range(recall_model.config.n_layers):
        store.load(layer, first.keys[layer], first.values[layer], first.attention[layer])
    predicted = {}
    for t in range(recall_prompt, x.shape[1] if stop is None else stop):
        logits, _ = decode_step(recall_model, x[:, t], t, store)
        if t in answer_at:
            predicted[t] = logits.argmax(-1).cpu().numpy()
    return predicted

def recall_accuracy(store):
    predicted = recall_decode(store, recall_x)
    return float(np.mean([predicted[t] == recall_y[:, t] for t in answer_at]))

full_recall = recall_accuracy(FullKVStore())
recall_rows = []
for budget in RECALL_BUDGETS:
    for policy in POLICIES:
        recall_rows.append({"policy": policy, "budget": budget, "accuracy": recall_accuracy(KVCache(budget, policy))})
recall_results = pd.DataFrame(recall_rows)
print(f"sequences of {recall_x.shape[1]} tokens; full cache accuracy {full_recall:.3f}; chance {1 / N_SYMBOLS:.3f}")
display(recall_results.pivot(index="policy", columns="budget", values="accuracy").round(3))

# %%
viz.line_chart(pd.concat([recall_results, pd.DataFrame([{"policy": "full", "budget": b, "accuracy": full_recall}
                                                        for b in RECALL_BUDGETS])]),
               "budget", "accuracy", "policy", log_x=True,
               title="(b) Key-value recall: answer accuracy vs cache budget (entries per head)")

# %% [markdown]
# The window keeps only the newest tokens, so when a question arrives every stored pair is
# gone and the model guesses. The stored pairs collected attention while the prompt was
# read (the model's heads look back at them), so accumulated-attention eviction keeps them
# through the filler; merging keeps them too and folds the filler into a few merged entries.
# `sinks_window` holds the first four positions, that is the first two pairs, and can answer
# questions about those.
#
# The heatmap shows what each policy still holds in layer 1 when the first question
# arrives (1 = held, 0 = evicted; one sequence, budget 16).

# %%
def held_at_first_question(policy, budget, seq=0):
    """Positions, counts held by layer 1 of the cache just before the first question, one sequence."""
    cache = KVCache(budget, policy)
    recall_decode(cache, recall_x[seq:seq + 1], stop=int(answer_at[0]))
    state = cache.states[1]
    return [(state.position[0, h][state.valid[0, h]].tolist(), state.count[0, h][state.valid[0, h]].tolist())
            for h in range(state.valid.shape[1])]

held_rows = []
for policy in ["window", "sinks_window", "heavy_hitter", "evict_merge"]:
    for head, (positions, _) in enumerate(held_at_first_question(policy, 16)):
        held_rows += [{"position": p, "policy, head": f"{policy} H{head}", "held": int(p in positions)}
                      for p in range(int(answer_at[0]))]
viz.heatmap(pd.DataFrame(held_rows), "position", "policy, head", "held",
            title=f"(b) Entries held in layer 1 at the first question (pairs are positions 0-{2 * N_PAIRS - 1})")

# %% [markdown]
# ### Explore by hand
#
# Pick a policy and a budget: the strip shows, for one recall sequence, which positions
# layer 1 head 0 still holds when the first question arrives (`#` held, `m` a merged entry
# standing for several tokens, `.` evicted), and the accuracy at that budget. (In the static
# book the widget shows its saved state; on Colab or Jupyter it is live.)

# %%
strips = {}
for policy in POLICIES:
    for budget in RECALL_BUDGETS:
        positions, counts_held = held_at_first_question(policy, budget)[0]
        marks = ["."] * int(answer_at[0])
        for p, c in zip(positions, counts_held):
            marks[p] = "m" if c > 1 else "#"
        strips[policy, budget] = "".join(marks)
accuracy_at = recall_results.set_index(["policy", "budget"])["accuracy"]

policy_picker = widgets.Dropdown(options=POLICIES, value="heavy_hitter", description="policy")
budget_picker = widgets.SelectionSlider(options=RECALL_BUDGETS, value=16, description="budget")
strip_out = widgets.HTML()

def _show(change=None):
    key = (policy_picker.value, budget_picker.value)
    s = strips[key]
    strip_out.value = (f"<pre>pairs    filler\n{s[:2 * N_PAIRS]} {s[2 * N_PAIRS:]}</pre>"
                       f"recall accuracy at this budget: <b>{accuracy_at[key]:.2f}</b> (full cache {full_recall:.2f})")

policy_picker.observe(_show, names="value")
budget_picker.observe(_show, names="value")
_show()
widgets.VBox([widgets.HBox([policy_picker, budget_picker]), strip_out])

# %% [markdown]
# ## Claim checks
#
# (b) At the same budget, heavy-hitter eviction and evict-then-merge answer far more
# recall questions than the sliding window.

# %%
acc = recall_results[recall_results.budget == 16].set_index("policy")["accuracy"]
margin_h2o = acc["heavy_hitter"] - acc["window"]
margin_merge = acc["evict_merge"] - acc["window"]
claims.check(
    "On long-range recall, evicting by accumulated attention beats the sliding window at the same budget",
    measured=margin_h2o, threshold=(0.0 if SMOKE else 0.2), comparison=">=",
    paper="H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
    chapter="C1", smoke=SMOKE,
    note=("smoke-mode sanity bound: the margin is not negative after a very short training" if SMOKE else
          f"recall accuracy of heavy_hitter minus window at 16 entries per head: "
          f"{acc['heavy_hitter']:.3f} vs {acc['window']:.3f} (full cache {full_recall:.3f}, chance {1 / N_SYMBOLS:.3f}). "
          "Calibration run (full mode, SEED 0): 0.445 vs 0.130."),
)
claims.check(
    "On long-range recall, evict-then-merge beats the sliding window at the same budget",
    measured=margin_merge, threshold=(0.0 if SMOKE else 0.2), comparison=">=",
    paper="D2O: Dynamic Discriminative Operations for Efficient Generative Inference of Large Language Models",
    chapter="C1", smoke=SMOKE,
    note=("smoke-mode sanity bound: the margin is not negative after a very short training" if SMOKE else
          f"recall accuracy of evict_merge minus window at 16 entries per head: "
          f"{acc['evict_merge']:.3f} vs {acc['window']:.3f}. Calibration run (full mode, SEED 0): 0.427 vs 0.130."),
)

# %% [markdown]
# (a) The per-head adaptive profile stays within noise of the full cache (mean loss increase
# below two paired standard errors of the per-sequence difference) while saving a
# substantial share of the cache's bytes: we check the largest saving among the recovery
# targets that stay within noise against 20%.
#
# **This does not reproduce at our scale, and the check below is recorded without being
# asserted.** In the calibration run only the strictest target (0.99) stayed within noise,
# and it kept almost every head whole (2.6% saved); recovery 0.9 saved 73% of the bytes
# at +0.0145 nats, no better than the plain window at the same budget. The profile is chosen
# from the last prompt queries, and on this character model the layouts that look best
# there (heavy hitters mixed with a window) keep losing mass as decoding moves on, while
# a head that would be safe to compress needs more than the budget's entries to reach a
# high recovery. The measured values are in the note and the table above.

# %%
claims.check(
    "A per-head adaptive cache profile stays within noise of the full cache while saving memory",
    measured=adaptive_saving, threshold=(-10.0 if SMOKE else 20.0), comparison=">=",
    paper="Model Tells You What to Discard: Adaptive KV Cache Compression for LLMs",
    chapter="C1", smoke=SMOKE, asserts=SMOKE,
    note=("smoke-mode sanity bound: the saving (percent of the full cache's bytes, 0 if no recovery target stays "
          "within noise) is above -10" if SMOKE else
          f"measured: percent of the full cache's bytes saved at the lowest recovery target whose loss increase "
          f"stays within two paired standard errors ({N_EVAL} sequences, budget {budget_a} of {CONTEXT}); "
          + (f"recovery {best['recovery']}: {best['loss increase (nats)']:+.4f} +- {best['paired standard error']:.4f} "
             f"nats" if best is not None else "none qualified")
          + f". Full-cache loss {full_nll.mean():.3f} nats. Not asserted in full mode: it does not reproduce here. "
          "Calibration run (full mode, SEED 0): recovery 0.99 +0.0007 +- 0.0009 nats at 2.6% saving; 0.98 +0.0031 "
          "+- 0.0011 at 13.3%; 0.95 +0.0083 +- 0.0024 at 43.9%; 0.9 +0.0145 +- 0.0032 at 73.2%."),
)

# %% [markdown]
# (a) The ordering of the papers (importance beats recency) is checked but not asserted:
# in this model it is reported as measured.

# %%
row = results[results.budget == budget_a].set_index("policy")["loss increase (nats)"]
claims.check(
    "On the character model, heavy-hitter eviction loses less than the sliding window at the same budget",
    measured=row["window"] - row["heavy_hitter"], threshold=0.0, comparison=">",
    paper="H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
    chapter="C1", smoke=SMOKE, asserts=False,
    note=f"window minus heavy_hitter loss increase at budget {budget_a}: "
         f"{row['window']:+.4f} vs {row['heavy_hitter']:+.4f}; ordering: {' < '.join(order[budget_a])}.",
)

# %%
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. Give every training sequence of the character model a fixed start-of-sequence
#    character and retrain. Does a sink appear in the attention heatmap, and does
#    `sinks_window` then beat `window`?
# 2. In setting (b), start decoding *before* the pairs have been read (a prompt of two
#    tokens). What happens to `heavy_hitter`, and why can no policy that only looks at
#    past attention fix it?
# 3. Set the merge threshold of `evict_merge` to 1 (never merge) and to -1 (always merge)
#    on the character model. Which loses less, and what does that say about how similar
#    the evicted keys are to the kept ones?
#
# ```{admonition} Solution to 1
# :class: dropdown
# With a constant first token, many heads learn to park unused attention on it: the first
# column of the heatmap lights up, and dropping that entry shifts the softmax mass of every
# later query. Keeping the first few entries (`sinks_window`) then helps; without a fixed
# first token the model has nothing stable to park attention on.
# ```
#
# ```{admonition} Solution to 2
# :class: dropdown
# The pairs are decoded through the cache; while the filler streams in, nothing has asked for
# them yet, so they collect little attention and are evicted before the questions arrive.
# Any policy that scores entries by past attention must guess the future query; only keeping
# everything, or retrieving from a larger store, survives an adversarial question.
# ```
#
# ```{admonition} Solution to 3
# :class: dropdown
# The cell below runs both at the chapter's middle budget. Always merging averages keys that
# point in different directions, which moves the kept keys away from any real token; a
# threshold limits merges to keys that really are close.
# ```

# %%
# tags: hide-cell
# Solution to exercise 3, run: never merge (threshold 1) vs always merge (threshold -1).
for threshold in (1.0, -1.0):
    nll = cached_nll(char_model, eval_x, KVCache(budget_a, "evict_merge", threshold=threshold), prefill_len=PROMPT)
    print(f"threshold {threshold:+.0f}: loss increase {float((nll - full_nll).mean()):+.4f} nats")

# %% [markdown]
# ## References
#
# The papers this chapter draws on are listed in the {doc}`../back/bibliography`:
# {cite}`ge2024fastgen`, {cite}`wan2024d2o`, {cite}`li2024ems`, {cite}`zandieh2024subgen`,
# {cite}`sun2024yoco`, {cite}`xiao2024streamingllm` and {cite}`zhang2023h2o`.
'''


if __name__ == "__main__":
    write(SOURCE, "book/compression/c1_kv_eviction.ipynb")
