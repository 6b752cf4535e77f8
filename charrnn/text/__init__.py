"""Text in: reading corpora (files, folders, stdin, named corpora), the vocab, encoding and its cache."""
