"""vmkit: the ESX Server design (US patent 6,961,941) on an emulated x86 PC.

The claims it teaches are in docs/claims.md; `docs/claims.md#claim-N` is claim N, and the
README's table says which code and notebook teach each one.
"""
