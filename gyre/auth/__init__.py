"""Who may call: declared consumers' API keys (kept as sha256), scopes, rates, admin rights.

One gatekeeper for both HTTP faces of gyre: the model server (`gyre serve`, the data
plane) and the control plane (`gyre control`, where aliases and policies are changed). Both
read the consumers of `[serve.consumers]`, so one key works the same on each.
"""

from gyre.auth._gatekeeper import Consumer, Gatekeeper, hash_key, key_of, new_key

__all__ = ["Consumer", "Gatekeeper", "hash_key", "key_of", "new_key"]
