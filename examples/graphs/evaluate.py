"""Evaluate a graph diffusion checkpoint: the same as ``diffkit evaluate-graphs`` (diffkit/graph_eval.py).

    python examples/graphs/evaluate.py --ckpt runs/graphs_planar_cpu/checkpoints/last.ckpt [--num-samples N] [--out DIR]

Writes DIR/samples.g6 (graph6, one graph a line), DIR/metrics.json (MMDs, ratios to train-vs-test,
V.U.N., validity of the test set) and DIR/samples.png (generated next to training graphs).
"""

from diffkit.graph_eval import main

if __name__ == "__main__":
    main()
