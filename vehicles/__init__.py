"""Orders, VINs, the model catalogue, dealers (and later vehicle links, charging, in-car API)."""
