"""A correct server: python correcto.py PORT."""

from comun import answer_correctly, listen, serve_forever

print("servidor escuchando", flush=True)
serve_forever(listen(), answer_correctly)
