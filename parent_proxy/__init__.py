"""The parent proxy: runs on the parent instance. So far: the state store (`store`), the hash-chained audit log
(`audit`, `audit_cli`), signed webhook delivery (`webhooks`), the clock seam (`clock`) and the errors (`errors`)."""
