"""Who may do what: tokens and their scopes, signed read tokens (JWT), rate limits."""
