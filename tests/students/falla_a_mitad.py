"""A server that serves, then dies with a traceback (exit status 1) on 'hola servidor'.

python falla_a_mitad.py PORT. One connection at a time, in the main thread, so
the exception ends the program.
"""

import socket
import sys

servidor = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("servidor listo", flush=True)
while True:
    conn, _peer = servidor.accept()
    with conn:
        datos = conn.recv(1024)
        if datos.startswith(b"hola servidor"):
            raise ValueError("no sé contestar a " + datos.decode().strip())
        conn.sendall(datos.upper())
