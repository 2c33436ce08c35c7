"""The LanguageBind-style contrastive trainer: data, encoders, loss, loop, evaluation.

A library: it never imports the CLI.
"""
