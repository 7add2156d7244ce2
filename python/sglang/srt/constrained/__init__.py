"""Constrained decoding (structured outputs): JSON schema, regex, EBNF and structural tags
compiled to token masks by a grammar backend (xgrammar, as upstream SGLang uses)."""
