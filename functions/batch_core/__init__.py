"""The domain core shared by the Lambda handlers and the GPU worker.

Nothing in here imports a handler, the worker or an inference engine.
"""
