"""The terminal chat UI (textual), installed as `assistant.tui`. The app itself arrives with
the chat issue; this package exists so the namespace mapping is in place and tested."""
