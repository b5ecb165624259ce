"""labkit's FedLD and RFFL strategies as one Flower app (see ../pyproject.toml)."""
