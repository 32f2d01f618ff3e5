"""Workflows: commands that chain training, inference and measurement into one job a user asks for.

They sit above training and inference: ``foldcnn.workflows`` may import ``foldcnn.train``,
``foldcnn.infer``, ``foldcnn.backends`` and ``foldcnn.bench``; none of those (nor ``models``,
``fold``, ``checkpoints``, ``data``) ever imports a workflow. ``foldcnn.cli`` is the only caller.
"""
