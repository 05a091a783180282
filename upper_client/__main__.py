from upper_client.cli import run

run()
