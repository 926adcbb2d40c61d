"""The policy language: text to AST (parser), AST to diagnostics (checker), and the AST itself."""
