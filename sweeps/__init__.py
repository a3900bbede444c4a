"""Sweeps: plan grids of training runs, run them resumably on any compute, hand a clean table to `analysis`.

  mdm-lab sweep plan SPEC                      # table, counts, total FLOPs, wall time from a measured probe
  mdm-lab sweep run SPEC --out DIR --runner inprocess|vmap|processes|ray [--workers N] [--ray-address ADDR]
  mdm-lab sweep status DIR [--runs]
  mdm-lab sweep export DIR --tensorboard OUT

A spec (sweeps.spec) is a base config plus a grid (products, zips, unions, conditional sub-grids, first-class
size/token/FLOP/mixture/batch/lr/schedule/seed axes) and an optional isoFLOP design (sweeps.sizes). A run's id is
its resolved config's fingerprint. DIR holds index.sqlite (sweeps.index: statuses, claims, heartbeats, retries,
an event log) and runs/<run_id>/ in the trainer's run-directory format, so `analysis.rundirs.load_run_dirs(DIR)`
reads it directly. Runners (sweeps.runners, sweeps.ray_runner) share one interface and cooperate through the
index; examples/ has ready specs.
"""
