from dicomhub.cli import main

main()
