"""DNS zones the tests share, in the fixture format of trustmilter.lookup.fixture.

GOOD_SENDER: example.com sends from mail.example.com (192.0.2.10), whose
PTR and A agree, with SPF (-all) and DMARC p=reject — the sender every
daemon-level test starts from. Tests add what they need after it.
"""

GOOD_SENDER = """
example.com.               300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com.               300 IN MX  10 mail.example.com.
example.com.               300 IN A   192.0.2.10
mail.example.com.          300 IN A   192.0.2.10
10.2.0.192.in-addr.arpa.   300 IN PTR mail.example.com.
_dmarc.example.com.        300 IN TXT "v=DMARC1; p=reject"
"""
