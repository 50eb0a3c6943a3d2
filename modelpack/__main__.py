from modelpack.cli import run

run()
