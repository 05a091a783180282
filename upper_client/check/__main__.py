from upper_client.check.cli import run

run()
