"""Batch inference: score a dataset with one variant, split into shards that workers take in turn.

What lives here: the engine (:mod:`.engine`: the config, shard markers, a worker's scoring and the
aggregation), the input (:mod:`.inputs`: which files, their rows, the shards, checked against the
model's inputs), the commands an Indexed Job's pods run (:mod:`.worker_command` for ``frugal
batch-worker``, :mod:`.aggregate_command` for ``frugal batch-aggregate``) and the local runner
(:mod:`.local_runner`: N worker processes on this machine, restarted when they die, then the
aggregation). Serving only: nothing here imports the operator, compression or torch.
"""
