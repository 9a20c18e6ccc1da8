"""Evaluating a model on a task: what was asked (the run spec), the plan checked before model work, the
image loader, the model loop, the prediction cache, data-parallel runs and ``evaluate()`` itself."""
