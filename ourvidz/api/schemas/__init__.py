"""Request and response bodies of the gateway, one module per group of endpoints.

Requests accept every spelling the seed system's clients and workers send (camelCase and snake_case,
both eras) and never fail for a field they do not read; wrong types and out-of-range values are a
400 naming the field. Responses carry the spec's fields and the seed's own where the spec is silent.
"""
