from facelearn.train import cli

cli()
