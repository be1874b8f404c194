"""A local stand-in for the Altcraft API, with fault injection and inspection endpoints."""
