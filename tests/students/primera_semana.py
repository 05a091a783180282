"""A first-week server: every recv() answered with its bytes in uppercase.

python primera_semana.py PORT. It passes the classroom test (--level basic) and
fails the full checks: lines split across reads, UTF-8, lookalikes of the keyword.
"""

import socket
import sys
import threading


def atender(conn):
    while True:
        datos = conn.recv(1024)
        if not datos or datos.decode(errors="replace").strip() == "DESCONEXION":
            break
        conn.send(datos.upper())
    conn.close()


servidor = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
servidor.bind(("127.0.0.1", int(sys.argv[1])))
servidor.listen()
print("esperando clientes", flush=True)
while True:
    conn, direccion = servidor.accept()
    threading.Thread(target=atender, args=(conn,), daemon=True).start()
