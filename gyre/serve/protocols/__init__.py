"""Wire protocols: each decodes its bodies into named tensors and encodes the answers."""

__all__: list[str] = []
