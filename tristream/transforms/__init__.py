"""Pure functions on arrays: decode, flow, encoding helpers. No Beam here."""
