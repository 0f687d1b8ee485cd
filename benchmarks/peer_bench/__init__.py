"""critpoint side by side with PyHessian, hessian-eigenthings and curvlinops.

Run it with ``benchmarks/run.py``; the modules here are its parts:

* :mod:`peer_bench.workloads`: the workloads (digits MLPs, a CNN with BatchNorm,
  a planted saddle), their training and their ground truth;
* :mod:`peer_bench.adapters`: one adapter per library with the same four tasks
  (top-k, bottom-k, trace, density), each counting its library's HVPs;
* :mod:`peer_bench.cell`: one measurement (workload x library x task) in its
  own process;
* :mod:`peer_bench.report`: the tables and the README section.
"""
