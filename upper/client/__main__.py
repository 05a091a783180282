from upper.client.cli import run

run()
