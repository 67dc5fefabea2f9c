"""The milter daemon: ``trustmilter run``, inline in Postfix or Sendmail."""
