"""diffkit benchmark suites: ``python -m benchmarks <suite> [--quick] [--seeds N] [--out DIR]``.

Suites (one module each):

- ``gaussian``: 2-D data (eight Gaussians, swiss roll, a Gaussian mixture with known density);
  eps / x0 / v / previous-step with the same MLP and the same optimizer steps; NLL bound against
  the true entropy, MMD and sliced Wasserstein against their data-vs-data floor, all-step and
  strided sampling (ancestral and DDIM).
- ``categorical``: Markov-chain tokens with an exact entropy rate; x0 vs previous-step under
  uniform, absorbing and marginal noise; NLL bound in bits per token, unigram / bigram TV.
- ``factorization``: no training. An oracle x0-denoiser on a correlated 3-token distribution and
  the derived reverse chain propagated exactly over all joint states: the per-token (factorized)
  reverse kernel keeps per-token marginals while the joint error shrinks with the step size.
- ``speed``: library overhead against the bare denoiser, measured side by side in one process.
- ``graphs``: community-small with the marginal vs the uniform edge transition at equal budgets
  (MMD ratios, NLL bound), and the graph training / sampling step against the bare GraphTransformer.
- ``guidance``: classifier-free guidance sweep (w = 0 .. 4), eight Gaussians conditioned on the mode
  and Markov-chain tokens conditioned on the chain, conditional accuracy vs diversity / fidelity.
- ``sharpness``: the shipped swiss-roll quickstart config trained as ``diffkit fit`` does, sampled
  with ancestral / DDIM / DPM-Solver++(2M) at 10-200 network calls; distance ratio to the generating
  spiral and k-NN precision / recall against the data floor.
- ``ctime``: continuous-time masked (MDLM) and uniform (UDLM) noise against discrete absorbing
  T = 100 / 1000 on Markov tokens at equal budgets: NLL bound vs exact entropy, bigram TV at 8 to
  1024 sampling steps, network evaluations per sample of the caching sampler.

Each suite writes ``results.csv`` (mean and std over seeds), ``results_raw.csv`` (one row per
seed), ``table.md``, PNG plots and ``summary.json`` into ``<out>/<suite>/``; ``--write-docs``
collects every suite found under ``<out>`` into ``docs/benchmarks.md``.
"""

SUITES = ("gaussian", "categorical", "factorization", "speed", "graphs", "guidance", "sharpness", "ctime")
