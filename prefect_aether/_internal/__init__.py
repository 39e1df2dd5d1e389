"""Helpers every layer shares and no user calls (private).

`canonical`: the one canonical JSON text used for hashes, fingerprints and previews;
`callbacks`: calling user callbacks, sync or async, without letting them break the caller;
`text`: untrusted text made safe to show (previews, markdown-inert text, table cells).
Nothing here imports another part of the package but `exceptions` and `settings`.
"""
