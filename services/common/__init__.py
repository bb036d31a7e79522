"""Pure helpers more than one service uses: the program expression language and
durations. No I/O here (import-linter keeps it so)."""
