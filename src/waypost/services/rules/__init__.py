"""Automated Rules (rules.md): model, text form, engine, storage and the glue
that runs server-wide rules at submission and domain/account rules at local
delivery."""
