"""Downstream data: tasks, k-shot sampling, prompt formatting and the DataModule."""
