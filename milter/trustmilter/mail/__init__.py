"""What mail is made of, parsed once: addresses (RFC 5322 §3.4, RFC 5321
paths) and the text helpers findings quote with. No check logic here."""
