"""The model directory and what is read from it: config, requirements, ignore rules, compute, method signatures, concepts, checkpoints, scaffolds."""
