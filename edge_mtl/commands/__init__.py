"""The `edge-mtl` command: each module turns arguments into typed options and calls a library function. The top
layer: nothing imports these modules (docs/architecture.md, rule 2)."""
