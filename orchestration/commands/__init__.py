"""The `nf` subcommands, one module per family. Each module imports only the standard library at the
top; torch, Ray, MLflow and pandas are imported inside the functions that run a command, so
`nf --help` and building the parser stay fast."""
