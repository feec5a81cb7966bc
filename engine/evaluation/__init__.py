"""Evaluation of finished runs, apart from the run store (engine.runs needs no torch): a run's best
checkpoint scored again (evaluate), on another collection (external), torchxrayvision's classifier on a
run's test split (baseline), and two runs compared on the same images (compare)."""
