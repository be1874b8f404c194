"""The Altcraft side: request building and the retry decision (both pure), and the HTTP client loop."""
