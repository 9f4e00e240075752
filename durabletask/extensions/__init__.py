"""Optional extensions of the SDK that depend on third-party services (installed through extras)."""
