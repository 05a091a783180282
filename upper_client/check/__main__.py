from upper.check.cli import run

run()
