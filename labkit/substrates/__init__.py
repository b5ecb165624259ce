"""The toy worlds a family of methods shares, written once.

- :mod:`.preference`: DPO / IPO / SLiC / Bradley–Terry losses (the DPO family's common ground).
- :mod:`.rlhf`: best-of-n, KL estimators' helpers, a minimal sequence-level PPO.
- :mod:`.federated`: the federated simulator (clients, local SGD, aggregation, adversaries).
- :mod:`.rl`: the offline data record, gymnasium envs, behaviour data as Minari data sets, BC/IQL agents, evaluation.
- :mod:`.sac`: Soft Actor-Critic (online, Box actions) and the cached SAC experts of the MuJoCo tasks.
- :mod:`.gridworld`: the slippery gridworld as a known tabular MDP, with exact value/occupancy tools and rollouts.
- :mod:`.pretrained_lm`: the tiny pretrained LM (shipped / cached / pretrained once) and bring-your-own HF model.
- :mod:`.ranking`: ranking metrics (recall/precision/hit/MRR/nDCG@k, AP, agreement@k), one value per query.
- :mod:`.recsys`: a long-tailed catalogue with correlated categorical item fields, users and logged pairs; a stacked
  two-tower model and the in-batch softmax with logQ correction.
- :mod:`.sequential_recsys`: clustered Zipf interaction sequences, GRU4Rec/SASRec-style recommenders, a black-box
  top-k wrapper.
- :mod:`.retrieval`: a synthetic corpus with vocabulary mismatch, BM25 (Lucene variant) and a small LSA dense retriever.
- :mod:`.lob`: a limit-order-book simulator, chronological splits, training-statistics normalisation, TLOB/classic
  trend labels.
- :mod:`.abr`: adaptive-bitrate streaming: player, throughput traces, QoE, BBA / rate-based / RobustMPC, pool.

Imported lazily by the methods (nothing here is imported by ``import labkit``).
"""
