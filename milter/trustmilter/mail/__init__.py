"""What mail is made of, parsed once: addresses (RFC 5322 §3.4, RFC 5321
paths), header fields, the MIME structure (RFC 2046, walked without
recursion), the text helpers findings quote with, and the RFC 8601 syntax
of Authentication-Results values (authres_syntax.py). No check logic here."""
