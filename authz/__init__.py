"""doma-gateway's authorization layer: token verification, key sources and the decision core.

Layer 0 of the project: nothing here imports :mod:`gateway`.
"""
