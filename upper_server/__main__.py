from upper_server.cli import run

run()
