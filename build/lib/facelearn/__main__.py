from facelearn.train import main

main()
