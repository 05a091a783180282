from upper.server.cli import run

run()
