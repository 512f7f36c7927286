"""The fence around Strawberry's and graphql-core's internals.

Every module of this project that relies on an internal (a private name, an undocumented
method override, a copied method) of Strawberry or graphql-core lives in this package or in
`api/transport/`, and each says which versions it was verified against. `versions` decides,
once per process, whether those fast paths run or the stock library paths do."""
